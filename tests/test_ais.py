"""Tests for vae_jax.ais: AIS, BDMC and the Appendix D estimator on exact pPCA.

``ppca`` (conftest.py) has exact log p(x) (2-D latent, 4-D Gaussian data, B = 3). Every
test uses fixed keys, so the numbers are deterministic; the tolerances are set from the
Monte Carlo spread measured with other keys, stated next to each assertion.
"""

import functools
import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats
from scipy.special import logsumexp

from vae_jax import ais, appendix_d, estimators, likelihoods, objectives


def _ais(ppca, num_annealing_steps, num_chains, encode=None, **kwargs):
    return jax.jit(
        functools.partial(
            ais.ais_log_likelihood,
            x=jnp.asarray(ppca.x),
            model=ppca.model(encode),
            num_annealing_steps=num_annealing_steps,
            num_chains=num_chains,
            start='prior' if encode is None else 'encoder',
            **kwargs,
        )
    )


def _ppca_exact_log_px(ppca, x):
    """log N(x; b, W W^T + s2 I) in float64 for any ``x`` ``[N, Dx]``."""
    w = ppca.w.astype(np.float64)
    cov = w @ w.T + ppca.s2 * np.eye(ppca.x_dim)
    return stats.multivariate_normal(ppca.b, cov).logpdf(np.asarray(x, np.float64))


def _prior_encode(x):
    zeros = jnp.zeros((x.shape[0], 2), jnp.float32)
    return zeros, zeros


@pytest.mark.parametrize('schedule', ['sigmoid', 'linear'])
@pytest.mark.parametrize('num_steps', [1, 2, 7])
def test_schedule_runs_from_zero_to_one(schedule, num_steps):
    betas = ais.annealing_schedule(num_steps, schedule)
    assert betas.shape == (num_steps + 1,)
    np.testing.assert_allclose(betas[[0, -1]], [0.0, 1.0], atol=1e-12)
    assert np.all(np.diff(betas) > 0)


def test_bad_schedule_raises():
    with pytest.raises(ValueError, match='schedule'):
        ais.annealing_schedule(5, 'cosine')


@pytest.mark.parametrize('use_encoder', [False, True])
def test_long_ais_matches_exact_log_px(ppca, use_encoder):
    """T = 500, 32 chains: each example within 0.1 nats of the exact log p(x).

    Measured: log-weight sd ~0.1-0.35 nats at T = 300, so the 32-chain logmeanexp has a
    standard error of ~0.02-0.06; errors seen over 3 keys were <= 0.08 (prior) and <= 0.06
    (encoder). The perturbed encoder (mean +0.4, log-variance +0.6) is a worse-than-exact
    but overdispersed start.
    """
    encode = ppca.perturbed_encode if use_encoder else None
    out = _ais(ppca, 500, 32, encode=encode)(jax.random.key(0))
    assert out['log_px'].shape == (3,) and out['log_weights'].shape == (32, 3)
    assert out['acceptance_rate'].shape == (3,)
    assert np.all(np.isfinite(out['log_weights']))
    # Adapted towards 0.65 but capped at step 0.5, which this wide posterior accepts ~95 %.
    assert np.all(out['acceptance_rate'] > 0.5)
    np.testing.assert_allclose(out['log_px'], ppca.log_px, atol=0.1)


def test_one_step_ais_is_importance_sampling_from_the_prior(ppca):
    """T = 1 (beta 0 -> 1) gives log w = log p(x|z) for z ~ p0 = p(z): plain IS.

    Checked in distribution: the mean log weight equals the closed-form
    E_p(z) log p(x|z) = -Dx/2 log(2 pi s2) - (|x - b|^2 + tr W^T W) / (2 s2), within 4
    standard errors (4096 chains). Grouped into 256 IS estimates of 16 chains, their mean is
    a lower bound much looser (> 0.3 nats below exact on average; measured ~1 nat) than the
    16-chain T = 500 run (within 0.1 on average).
    """
    short = _ais(ppca, 1, 4096)(jax.random.key(1))['log_weights']
    x = ppca.x.astype(np.float64)
    sq = np.sum((x - ppca.b) ** 2, axis=1) + np.sum(ppca.w.astype(np.float64) ** 2)
    expected = -0.5 * ppca.x_dim * math.log(2 * math.pi * ppca.s2) - 0.5 * sq / ppca.s2
    mean, se = np.mean(short, axis=0), np.std(short, axis=0) / math.sqrt(short.shape[0])
    np.testing.assert_array_less(np.abs(mean - expected), 4 * se)

    groups = np.asarray(short, np.float64).reshape(256, 16, 3)
    is_16 = np.mean(jax.nn.logsumexp(groups, axis=1) - math.log(16), axis=0)  # [B]
    long_16 = _ais(ppca, 500, 16)(jax.random.key(2))['log_px']
    assert np.mean(is_16 - ppca.log_px) < -0.3
    assert abs(np.mean(long_16 - ppca.log_px)) < 0.1
    assert np.mean(is_16) < np.mean(long_16) - 0.3


