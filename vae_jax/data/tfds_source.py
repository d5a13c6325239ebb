"""Loader of already prepared TensorFlow Datasets (`tfds:NAME`)."""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from vae_jax.data import common
from vae_jax.data.common import DataError, Splits

# TFDS.


def _tfds_hint(tfds_name: str, where: str) -> str:
    return (
        f'prepare it on a machine with network: `tfds build {tfds_name} --data_dir={where}` '
        f'(with file_format array_record, which loads without TensorFlow) and copy the '
        f'folder here, or use a local-file dataset name ({", ".join(common.DATASETS)}) with '
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


def load_tfds(name: str, tfds_name: str, data_dir: str, valid_size: int | None) -> Splits:
    try:
        import tensorflow_datasets as tfds
    except ImportError as e:
        raise DataError(
            f'{name}: tensorflow_datasets is not installed; `pip install tensorflow-datasets` '
            f'or use a local dataset ({", ".join(common.DATASETS)})'
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
        common.no_valid_size(name, valid_size, "the TFDS dataset has its own 'validation' split")
        arrays['valid'] = _tfds_images(builder, 'validation', where)
    else:
        train = arrays['train']
        v = common.valid_count(name, valid_size, max(1, len(train) // 10), len(train))
        arrays['train'], arrays['valid'] = train[:-v], train[-v:]
    for split, a in arrays.items():
        if a.ndim == 4 and a.shape[-1] == 1:
            arrays[split] = a[..., 0]  # (N, H, W) like the local loaders.
    # TFDS binarized_mnist stores 0/1 as uint8.
    return common.make(name, where, common.zero_one_as_bool(arrays))
