"""Posterior diagnostics: per-dimension KL, active units, I(x; z), KL(q(z) || p(z))."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vae_jax import diagnostics, distributions, models

COLLAPSED = (1, 4)


def encoder_with_collapsed_dims(latent_dim=6, collapsed=COLLAPSED):
    """A random MLP encoder whose head gives mean 0, log-variance 0 on ``collapsed``.

    Zeroing those columns of the head's kernel and bias makes q(z_i|x) = N(0, 1) = p(z_i)
    for every x: exactly what a collapsed unit is.
    """
    model = models.build_vae(
        architecture='mlp',
        event_shape=(5, 3),
        latent_dim=latent_dim,
        hidden_dims=(16,),
        activation='tanh',
        likelihood='bernoulli',
    )
    params = models.init_params(model, jax.random.key(0), (5, 3), latent_dim)
    head = params['encoder']['head']
    cols = np.array([*collapsed, *(latent_dim + c for c in collapsed)])
    head['kernel'] = head['kernel'].at[:, cols].set(0.0)
    # Give the active units a visible spread: scale up their mean columns.
    active = np.array([i for i in range(latent_dim) if i not in collapsed])
    head['kernel'] = head['kernel'].at[:, active].multiply(4.0)
    head['bias'] = head['bias'].at[cols].set(0.0)
    x = jax.random.bernoulli(jax.random.key(1), 0.5, (400, 5, 3)).astype(jnp.float32)
    return model.apply({'params': params}, x, method=model.encode)


def test_collapsed_dimensions_are_found_exactly():
    mean, log_var = encoder_with_collapsed_dims()
    kl = np.asarray(diagnostics.kl_per_dimension(mean, log_var))
    num_active, variance = diagnostics.active_units(mean)
    assert kl.shape == (6,) and variance.shape == (6,)
    np.testing.assert_array_equal(kl[list(COLLAPSED)], 0.0)
    np.testing.assert_array_equal(np.asarray(variance)[list(COLLAPSED)], 0.0)
    active = [i for i in range(6) if i not in COLLAPSED]
    assert np.all(kl[active] > 0.01)
    assert num_active == 4
    assert set(np.flatnonzero(np.asarray(variance) > 0.01)) == set(active)


def test_kl_per_dimension_sums_to_the_mean_analytic_kl():
    mean, log_var = encoder_with_collapsed_dims()
    total = distributions.gaussian_kl_to_std_normal(mean, log_var)
    np.testing.assert_allclose(
        np.sum(diagnostics.kl_per_dimension(mean, log_var)), np.mean(total), rtol=1e-5
    )


def test_fully_collapsed_posterior_has_no_information_and_no_prior_mismatch():
    zeros = jnp.zeros((300, 3))
    out = diagnostics.aggregate_posterior_terms(jax.random.key(0), zeros, zeros, 1000)
    # q(z|x) = q(z) = p(z) for every x: both integrands are exactly 0 sample by sample.
    assert abs(out['mutual_information']) < 1e-5
    assert abs(out['aggregate_kl']) < 1e-5


def test_near_deterministic_encoder_has_information_log_n():
    n = 50
    mean = 10.0 * jax.random.normal(jax.random.key(0), (n, 2))  # well separated
    log_var = jnp.full((n, 2), math.log(1e-4))
    out = diagnostics.aggregate_posterior_terms(jax.random.key(1), mean, log_var, 1000)
    # Each z identifies its x, so I(x; z) = H(x) = log N up to the overlap of the mixtures.
    assert out['mutual_information_max'] == pytest.approx(math.log(n))
    assert out['mutual_information'] == pytest.approx(math.log(n), abs=1e-3)
    # q(z) is a set of spikes: far from N(0, I).
    assert out['aggregate_kl'] > 5.0


def test_elbo_surgery_identity_holds():
    """E_x KL(q(z|x) || p) = I(x; z) + KL(q(z) || p) (Hoffman & Johnson 2016)."""
    mean, log_var = encoder_with_collapsed_dims()
    out = diagnostics.aggregate_posterior_terms(jax.random.key(2), mean, log_var, 4000)
    mean_kl = float(np.mean(distributions.gaussian_kl_to_std_normal(mean, log_var)))
    total = out['mutual_information'] + out['aggregate_kl']
    se = math.hypot(out['mutual_information_stderr'], out['aggregate_kl_stderr'])
    # The two Monte Carlo terms share their samples; 4 standard errors of each is generous.
    assert abs(total - mean_kl) < 4 * se + 1e-3


def test_posterior_diagnostics_is_json_ready():
    import json

    mean, log_var = encoder_with_collapsed_dims()
    out = diagnostics.posterior_diagnostics(jax.random.key(0), mean, log_var, 200)
    assert out['active_units'] == 4
    assert len(out['kl_per_dimension']) == 6
    json.dumps(out)
