"""Tests for vae_jax.data: real-data checks (skipped without shared/data) and synthetic errors."""

import gzip
import shutil
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vae_jax import data

SHARED_DATA = Path(__file__).resolve().parents[2] / 'shared' / 'data'

# Checksums published in shared/data/README.md.
MNIST_TRAIN_PIXEL_SUM = 1_567_298_545
MNIST_TEST_PIXEL_SUM = 264_923_200
BINARIZED_ONES = {'train': 5_118_041, 'valid': 1_028_036, 'test': 1_038_896}
FREY_PIXEL_SUM = 169_968_741


def _shared(sub: str) -> Path:
    path = SHARED_DATA / sub
    if not path.is_dir():
        pytest.skip(f'real data not found at {path}; these checks need the shared/data folder')
    return path


# ----------------------------------------------------------------------------
# Helpers that write small synthetic files.


def _idx_bytes(images: np.ndarray, magic: int = 2051) -> bytes:
    n, rows, cols = images.shape
    header = np.array([magic, n, rows, cols], dtype='>i4').tobytes()
    return header + images.astype(np.uint8).tobytes()


def _write(path: Path, payload: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(payload) if path.suffix == '.gz' else payload)
    return path


def _write_mnist(root: Path, train_name: str = 'train-images-idx3-ubyte.gz', sub: str = 'mnist'):
    rng = np.random.default_rng(0)
    train = rng.integers(0, 256, (30, 28, 28), dtype=np.uint8)
    test = rng.integers(0, 256, (5, 28, 28), dtype=np.uint8)
    folder = root / sub if sub else root
    _write(folder / train_name, _idx_bytes(train))
    _write(folder / train_name.replace('train', 't10k'), _idx_bytes(test))
    return train, test


def _amat_bytes(bits: np.ndarray) -> bytes:
    return b''.join(
        (' '.join(map(str, row)) + '\n').encode() for row in bits.reshape(len(bits), -1)
    )


# ----------------------------------------------------------------------------
# Embedded MNIST.


def test_embedded_shapes_range_and_determinism():
    s = data.load('embedded')
    assert s.train.shape == (4000, 28, 28)
    assert s.valid.shape == (500, 28, 28)
    assert s.test.shape == (500, 28, 28)
    assert s.event_shape == (28, 28)
    for x in (s.train, s.valid, s.test):
        assert x.dtype == np.float32
        assert 0.0 <= x.min() and x.max() <= 1.0
    assert s.train.max() == 1.0  # /255 scaling, not a smaller divisor.
    assert not s.binary
    assert s.name == 'embedded' and 'mnist_5k.csv.gz' in s.source
    again = data.load('embedded_mnist')  # alias: the same fixed split
    for a, b in ((s.train, again.train), (s.valid, again.valid), (s.test, again.test)):
        np.testing.assert_array_equal(a, b)


def test_embedded_valid_size_moves_only_train_valid_boundary():
    s = data.load('embedded')
    t = data.load('embedded', valid_size=1000)
    assert (len(t.train), len(t.valid), len(t.test)) == (3500, 1000, 500)
    np.testing.assert_array_equal(s.test, t.test)
    np.testing.assert_array_equal(s.valid, t.valid[-500:])


@pytest.mark.parametrize('valid_size', [0, -1, 4500, 10**6])
def test_bad_valid_size(valid_size):
    with pytest.raises(data.DataError, match='valid_size'):
        data.load('embedded', valid_size=valid_size)


# ----------------------------------------------------------------------------
# Real files in shared/data.


def test_mnist_real():
    _shared('mnist')
    s = data.load('mnist', str(SHARED_DATA))
    assert (s.train.shape, s.valid.shape, s.test.shape) == (
        (50000, 28, 28),
        (10000, 28, 28),
        (10000, 28, 28),
    )
    assert s.train.dtype == np.float32 and not s.binary
    # Float32 /255 rounding leaves ~1e-8 relative error on a 47M-pixel sum.
    train_sum = np.concatenate([s.train, s.valid]).sum(dtype=np.float64) * 255
    np.testing.assert_allclose(train_sum, MNIST_TRAIN_PIXEL_SUM, rtol=1e-7)
    np.testing.assert_allclose(s.test.sum(dtype=np.float64) * 255, MNIST_TEST_PIXEL_SUM, rtol=1e-7)
    t = data.load('mnist', SHARED_DATA / 'mnist', valid_size=5000)  # files directly in data_dir
    assert (len(t.train), len(t.valid)) == (55000, 5000)
    np.testing.assert_array_equal(t.valid, s.valid[-5000:])  # valid is the END of train.


