"""Flax modules: encoders give q(z|x) parameters, decoders give p(x|z) parameters.

Modules only map arrays to distribution parameters; the objectives live in
``objectives.py``. Data of any event shape is accepted: MLPs flatten it, the
decoder reshapes back to ``event_shape``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

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
ARCHITECTURES = ('mlp', 'conv')
# How a Gaussian decoder's mean is made from its output: 'identity' for any real data,
# 'sigmoid' for data in [0, 1] (Kingma & Welling 2013, Sec. 5, for Frey Face).
GAUSSIAN_MEANS = ('identity', 'sigmoid')


def _init(init_std: float | None) -> dict:
    """Initialisers for every layer: flax's defaults, or all parameters ~ N(0, init_std^2).

    The second is Kingma & Welling's (2013, Sec. 5) "initialized by random sampling
    from N(0, 0.01)", weights and biases alike.
    """
    if init_std is None:
        return {}
    normal = nn.initializers.normal(init_std)
    return {'kernel_init': normal, 'bias_init': normal}


def _num_likelihood_params(likelihood: str) -> int:
    return {'bernoulli': 1, 'gaussian': 2}[likelihood]


def _split_likelihood_params(
    h: jax.Array, likelihood: str, gaussian_mean: str, min_log_var: float | None
) -> tuple[jax.Array, ...]:
    """Last-axis-stacked decoder outputs -> the tuple ``objectives`` expects.

    ``gaussian_mean``: see ``GAUSSIAN_MEANS``. ``min_log_var``: a soft floor on the
    Gaussian log-variance, ``floor + softplus(h - floor)``; a learned variance can
    otherwise shrink towards zero on a value that repeats in the data, where the
    density, and so the likelihood, grows without bound. Smooth, so gradients never
    vanish at the floor.
    """
    if likelihood == 'bernoulli':
        return (h[..., 0],)
    mean, log_var = h[..., 0], h[..., 1]
    if gaussian_mean == 'sigmoid':
        mean = jax.nn.sigmoid(mean)
    elif gaussian_mean != 'identity':
        raise ValueError(f'gaussian_mean must be one of {GAUSSIAN_MEANS}, got {gaussian_mean!r}')
    if min_log_var is not None:
        log_var = min_log_var + jax.nn.softplus(log_var - min_log_var)
    return (mean, log_var)


class MLPEncoder(nn.Module):
    """x ``[B, *event_shape]`` -> (mean, log_var), each ``[B, latent_dim]``."""

    latent_dim: int
    hidden_dims: Sequence[int]
    activation: str = 'tanh'

    init_std: float | None = None

    @nn.compact
    def __call__(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        act = ACTIVATIONS[self.activation]
        h = x.reshape(x.shape[0], -1)
        for width in self.hidden_dims:
            h = act(nn.Dense(width, **_init(self.init_std))(h))
        # One matmul for both heads is cheaper than two and spans the same family.
        out = nn.Dense(2 * self.latent_dim, name='head', **_init(self.init_std))(h)
        return out[:, : self.latent_dim], out[:, self.latent_dim :]


class MLPDecoder(nn.Module):
    """z ``[..., D]`` -> tuple of ``[..., *event_shape]`` likelihood parameters."""

    event_shape: tuple[int, ...]
    hidden_dims: Sequence[int]
    activation: str = 'tanh'
    likelihood: str = 'bernoulli'
    gaussian_mean: str = 'identity'
    min_log_var: float | None = None

    init_std: float | None = None

    @nn.compact
    def __call__(self, z: jax.Array) -> tuple[jax.Array, ...]:
        act = ACTIVATIONS[self.activation]
        h = z
        for width in self.hidden_dims:
            h = act(nn.Dense(width, **_init(self.init_std))(h))
        n = _num_likelihood_params(self.likelihood)
        h = nn.Dense(math.prod(self.event_shape) * n, name='head', **_init(self.init_std))(h)
        h = h.reshape(*z.shape[:-1], *self.event_shape, n)
        return _split_likelihood_params(h, self.likelihood, self.gaussian_mean, self.min_log_var)


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

    @nn.compact
    def __call__(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        if x.ndim not in (3, 4):
            raise ValueError(f'conv encoder needs images [B, H, W(, C)], got shape {x.shape}')
        act = ACTIVATIONS[self.activation]
        h = _as_image(x, x.shape[1:])
        for c in self.channels:
            h = act(nn.Conv(c, (3, 3), strides=(2, 2), padding='SAME', **_init(self.init_std))(h))
        h = h.reshape(h.shape[0], -1)
        for width in self.hidden_dims:
            h = act(nn.Dense(width, **_init(self.init_std))(h))
        out = nn.Dense(2 * self.latent_dim, name='head', **_init(self.init_std))(h)
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

    @nn.compact
    def __call__(self, z: jax.Array) -> tuple[jax.Array, ...]:
        act = ACTIVATIONS[self.activation]
        height, width = self.event_shape[:2]
        out_channels = self.event_shape[2] if len(self.event_shape) == 3 else 1
        scale = 2 ** len(self.channels)
        h0, w0 = -(-height // scale), -(-width // scale)
        batch_shape = z.shape[:-1]
        h = z.reshape(-1, z.shape[-1])
        for w in self.hidden_dims:
            h = act(nn.Dense(w, **_init(self.init_std))(h))
        h = act(nn.Dense(h0 * w0 * self.channels[0], **_init(self.init_std))(h)).reshape(
            -1, h0, w0, self.channels[0]
        )
        for c in self.channels:
            h = act(
                nn.ConvTranspose(c, (3, 3), strides=(2, 2), padding='SAME', **_init(self.init_std))(
                    h
                )
            )
        n = _num_likelihood_params(self.likelihood)
        h = nn.Conv(out_channels * n, (3, 3), padding='SAME', name='head', **_init(self.init_std))(
            h
        )
        h = h[:, :height, :width, :].reshape(*batch_shape, *self.event_shape, n)
        return _split_likelihood_params(h, self.likelihood, self.gaussian_mean, self.min_log_var)


class VAE(nn.Module):
    """An encoder and a decoder with separate parameter subtrees.

    ``encode`` and ``decode`` are the two halves; ``__call__`` only exists so that
    ``init`` creates both parameter trees.
    """

    encoder: nn.Module
    decoder: nn.Module

    def encode(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        return self.encoder(x)

    def decode(self, z: jax.Array) -> tuple[jax.Array, ...]:
        return self.decoder(z)

    def __call__(self, x: jax.Array, z: jax.Array) -> tuple[tuple[jax.Array, ...], ...]:
        return self.encode(x), self.decode(z)


def build_vae(
    *,
    architecture: str,
    event_shape: tuple[int, ...],
    latent_dim: int,
    hidden_dims: Sequence[int],
    activation: str,
    likelihood: str,
    conv_channels: Sequence[int] = (32, 64),
    init_std: float | None = None,
    gaussian_mean: str = 'identity',
    min_log_var: float | None = None,
) -> VAE:
    """The VAE for the given settings (the config's ``model`` section and more).

    ``init_std``: None for flax's default initialisers, else every weight and bias
    ~ N(0, init_std^2). ``gaussian_mean``, ``min_log_var``: the Gaussian decoder's
    mean map and log-variance floor (``_split_likelihood_params``).
    """
    gaussian = dict(gaussian_mean=gaussian_mean, min_log_var=min_log_var)
    if architecture == 'mlp':
        encoder = MLPEncoder(latent_dim, tuple(hidden_dims), activation, init_std=init_std)
        decoder = MLPDecoder(
            tuple(event_shape),
            tuple(reversed(hidden_dims)),
            activation,
            likelihood,
            init_std=init_std,
            **gaussian,
        )
    elif architecture == 'conv':
        encoder = ConvEncoder(
            latent_dim, tuple(conv_channels), tuple(hidden_dims), activation, init_std=init_std
        )
        decoder = ConvDecoder(
            tuple(event_shape),
            tuple(reversed(conv_channels)),
            tuple(hidden_dims),
            activation,
            likelihood,
            init_std=init_std,
            **gaussian,
        )
    else:
        raise ValueError(f'model.architecture must be one of {ARCHITECTURES}, got {architecture!r}')
    return VAE(encoder=encoder, decoder=decoder)


def init_params(model: VAE, key: jax.Array, event_shape: tuple[int, ...], latent_dim: int):
    """Initial parameters ``{'encoder': ..., 'decoder': ...}`` for one example shape."""
    x = jnp.zeros((1, *event_shape), jnp.float32)
    z = jnp.zeros((1, latent_dim), jnp.float32)
    return model.init(key, x, z)['params']
