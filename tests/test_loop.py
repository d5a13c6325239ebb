"""The one training loop: its batch sources agree, and sweeps get its checkpoints and signals."""

import json
import os
import signal
import threading

import jax
import numpy as np
import pytest
from helpers import assert_trees_close, assert_trees_equal, params_of, tiny_config

from vae_jax import loop, runs, sweep_points, train, vectorized


def _run(config, source, num_steps: int):
    """num_steps steps of the tiny model fed by ``source``: (final state, metrics [n])."""
    setup = train.build(config, (6,), train.Streams(config.seed), binary_data=True)
    multi = jax.jit(loop.make_multi_step(setup.step, source.gather))
    dispatch = loop.dispatcher(multi, source, jax.random.key_data(train.Streams(config.seed).train))
    return dispatch(setup.state, 0, num_steps)


def test_host_chunks_give_the_steps_of_the_device_resident_data():
    config = tiny_config(batch_size=8, latent_dim=2, **{'model.hidden_dims': (5,)})
    x = (np.random.default_rng(0).random((50, 6)) > 0.5).astype(np.float32)
    device_state, device_metrics = _run(config, loop.DeviceBatches(x, 0, 8), 13)
    # 3 steps per chunk: 13 steps arrive as chunks of 3, 3, 3, 3, 1.
    chunked = loop.HostBatches(x, 0, 8, chunk_bytes=3 * 8 * x[0].nbytes)
    assert [c[0].shape[0] for c in chunked.chunks(0, 13)] == [3, 3, 3, 3, 1]
    host_state, host_metrics = _run(config, chunked, 13)
    assert device_metrics['elbo'].shape == host_metrics['elbo'].shape == (13,)
    np.testing.assert_allclose(host_metrics['elbo'], device_metrics['elbo'], rtol=1e-5)
    assert_trees_close(host_state.params, device_state.params)
    assert int(host_state.step) == 13


def test_host_batches_carry_the_example_indices_only_when_asked():
    x = np.arange(40, dtype=np.float32).reshape(20, 2)
    ((batch, idx),) = loop.HostBatches(x, 3, 4).chunks(0, 2)
    np.testing.assert_array_equal(idx, loop.batch_indices(3, 20, 4, 0, 2))
    np.testing.assert_array_equal(batch, x[np.asarray(idx)])
    ((batch, idx),) = loop.HostBatches(x, 3, 4, with_indices=False).chunks(0, 2)
    assert idx is None and batch.shape == (2, 4, 2)


def test_a_failing_host_batch_source_raises_in_the_training_thread():
    class Broken(np.ndarray):
        def __getitem__(self, item):
            raise OSError('disk gone')

    x = np.zeros((20, 2), np.float32).view(Broken)
    with pytest.raises(OSError, match='disk gone'):
        list(loop.HostBatches(x, 0, 4).chunks(0, 2))


def test_next_stop_lands_on_every_periodic_boundary():
    config = tiny_config(
        num_steps=30, steps_per_dispatch=100, log_every_steps=7, eval_every_steps=0,
        checkpoint_every_steps=10, image_every_steps=0,
    )  # fmt: skip
    stops, step = [], 0
    while step < config.num_steps:
        step = loop.next_stop(step, config)
        stops.append(step)
    assert stops == [7, 10, 14, 20, 21, 28, 30]


def test_vectorized_workdirs_log_validation_and_resume_to_the_same_numbers(tmp_path):
    config = tiny_config(num_steps=10, log_every_steps=5, eval_every_steps=5)
    points = sweep_points.product(seed=[0, 1])
    full = [str(tmp_path / 'full' / sweep_points.point_name(p)) for p in points]
    vectorized.train_vectorized(config, points, workdirs=full)
    logged = [json.loads(line) for line in open(os.path.join(full[1], 'metrics.jsonl'))]
    assert [r['step'] for r in logged if 'valid_elbo' in r] == [5, 10]

    # Half, then the rest from the points' checkpoints: the same parameters.
    split = [str(tmp_path / 'split' / sweep_points.point_name(p)) for p in points]
    vectorized.train_vectorized(config, points, num_steps=5, workdirs=split)
    assert all(runs.load_run(w).step == 5 for w in split)
    dispatches = []
    vectorized.train_vectorized(
        config, points, workdirs=split, on_dispatch=lambda: dispatches.append(1)
    )
    assert len(dispatches) == 1  # Steps 6..10 only: it resumed.
    for a, b in zip(full, split, strict=True):
        assert_trees_equal(params_of(a), params_of(b))


def test_vectorized_points_at_different_steps_are_refused(tmp_path):
    config = tiny_config(num_steps=10, checkpoint_every_steps=5)
    points = sweep_points.product(seed=[0, 1])
    workdirs = [str(tmp_path / sweep_points.point_name(p)) for p in points]
    train.train_and_evaluate(sweep_points.apply(config, points[0]), workdirs[0])
    with pytest.raises(vectorized.UnequalSteps, match=r'different steps \[0, 10\]'):
        vectorized.train_vectorized(config, points, workdirs=workdirs)


def test_sigterm_stops_a_vectorized_sweep_with_a_checkpoint_per_point(tmp_path, monkeypatch):
    if threading.current_thread() is not threading.main_thread():
        pytest.skip('signal handlers can only be installed from the main thread')
    config = tiny_config(num_steps=20, checkpoint_every_steps=20)
    points = sweep_points.product(seed=[0, 1])
    workdirs = [str(tmp_path / 'run' / sweep_points.point_name(p)) for p in points]
    original, sent = loop.batch_indices, []

    def batch_indices(seed, num_train, batch_size, start, count):
        if start == 5 and not sent:  # Steps 6..10: the signal arrives during this dispatch.
            sent.append(1)
            os.kill(os.getpid(), signal.SIGTERM)
        return original(seed, num_train, batch_size, start, count)

    monkeypatch.setattr(loop, 'batch_indices', batch_indices)
    with pytest.raises(loop.TrainingInterrupted, match='SIGTERM at step 10') as err:
        vectorized.train_vectorized(config, points, workdirs=workdirs)
    assert err.value.exit_code == 143 and 'checkpoints/ of each point under' in str(err.value)
    assert all(runs.load_run(w).step == 10 for w in workdirs)
    monkeypatch.undo()
    result = vectorized.train_vectorized(config, points, workdirs=workdirs)
    alone = vectorized.train_vectorized(config, points)
    for i in range(len(points)):
        assert_trees_equal(result.params[i], alone.params[i])
