"""Helpers shared by the test modules: the tiny config and tree comparisons.

Test modules import these from here (``from helpers import tiny_config``), never from
each other. ``tests/`` is on ``sys.path`` through pytest's rootdir conftest.
"""

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax

from configs import default
from vae_jax import ais, models, objectives, runs

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / 'shared' / 'data'


def tiny_config(**overrides):
    config = default.get_config()
    config.model.hidden_dims = (32,)
    config.latent_dim = 4
    config.batch_size = 32
    config.num_steps = 20
    config.steps_per_dispatch = 5
    config.log_every_steps = 5
    config.eval_every_steps = 10
    config.checkpoint_every_steps = 10
    config.eval_batch_size = 250
    config.eval_num_importance_samples = 4
    config.eval_chunk_size = 2
    for k, v in overrides.items():
        target = config
        *path, last = k.split('.')
        for p in path:
            target = target[p]
        target[last] = v
    return config


def params_of(workdir):
    return runs.load_run(str(workdir))[2]


def assert_trees_equal(a, b):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def assert_trees_close(actual, expected, *, rtol: float = 1e-5, atol: float = 1e-6):
    for x, y in zip(jax.tree.leaves(actual), jax.tree.leaves(expected), strict=True):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=rtol, atol=atol)


def fit_elbo(model, params, x, *, num_steps: int):
    """``params`` after ``num_steps`` of Adam (1e-2) on the 8-sample Monte Carlo ELBO of ``x``.

    For tiny models whose log p(x) a test integrates: fitted, q is close to the posterior
    but not exact, where importance weights have a usable variance.
    """
    tx = optax.adam(1e-2)

    def loss(p, key):
        lm = models.latent_model(model, p)
        terms = objectives.elbo(key, x, lm, num_samples=8, kl_estimator='monte_carlo')
        return -jnp.mean(terms['elbo'])

    def step(carry, key):
        p, state = carry
        updates, state = tx.update(jax.grad(loss)(p, key), state)
        return (optax.apply_updates(p, updates), state), None

    keys = jax.random.split(jax.random.key(2), num_steps)
    fit = jax.jit(lambda p: jax.lax.scan(step, (p, tx.init(p)), keys)[0][0])
    return fit(params)


def bdmc_against_exact(model, exact_log_px, event_shape, *, start: str = 'prior', seed: int = 10):
    """BDMC on 16 examples simulated from ``model`` (200 steps, 8 chains), against exact.

    ``exact_log_px(x) -> [N]``. Returns (mean lower - exact, mean upper - exact, mean
    gap) and the sandwich itself.
    """
    sandwich = ais.bdmc(
        jax.random.key(seed),
        model,
        event_shape=event_shape,
        num_examples=16,
        num_annealing_steps=200,
        num_chains=8,
        start=start,
    )
    exact = exact_log_px(sandwich['x'])
    lower, upper = np.asarray(sandwich['lower']), np.asarray(sandwich['upper'])
    return (lower - exact).mean(), (upper - exact).mean(), (upper - lower).mean(), sandwich


def mean_bounds(model, x, seed: int, reps: int = 400):
    """The ELBO (estimator A), IWAE_5 and IWAE_50 of ``model`` on ``x``, each ``[B]``,
    averaged over ``reps`` draws from ``jax.random.key(seed)`` (their expectations)."""

    def mean_bound(fn):
        keys = jax.random.split(jax.random.key(seed), reps)
        return np.asarray(jnp.mean(jax.vmap(fn)(keys), axis=0))

    elbo = mean_bound(
        lambda k: objectives.elbo(k, x, model, num_samples=1, kl_estimator='monte_carlo')['elbo']
    )
    iwae5 = mean_bound(lambda k: objectives.iwae(k, x, model, num_samples=5)['iwae'])
    iwae50 = mean_bound(lambda k: objectives.iwae(k, x, model, num_samples=50)['iwae'])
    return elbo, iwae5, iwae50
