"""The hierarchical model (Burda et al. 2016's stochastic layers) through the model interface.

Its log p(x) is checked against quadrature on a model small enough to integrate (two
latent layers of 2 and 1 units, 6 binary pixels): the bounds must order ELBO <= IWAE_K
<= log p(x), and importance sampling must reach log p(x).
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import bdmc_against_exact, fit_elbo, mean_bounds, tiny_config

from vae_jax import (
    ais,
    appendix_d,
    configuration,
    distributions,
    estimators,
    evaluate,
    hmc,
    models,
    objectives,
    train,
)

EVENT = (6,)


@pytest.fixture(scope='module')
def tiny_model():
    """A two-layer model (z_1: 2 units, z_2: 1 unit) fitted for 500 steps to 5 examples.

    Fitted, because at a random initialisation q(z|x) is so unlike the posterior that
    importance weights have no usable variance; after fitting q is close but not exact
    (the ELBO stays 0.15-0.35 nats below log p(x)).
    """
    model = models.build_vae(
        architecture='hierarchical',
        event_shape=EVENT,
        latent_dim=2,
        hidden_dims=(8,),
        activation='tanh',
        likelihood='bernoulli',
        upper_latent_dims=(1,),
        upper_hidden_dims=((4,),),
        init_std=0.7,
    )
    params = models.init_params(model, jax.random.key(0), EVENT, 1)
    x = (jax.random.uniform(jax.random.key(1), (5, *EVENT)) < 0.4).astype(jnp.float32)
    return model, fit_elbo(model, params, x, num_steps=500), x


def _exact_log_px(model, params, x) -> np.ndarray:
    """log p(x) by quadrature: z_2 on a 1-D grid, z_1 on a 2-D grid."""
    g2 = jnp.linspace(-7.0, 7.0, 141)
    g1 = jnp.linspace(-10.0, 10.0, 201)
    z1 = jnp.stack(jnp.meshgrid(g1, g1, indexing='ij'), -1).reshape(-1, 2)  # [G1, 2]
    apply = lambda *a, **k: model.apply({'params': params}, *a, **k)  # noqa: E731
    mean, log_var = apply(g2[:, None], method=lambda m, z: m.down[0](z))  # [G2, 2]
    log_p_z1_given_z2 = distributions.diag_gaussian_log_prob(
        z1[:, None, :], mean[None], log_var[None]
    )  # [G1, G2]
    log_p_z2 = distributions.std_normal_log_prob(g2[:, None])
    d2, d1 = g2[1] - g2[0], g1[1] - g1[0]
    log_p_z1 = jax.nn.logsumexp(log_p_z1_given_z2 + log_p_z2[None], axis=1) + jnp.log(d2)
    log_px_z1 = apply((z1[:, None, :], None), method=lambda m, z: m.decode(z)).log_prob(x)
    return np.asarray(jax.nn.logsumexp(log_px_z1 + log_p_z1[:, None], axis=0) + 2 * jnp.log(d1))


def test_quadrature_integrates_the_prior_to_one(tiny_model):
    model, params, _ = tiny_model
    # With p(x|z) = 1 the quadrature is the prior's mass: the grid covers it.
    g2 = jnp.linspace(-7.0, 7.0, 141)
    g1 = jnp.linspace(-10.0, 10.0, 201)
    z1 = jnp.stack(jnp.meshgrid(g1, g1, indexing='ij'), -1).reshape(-1, 2)
    mean, log_var = model.apply({'params': params}, g2[:, None], method=lambda m, z: m.down[0](z))
    lp = distributions.diag_gaussian_log_prob(z1[:, None, :], mean[None], log_var[None])
    lp = lp + distributions.std_normal_log_prob(g2[:, None])[None]
    mass = jnp.exp(jax.nn.logsumexp(lp)) * (g2[1] - g2[0]) * (g1[1] - g1[0]) ** 2
    np.testing.assert_allclose(float(mass), 1.0, atol=1e-3)


def test_importance_sampling_reaches_the_exact_log_likelihood(tiny_model):
    model, params, x = tiny_model
    exact = _exact_log_px(model, params, x)
    lm = models.latent_model(model, params)
    est = estimators.importance_log_likelihood(
        jax.random.key(3), x, lm, num_samples=20_000, chunk_size=1000
    )
    # Measured: |IS - quadrature| <= 0.017 at K = 20,000 (0.004 at K = 200,000).
    np.testing.assert_allclose(np.asarray(est), exact, atol=0.04)


def test_bounds_are_ordered_below_the_exact_log_likelihood(tiny_model):
    model, params, x = tiny_model
    exact = _exact_log_px(model, params, x)
    lm = models.latent_model(model, params)

    elbo, iwae5, iwae50 = mean_bounds(lm, x, seed=3)
    # Gaps well above the Monte Carlo error (400 repetitions) at this model.
    assert np.all(elbo < iwae5 - 0.01) and np.all(iwae5 < iwae50 - 0.005)
    assert np.all(iwae50 < exact + 0.01)
    assert np.all(exact - elbo > 0.05)  # q is not the posterior: the ELBO is not tight.


def test_mcmc_sees_the_latents_as_one_vector_per_example(tiny_model):
    """HMC runs on (z_1, z_2) flattened; the round trip and the log joint are exact."""
    model, params, x = tiny_model
    lm = models.latent_model(model, params)
    flat = hmc.flat_latents(lm, x)
    z = lm.sample_posterior(jax.random.key(0), x, 3).z  # leaves [3, 5, d_l]
    v = flat.flatten(z, 2)
    assert flat.size == 3 and v.shape == (3, 5, 3)
    one = flat.unflatten(v[1, 2])
    for leaf, back in zip(z, one, strict=True):
        np.testing.assert_array_equal(back, leaf[1, 2][None])
    want = lm.decode(one).log_prob(x[2:3]) + lm.log_prior(one)
    got = hmc.log_joint_fn(lm, flat)(v[1, 2], x[2])
    np.testing.assert_allclose(float(got), float(want[0]), rtol=1e-6)


def test_ais_bdmc_and_appendix_d_reach_the_exact_log_likelihood(tiny_model):
    """The MCMC estimators through the interface, on flattened (z_1, z_2) (3 units).

    The hierarchical posterior has no closed-form density, so AIS anneals from the prior
    and refuses the encoder start. AIS, T = 200, 16 chains: mean error over the 5
    examples measured -0.033, -0.026, +0.019 (keys 0-2), each example within 0.13. BDMC
    on 16 simulated examples (8 chains): lower - exact -0.089..+0.007, upper - exact
    +0.001..+0.016 on average (keys 10-12). Appendix D (L = 1000, biased upward): mean
    error +0.035 and +0.066 (keys 20, 21), each example within 0.14.
    """
    model, params, x = tiny_model
    exact = _exact_log_px(model, params, x)
    lm = models.latent_model(model, params)
    run_ais = jax.jit(
        functools.partial(ais.ais_log_likelihood, model=lm, num_annealing_steps=200, num_chains=16)
    )
    err = np.asarray(run_ais(jax.random.key(0), x)['log_px']) - exact
    assert abs(err.mean()) < 0.08 and np.all(np.abs(err) < 0.2), err

    lower, upper, gap, sandwich = bdmc_against_exact(
        lm, lambda xs: _exact_log_px(model, params, xs), EVENT
    )
    assert jax.tree.map(jnp.shape, sandwich['z']) == ((16, 2), (16, 1))
    assert lower < 0.05 and upper > -0.05 and gap < 0.15

    app_d = appendix_d.hmc_marginal_likelihood(jax.random.key(20), x, lm, num_burnin=300)
    err = np.asarray(app_d) - exact
    assert -0.05 < err.mean() < 0.15 and np.all(np.abs(err) < 0.25), err

    with pytest.raises(ValueError, match='LatentModel.posterior'):
        ais.ais_log_likelihood(
            jax.random.key(0), x, lm, num_annealing_steps=2, num_chains=2, start='encoder'
        )


def test_no_closed_form_kl_is_claimed(tiny_model):
    model, params, x = tiny_model
    lm = models.latent_model(model, params)
    assert not lm.analytic_kl
    with pytest.raises(ValueError, match='closed-form KL'):
        objectives.elbo(jax.random.key(0), x, lm, kl_estimator='analytic')


def test_gradients_are_finite_and_reach_every_parameter(tiny_model):
    model, params, x = tiny_model

    def loss(p):
        lm = models.latent_model(model, p)
        return -jnp.mean(objectives.iwae(jax.random.key(4), x, lm, num_samples=5)['iwae'])

    grads = jax.grad(loss)(params)
    for path, g in jax.tree_util.tree_leaves_with_path(grads):
        assert np.all(np.isfinite(g)), path
        assert np.any(g != 0), path


def test_the_k_sample_elbo_gradient_has_the_one_sample_expectation(tiny_model):
    """E[grad ELBO_k] = E[grad ELBO_1]: k i.i.d. draws change the noise, not the mean.

    (experiments/iwae/README.md: the two-layer VAE k = 50 run collapsed where k = 1 did
    not; this says the objective is not why.) Each parameter's difference of means is
    scored by its standard error; a k-dependent weight or draws that are not the
    one-sample draws would move the mean of the squared scores far above 1.
    """
    model, params, x = tiny_model

    def objective(p, key, k):
        lm = models.latent_model(model, p)
        out = objectives.elbo(key, x, lm, num_samples=k, kl_estimator='monte_carlo')
        return jnp.mean(out['objective'])

    def draws(k, n, seed):
        keys = jax.random.split(jax.random.key(seed), n)
        fn = jax.jit(
            jax.vmap(jax.value_and_grad(objective), in_axes=(None, 0, None)), static_argnums=2
        )
        values, grads = fn(params, keys, k)
        flat = jnp.concatenate([g.reshape(n, -1) for g in jax.tree.leaves(grads)], axis=1)
        return np.asarray(values, np.float64), np.asarray(flat, np.float64)

    v1, g1 = draws(1, 8000, 0)
    vk, gk = draws(20, 400, 1)
    z_value = (v1.mean() - vk.mean()) / np.sqrt(v1.var() / v1.size + vk.var() / vk.size)
    assert abs(z_value) < 4, z_value
    se2 = g1.var(0) / g1.shape[0] + gk.var(0) / gk.shape[0]
    live = se2 > 0
    assert live.sum() > 0.9 * live.size  # Every parameter's gradient is noisy.
    z2 = (g1.mean(0) - gk.mean(0))[live] ** 2 / se2[live]
    # A mean of ~P chi-square(1) draws: 1 +- sqrt(2 / P) (P ~ 130 here).
    assert np.mean(z2) < 1.6, np.mean(z2)


def test_prior_samples_have_the_data_shape(tiny_model):
    model, params, _ = tiny_model
    z = models.sample_prior(model, params, jax.random.key(5), 7)
    assert [leaf.shape for leaf in z] == [(7, 2), (7, 1)]
    x = model.apply({'params': params}, z, method=model.decode).sample(jax.random.key(6))
    assert x.shape == (7, *EVENT) and set(np.unique(np.asarray(x))) <= {0.0, 1.0}


def _hierarchical_config(**overrides):
    config = tiny_config(
        **{
            'model.architecture': 'hierarchical',
            'model.hidden_dims': (16,),
            'latent_dim': 4,
            'kl_estimator': 'monte_carlo',
        }
    )
    config.model.upper_latent_dims = (2,)
    config.model.upper_hidden_dims = ((8,),)
    for k, v in overrides.items():
        config[k] = v
    return config


def test_trains_and_evaluates_end_to_end(tmp_path):
    config = _hierarchical_config(objective='iwae', num_samples=3)
    results = train.train_and_evaluate(config, str(tmp_path))
    assert np.isfinite(results['test_elbo']) and np.isfinite(results['test_log_likelihood'])
    assert results['test_log_likelihood'] > results['test_elbo'] - 1.0
    # Every estimator of `python -m vae_jax.evaluate` takes the model.
    common = dict(max_examples=8, batch_size=8, write=False)
    is_ = evaluate.evaluate_run(str(tmp_path), method='is', num_importance_samples=50, **common)
    sandwich = evaluate.evaluate_run(
        str(tmp_path),
        method='ais',
        num_importance_samples=2,
        ais_steps=5,
        bdmc_examples=2,
        **common,
    )
    app_d = evaluate.evaluate_run(
        str(tmp_path), method='appendix_d', num_importance_samples=20, **common
    )
    assert sandwich['ais_start'] == 'prior'  # No closed-form q(z|x) density to start from.
    for result in (is_, sandwich, app_d):
        assert np.isfinite(result['log_likelihood'])
    assert np.isfinite(sandwich['bdmc']['gap'])
    assert is_['diagnostics']['active_units_per_layer'] is not None


@pytest.mark.parametrize(
    'field, value, message',
    [
        ('kl_estimator', 'analytic', 'config.kl_estimator'),
        ('algorithm', 'wake_sleep', 'config.algorithm'),
    ],
)
def test_settings_a_hierarchical_model_cannot_have_are_refused(field, value, message):
    config = _hierarchical_config(**{field: value})
    with pytest.raises(configuration.ConfigError, match=message):
        configuration.validate(config)


def test_layer_fields_need_the_hierarchical_architecture():
    config = tiny_config()
    config.model.upper_latent_dims = (2,)
    with pytest.raises(configuration.ConfigError, match='config.model.upper_latent_dims'):
        configuration.validate(config)
    config = _hierarchical_config()
    config.model.upper_hidden_dims = ()
    with pytest.raises(configuration.ConfigError, match='config.model.upper_hidden_dims'):
        configuration.validate(config)