def test_fashion_mnist_real():
    _shared('fashion_mnist')
    s = data.load('fashion_mnist', str(SHARED_DATA))
    assert (len(s.train), len(s.valid), len(s.test)) == (50000, 10000, 10000)
    train_mean = np.concatenate([s.train, s.valid]).mean(dtype=np.float64) * 255
    np.testing.assert_allclose(train_mean, 72.940352, atol=1e-5)
    np.testing.assert_allclose(s.test.mean(dtype=np.float64) * 255, 73.146567, atol=1e-5)


def test_binarized_mnist_packbits_and_amat_agree(tmp_path):
    src = _shared('binarized_mnist')
    packed = data.load('binarized_mnist', str(SHARED_DATA))
    assert packed.source.endswith('binarized_mnist_packbits.npz')
    for split in ('train', 'valid', 'test'):
        shutil.copy(src / f'binarized_mnist_{split}.amat.gz', tmp_path)
    amat = data.load('binarized_mnist', str(tmp_path))  # files directly in data_dir
    assert 'amat.gz' in amat.source
    assert packed.binary and amat.binary
    for split, ones in BINARIZED_ONES.items():
        a, b = getattr(packed, split), getattr(amat, split)
        assert a.shape == ({'train': 50000}.get(split, 10000), 28, 28)
        assert a.dtype == np.float32
        np.testing.assert_array_equal(a, b)
        assert int(a.sum()) == ones


def test_frey_face_real():
    _shared('frey_face')
    s = data.load('frey_face', str(SHARED_DATA))
    assert s.event_shape == (28, 20)
    assert (len(s.train), len(s.valid), len(s.test)) == (1765, 100, 100)
    assert len(s.train) + len(s.valid) + len(s.test) == 1965
    total = sum(x.sum(dtype=np.float64) for x in (s.train, s.valid, s.test)) * 255
    np.testing.assert_allclose(total, FREY_PIXEL_SUM, rtol=1e-7)
    np.testing.assert_array_equal(s.test, data.load('frey_face', str(SHARED_DATA)).test)
    assert len(data.load('frey_face', str(SHARED_DATA), valid_size=200).train) == 1665


# ----------------------------------------------------------------------------
# Synthetic IDX files.


@pytest.mark.parametrize(
    'train_name',
    ['train-images-idx3-ubyte.gz', 'train-images-idx3-ubyte', 'train-images.idx3-ubyte'],
)
@pytest.mark.parametrize('sub', ['mnist', ''])
def test_idx_spellings_and_locations(tmp_path, train_name, sub):
    train, test = _write_mnist(tmp_path, train_name, sub)
    s = data.load('mnist', str(tmp_path), valid_size=10)
    np.testing.assert_array_equal(s.train * 255, train[:20])
    np.testing.assert_array_equal(s.valid * 255, train[20:])
    np.testing.assert_array_equal(s.test * 255, test)


def test_idx_wrong_magic(tmp_path):
    _write_mnist(tmp_path)
    bad = tmp_path / 'mnist' / 'train-images-idx3-ubyte.gz'
    _write(bad, _idx_bytes(np.zeros((30, 28, 28), np.uint8), magic=2049))
    with pytest.raises(data.DataError, match='magic') as err:
        data.load('mnist', str(tmp_path), valid_size=10)
    assert str(bad) in str(err.value) and '2051' in str(err.value)


@pytest.mark.parametrize('name', ['t10k-images-idx3-ubyte.gz', 't10k-images-idx3-ubyte'])
def test_idx_truncated(tmp_path, name):
    _write_mnist(tmp_path, name.replace('t10k', 'train'))
    bad = tmp_path / 'mnist' / name
    _write(bad, _idx_bytes(np.zeros((5, 28, 28), np.uint8))[:-100])
    with pytest.raises(data.DataError, match='truncated') as err:
        data.load('mnist', str(tmp_path), valid_size=10)
    msg = str(err.value)
    assert (
        str(bad) in msg
        and f'expected {16 + 5 * 784} bytes' in msg
        and f'got {16 + 5 * 784 - 100}' in msg
    )


