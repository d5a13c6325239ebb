"""Tests for vae_jax.estimators: chunked importance-sampled log p(x) on exact pPCA.

``ppca`` (conftest.py) gives exact log p(x) and the exact posterior. Sample ``k``
draws with ``fold_in(key, k)``, so every chunk size sees the same samples and
chunkings can be compared number for number.
"""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vae_jax import estimators, objectives


def _estimator(ppca, encode, num_samples, chunk_size):
    return jax.jit(
        functools.partial(
            estimators.importance_log_likelihood,
            x=jnp.asarray(ppca.x),
            model=objectives.gaussian_latent_model(encode, ppca.decode),
            num_samples=num_samples,
            chunk_size=chunk_size,
        )
    )


@pytest.mark.parametrize('chunk_size', [1, 4, 20])
def test_exact_posterior_gives_exact_log_px_for_any_chunking(ppca, chunk_size):
    """With q = p(z|x) every log weight is log p(x), so any K and chunking give it (1e-3)."""
    got = _estimator(ppca, ppca.exact_encode, 20, chunk_size)(jax.random.key(0))
    assert got.shape == (3,) and got.dtype == jnp.float32
    np.testing.assert_allclose(got, ppca.log_px, atol=1e-3)


def _all_log_weights(ppca, key, num_samples):
    """All K log weights in one call: ``[K, B]``."""
    x = jnp.asarray(ppca.x)
    model = objectives.gaussian_latent_model(ppca.perturbed_encode, ppca.decode)
    return estimators.importance_log_weights(key, x, model, start=0, count=num_samples)


@pytest.mark.parametrize('chunk_size', [1, 3, 4, 12])
def test_chunked_equals_unchunked(ppca, chunk_size):
    """Any chunking gives logsumexp over the same K = 12 log weights (float32 rounding)."""
    key, num_samples = jax.random.key(1), 12
    log_w = jax.jit(_all_log_weights, static_argnums=(0, 2))(ppca, key, num_samples)
    assert log_w.shape == (num_samples, 3)
    assert float(jnp.std(log_w)) > 0.1  # the weights really differ, so the test has teeth
    want = jax.nn.logsumexp(log_w, axis=0) - math.log(num_samples)
    got = _estimator(ppca, ppca.perturbed_encode, num_samples, chunk_size)(key)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-5)


def test_running_estimates_are_the_bounds_of_nested_prefixes(ppca):
    key, num_samples, chunk_size = jax.random.key(5), 12, 4
    running = estimators.running_importance_log_likelihood(
        key,
        jnp.asarray(ppca.x),
        objectives.gaussian_latent_model(ppca.perturbed_encode, ppca.decode),
        num_samples=num_samples,
        chunk_size=chunk_size,
    )
    log_w = _all_log_weights(ppca, key, num_samples)
    assert running.shape == (3, 3)
    for c in range(3):
        k = (c + 1) * chunk_size
        want = jax.nn.logsumexp(log_w[:k], axis=0) - math.log(k)
        np.testing.assert_allclose(running[c], want, rtol=1e-6, atol=1e-5)
        # ... and each prefix is the K-sample estimate on its own.
        alone = _estimator(ppca, ppca.perturbed_encode, k, chunk_size)(key)
        np.testing.assert_allclose(running[c], alone, rtol=1e-6, atol=1e-5)


def test_converges_to_exact_log_px(ppca):
    """Perturbed encoder, K = 5000 in chunks of 500: within 3 standard errors of log p(x).

    The standard error is the delta-method s.e. of log(mean w), std(w) / (sqrt(K) mean(w)),
    from the same 5000 log weights (drawn directly with the same keys). The bias,
    about -s.e.^2 / 2, is negligible at this K.
    """
    key = jax.random.key(2)
    num_samples, chunk_size = 5000, 500
    got = _estimator(ppca, ppca.perturbed_encode, num_samples, chunk_size)(key)

    log_w = _all_log_weights(ppca, key, num_samples)
    w = np.exp(np.asarray(log_w, np.float64) - np.asarray(log_w, np.float64).max(0))
    se = w.std(0) / (math.sqrt(num_samples) * w.mean(0))
    assert np.all(se > 1e-4) and np.all(se < 0.02), se  # proposal is imperfect but usable
    assert np.all(np.abs(got - ppca.log_px) < 3 * se + 1e-4), (got, ppca.log_px, se)


def test_non_divisible_num_samples_raises(ppca):
    with pytest.raises(ValueError, match='multiple of chunk_size'):
        estimators.importance_log_likelihood(
            jax.random.key(0),
            jnp.asarray(ppca.x),
            objectives.gaussian_latent_model(ppca.exact_encode, ppca.decode),
            num_samples=10,
            chunk_size=3,
        )


@pytest.mark.parametrize(
    'num_samples,max_chunk,want',
    [
        (5000, 128, 125),
        (5000, 5000, 5000),
        (12, 5, 4),
        (7, 3, 1),
        (10, 100, 10),
        (1, 1, 1),
        (97, 96, 1),
        (5000, 1000, 1000),
    ],
)
def test_chunk_size_for_is_the_largest_divisor_at_most_max(num_samples, max_chunk, want):
    got = estimators.chunk_size_for(num_samples, max_chunk)
    assert got == want
    assert num_samples % got == 0 and got <= max_chunk


def test_jit_with_static_sizes(ppca):
    """jit with the sizes and callables static: same numbers as eager, one trace."""
    x = jnp.asarray(ppca.x)
    static = ('model', 'num_samples', 'chunk_size')
    traces = []

    def counted(*args, **kwargs):
        traces.append(1)
        return estimators.importance_log_likelihood(*args, **kwargs)

    jitted = jax.jit(counted, static_argnames=static)
    kw = dict(
        model=objectives.gaussian_latent_model(ppca.perturbed_encode, ppca.decode),
        num_samples=8,
        chunk_size=4,
    )
    first = jitted(jax.random.key(3), x, **kw)
    second = jitted(jax.random.key(4), x, **kw)
    assert len(traces) == 1
    assert not np.allclose(first, second)  # a new key gives new draws
    eager = estimators.importance_log_likelihood(jax.random.key(3), x, **kw)
    np.testing.assert_allclose(first, eager, rtol=1e-6, atol=1e-5)
