#!/usr/bin/env bash
# Table 1 rows on a lent accelerator, in pieces that fit its time, resumed anywhere.
#
# A lent GPU runs one command for at most 10 minutes and starts bare: no ../shared data,
# no vae_jax dependencies beyond its image's (ml_collections and tensorboardX are
# missing), no workdirs from earlier. So the rows travel as a folder, `.device/` (in
# .gitignore), named in the call's `carry`:
#
#   here:    bash experiments/iwae/device.sh prepare DATA_DIR [WORKDIR_ROOT SCALE ROWS]
#              copies MNIST and the missing wheels into .device/, and the rows' current
#              checkpoints (WORKDIR_ROOT/SCALE/<row>, if any) so the GPU goes on from them
#   there:   bash experiments/iwae/device.sh train SCALE ROWS SECONDS
#              (device run, carry [".device"]) trains ROWS (table1.py --rows) for at most
#              SECONDS, then SIGTERMs it (a checkpoint is saved) and packs each row as
#              $OUT/<row>.tar (default .device/out): config, metrics, latest checkpoint, evaluation
#   here:    bash experiments/iwae/device.sh unpack FILES_AT WORKDIR_ROOT SCALE
#              puts the rows back in WORKDIR_ROOT/SCALE/<row> (and in .device/ for the
#              next lent machine); table1.py then resumes or evaluates them on any machine
#
# A finished row's evaluation (K = 5000) is in its tar when SECONDS allowed it: then
# `table1.py --workdir_root=WORKDIR_ROOT` records it without training or evaluating again.
set -euo pipefail
cd "$(dirname "$0")/../.."
dev=${VAE_JAX_DEVICE_DIR:-.device}  # Another folder: tests.
py=${PYTHON:-python3}
usage() { sed -n '2,20p' "$0" >&2; exit 2; }

latest_checkpoint() {  # The highest step saved in a workdir, or nothing.
  ls "$1/checkpoints" 2>/dev/null | grep -E '^[0-9]+$' | sort -n | tail -1 || true
}

wheel() {  # wheel NAME: the installed version's wheel in $dev/whl; the index only when it is missing.
  local ver
  ver=$("$py" -c "import importlib.metadata as m; print(m.version('$1'))")
  shopt -s nocaseglob  # The index may spell the file tensorboardx-*.
  if ! compgen -G "$dev/whl/$1-$ver-*.whl" >/dev/null; then
    rm -f "$dev/whl/$1"-*.whl  # Two versions of one package would not install together.
    # Pure-Python wheels: one file serves any Python 3 and platform.
    "$py" -m pip download -q --no-deps --only-binary=:all: -d "$dev/whl" "$1==$ver"
  fi
  shopt -u nocaseglob
}

pack() {  # pack WORKDIR TAR (- for stdout): what resuming and recording need, not every checkpoint.
  local wd=$1 tar=$2 step
  step=$(latest_checkpoint "$wd")
  local files=(config.json)
  for f in "$wd"/metrics.jsonl "$wd"/results.json "$wd"/eval_test_is_*; do  # .json, _per_example.npy
    [[ -e $f ]] && files+=("$(basename "$f")")
  done
  [[ -n $step ]] && files+=("checkpoints/$step")
  tar -cf "$tar" -C "$wd" "${files[@]}"
}

case ${1:-} in
prepare)
  [[ $# -eq 2 || $# -eq 5 ]] || usage
  data_dir=$2
  # What an earlier train left here is output, not input: it would only fill the carry,
  # and a stale record in table/ would make the lent machine skip its row.
  rm -rf "${dev:?}/out" "${dev:?}/table"
  mkdir -p "$dev/data/mnist" "$dev/whl" "$dev/iwae"
  cp -f "$data_dir"/mnist/*-ubyte.gz "$dev/data/mnist/"
  wheel ml_collections
  wheel tensorboardX
  if [[ $# -eq 5 ]]; then
    root=$3 scale=$4
    for row in ${5//,/ }; do
      if [[ -d $root/$scale/$row ]]; then
        rm -rf "$dev/iwae/$scale/$row"
        mkdir -p "$dev/iwae/$scale/$row"
        pack "$root/$scale/$row" - | tar -xf - -C "$dev/iwae/$scale/$row"
      fi
    done
  fi
  du -sh "$dev"
  ;;
train)
  [[ $# -eq 4 ]] || usage
  scale=$2 rows=$3 seconds=$4
  out=${OUT:-$dev/out}  # On the lent machine $OUT is set; elsewhere stay inside the ignored folder.
  mkdir -p "$out"
  if compgen -G "$dev/whl/*.whl" >/dev/null; then
    "$py" -m pip install -q --no-index --no-deps --no-compile --upgrade --target /tmp/site "$dev"/whl/*.whl
    export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
  fi
  export PYTHONUNBUFFERED=1
  status=0
  timeout -s TERM -k 60 "$seconds" "$py" experiments/iwae/table1.py --scale="$scale" \
    --rows="$rows" --data_dir="$dev/data" --workdir_root="$dev/iwae" --out="$dev/table/$scale" \
    >"$out/train.log" 2>&1 || status=$?
  echo "table1.py exit status $status (124: stopped at $seconds s, checkpoint saved)"
  for row in ${rows//,/ }; do
    wd=$dev/iwae/$scale/$row
    [[ -d $wd ]] || continue
    pack "$wd" "$out/$row.tar"
    rate=$(grep -o '"steps_per_sec": [0-9.]*' "$wd/metrics.jsonl" 2>/dev/null | tail -1 || true)
    echo "$row: step $(latest_checkpoint "$wd") ${rate:+($rate)}$(compgen -G "$wd/eval_test_is_*.json" >/dev/null && echo ', evaluated' || true)"
  done
  grep -E 'resum|interrupt|Traceback|Error' "$out/train.log" | tail -5 || true
  ;;
unpack)
  [[ $# -eq 4 ]] || usage
  from=$2 root=$3 scale=$4
  for tar in "$from"/*.tar; do
    row=$(basename "$tar" .tar)
    # The returned config and metrics replace the workdir's, the returned checkpoint joins
    # those already there; the carried copy holds only what came back (carry is 64 MiB).
    rm -rf "${dev:?}/iwae/$scale/$row"
    for dest in "$root/$scale/$row" "$dev/iwae/$scale/$row"; do
      mkdir -p "$dest"
      tar -xf "$tar" -C "$dest"
    done
    echo "$row -> $root/$scale/$row: step $(latest_checkpoint "$root/$scale/$row")"
  done
  ;;
*)
  usage
  ;;
esac