def test_idx_truncated_gzip_stream(tmp_path):
    _write_mnist(tmp_path)
    bad = tmp_path / 'mnist' / 'train-images-idx3-ubyte.gz'
    bad.write_bytes(bad.read_bytes()[:-200])
    with pytest.raises(data.DataError, match='gzip stream ends early') as err:
        data.load('mnist', str(tmp_path), valid_size=10)
    assert str(bad) in str(err.value)


def test_missing_dataset_lists_paths(tmp_path):
    with pytest.raises(data.DataError) as err:
        data.load('mnist', str(tmp_path))
    msg = str(err.value)
    for looked in (
        tmp_path / 'mnist' / 'train-images-idx3-ubyte.gz',
        tmp_path / 'train-images.idx3-ubyte',
    ):
        assert str(looked) in msg
    assert 'yann.lecun.com' in msg and 'tfds:mnist' in msg


@pytest.mark.parametrize('name', ['mnist', 'fashion_mnist', 'binarized_mnist', 'frey_face'])
def test_empty_data_dir(name):
    with pytest.raises(data.DataError, match='--config.data_dir'):
        data.load(name, '')


def test_unknown_dataset():
    with pytest.raises(data.DataError) as err:
        data.load('cifar10', '/tmp')
    msg = str(err.value)
    assert 'cifar10' in msg and all(n in msg for n in data.DATASETS)
    assert 'npz:' in msg and 'tfds:' in msg


def test_frey_face_not_a_mat_file(tmp_path):
    bad = _write(tmp_path / 'frey_face' / 'frey_rawface.mat', b'not matlab')
    with pytest.raises(data.DataError, match='MATLAB') as err:
        data.load('frey_face', str(tmp_path))
    assert str(bad) in str(err.value)


def test_binarized_missing_lists_npz_and_amat(tmp_path):
    with pytest.raises(data.DataError) as err:
        data.load('binarized_mnist', str(tmp_path))
    msg = str(err.value)
    assert str(tmp_path / 'binarized_mnist' / 'binarized_mnist_packbits.npz') in msg
    assert str(tmp_path / 'binarized_mnist_train.amat.gz') in msg


# ----------------------------------------------------------------------------
# Synthetic .amat files.


def _write_amat_splits(folder: Path, gz: bool = True) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1)
    bits = {
        s: rng.integers(0, 2, (n, 28, 28)) for s, n in (('train', 6), ('valid', 3), ('test', 2))
    }
    for split, b in bits.items():
        _write(folder / f'binarized_mnist_{split}.amat{".gz" if gz else ""}', _amat_bytes(b))
    return bits


@pytest.mark.parametrize('gz', [True, False])
def test_amat_synthetic_roundtrip(tmp_path, gz):
    bits = _write_amat_splits(tmp_path / 'binarized_mnist', gz)
    s = data.load('binarized_mnist', str(tmp_path))
    assert s.binary
    for split, b in bits.items():
        np.testing.assert_array_equal(getattr(s, split), b)
    with pytest.raises(data.DataError, match='valid_size'):
        data.load('binarized_mnist', str(tmp_path), valid_size=5)


@pytest.mark.parametrize(
    'corrupt, match',
    [
        (lambda t: t.replace(b'1', b'2', 1), 'line 1 is malformed'),
        (lambda t: t[:1568] + t[1568:].replace(b' ', b',', 1), 'line 2 is malformed'),
        (lambda t: t[:-1], 'not a positive multiple of 1568'),
        (lambda t: t.replace(b'\n', b'\r\n'), 'not a positive multiple'),
    ],
)
def test_amat_malformed(tmp_path, corrupt, match):
    _write_amat_splits(tmp_path, gz=False)
    bad = tmp_path / 'binarized_mnist_valid.amat'
    bad.write_bytes(corrupt(bad.read_bytes()))
    with pytest.raises(data.DataError, match=match) as err:
        data.load('binarized_mnist', str(tmp_path))
    assert str(bad) in str(err.value)


# ----------------------------------------------------------------------------
# User npz.


