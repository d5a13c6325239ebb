"""Flax networks: MLP and convolutional encoders (q(z|x) parameters) and decoders (p(x|z)).

The building blocks of the models in :mod:`vae_jax.models`. Networks only map arrays
to distribution parameters (decoders to a :mod:`vae_jax.likelihoods` object); the
objectives live in ``objectives.py``. Data of any event shape is accepted: MLPs flatten
it, the decoder reshapes back to ``event_shape``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from vae_jax import likelihoods

ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    'tanh': jnp.tanh,
    'relu': jax.nn.relu,
    'elu': jax.nn.elu,
    'gelu': jax.nn.gelu,
    'softplus': jax.nn.softplus,
    'swish': jax.nn.swish,
    'leaky_relu': jax.nn.leaky_relu,
    'sigmoid': jax.nn.sigmoid,
}
# How a Gaussian decoder's mean is made from its output: 'identity' for any real data,
# 'sigmoid' for data in [0, 1] (Kingma & Welling 2013, Sec. 5, for Frey Face).
GAUSSIAN_MEANS = ('identity', 'sigmoid')


# Weight initialisers by name (biases start at zero): flax's default LeCun normal, or
# Glorot & Bengio's (2010) uniform, the one Burda et al.'s code uses for tanh layers.
WEIGHT_INITS = ('lecun_normal', 'glorot_uniform')


def _init(init_std: float | None, weight_init: str = 'lecun_normal') -> dict:
    """Initialisers for every layer: ``weight_init`` (``WEIGHT_INITS``) with zero biases,
    or, where ``init_std`` is a number, all parameters ~ N(0, init_std^2).

    The second is Kingma & Welling's (2013, Sec. 5) "initialized by random sampling
    from N(0, 0.01)", weights and biases alike.
    """
    if init_std is not None:
        normal = nn.initializers.normal(init_std)
        return {'kernel_init': normal, 'bias_init': normal}
    if weight_init == 'glorot_uniform':
        return {'kernel_init': nn.initializers.glorot_uniform()}
    if weight_init != 'lecun_normal':
        raise ValueError(f'weight_init must be one of {WEIGHT_INITS}, got {weight_init!r}')
    return {}


def _num_likelihood_params(likelihood: str) -> int:
    return {'bernoulli': 1, 'gaussian': 2}[likelihood]


def _likelihood(
    h: jax.Array, likelihood: str, gaussian_mean: str, min_log_var: float | None, event_ndim: int
) -> likelihoods.Likelihood:
    """Last-axis-stacked decoder outputs -> p(x|z) (``likelihoods``).

    ``gaussian_mean``: see ``GAUSSIAN_MEANS``. ``min_log_var``: a soft floor on the
    Gaussian log-variance, ``floor + softplus(h - floor)``; a learned variance can
    otherwise shrink towards zero on a value that repeats in the data, where the
    density, and so the likelihood, grows without bound. Smooth, so gradients never
    vanish at the floor.
    """
    if likelihood == 'bernoulli':
        return likelihoods.Bernoulli(h[..., 0], event_ndim=event_ndim)
    mean, log_var = h[..., 0], h[..., 1]
    if gaussian_mean == 'sigmoid':
        mean = jax.nn.sigmoid(mean)
    elif gaussian_mean != 'identity':
        raise ValueError(f'gaussian_mean must be one of {GAUSSIAN_MEANS}, got {gaussian_mean!r}')
    if min_log_var is not None:
        log_var = min_log_var + jax.nn.softplus(log_var - min_log_var)
    return likelihoods.DiagonalGaussian(mean, log_var, event_ndim=event_ndim)


class GaussianMLP(nn.Module):
    """h ``[..., d_in]`` -> (mean, log_var) ``[..., latent_dim]`` of a diagonal Gaussian."""

    latent_dim: int
    hidden_dims: Sequence[int]
    activation: str = 'tanh'
    init_std: float | None = None
    weight_init: str = 'lecun_normal'

    @nn.compact
    def __call__(self, h: jax.Array) -> tuple[jax.Array, jax.Array]:
        act = ACTIVATIONS[self.activation]
        init = _init(self.init_std, self.weight_init)
        for width in self.hidden_dims:
            h = act(nn.Dense(width, **init)(h))
        # One matmul for both heads is cheaper than two and spans the same family.
        out = nn.Dense(2 * self.latent_dim, name='head', **init)(h)
        return out[..., : self.latent_dim], out[..., self.latent_dim :]


class MLPEncoder(GaussianMLP):
    """x ``[B, *event_shape]`` -> (mean, log_var), each ``[B, latent_dim]``: a
    :class:`GaussianMLP` on the flattened x."""

    def __call__(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        return super().__call__(x.reshape(x.shape[0], -1))


class MLPDecoder(nn.Module):
    """z ``[..., D]`` -> p(x|z), parameters ``[..., *event_shape]`` (``likelihoods``)."""

    event_shape: tuple[int, ...]
    hidden_dims: Sequence[int]
    activation: str = 'tanh'
    likelihood: str = 'bernoulli'
    gaussian_mean: str = 'identity'
    min_log_var: float | None = None

    init_std: float | None = None
    weight_init: str = 'lecun_normal'

    @nn.compact
    def __call__(self, z: jax.Array) -> likelihoods.Likelihood:
        act = ACTIVATIONS[self.activation]
        init = _init(self.init_std, self.weight_init)
        h = z
        for width in self.hidden_dims:
            h = act(nn.Dense(width, **init)(h))
        n = _num_likelihood_params(self.likelihood)
        h = nn.Dense(math.prod(self.event_shape) * n, name='head', **init)(h)
        h = h.reshape(*z.shape[:-1], *self.event_shape, n)
        return _likelihood(
            h, self.likelihood, self.gaussian_mean, self.min_log_var, len(self.event_shape)
        )


def _as_image(x: jax.Array, event_shape: tuple[int, ...]) -> jax.Array:
    """``[B, H, W]`` or ``[B, H, W, C]`` -> ``[B, H, W, C]``."""
    return x[..., None] if len(event_shape) == 2 else x


class ConvEncoder(nn.Module):
    """Two stride-2 convolutions then a dense head; for ``(H, W[, C])`` images."""

    latent_dim: int
    channels: Sequence[int] = (32, 64)
    hidden_dims: Sequence[int] = (256,)
    activation: str = 'relu'

    init_std: float | None = None
    weight_init: str = 'lecun_normal'

    @nn.compact
    def __call__(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        if x.ndim not in (3, 4):
            raise ValueError(f'conv encoder needs images [B, H, W(, C)], got shape {x.shape}')
        act = ACTIVATIONS[self.activation]
        init = _init(self.init_std, self.weight_init)
        h = _as_image(x, x.shape[1:])
        for c in self.channels:
            h = act(nn.Conv(c, (3, 3), strides=(2, 2), padding='SAME', **init)(h))
        h = h.reshape(h.shape[0], -1)
        for width in self.hidden_dims:
            h = act(nn.Dense(width, **init)(h))
        out = nn.Dense(2 * self.latent_dim, name='head', **init)(h)
        return out[:, : self.latent_dim], out[:, self.latent_dim :]


class ConvDecoder(nn.Module):
    """Dense to a coarse feature map, stride-2 transposed convs, crop to the image."""

    event_shape: tuple[int, ...]
    channels: Sequence[int] = (64, 32)
    hidden_dims: Sequence[int] = (256,)
    activation: str = 'relu'
    likelihood: str = 'bernoulli'
    gaussian_mean: str = 'identity'
    min_log_var: float | None = None

    init_std: float | None = None
    weight_init: str = 'lecun_normal'

    @nn.compact
    def __call__(self, z: jax.Array) -> likelihoods.Likelihood:
        act = ACTIVATIONS[self.activation]
        init = _init(self.init_std, self.weight_init)
        height, width = self.event_shape[:2]
        out_channels = self.event_shape[2] if len(self.event_shape) == 3 else 1
        scale = 2 ** len(self.channels)
        h0, w0 = -(-height // scale), -(-width // scale)
        batch_shape = z.shape[:-1]
        h = z.reshape(-1, z.shape[-1])
        for w in self.hidden_dims:
            h = act(nn.Dense(w, **init)(h))
        h = act(nn.Dense(h0 * w0 * self.channels[0], **init)(h)).reshape(
            -1, h0, w0, self.channels[0]
        )
        for c in self.channels:
            h = act(nn.ConvTranspose(c, (3, 3), strides=(2, 2), padding='SAME', **init)(h))
        n = _num_likelihood_params(self.likelihood)
        h = nn.Conv(out_channels * n, (3, 3), padding='SAME', name='head', **init)(h)
        h = h[:, :height, :width, :].reshape(*batch_shape, *self.event_shape, n)
        return _likelihood(
            h, self.likelihood, self.gaussian_mean, self.min_log_var, len(self.event_shape)
        )
