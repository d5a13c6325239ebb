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