@pytest.mark.parametrize('shape', [(12, 6), (12, 4, 3), (12, 4, 3, 2)])
@pytest.mark.parametrize('dtype', [np.uint8, np.float32, np.float64])
@pytest.mark.parametrize('with_valid', [True, False])
def test_npz_roundtrip(tmp_path, shape, dtype, with_valid):
    rng = np.random.default_rng(0)

    def make(n):
        if dtype == np.uint8:
            return rng.integers(0, 256, (n, *shape[1:]), dtype=np.uint8)
        return (rng.normal(size=(n, *shape[1:])) * 3).astype(dtype)  # unbounded on purpose

    def expect(a):
        return a.astype(np.float32) / (255 if dtype == np.uint8 else 1)

    arrays = {'train': make(12), 'test': make(4)}
    if with_valid:
        arrays['valid'] = make(3)
    path = tmp_path / 'd.npz'
    np.savez(path, **arrays)
    s = data.load(f'npz:{path}')
    assert s.event_shape == shape[1:] and s.source == str(path)
    np.testing.assert_array_equal(s.test, expect(arrays['test']))
    if with_valid:
        np.testing.assert_array_equal(s.train, expect(arrays['train']))
        np.testing.assert_array_equal(s.valid, expect(arrays['valid']))
    else:  # default: 10% of train (at least 1) off the end.
        np.testing.assert_array_equal(s.train, expect(arrays['train'][:-1]))
        np.testing.assert_array_equal(s.valid, expect(arrays['train'][-1:]))
    assert all(x.dtype == np.float32 for x in (s.train, s.valid, s.test))


def test_npz_binary_flag_and_valid_size(tmp_path):
    path = tmp_path / 'b.npz'
    rng = np.random.default_rng(0)
    np.savez(path, train=rng.random((20, 5)) < 0.5, test=np.ones((3, 5), np.float32))
    s = data.load(f'npz:{path}', valid_size=5)
    assert s.binary and (len(s.train), len(s.valid)) == (15, 5)


def test_npz_uint8_zero_one_is_binary_data_not_grey_levels(tmp_path):
    """uint8 arrays holding only 0 and 1 are kept 0/1, not divided by 255 to {0, 1/255}."""
    rng = np.random.default_rng(0)
    bits = {'train': rng.integers(0, 2, (20, 6), dtype=np.uint8), 'test': np.eye(6, dtype=np.uint8)}
    np.savez(tmp_path / 'bits.npz', **bits)
    s = data.load(f'npz:{tmp_path / "bits.npz"}')
    assert s.binary and s.train.max() == 1.0
    np.testing.assert_array_equal(s.test, np.eye(6, dtype=np.float32))
    # A grey split anywhere makes every uint8 split grey levels, divided by 255.
    np.savez(tmp_path / 'grey.npz', train=bits['train'], test=np.full((2, 6), 255, np.uint8))
    s = data.load(f'npz:{tmp_path / "grey.npz"}')
    assert not s.binary and s.train.max() == np.float32(1 / 255) and s.test.max() == 1.0


def test_npz_nan_names_array_and_index(tmp_path):
    valid = np.zeros((3, 4), np.float32)
    valid[2, 1] = np.nan
    path = tmp_path / 'nan.npz'
    np.savez(path, train=np.zeros((5, 4), np.float32), valid=valid, test=np.zeros((2, 4)))
    with pytest.raises(data.DataError) as err:
        data.load(f'npz:{path}')
    msg = str(err.value)
    assert str(path) in msg and "'valid'" in msg and '(2, 1)' in msg


def test_npz_missing_test(tmp_path):
    path = tmp_path / 'no_test.npz'
    np.savez(path, train=np.zeros((5, 4), np.float32))
    with pytest.raises(data.DataError, match="missing array.*'test'") as err:
        data.load(f'npz:{path}')
    assert str(path) in str(err.value)


def test_npz_bad_inputs(tmp_path):
    with pytest.raises(data.DataError, match='not found'):
        data.load(f'npz:{tmp_path / "nope.npz"}')
    path = tmp_path / 'flat.npz'
    np.savez(path, train=np.zeros(5), test=np.zeros(5))
    with pytest.raises(data.DataError, match="'train' has shape"):
        data.load(f'npz:{path}')
    np.savez(path, train=np.zeros((5, 2), np.int32), test=np.zeros((2, 2), np.int32))
    with pytest.raises(data.DataError, match='dtype int32'):
        data.load(f'npz:{path}')
    np.savez(path, train=np.zeros((5, 2)), valid=np.zeros((2, 2)), test=np.zeros((2, 2)))
    with pytest.raises(data.DataError, match='valid_size'):
        data.load(f'npz:{path}', valid_size=2)
    np.savez(path, train=np.zeros((5, 2)), test=np.zeros((2, 3)))
    with pytest.raises(data.DataError, match='disagree'):
        data.load(f'npz:{path}')