def _bdmc(ppca, num_annealing_steps):
    return jax.jit(
        functools.partial(
            ais.bdmc,
            model=ppca.model(),
            event_shape=(ppca.x_dim,),
            num_examples=8,
            num_annealing_steps=num_annealing_steps,
            num_chains=16,
        )
    )(jax.random.key(3))


def test_bdmc_sandwiches_exact_log_px_and_tightens(ppca):
    """8 simulated examples, 16 chains; averages over examples.

    T = 300: lower <= exact + 0.05 and upper >= exact - 0.05 (measured +0.03 and +0.01
    with another key: both ends are within MC noise of exact), |upper - lower| < 0.2
    (measured -0.02..0.04 over 6 keys). T = 2: the gap is large (measured 0.6-1.6 nats over
    6 keys; 0.3-1.3 at T = 5, -0.3-0.3 at T = 20) and must exceed the T = 300 gap by 0.3.
    """
    long = _bdmc(ppca, 300)
    exact = _ppca_exact_log_px(ppca, long['x'])
    assert long['x'].shape == (8, ppca.x_dim) and long['z'].shape == (8, ppca.z_dim)
    assert np.mean(long['lower'] - exact) <= 0.05
    assert np.mean(long['upper'] - exact) >= -0.05
    long_gap = np.mean(long['upper'] - long['lower'])
    assert abs(long_gap) < 0.2

    # At T = 2 the weights are so spread that one 8-example run can land either bound on the
    # wrong side of exact (seen at T = 5: lower 0.19 above); only the gap is checked there.
    short = _bdmc(ppca, 2)
    assert np.mean(short['upper'] - short['lower']) > long_gap + 0.3


def test_bdmc_checks_event_shape(ppca):
    with pytest.raises(ValueError, match='event'):
        ais.bdmc(
            jax.random.key(0),
            ppca.model(),
            event_shape=(5,),
            num_examples=2,
            num_annealing_steps=2,
            num_chains=2,
        )


@pytest.mark.parametrize('use_encoder', [False, True])
def test_appendix_d_estimator_matches_exact_log_px(ppca, use_encoder):
    """L = 1000 posterior samples, 300 burn-in steps: within 0.05 nats of exact.

    For a Gaussian posterior the fitted Gaussian is nearly the posterior, so the ratio
    q / p(x, z) is nearly constant; measured errors over 3 keys were <= 0.01 nats.
    """
    got = jax.jit(
        functools.partial(
            appendix_d.hmc_marginal_likelihood,
            x=jnp.asarray(ppca.x),
            model=ppca.model(ppca.perturbed_encode),
            num_posterior_samples=1000,
            num_burnin=300,
            step_size=0.05,
            num_leapfrog_steps=10,
            start='encoder' if use_encoder else 'prior',
        )
    )(jax.random.key(4))
    assert got.shape == (3,)
    np.testing.assert_allclose(got, ppca.log_px, atol=0.05)


