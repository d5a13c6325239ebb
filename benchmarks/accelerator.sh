#!/usr/bin/env bash
# The prepared accelerator check: every benchmark, then short paper-settings trainings.
#
#   bash benchmarks/accelerator.sh [DATA_DIR]      (default ../shared/data)
#
# Prints one JSON line per figure (each names its device); 230 s on one H200 (2026-11-26),
# before paper_settings.py gained seven more Burda et al. models (not yet timed on a GPU).
# Logs go to $ACCEL_LOG (default /tmp/accelerator.log); $PYTHON picks the interpreter.
# Record what it prints in benchmarks/README.md with the date and the card.
set -uo pipefail
cd "$(dirname "$0")/.."
data_dir=${1:-../shared/data}
py=${PYTHON:-python}
log=${ACCEL_LOG:-/tmp/accelerator.log}
: >"$log"
export PYTHONUNBUFFERED=1
run() {
  echo "# $*" | tee -a "$log" >&2
  local out
  if out=$("$py" "$@" 2>>"$log"); then
    echo "$out" | grep '^{' || echo "$out" | tail -1
  else
    echo "{\"failed\": \"$*\"}"
    tail -5 "$log" >&2
  fi
}
"$py" -c "import json, jax; print(json.dumps({'bench': 'devices', 'jax': jax.__version__,
  'devices': [str(d) for d in jax.devices()]}))"
run benchmarks/train_throughput.py --steps 2000 --warmup 1000 --repeats 5
run benchmarks/train_throughput.py --steps 2000 --warmup 1000 --repeats 5 --batch 20 \
  --steps_per_dispatch 1000
run benchmarks/eval_throughput.py --data_dir "$data_dir"
run benchmarks/eval_throughput.py --data_dir "$data_dir" --batch_size 1000 --chunk_size 500
run benchmarks/sweep_throughput.py
run benchmarks/paper_settings.py --data_dir "$data_dir" --precision_check
