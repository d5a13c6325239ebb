"""Kingma & Welling (2013), Appendix D: the marginal-likelihood estimator of their Fig. 3.

A harmonic-mean-type estimator from HMC posterior samples (:mod:`vae_jax.hmc`) and a
Gaussian fitted to them; see :func:`hmc_marginal_likelihood` for its bias (upward, or far
downward where a chain misses the posterior mass) and when to trust it (low-dimensional
latents).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from vae_jax import hmc, objectives


def _full_gaussian_log_prob(z: jax.Array, mean: jax.Array, chol: jax.Array) -> jax.Array:
    """log N(z; mean, L L^T) for z ``[S, D]``, mean ``[D]``, chol L ``[D, D]`` -> ``[S]``."""
    diff = z - mean[None]
    white = jax.scipy.linalg.solve_triangular(chol, diff.T, lower=True)  # [D, S]
    log_det = 2.0 * jnp.sum(jnp.log(jnp.diagonal(chol)))
    dim = z.shape[-1]
    return -0.5 * (dim * math.log(2.0 * math.pi) + log_det + jnp.sum(jnp.square(white), axis=0))


def hmc_marginal_likelihood(
    key: jax.Array,
    x: jax.Array,
    model: objectives.LatentModel,
    *,
    num_posterior_samples: int = 1000,
    num_burnin: int = 500,
    step_size: float = 0.05,
    num_leapfrog_steps: int = 10,
    start: str = 'prior',
    start_candidates: int = 1000,
) -> jax.Array:
    """Kingma & Welling (2013), Appendix D, "Marginal likelihood estimator" (their Fig. 3).

    Per example, one HMC chain (blackjax) on p(z|x) ∝ p(x|z) p(z):

    1. after ``num_burnin`` steps (during which the step size is adapted towards 65 %
       acceptance, then frozen so the kept chain is a fixed HMC kernel), keep
       L = ``num_posterior_samples`` states;
    2. fit a density q(z) to them: a full-covariance Gaussian (sample mean and covariance,
       plus 1e-6 I jitter). The paper leaves the estimator open; a Gaussian with the
       fitted covariance follows the posterior's correlations and scale, and in the small
       latent spaces where this estimator is usable (the paper's Fig. 3 uses D <= 3-ish)
       L >> D samples pin the D (D + 1) / 2 covariance entries down;
    3. continue the chain for L new states z_l and return

         log p(x) ~= -( logsumexp_l [log q(z_l) - log p(x|z_l) - log p(z_l)] - log L ),

       the log of (1/L sum_l q(z_l) / (p(x|z_l) p(z_l)))^-1.

    This is a harmonic-mean-type estimator (E_{p(z|x)}[q(z) / p(x, z)] = 1/p(x)): it is
    consistent but biased UPWARD: the mean of the ratios is unbiased for 1/p(x), so by
    Jensen minus its log is above log p(x) in expectation (an upper bound with exact
    posterior samples; the opposite direction to IS and AIS). Its variance is finite only
    if q has lighter tails than the posterior, which a fitted Gaussian guarantees only
    roughly and ever less so as D grows.
    Trust it in low dimensions only; prefer :func:`vae_jax.ais.ais_log_likelihood` otherwise.

    Args:
      key: PRNG key.
      x: ``[B, *event_shape]``.
      model: any latent structure (the chain runs on the flattened latents, D in all).
      num_posterior_samples, num_burnin, num_leapfrog_steps: static sizes.
      start: ``'encoder'``: the chain starts at q(z|x)'s mean (``model.posterior``);
        ``'prior'``: at a draw of p(z).
      start_candidates: with ``'prior'``, the chain starts at the most probable (highest
        p(x, z)) of this many draws of p(z). From one prior draw, a chain on a sharp
        posterior can stay through burn-in and sampling in a region of negligible
        posterior mass (a local maximum of p(x|z), a minor mode of weight w), and the
        estimate is then about log p(x) + log w: far BELOW the truth, the bias above
        reversed. Measured: Fig. 3's MCEM model (N_train = 1,000, 10^7 samples), 100
        test images, mean -182.8 from one draw, -143.8 from the best of 100, -137.3 from
        the best of 1,000, against an AIS lower bound (1,000 steps, 4 chains) of -137.2.
        One chain still sees one mode: on a posterior with several comparable modes the
        estimate stays low by log of the mode's weight
        (tests/test_ais.py::test_appendix_d_chains_start_at_the_best_of_many_prior_draws).

    Returns:
      ``[B]`` estimates of log p(x).
    """
    batch = x.shape[0]
    key_init, key_burn, key_fit, key_est = jax.random.split(key, 4)
    flat = hmc.flat_latents(model, x)
    latent_dim = flat.size
    log_joint = hmc.log_joint_fn(model, flat)
    if start == 'encoder':
        hmc.require_posterior(model)
        z0 = flat.flatten(model.posterior(x).mean(), 1)
    elif start == 'prior':
        z0 = hmc.start_draws(key_init, model, x, start, flat, start_candidates)  # [C, B, D]
        # 100 candidates at a time: all at once holds C decoder outputs per example.
        log_p0 = jax.lax.map(lambda z: jax.vmap(log_joint)(z, x), z0, batch_size=100)  # [C, B]
        z0 = jnp.take_along_axis(z0, jnp.argmax(log_p0, axis=0)[None, :, None], axis=0)[0]
    else:
        raise ValueError(f'start must be one of {hmc.STARTS}, got {start!r}')

    def chain_step(key, state, x_b, eps):
        return hmc.hmc_step(key, state, lambda z: log_joint(z, x_b), eps, num_leapfrog_steps)

    step_all = jax.vmap(chain_step)  # over examples
    init_all = jax.vmap(lambda z, x_b: hmc.blackjax_hmc().init(z, lambda z: log_joint(z, x_b)))

    def burn_body(carry, step_key):
        state, eps, avg_acc = carry
        state, info = step_all(jax.random.split(step_key, batch), state, x, eps)
        eps, avg_acc = hmc.adapt_hmc_step_size(eps, avg_acc, info.acceptance_rate)
        return (state, eps, avg_acc), None

    def sample_body(carry, step_key):
        state, eps = carry
        state, _ = step_all(jax.random.split(step_key, batch), state, x, eps)
        return (state, eps), state.position

    state = init_all(z0, x)
    eps = jnp.full((batch,), step_size, jnp.float32)
    avg_acc = jnp.full((batch,), hmc.TARGET_ACCEPTANCE, jnp.float32)
    (state, eps, _), _ = jax.lax.scan(
        burn_body, (state, eps, avg_acc), jax.random.split(key_burn, num_burnin)
    )
    keys_fit = jax.random.split(key_fit, num_posterior_samples)
    (state, eps), z_fit = jax.lax.scan(sample_body, (state, eps), keys_fit)  # [L, B, D]
    keys_est = jax.random.split(key_est, num_posterior_samples)
    _, z_est = jax.lax.scan(sample_body, (state, eps), keys_est)  # [L, B, D]

    def per_example(z_fit_b, z_est_b, x_b):
        q_mean = jnp.mean(z_fit_b, axis=0)
        cov = jnp.cov(z_fit_b, rowvar=False).reshape(latent_dim, latent_dim)
        chol = jnp.linalg.cholesky(cov + 1e-6 * jnp.eye(latent_dim, dtype=cov.dtype))
        log_q = _full_gaussian_log_prob(z_est_b, q_mean, chol)
        log_p = jax.vmap(log_joint, in_axes=(0, None))(z_est_b, x_b)
        return -(jax.nn.logsumexp(log_q - log_p) - math.log(log_q.shape[0]))

    return jax.vmap(per_example, in_axes=(1, 1, 0))(z_fit, z_est, x)