def test_bernoulli_ais_beats_small_k_importance_sampling():
    """A random linear-logit decoder (2-D latent, 12 binary pixels), 8 simulated examples.

    AIS (T = 200, 16 chains) is finite, at least the K = 5 prior-proposal IS estimate minus
    0.05 on average (measured ~0.5 nats above it), and within 0.1 on average of a K = 20000
    IS estimate, which is near exact in 2-D (measured difference ~0.01).
    """
    rng = np.random.default_rng(0)
    w = jnp.asarray(1.5 * rng.standard_normal((12, 2)), jnp.float32)
    b = jnp.asarray(rng.standard_normal(12), jnp.float32)

    def decode(z):
        logits = jnp.einsum('...k,dk->...d', z, w)
        return likelihoods.Bernoulli(logits + jnp.broadcast_to(b, logits.shape), event_ndim=1)

    model = objectives.gaussian_latent_model(_prior_encode, decode, latent_dim=2)
    _, x = ais.simulate(jax.random.key(5), model, num_examples=8)
    assert set(np.unique(x)) <= {0.0, 1.0}
    out = jax.jit(
        functools.partial(
            ais.ais_log_likelihood,
            model=model,
            num_annealing_steps=200,
            num_chains=16,
        )
    )(jax.random.key(6), x)
    assert np.all(np.isfinite(out['log_weights']))

    def importance(num_samples, chunk_size):
        return jax.jit(
            functools.partial(
                estimators.importance_log_likelihood,
                x=x,
                model=model,
                num_samples=num_samples,
                chunk_size=chunk_size,
            )
        )(jax.random.key(7))

    assert np.mean(out['log_px']) >= np.mean(importance(5, 5)) - 0.05
    assert abs(np.mean(out['log_px'] - importance(20000, 2000))) < 0.1


def test_public_functions_jit_once(ppca):
    """Static sizes closed over: a second key reuses the compiled program."""
    x = jnp.asarray(ppca.x)
    common = dict(model=ppca.model(ppca.perturbed_encode))

    @jax.jit
    @chex.assert_max_traces(n=1)
    def run_ais(key):
        return ais.ais_log_likelihood(
            key, x, num_annealing_steps=3, num_chains=2, start='encoder', **common
        )

    @jax.jit
    @chex.assert_max_traces(n=1)
    def run_bdmc(key):
        return ais.bdmc(
            key,
            event_shape=(ppca.x_dim,),
            num_examples=2,
            num_annealing_steps=3,
            num_chains=2,
            **common,
        )

    @jax.jit
    @chex.assert_max_traces(n=1)
    def run_appendix_d(key):
        return appendix_d.hmc_marginal_likelihood(
            key,
            x,
            num_posterior_samples=10,
            num_burnin=3,
            step_size=0.1,
            num_leapfrog_steps=2,
            **common,
        )

    for seed in range(2):
        key = jax.random.key(seed)
        assert run_ais(key)['log_px'].shape == (3,)
        assert run_bdmc(key)['upper'].shape == (2,)
        assert run_appendix_d(key).shape == (3,)


# ----------------------------------------------------------------------------
# Appendix D on a non-Gaussian posterior: a fixed tanh-MLP Bernoulli decoder.


def _tanh_mlp_bernoulli(seed=4, num_pixels=12, hidden=8, scale=1.5, num_examples=16):
    """2-D latent -> tanh(8) -> 12 Bernoulli logits; x simulated from the model in numpy.

    Returns ``(decode, x, exact_log_px)``: the float32 jax decoder, the binary data
    ``[N, 12]`` and log p(x) ``[N]`` by float64 grid quadrature of p(x|z) p(z) over
    [-8, 8]^2 at spacing 0.05 (the same to 1e-8 at spacing 0.025 and 0.1: the integrand
    is smooth and its mass lies well inside the box).
    """
    rng = np.random.default_rng(seed)
    w1 = (scale * rng.standard_normal((2, hidden))).astype(np.float32)
    b1 = rng.standard_normal(hidden).astype(np.float32)
    w2 = (scale * rng.standard_normal((hidden, num_pixels)) / math.sqrt(hidden)).astype(np.float32)
    b2 = (0.5 * rng.standard_normal(num_pixels)).astype(np.float32)

    def logits64(z):
        h = np.tanh(z @ w1.astype(np.float64) + b1.astype(np.float64))
        return h @ w2.astype(np.float64) + b2.astype(np.float64)

    data_rng = np.random.default_rng(100 + seed)
    z = data_rng.standard_normal((num_examples, 2))
    p = 1.0 / (1.0 + np.exp(-logits64(z)))
    x = (data_rng.random((num_examples, num_pixels)) < p).astype(np.float64)

    h = 0.05
    grid = np.arange(-8.0, 8.0 + h / 2, h)
    z1, z2 = np.meshgrid(grid, grid, indexing='ij')
    zz = np.stack([z1.ravel(), z2.ravel()], axis=1)
    logits = logits64(zz)  # [G, 12]
    log_px_z = x @ logits.T - np.sum(np.logaddexp(0.0, logits), axis=1)  # [N, G]
    log_pz = -0.5 * np.sum(zz**2, axis=1) - math.log(2.0 * math.pi)
    exact = logsumexp(log_px_z + log_pz, axis=1) + 2.0 * math.log(h)

    w1j, b1j, w2j, b2j = (jnp.asarray(a) for a in (w1, b1, w2, b2))

    def decode(z):
        hid = jnp.tanh(z @ w1j + jnp.broadcast_to(b1j, (*z.shape[:-1], hidden)))
        out = hid @ w2j
        return likelihoods.Bernoulli(out + jnp.broadcast_to(b2j, out.shape), event_ndim=1)

    return decode, jnp.asarray(x, jnp.float32), exact


