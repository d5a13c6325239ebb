"""Data-parallel training and device-spread sweeps on 4 simulated CPU devices.

These need ``XLA_FLAGS=--xla_force_host_platform_device_count=4`` before jax starts;
``tests/test_parallel.py`` runs this folder in such a process. Run alone:

  XLA_FLAGS=--xla_force_host_platform_device_count=4 python -m pytest tests/multidevice
"""

import json

import jax
import numpy as np
import pytest
from helpers import assert_trees_close, assert_trees_equal, params_of, tiny_config

from vae_jax import configuration, loop, parallel, train, vectorized

pytestmark = pytest.mark.skipif(
    jax.device_count() < 4,
    reason='needs 4 devices; tests/test_parallel.py runs this folder with '
    'XLA_FLAGS=--xla_force_host_platform_device_count=4',
)


def _train_metrics(workdir):
    with open(workdir / 'metrics.jsonl') as f:
        rows = [json.loads(line) for line in f]
    return [(r['step'], r['train_elbo']) for r in rows if 'train_elbo' in r]


@pytest.mark.parametrize('optimizer', ['sgd', 'adam'])
def test_equals_one_device(tmp_path, optimizer):
    config = tiny_config(**{'optimizer.name': optimizer, 'optimizer.learning_rate': 1e-3})
    one = train.train_and_evaluate(config, str(tmp_path / 'one'))
    config.data_parallel = True
    four = train.train_and_evaluate(config, str(tmp_path / 'four'))
    # Same noise for every example however the batch is split (partitionable threefry):
    # the per-step bound and the final numbers agree to float tolerance.
    steps_one, elbo_one = zip(*_train_metrics(tmp_path / 'one'), strict=True)
    steps_four, elbo_four = zip(*_train_metrics(tmp_path / 'four'), strict=True)
    assert steps_one == steps_four
    np.testing.assert_allclose(elbo_four, elbo_one, rtol=1e-5)
    for key in ('test_elbo', 'test_log_likelihood', 'valid_elbo'):
        np.testing.assert_allclose(four[key], one[key], rtol=1e-5)
    if optimizer == 'sgd':
        # Adam divides by sqrt(v) + eps, which turns float noise in near-zero gradients
        # into visible parameter differences; SGD shows the parameters themselves agree.
        assert_trees_close(params_of(tmp_path / 'four'), params_of(tmp_path / 'one'), atol=1e-7)


def test_batch_is_split_and_gradients_all_reduced():
    config = tiny_config(data_parallel=True)
    dp = parallel.DataParallel(config.batch_size)
    batches = dp.global_batches(np.zeros((5, config.batch_size, 784), np.float32))
    assert len(batches.addressable_shards) == 4
    assert batches.sharding.shard_shape(batches.shape) == (5, config.batch_size // 4, 784)

    streams = train.Streams(config.seed)
    setup = train.build(config, (784,), streams, binary_data=False)
    state = dp.replicate(setup.state)
    multi = jax.jit(
        loop.make_multi_step(setup.step, loop.HostBatches.gather), out_shardings=dp.replicated
    )
    key_data = dp.replicate(jax.random.key_data(streams.train))
    hlo = multi.lower(state, None, (batches, None), key_data).compile().as_text()
    assert 'all-reduce' in hlo  # The per-device gradients are summed across devices.
    new_state, _ = multi(state, None, (batches, None), key_data)
    leaf = jax.tree.leaves(new_state.params)[0]
    assert leaf.sharding.is_fully_replicated and len(leaf.sharding.device_set) == 4


def test_batch_size_must_split_over_devices(tmp_path):
    config = tiny_config(data_parallel=True, batch_size=30)
    with pytest.raises(configuration.ConfigError, match=r'batch_size=30.*4 devices'):
        train.train_and_evaluate(config, str(tmp_path / 'run'))


def test_resume_is_bitwise(tmp_path):
    config = tiny_config(data_parallel=True)
    train.train_and_evaluate(config, str(tmp_path / 'whole'))
    half = tiny_config(data_parallel=True, num_steps=10)
    train.train_and_evaluate(half, str(tmp_path / 'split'))
    train.train_and_evaluate(config, str(tmp_path / 'split'))
    assert_trees_equal(params_of(tmp_path / 'whole'), params_of(tmp_path / 'split'))


def test_vectorised_points_spread_over_devices():
    config = tiny_config()
    points = [{'seed': s} for s in range(4)]
    spread = vectorized.train_vectorized(config, points)
    leaf = jax.tree.leaves(spread.state.params)[0]
    assert len(leaf.sharding.device_set) == 4
    assert leaf.sharding.shard_shape(leaf.shape)[0] == 1  # One point per device.
    alone = vectorized.train_vectorized(config, points, devices=jax.devices()[:1])
    for i in range(len(points)):
        assert_trees_close(spread.params[i], alone.params[i])
