"""Shapes and wiring of the encoder/decoder modules."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vae_jax import models


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
    out = model.apply({'params': params}, z, method=model.decode)
    assert len(out) == (1 if likelihood == 'bernoulli' else 2)
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


def test_gaussian_mean_in_unit_interval():
    model = models.build_vae(
        architecture='mlp',
        event_shape=(6,),
        latent_dim=2,
        hidden_dims=(8,),
        activation='relu',
        likelihood='gaussian',
    )
    params = models.init_params(model, jax.random.key(1), (6,), 2)
    mean, _ = model.apply(
        {'params': params},
        100.0 * jax.random.normal(jax.random.key(2), (50, 2)),
        method=model.decode,
    )
    assert np.all((np.asarray(mean) >= 0) & (np.asarray(mean) <= 1))


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