def test_appendix_d_estimator_on_a_non_gaussian_posterior():
    """Exact log p(x) by quadrature; the posterior is skewed, so the fitted Gaussian is not it.

    On the grid, KL(posterior || its moment-matched Gaussian) is 0.08-0.20 nats per example
    (mean 0.12) and chi^2(Gaussian || posterior) <= 0.43, so the ratio q / p(x, z) has a
    finite, small variance. Measured with L = 1000, 300 burn-in, over keys 0-5: per-example
    error sd 0.034, |error| <= 0.11; the mean error over the 16 examples was -0.011..+0.011
    (its standard error ~0.008). The estimate is log of the inverse of an unbiased estimate
    of 1/p(x), so its error is >= 0 in expectation (Jensen): the mean error must not be
    significantly negative. Averaging the log-ratios instead of log-mean-exp'ing them would
    add KL(posterior || q) >= 0 per example: a mean error of +0.13..+0.16 over keys 0-2
    (per example up to 0.48), far outside the 0.04 allowed.
    """
    decode, x, exact = _tanh_mlp_bernoulli()
    got = jax.jit(
        functools.partial(
            appendix_d.hmc_marginal_likelihood,
            model=objectives.gaussian_latent_model(_prior_encode, decode, latent_dim=2),
            num_posterior_samples=1000,
            num_burnin=300,
            step_size=0.05,
            num_leapfrog_steps=10,
        )
    )(jax.random.key(0), x)
    err = np.asarray(got, np.float64) - exact
    assert err.shape == (16,)
    np.testing.assert_array_less(np.abs(err), 0.15)
    stderr = err.std(ddof=1) / math.sqrt(err.size)
    assert err.mean() > -3.0 * stderr, (err.mean(), stderr)
    assert abs(err.mean()) < 0.04, err.mean()


def test_appendix_d_chains_start_at_the_best_of_many_prior_draws():
    """A 1-D posterior with traps: p(x|z) = N(x; sin(4z), 0.02^2), x in [-0.9, 0.9].

    Every z where sin(4z) = x is a sharp mode, and every peak of sin(4z) a local maximum
    of p(x|z) (a trap, e^-300 below the modes for x = 0.5). Exact log p(x) by quadrature
    (spacing 1e-4 over [-9, 9]). Measured, mean error over the 16 examples for keys 0-2:
    one prior draw per chain (start_candidates=1) -84.2, -90.9, -31.2 (one example
    -713); the best of 1,000 draws -1.05, -0.94, -0.97 (range -1.45..+2.2): the traps
    are gone, the remaining ~1 nat is one chain seeing one of several comparable modes.
    """
    sigma, freq = 0.02, 4.0

    def decode(z):
        loc = jnp.sin(freq * z)
        return likelihoods.DiagonalGaussian(loc, jnp.full_like(loc, 2 * math.log(sigma)))

    def encode(x):
        zeros = jnp.zeros((x.shape[0], 1), jnp.float32)
        return zeros, zeros

    x = np.linspace(-0.9, 0.9, 16).reshape(16, 1)
    h = 1e-4
    grid = np.arange(-9.0, 9.0, h)
    log_px_z = -0.5 * ((x - np.sin(freq * grid)[None]) / sigma) ** 2 - math.log(sigma)
    log_pz = -0.5 * grid[None] ** 2
    exact = logsumexp(log_px_z + log_pz, axis=1) + math.log(h) - math.log(2.0 * math.pi)
    model = objectives.gaussian_latent_model(encode, decode, latent_dim=1)

    def mean_error(candidates):
        got = jax.jit(
            functools.partial(
                appendix_d.hmc_marginal_likelihood,
                model=model,
                num_posterior_samples=500,
                num_burnin=300,
                start_candidates=candidates,
            )
        )(jax.random.key(0), jnp.asarray(x, jnp.float32))
        return float(np.mean(np.asarray(got, np.float64) - exact))

    assert mean_error(1) < -20.0
    assert -1.6 < mean_error(1000) < 0.0


