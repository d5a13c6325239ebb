"""Tests for vae_jax.distributions: scipy references, extreme inputs, KL and sampling.

References are computed in float64 numpy/scipy; the library runs in float32, so
comparisons use rtol 1e-5 with a small atol for values near zero.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import special, stats

from vae_jax import distributions, likelihoods, objectives

RTOL = 1e-5
ATOL = 1e-5


def _sum_last(x: np.ndarray, event_ndim: int) -> np.ndarray:
    return x.sum(axis=tuple(range(-event_ndim, 0))) if event_ndim else x


def _random(seed: int, shape: tuple[int, ...], scale: float = 1.0) -> np.ndarray:
    return scale * np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


# ----------------------------------------------------------------------------
# Log-densities against scipy.


@pytest.mark.parametrize('event_ndim', [0, 1, 2])
def test_diag_gaussian_log_prob_matches_scipy(event_ndim):
    x, mean, log_var = (_random(s, (3, 4, 5)) for s in (0, 1, 2))
    got = distributions.diag_gaussian_log_prob(x, mean, log_var, event_ndim)
    want = _sum_last(
        stats.norm.logpdf(x.astype(np.float64), mean, np.exp(0.5 * log_var.astype(np.float64))),
        event_ndim,
    )
    assert got.shape == (3, 4, 5)[: 3 - event_ndim]
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize('event_ndim', [0, 1, 2])
def test_std_normal_log_prob_matches_scipy(event_ndim):
    z = _random(3, (3, 4, 5), scale=2.0)
    got = distributions.std_normal_log_prob(z, event_ndim)
    want = _sum_last(stats.norm.logpdf(z.astype(np.float64)), event_ndim)
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize('event_ndim', [0, 1, 2])
def test_bernoulli_log_prob_matches_scipy(event_ndim):
    logits = _random(4, (3, 4, 5), scale=3.0)
    x = (np.random.default_rng(5).random((3, 4, 5)) < 0.5).astype(np.float32)
    got = distributions.bernoulli_log_prob(x, logits, event_ndim)
    want = _sum_last(
        stats.bernoulli.logpmf(x, special.expit(logits.astype(np.float64))), event_ndim
    )
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL)


def test_bernoulli_log_prob_exact_at_extreme_logits():
    # Exact limit: x * l - softplus(l); softplus(+1e4) = 1e4, softplus(-1e4) = 0 in any precision.
    logits = np.array([1e4, -1e4, 1e4, -1e4, 1e4, -1e4], np.float32)
    x = np.array([1.0, 0.0, 0.0, 1.0, 0.3, 0.3], np.float32)
    got = distributions.bernoulli_log_prob(x, logits, event_ndim=0)
    want = np.array([0.0, 0.0, -1e4, -1e4, -0.7e4, -0.3e4])
    assert np.all(np.isfinite(got))
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)


def test_diag_gaussian_log_prob_finite_at_extreme_log_var():
    x = np.array([[0.5, -1.0, 0.0, 2.0]], np.float32)
    mean = np.zeros_like(x)
    log_var = np.array([[50.0, 50.0, -50.0, -50.0]], np.float32)
    got = distributions.diag_gaussian_log_prob(x, mean, log_var, event_ndim=0)
    x64, lv64 = x.astype(np.float64), log_var.astype(np.float64)
    want = -0.5 * (np.log(2 * np.pi) + lv64 + x64**2 * np.exp(-lv64))  # -5.4e21 for x=2, lv=-50
    assert np.all(np.isfinite(got))
    np.testing.assert_allclose(got, want, rtol=RTOL)


# ----------------------------------------------------------------------------
# Analytic KL.


def test_kl_matches_monte_carlo():
    """KL(q || N(0, I)) from the closed form vs the mean of log q(z) - log p(z), z ~ q.

    200k draws; the tolerance is 4 Monte Carlo standard errors of that mean.
    """
    mean = jnp.array([[0.5, -1.0, 0.0], [2.0, 0.3, -0.7]])
    log_var = jnp.array([[0.0, -1.0, 0.8], [-2.0, 0.5, 0.1]])
    n = 200_000
    z = distributions.sample_diag_gaussian(jax.random.key(0), mean, log_var, n)
    log_ratio = distributions.diag_gaussian_log_prob(z, mean, log_var)
    log_ratio = log_ratio - distributions.std_normal_log_prob(z)
    mc, se = jnp.mean(log_ratio, axis=0), jnp.std(log_ratio, axis=0) / np.sqrt(n)
    analytic = distributions.gaussian_kl_to_std_normal(mean, log_var)
    # Hand value for row 0: 0.5 * sum(var + mean^2 - 1 - log_var).
    np.testing.assert_allclose(
        analytic[0], 0.5 * (0.25 + (np.exp(-1) + 1 - 1 + 1) + (np.exp(0.8) - 1 - 0.8)), rtol=RTOL
    )
    assert np.all(se < 0.01)
    assert np.all(np.abs(mc - analytic) < 4 * se), (mc, analytic, se)


def test_kl_of_standard_normal_to_itself_is_zero():
    zeros = jnp.zeros((2, 5))
    assert np.array_equal(distributions.gaussian_kl_to_std_normal(zeros, zeros), np.zeros(2))
    assert np.array_equal(distributions.gaussian_kl_per_dim(zeros, zeros), np.zeros((2, 5)))


def test_kl_per_dim_sums_to_total_and_is_nonnegative():
    mean, log_var = _random(6, (3, 7), scale=2.0), _random(7, (3, 7), scale=2.0)
    per_dim = distributions.gaussian_kl_per_dim(mean, log_var)
    total = distributions.gaussian_kl_to_std_normal(mean, log_var)
    assert per_dim.shape == (3, 7) and total.shape == (3,)
    np.testing.assert_allclose(per_dim.sum(-1), total, rtol=RTOL)
    assert np.all(per_dim >= 0)


# ----------------------------------------------------------------------------
# Reparameterised sampling.


def test_sample_shapes_under_strict_rank_promotion():
    """``[B, D]`` params with ``num_samples`` give ``[S, B, D]`` without implicit rank promotion.

    conftest.py sets ``jax_numpy_rank_promotion='raise'``, so a bare ``[B, D] * [S, B, D]``
    inside the library fails here; the log-density of ``[S, B, D]`` samples under ``[B, D]``
    params must be ``[S, B]``.
    """
    mean, log_var = jnp.zeros((2, 3)), jnp.zeros((2, 3))
    assert distributions.sample_diag_gaussian(jax.random.key(0), mean, log_var).shape == (2, 3)
    z = distributions.sample_diag_gaussian(jax.random.key(0), mean, log_var, 7)
    assert z.shape == (7, 2, 3)
    assert distributions.diag_gaussian_log_prob(z, mean, log_var).shape == (7, 2)
    assert distributions.bernoulli_log_prob(jnp.zeros((2, 3)), z).shape == (7, 2)


def test_sample_moments():
    """Sample mean and variance of 100k draws within 4 standard errors of mean and exp(log_var)."""
    mean = jnp.array([[1.0, -2.0, 0.0]])
    log_var = jnp.array([[0.0, 1.5, -3.0]])
    n = 100_000
    z = distributions.sample_diag_gaussian(jax.random.key(1), mean, log_var, n)
    var = np.exp(np.asarray(log_var))
    se_mean = np.sqrt(var / n)
    se_var = var * np.sqrt(2.0 / n)  # Gaussian: Var(s^2) ~= 2 var^2 / n
    assert np.all(np.abs(z.mean(0) - mean) < 4 * se_mean)
    assert np.all(np.abs(z.var(0) - var) < 4 * se_var)


def test_sample_gradients_flow_to_mean_and_log_var():
    mean = jnp.array([[0.3, -0.4]])
    log_var = jnp.array([[0.2, -1.0]])
    key = jax.random.key(2)

    def f(m, lv):
        return jnp.sum(distributions.sample_diag_gaussian(key, m, lv))

    g_mean, g_log_var = jax.grad(f, argnums=(0, 1))(mean, log_var)
    # z = m + exp(lv / 2) * eps: dz/dm = 1, dz/dlv = exp(lv / 2) * eps / 2 = (z - m) / 2.
    np.testing.assert_array_equal(g_mean, np.ones((1, 2)))
    z = distributions.sample_diag_gaussian(key, mean, log_var)
    np.testing.assert_allclose(g_log_var, 0.5 * (z - mean), rtol=RTOL)
    assert np.all(g_log_var != 0)

    # d/dmean of the sample average of z (an estimate of E[z] = mean) is exactly 1.
    def avg(m):
        return jnp.mean(distributions.sample_diag_gaussian(key, m, log_var, 1000)[:, 0, 0])

    assert jax.grad(avg)(mean)[0, 0] == pytest.approx(1.0, rel=1e-6)


def test_log_q_from_the_noise_is_exact_where_sigma_is_tiny_next_to_the_mean():
    """log q(z|x) from eps, not from (z - mean) / sigma (which cancels in float32).

    At log_var = -30 (sigma = 3e-7) and mean = 3, z = mean + sigma * eps rounds to within
    a float32 ulp of the mean (2.4e-7, about sigma), so (z - mean) / sigma is eps rounded to
    ~1: about 0.16 nats per dimension wrong. The noise form is exact. Checked on the
    sampler and through the importance weights and the Monte Carlo KL that use it.
    """
    mean = jnp.full((2, 8), 3.0, jnp.float32)
    log_var = jnp.full((2, 8), -30.0, jnp.float32)
    key = jax.random.key(0)
    eps = np.asarray(jax.random.normal(key, (5, 2, 8), jnp.float32), np.float64)
    exact = -0.5 * np.sum(np.log(2 * np.pi) - 30.0 + eps**2, axis=-1)  # [5, 2], float64

    z, log_q = distributions.sample_diag_gaussian_with_log_prob(key, mean, log_var, 5)
    np.testing.assert_allclose(np.asarray(log_q), exact, atol=1e-4)
    from_z = np.asarray(distributions.diag_gaussian_log_prob(z, mean, log_var))
    assert np.max(np.abs(from_z - exact)) > 0.1  # The route the noise form replaces.

    def encode(x):
        return mean, log_var

    def decode(z):
        return likelihoods.Bernoulli(jnp.zeros((*z.shape[:-1], 3), jnp.float32), event_ndim=1)

    x = jnp.zeros((2, 3), jnp.float32)
    terms = objectives.log_importance_weights(
        key, x, objectives.gaussian_latent_model(encode, decode), num_samples=5
    )
    np.testing.assert_allclose(np.asarray(terms['log_qz']), exact, atol=1e-4)
    mc = objectives.elbo(
        key,
        x,
        objectives.gaussian_latent_model(encode, decode),
        num_samples=5,
        kl_estimator='monte_carlo',
    )
    log_pz = np.asarray(distributions.std_normal_log_prob(z), np.float64)
    np.testing.assert_allclose(np.asarray(mc['kl']), np.mean(exact - log_pz, axis=0), atol=1e-3)