# ----------------------------------------------------------------------------
# binarize.


def test_binarize():
    key = jax.random.key(0)
    x = jax.random.uniform(jax.random.key(1), (1000, 784))
    b = data.binarize(key, x)
    assert b.shape == x.shape and b.dtype == x.dtype
    assert bool(jnp.all((b == 0) | (b == 1)))
    # 784k independent draws: std of the mean <= 0.5 / sqrt(784000) ~ 6e-4; 3e-3 is 5 sigma.
    assert abs(float(b.mean()) - float(x.mean())) < 3e-3
    np.testing.assert_array_equal(jax.jit(data.binarize)(key, x), b)
    np.testing.assert_array_equal(data.binarize(key, x), b)
    assert not bool(jnp.all(data.binarize(jax.random.key(2), x) == b))
    # p = 0 and p = 1 are deterministic.
    np.testing.assert_array_equal(data.binarize(key, jnp.round(x)), jnp.round(x))
    assert data.binarize(key, x.astype(jnp.bfloat16)).dtype == jnp.bfloat16


# ----------------------------------------------------------------------------
# TFDS (offline only: a missing dataset, and a tiny dataset prepared in tmp).


def test_tfds_missing_dataset_is_clear(tmp_path):
    pytest.importorskip('tensorflow_datasets')
    with pytest.raises(data.DataError) as err:
        data.load('tfds:mnist', str(tmp_path))
    msg = str(err.value)
    assert 'not prepared' in msg and str(tmp_path) in msg and 'tfds build mnist' in msg
    with pytest.raises(data.DataError, match='catalog'):
        data.load('tfds:no_such_dataset_xyz', str(tmp_path))


@pytest.fixture(scope='module')
def tiny_tfds(tmp_path_factory):
    """Prepares a 20/5-example TFDS dataset as array_record, which needs no TensorFlow."""
    tfds = pytest.importorskip('tensorflow_datasets')
    pytest.importorskip('array_record')

    class VaeJaxTinyImages(tfds.core.GeneratorBasedBuilder):
        VERSION = tfds.core.Version('1.0.0')

        def _info(self):
            # Tensor, not Image: encoding an Image feature needs TensorFlow.
            image = tfds.features.Tensor(shape=(4, 3, 1), dtype=np.uint8)
            return tfds.core.DatasetInfo(
                builder=self, features=tfds.features.FeaturesDict({'image': image})
            )

        def _split_generators(self, dl_manager):
            del dl_manager
            return {'train': self._generate_examples(20, 0), 'test': self._generate_examples(5, 1)}

        def _generate_examples(self, n, seed):
            images = np.random.default_rng(seed).integers(0, 256, (n, 4, 3, 1), dtype=np.uint8)
            for i, image in enumerate(images):
                yield i, {'image': image}

    root = tmp_path_factory.mktemp('tfds')
    try:
        VaeJaxTinyImages(data_dir=str(root), file_format='array_record').download_and_prepare()
    except Exception as e:  # noqa: BLE001 - any failure is an environment limit, not data.py
        pytest.skip(f'cannot prepare a TFDS dataset offline here: {e}')
    return root


def test_tfds_array_record_roundtrip(tiny_tfds):
    s = data.load('tfds:vae_jax_tiny_images', str(tiny_tfds), valid_size=4)
    assert (s.train.shape, s.valid.shape, s.test.shape) == ((16, 4, 3), (4, 4, 3), (5, 4, 3))
    # TFDS shuffles at prepare time, so compare pixel totals rather than order.
    expect = np.random.default_rng(1).integers(0, 256, (5, 4, 3, 1), dtype=np.uint8)
    np.testing.assert_allclose(s.test.sum() * 255, expect.sum(dtype=np.int64), rtol=1e-6)
    assert len(data.load('tfds:vae_jax_tiny_images', str(tiny_tfds)).valid) == 2


def test_import_is_light():
    """Importing the module must not pull in TFDS or mlxtend (both cost seconds)."""
    code = (
        'import sys, vae_jax.data; '
        'heavy = ("tensorflow_datasets", "mlxtend", "sklearn"); '
        'print(sorted(m for m in heavy if m in sys.modules))'
    )
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run(
        [sys.executable, '-c', code], cwd=root, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == '[]'