# --------------------------------------------------------------------------- valid weights
# AIS weights stay valid with step-size adaptation on (adapted kernels would bias E[w]).
#
# A step size adapted from a chain's own acceptances makes each transition depend on the
# chain's past, and E[w] is then no longer Z_T / Z_0. ``vae_jax.ais`` therefore adapts in a
# pilot run whose weights are discarded and runs the weighted chains (forward, and BDMC's
# reverse) with that schedule frozen. These tests check the weights themselves against the
# exact log p(x) of the pPCA model (conftest.py), with adaptation on.


def test_forward_weights_are_unbiased_for_p_x_with_adaptation_on(ppca):
    """E[w / p(x)] = 1: 20,000 one-chain runs on one example, T = 5, from the prior.

    One chain per run makes each run's step sizes follow that chain's own acceptances,
    the case where adapting inside the weighted run couples kernel and state most. The
    pilot's schedule must really adapt (it moves from the initial 0.2), and the weights'
    mean must be within 3 standard errors of 1 (measured 0.994, 0.993 and 1.013, each
    +- 0.010, with keys 0, 1, 2). Note: with Wu et al.'s gentle rule (x1.02 / x0.98 per
    step) adapting inside the weighted run biases E[w] by less than this test resolves
    (measured 1.023 vs 1.021 +- 0.018 with and without, 10^5 runs of T = 20 on a sharper
    model); it checks the weights that ship, and catches any error in the increments.
    """
    num = 20_000
    x = jnp.broadcast_to(jnp.asarray(ppca.x[:1]), (num, ppca.x_dim))
    out = jax.jit(
        functools.partial(
            ais.ais_log_likelihood,
            x=x,
            model=ppca.model(),
            num_annealing_steps=5,
            num_chains=1,
            step_size=0.2,
        )
    )(jax.random.key(0))
    sizes = np.asarray(out['step_sizes'])
    assert sizes.shape == (5, num)
    assert np.ptp(sizes) > 0.01  # adaptation acted, per run and per step
    ratio = np.exp(np.asarray(out['log_weights'][0], np.float64) - ppca.log_px[0])
    mean, se = ratio.mean(), ratio.std(ddof=1) / math.sqrt(num)
    assert abs(mean - 1.0) < 3 * se, (mean, se)


def test_bdmc_bounds_sit_on_their_sides_of_exact_log_px(ppca):
    """At T = 5 both AIS directions are loose, so the sides are clear: 256 simulated
    examples, 4 chains, adaptation on (the reverse chain uses the forward pilot's schedule,
    frozen). Reverse: upper - exact > 0 beyond 3 standard errors; forward: lower - exact < 0
    likewise (measured +0.60..+0.79 +- 0.06 and -0.46..-0.61 +- 0.08..0.11 over keys 1-3)."""
    out = jax.jit(
        functools.partial(
            ais.bdmc,
            model=ppca.model(),
            event_shape=(ppca.x_dim,),
            num_examples=256,
            num_annealing_steps=5,
            num_chains=4,
        )
    )(jax.random.key(1))
    exact = _ppca_exact_log_px(ppca, out['x'])
    for name, sign in (('upper', 1.0), ('lower', -1.0)):
        diff = np.asarray(out[name], np.float64) - exact
        se = diff.std(ddof=1) / math.sqrt(diff.size)
        assert sign * diff.mean() > 3 * se, (name, diff.mean(), se)


def test_reverse_schedule_is_matched_by_target_density():
    """Reverse transition j targets beta_{T-1-j}, tuned forward at t = T - 2 - j."""
    forward = jnp.arange(4.0)[:, None] * jnp.ones((1, 2))  # t = 0..3 target beta_1..beta_4
    np.testing.assert_array_equal(
        np.asarray(ais.reversed_step_sizes(forward))[:, 0], [2.0, 1.0, 0.0, 0.0]
    )
