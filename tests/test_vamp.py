"""The VampPrior (Tomczak & Welling 2018) through the model interface.

log p(x) is checked against quadrature on a 2-D latent space with 6 binary pixels and 3
pseudo-inputs, after fitting the model to 5 examples (so that q is close, not exact).
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import bdmc_against_exact, fit_elbo, mean_bounds, tiny_config

from vae_jax import ais, appendix_d, configuration, estimators, evaluate, models, objectives, train

EVENT = (6,)
GRID = jnp.linspace(-8.0, 8.0, 321)


@pytest.fixture(scope='module')
def tiny_model():
    model = models.build_vae(
        architecture='mlp',
        event_shape=EVENT,
        latent_dim=2,
        hidden_dims=(8,),
        activation='tanh',
        likelihood='bernoulli',
        num_pseudo_inputs=3,
    )
    params = models.init_params(model, jax.random.key(0), EVENT, 2)
    x = (jax.random.uniform(jax.random.key(1), (5, *EVENT)) < 0.4).astype(jnp.float32)
    return model, fit_elbo(model, params, x, num_steps=300), x


def _grid_log_prior(model, params):
    z = jnp.stack(jnp.meshgrid(GRID, GRID, indexing='ij'), -1).reshape(-1, 2)
    log_pz = model.apply({'params': params}, z, method=model.log_prior)
    return z, log_pz, 2 * jnp.log(GRID[1] - GRID[0])


def test_the_prior_is_a_normalised_mixture_of_the_pseudo_input_posteriors(tiny_model):
    model, params, _ = tiny_model
    _, log_pz, log_cell = _grid_log_prior(model, params)
    np.testing.assert_allclose(float(jnp.exp(jax.nn.logsumexp(log_pz) + log_cell)), 1.0, atol=1e-3)
    # Not N(0, I): the prior is learned.
    z = jnp.asarray([[0.0, 0.0], [1.5, -1.0]])
    vamp = model.apply({'params': params}, z, method=model.log_prior)
    std = -jnp.log(2 * jnp.pi) - 0.5 * jnp.sum(z**2, -1)
    assert float(jnp.max(jnp.abs(vamp - std))) > 0.1


def test_importance_sampling_reaches_the_exact_log_likelihood(tiny_model):
    model, params, x = tiny_model
    z, log_pz, log_cell = _grid_log_prior(model, params)
    log_px_z = model.apply({'params': params}, z[:, None, :], method=model.decode).log_prob(x)
    exact = np.asarray(jax.nn.logsumexp(log_px_z + log_pz[:, None], axis=0) + log_cell)
    lm = models.latent_model(model, params)
    est = estimators.importance_log_likelihood(
        jax.random.key(3), x, lm, num_samples=20_000, chunk_size=1000
    )
    np.testing.assert_allclose(np.asarray(est), exact, atol=0.02)

    elbo, iwae5, iwae50 = mean_bounds(lm, x, seed=4)
    assert np.all(elbo < iwae5) and np.all(iwae5 < iwae50) and np.all(iwae50 < exact + 0.01)
    assert np.all(exact - elbo > 0.02)


def _exact_log_px(model, params, x):
    z, log_pz, log_cell = _grid_log_prior(model, params)
    log_px_z = model.apply({'params': params}, z[:, None, :], method=model.decode).log_prob(x)
    return np.asarray(jax.nn.logsumexp(log_px_z + log_pz[:, None], axis=0) + log_cell)


@pytest.mark.parametrize('start', ['prior', 'encoder'])
def test_ais_bdmc_and_appendix_d_reach_the_exact_log_likelihood(tiny_model, start):
    """The MCMC estimators through the interface, from the learned prior or from q(z|x).

    AIS, T = 200, 16 chains (keys 0-2): from the prior each example within 0.15 (mean
    error -0.007..+0.002), from the encoder within 0.025 (mean -0.002..+0.012). BDMC, 16
    simulated examples, 8 chains (keys 10-12): lower - exact -0.023..+0.019, upper - exact
    -0.041..+0.013 on average. Appendix D (L = 1000; its chain forgets the start, so both
    starts give the same numbers after burn-in): each example within 0.055.
    """
    model, params, x = tiny_model
    exact = _exact_log_px(model, params, x)
    lm = models.latent_model(model, params)
    run_ais = jax.jit(
        functools.partial(
            ais.ais_log_likelihood, model=lm, num_annealing_steps=200, num_chains=16, start=start
        )
    )
    err = np.asarray(run_ais(jax.random.key(0), x)['log_px']) - exact
    assert np.all(np.abs(err) < (0.2 if start == 'prior' else 0.05)), err
    assert abs(err.mean()) < 0.05

    lower, upper, gap, _ = bdmc_against_exact(
        lm, lambda xs: _exact_log_px(model, params, xs), EVENT, start=start
    )
    assert lower < 0.05 and upper > -0.07 and abs(gap) < 0.1

    app_d = appendix_d.hmc_marginal_likelihood(
        jax.random.key(20), x, lm, num_burnin=300, start=start
    )
    np.testing.assert_allclose(np.asarray(app_d), exact, atol=0.08)


def test_no_closed_form_kl_and_gradients_reach_the_pseudo_inputs(tiny_model):
    model, params, x = tiny_model
    lm = models.latent_model(model, params)
    assert not lm.analytic_kl
    with pytest.raises(ValueError, match='closed-form KL'):
        objectives.elbo(jax.random.key(0), x, lm, kl_estimator='analytic')

    def loss(p):
        terms = objectives.iwae(jax.random.key(5), x, models.latent_model(model, p), num_samples=5)
        return -jnp.mean(terms['iwae'])

    grads = jax.grad(loss)(params)
    for path, g in jax.tree_util.tree_leaves_with_path(grads):
        assert np.all(np.isfinite(g)), path
        assert np.any(g != 0), path
    assert grads['pseudo_inputs'].shape == (3, *EVENT)


def test_prior_samples_come_from_the_mixture(tiny_model):
    model, params, _ = tiny_model
    z = models.sample_prior(model, params, jax.random.key(6), 20_000)
    assert z.shape == (20_000, 2)
    mean, log_var = model.apply({'params': params}, method=model.pseudo_input_posteriors)
    want_mean = jnp.mean(mean, axis=0)
    np.testing.assert_allclose(np.asarray(jnp.mean(z, axis=0)), np.asarray(want_mean), atol=0.05)
    x = model.apply({'params': params}, z[:7], method=model.decode).sample(jax.random.key(7))
    assert x.shape == (7, *EVENT)


def _vamp_config(**overrides):
    config = tiny_config(
        **{'model.prior': 'vamp', 'model.num_pseudo_inputs': 5, 'kl_estimator': 'monte_carlo'}
    )
    for k, v in overrides.items():
        config[k] = v
    return config


def test_trains_and_evaluates_end_to_end(tmp_path):
    results = train.train_and_evaluate(_vamp_config(), str(tmp_path))
    assert np.isfinite(results['test_elbo']) and np.isfinite(results['test_log_likelihood'])
    assert results['test_log_likelihood'] > results['test_elbo'] - 1.0
    sandwich = evaluate.evaluate_run(
        str(tmp_path),
        method='ais',
        num_importance_samples=2,
        ais_steps=5,
        bdmc_examples=2,
        max_examples=8,
        batch_size=8,
        write=False,
    )
    assert sandwich['ais_start'] == 'encoder'  # q(z|x) is one Gaussian: a closed-form start.
    assert np.isfinite(sandwich['log_likelihood']) and np.isfinite(sandwich['bdmc']['gap'])


@pytest.mark.parametrize(
    'field, value, message',
    [
        ('kl_estimator', 'analytic', 'config.kl_estimator'),
        ('algorithm', 'mcem', 'config.algorithm'),
    ],
)
def test_settings_the_vamp_prior_cannot_have_are_refused(field, value, message):
    with pytest.raises(configuration.ConfigError, match=message):
        configuration.validate(_vamp_config(**{field: value}))
