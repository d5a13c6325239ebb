"""Vectorised sweeps: the same numbers as single runs, one compile, clear refusals."""

import jax
import numpy as np
import pytest
from helpers import assert_trees_close, tiny_config

from vae_jax import configuration, runs, train, vectorized

POINTS = [
    {'seed': 0, 'optimizer.learning_rate': 1e-3},
    {'seed': 1, 'optimizer.learning_rate': 1e-3},
    {'seed': 1, 'optimizer.learning_rate': 3e-3, 'beta': 0.5},
]


def _assert_each_point_equals_its_single_run(result, tmp_path):
    for i, c in enumerate(result.configs):
        workdir = tmp_path / f'point{i}'
        train.train_and_evaluate(c, str(workdir))
        assert_trees_close(result.params[i], runs.load_run(str(workdir)).params)


def test_equals_single_runs(tmp_path):
    config = tiny_config()
    dispatches = []
    result = vectorized.train_vectorized(config, POINTS, on_dispatch=lambda: dispatches.append(1))
    assert len(dispatches) == config.num_steps // config.steps_per_dispatch
    assert result.metrics['objective'].shape == (len(POINTS), config.num_steps)
    _assert_each_point_equals_its_single_run(result, tmp_path)
    # The points really differ (seeds and learning rates were applied).
    first = jax.tree.leaves(result.params[0])[0]
    assert not np.allclose(first, jax.tree.leaves(result.params[1])[0])


def test_weight_decay_points_equal_single_runs(tmp_path):
    config = tiny_config(num_steps=10)
    points = [{'optimizer.weight_decay': 0.0}, {'optimizer.weight_decay': 1e-2}]
    result = vectorized.train_vectorized(config, points)
    _assert_each_point_equals_its_single_run(result, tmp_path)


def test_compiles_once(monkeypatch):
    traces = []
    make = vectorized.make_vectorized_multi_step

    def counting(*args, **kwargs):
        fn = make(*args, **kwargs)

        def traced(*a):
            traces.append(1)
            return fn(*a)

        return traced

    monkeypatch.setattr(vectorized, 'make_vectorized_multi_step', counting)
    config = tiny_config(num_steps=20, steps_per_dispatch=5)
    vectorized.train_vectorized(config, [{'seed': 0}, {'seed': 1}])
    assert len(traces) == 1


def test_non_vectorizable_field_is_named():
    with pytest.raises(configuration.ConfigError, match='latent_dim'):
        vectorized.train_vectorized(tiny_config(), [{'latent_dim': 4}, {'latent_dim': 2}])
