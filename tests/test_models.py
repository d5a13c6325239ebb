"""Shapes and wiring of the encoder/decoder modules."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vae_jax import likelihoods, models


@pytest.mark.parametrize('architecture', ['mlp', 'conv'])
@pytest.mark.parametrize('event_shape', [(28, 28), (28, 20), (12, 10, 3)])
@pytest.mark.parametrize('likelihood', ['bernoulli', 'gaussian'])
def test_output_shapes(architecture, event_shape, likelihood):
    model = models.build_vae(
        architecture=architecture,
        event_shape=event_shape,
        latent_dim=3,
        hidden_dims=(16,),
        activation='relu',
        likelihood=likelihood,
        conv_channels=(4, 8),
    )
    params = models.init_params(model, jax.random.key(0), event_shape, 3)
    x = jnp.ones((5, *event_shape))
    mean, log_var = model.apply({'params': params}, x, method=model.encode)
    assert mean.shape == log_var.shape == (5, 3)
    z = jnp.zeros((7, 5, 3))  # [S, B, D]: a sample axis in front.
    p_x = model.apply({'params': params}, z, method=model.decode)
    if likelihood == 'bernoulli':
        assert isinstance(p_x, likelihoods.Bernoulli)
        out = (p_x.logits,)
    else:
        assert isinstance(p_x, likelihoods.DiagonalGaussian)
        out = (p_x.loc, p_x.log_var)
    assert p_x.event_ndim == len(event_shape)
    for o in out:
        assert o.shape == (7, 5, *event_shape)


def test_mlp_takes_flat_data_of_any_size():
    model = models.build_vae(
        architecture='mlp',
        event_shape=(37,),
        latent_dim=2,
        hidden_dims=(8, 8),
        activation='tanh',
        likelihood='bernoulli',
    )
    params = models.init_params(model, jax.random.key(0), (37,), 2)
    assert params['encoder']['Dense_0']['kernel'].shape == (37, 8)
    assert params['decoder']['head']['kernel'].shape == (8, 37)
    # Two hidden layers each side, plus a head.
    assert len(params['encoder']) == 3 and len(params['decoder']) == 3


def _gaussian_decoder_out(**kw):
    model = models.build_vae(
        architecture='mlp',
        event_shape=(6,),
        latent_dim=2,
        hidden_dims=(8,),
        activation='relu',
        likelihood='gaussian',
        **kw,
    )
    params = models.init_params(model, jax.random.key(1), (6,), 2)
    p_x = model.apply(
        {'params': params},
        100.0 * jax.random.normal(jax.random.key(2), (50, 2)),
        method=model.decode,
    )
    return np.asarray(p_x.loc), np.asarray(p_x.log_var)


def test_gaussian_mean_sigmoid_in_unit_interval_identity_unbounded():
    mean, _ = _gaussian_decoder_out(gaussian_mean='sigmoid')
    assert np.all((mean >= 0) & (mean <= 1))
    # The default reaches any real value: with z ~ 100 the linear head leaves [0, 1].
    mean, _ = _gaussian_decoder_out()
    assert mean.min() < -1 and mean.max() > 2


def test_gaussian_log_var_floor():
    _, free = _gaussian_decoder_out()
    _, floored = _gaussian_decoder_out(min_log_var=-1.0)
    assert free.min() < -1  # Without the floor the head goes below it ...
    assert floored.min() >= -1  # ... with it, never (float32 rounds the softplus of -100 to 0);
    # and it only softens values near it:
    np.testing.assert_allclose(floored, -1.0 + np.logaddexp(0.0, free + 1.0), rtol=1e-5)
    far = free > 10
    assert far.any()
    np.testing.assert_allclose(floored[far], free[far], atol=1e-4)


def test_unknown_architecture():
    with pytest.raises(ValueError, match='model.architecture'):
        models.build_vae(
            architecture='transformer',
            event_shape=(4,),
            latent_dim=2,
            hidden_dims=(8,),
            activation='relu',
            likelihood='bernoulli',
        )


def _tanh_bernoulli(architecture, event_shape, latent_dim, width, **kw):
    """A one-hidden-layer tanh model ('hierarchical': a second latent layer of half
    ``latent_dim``) and its initial parameters."""
    upper = architecture == 'hierarchical'
    top = latent_dim // 2 if upper else latent_dim
    model = models.build_vae(
        architecture=architecture,
        event_shape=event_shape,
        latent_dim=latent_dim,
        hidden_dims=(width,),
        activation='tanh',
        likelihood='bernoulli',
        upper_latent_dims=(top,) if upper else (),
        upper_hidden_dims=((width // 10 or width,),) if upper else (),
        **kw,
    )
    return model, models.init_params(model, jax.random.key(0), event_shape, top)


@pytest.mark.parametrize('architecture', ['mlp', 'hierarchical'])
def test_weight_init_glorot_uniform_stays_in_its_bound_lecun_normal_does_not(architecture):
    """Glorot & Bengio's uniform keeps every weight of a d_in -> d_out layer within
    sqrt(6 / (d_in + d_out)); LeCun normal (std 1/sqrt(d_in)) has tails past it."""

    def first_kernel(weight_init):
        _, params = _tanh_bernoulli(architecture, (28, 28), 10, 200, weight_init=weight_init)
        encoder = params['up_0'] if architecture == 'hierarchical' else params['encoder']
        return np.asarray(encoder['Dense_0']['kernel']), params

    bound = np.sqrt(6 / (784 + 200))
    glorot, params = first_kernel('glorot_uniform')
    assert np.abs(glorot).max() <= bound and np.abs(glorot).max() > 0.99 * bound
    assert np.std(glorot) == pytest.approx(bound / np.sqrt(3), rel=0.01)
    lecun, _ = first_kernel('lecun_normal')
    assert np.abs(lecun).max() > bound
    assert np.std(lecun) == pytest.approx(1 / np.sqrt(784), rel=0.02)
    # Every dense kernel, the decoder's too, is Glorot's; biases start at zero.
    for path, leaf in jax.tree_util.tree_leaves_with_path(params):
        name, leaf = jax.tree_util.keystr(path), np.asarray(leaf)
        if name.endswith("['kernel']"):
            assert np.abs(leaf).max() <= np.sqrt(6 / sum(leaf.shape)), name
        else:
            assert not leaf.any(), name


@pytest.mark.parametrize('architecture', ['mlp', 'hierarchical'])
def test_decoder_bias_at_data_mean_makes_the_untrained_decoder_predict_the_mean(architecture):
    model, params = _tanh_bernoulli(architecture, (4, 3), 2, 8)
    mean = np.linspace(0.0, 1.0, 12, dtype=np.float32).reshape(4, 3)
    params = models.with_decoder_bias_at_data_mean(params, mean)
    # The logits at z with a zeroed output kernel are the bias alone.
    params['decoder']['head']['kernel'] = jnp.zeros_like(params['decoder']['head']['kernel'])
    z = jnp.zeros((1, 2)) if architecture == 'mlp' else (jnp.zeros((1, 2)), jnp.zeros((1, 1)))
    p_x = model.apply({'params': params}, z, method=model.decode)
    probs = np.asarray(jax.nn.sigmoid(p_x.logits[0]))
    np.testing.assert_allclose(probs, np.clip(mean, 1e-3, 1 - 1e-3), rtol=1e-5, atol=1e-7)
    assert np.all(np.isfinite(np.asarray(p_x.logits)))  # Pixels always 0 or 1 too.
