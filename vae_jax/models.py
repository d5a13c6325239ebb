"""The models: p(z), q(z|x) and p(x|z) together, and the interface estimators see.

``VAE`` (one Gaussian latent layer, N(0, I) or VampPrior prior) and ``HierarchicalVAE``
(L Gaussian layers), built from the networks of :mod:`vae_jax.networks` by
``build_vae``; ``latent_model(model, params)`` is the ``objectives.LatentModel`` every
objective and estimator uses.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from vae_jax import distributions, likelihoods, networks, objectives

ARCHITECTURES = ('mlp', 'conv', 'hierarchical')
# p(z): N(0, I), or Tomczak & Welling's (2018) VampPrior (``VAE.num_pseudo_inputs``).
PRIORS = ('standard_normal', 'vamp')


# Tomczak & Welling (2018), code for MNIST: pseudo-inputs u = hardtanh(w) in [0, 1] with
# w initialised ~ N(0.05, 0.01^2).
_PSEUDO_INPUT_MEAN, _PSEUDO_INPUT_STD = 0.05, 0.01


def _pseudo_input_init(key: jax.Array, shape: tuple[int, ...], dtype=jnp.float32) -> jax.Array:
    return _PSEUDO_INPUT_MEAN + _PSEUDO_INPUT_STD * jax.random.normal(key, shape, dtype)


class VAE(nn.Module):
    """An encoder and a decoder with separate parameter subtrees, and the prior p(z).

    ``encode`` and ``decode`` are the two halves; ``__call__`` only exists so that
    ``init`` creates every parameter. The prior is N(0, I), or with
    ``num_pseudo_inputs`` = K > 0 the VampPrior of Tomczak & Welling (2018): the mixture
    (1/K) sum_k q(z|u_k) over K learned pseudo-inputs u_k of the data's shape
    (``event_shape``), which has no closed-form KL to q(z|x).
    """

    encoder: nn.Module
    decoder: nn.Module
    num_pseudo_inputs: int = 0
    event_shape: tuple[int, ...] = ()

    def setup(self):
        if self.num_pseudo_inputs:
            self.pseudo_input_weights = self.param(
                'pseudo_inputs', _pseudo_input_init, (self.num_pseudo_inputs, *self.event_shape)
            )

    def encode(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        return self.encoder(x)

    def decode(self, z: jax.Array) -> likelihoods.Likelihood:
        return self.decoder(z)

    def pseudo_input_posteriors(self) -> tuple[jax.Array, jax.Array]:
        """(mean, log_var) ``[K, D]`` of q(z|u_k), the VampPrior's components."""
        return self.encoder(jnp.clip(self.pseudo_input_weights, 0.0, 1.0))

    def log_prior(self, z: jax.Array) -> jax.Array:
        """log p(z) for z ``[..., D]``: N(0, I), or the VampPrior mixture."""
        if not self.num_pseudo_inputs:
            return distributions.std_normal_log_prob(z)
        mean, log_var = self.pseudo_input_posteriors()
        per_component = distributions.diag_gaussian_log_prob(z[..., None, :], mean, log_var)
        return jax.nn.logsumexp(per_component, axis=-1) - math.log(self.num_pseudo_inputs)

    def sample_prior(self, key: jax.Array, num: int) -> jax.Array:
        """``[num, D]`` draws of p(z)."""
        if not self.num_pseudo_inputs:
            return jax.random.normal(key, (num, self.encoder.latent_dim))
        key_k, key_z = jax.random.split(key)
        mean, log_var = self.pseudo_input_posteriors()
        k = jax.random.randint(key_k, (num,), 0, self.num_pseudo_inputs)
        return distributions.sample_diag_gaussian(key_z, mean[k], log_var[k])

    def __call__(self, x: jax.Array, z: jax.Array):
        if self.num_pseudo_inputs:
            self.pseudo_input_posteriors()
        return self.encode(x), self.decode(z)


class HierarchicalVAE(nn.Module):
    """L stochastic layers z_1 .. z_L, each a diagonal Gaussian given its neighbour.

    Burda et al. (2016), Sec. 5: q(z_1|x) q(z_2|z_1) ... and p(z_L) = N(0, I),
    p(z_l|z_{l+1}), p(x|z_1); every conditional is an MLP (``hidden_dims[l]`` on the
    way up, reversed on the way down). Latents are the tuple (z_1, ..., z_L), leaves
    ``[..., B, latent_dims[l]]``. Their two-layer model: ``latent_dims=(100, 50)``,
    ``hidden_dims=((200, 200), (100, 100))``, tanh.
    """

    event_shape: tuple[int, ...]
    latent_dims: Sequence[int]
    hidden_dims: Sequence[Sequence[int]]
    activation: str = 'tanh'
    likelihood: str = 'bernoulli'
    gaussian_mean: str = 'identity'
    min_log_var: float | None = None
    init_std: float | None = None
    weight_init: str = 'lecun_normal'

    def setup(self):
        n = len(self.latent_dims)
        kw = dict(activation=self.activation, init_std=self.init_std, weight_init=self.weight_init)
        self.up = [
            networks.GaussianMLP(self.latent_dims[i], tuple(self.hidden_dims[i]), **kw)
            for i in range(n)
        ]
        self.down = [
            networks.GaussianMLP(
                self.latent_dims[i], tuple(reversed(self.hidden_dims[i + 1])), **kw
            )
            for i in range(n - 1)
        ]
        self.decoder = networks.MLPDecoder(
            tuple(self.event_shape),
            tuple(reversed(self.hidden_dims[0])),
            self.activation,
            self.likelihood,
            self.gaussian_mean,
            self.min_log_var,
            init_std=self.init_std,
            weight_init=self.weight_init,
        )

    def sample_posterior(
        self, key: jax.Array, x: jax.Array, num_samples: int | None
    ) -> objectives.PosteriorDraws:
        """z ~ q(z|x) (leaves ``[K, B, d_l]``, or ``[B, d_l]`` for None), log q(z|x); no KL."""
        keys = jax.random.split(key, len(self.latent_dims))
        h = x.reshape(x.shape[0], -1)
        zs, log_q = [], 0.0
        for i, net in enumerate(self.up):
            mean, log_var = net(h)
            z, lq = distributions.sample_diag_gaussian_with_log_prob(
                keys[i], mean, log_var, num_samples if i == 0 else None
            )
            zs.append(z)
            log_q = log_q + lq
            h = z
        return objectives.PosteriorDraws(tuple(zs), log_q, None)

    def log_prior(self, z: tuple[jax.Array, ...]) -> jax.Array:
        """log p(z_L) + sum_l log p(z_l|z_{l+1}): ``[...]`` over the leaves' leading axes."""
        log_p = distributions.std_normal_log_prob(z[-1])
        for i, net in enumerate(self.down):
            mean, log_var = net(z[i + 1])
            log_p = log_p + distributions.diag_gaussian_log_prob(z[i], mean, log_var)
        return log_p

    def decode(self, z: tuple[jax.Array, ...]) -> likelihoods.Likelihood:
        return self.decoder(z[0])

    def sample_prior(self, key: jax.Array, num: int) -> tuple[jax.Array, ...]:
        """Ancestral draws from the top: leaves ``[num, d_l]``."""
        keys = jax.random.split(key, len(self.latent_dims))
        z = [jax.random.normal(keys[-1], (num, self.latent_dims[-1]), jnp.float32)]
        for i in reversed(range(len(self.down))):
            mean, log_var = self.down[i](z[0])
            z.insert(0, distributions.sample_diag_gaussian(keys[i], mean, log_var))
        return tuple(z)

    def posterior_means(self, x: jax.Array) -> tuple[jax.Array, ...]:
        """Each layer's posterior mean given the means below it: leaves ``[B, d_l]``.

        For pictures and active units (Burda et al. count units whose posterior mean
        varies over the data; they feed a sample of the layer below, we feed its mean).
        """
        h = x.reshape(x.shape[0], -1)
        means = []
        for net in self.up:
            h, _ = net(h)
            means.append(h)
        return tuple(means)

    def __call__(self, x: jax.Array, z_top: jax.Array):
        """Touches every parameter (for ``init``): the posterior means up, the prior down."""
        h = x.reshape(x.shape[0], -1)
        for net in self.up:
            h, _ = net(h)
        z = [z_top]
        for i in reversed(range(len(self.down))):
            z.insert(0, self.down[i](z[0])[0])
        return self.decoder(z[0])


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
    weight_init: str = 'lecun_normal',
    gaussian_mean: str = 'identity',
    min_log_var: float | None = None,
    upper_latent_dims: Sequence[int] = (),
    upper_hidden_dims: Sequence[Sequence[int]] = (),
    num_pseudo_inputs: int = 0,
) -> VAE | HierarchicalVAE:
    """The model for the given settings (the config's ``model`` section and more).

    ``init_std``: None for ``weight_init``'s weights (``networks.WEIGHT_INITS``) and
    zero biases, else every weight and bias ~ N(0, init_std^2). ``gaussian_mean``,
    ``min_log_var``: the Gaussian decoder's mean map and log-variance floor
    (``_likelihood``). ``upper_*``: the layers above z_1 of
    ``architecture='hierarchical'``. ``num_pseudo_inputs`` > 0: the VampPrior.
    """
    gaussian = dict(gaussian_mean=gaussian_mean, min_log_var=min_log_var)
    init = dict(init_std=init_std, weight_init=weight_init)
    if architecture == 'hierarchical':
        return HierarchicalVAE(
            event_shape=tuple(event_shape),
            latent_dims=(latent_dim, *upper_latent_dims),
            hidden_dims=(tuple(hidden_dims), *(tuple(h) for h in upper_hidden_dims)),
            activation=activation,
            likelihood=likelihood,
            **init,
            **gaussian,
        )
    if architecture == 'mlp':
        encoder = networks.MLPEncoder(latent_dim, tuple(hidden_dims), activation, **init)
        decoder = networks.MLPDecoder(
            tuple(event_shape),
            tuple(reversed(hidden_dims)),
            activation,
            likelihood,
            **init,
            **gaussian,
        )
    elif architecture == 'conv':
        encoder = networks.ConvEncoder(
            latent_dim, tuple(conv_channels), tuple(hidden_dims), activation, **init
        )
        decoder = networks.ConvDecoder(
            tuple(event_shape),
            tuple(reversed(conv_channels)),
            tuple(hidden_dims),
            activation,
            likelihood,
            **init,
            **gaussian,
        )
    else:
        raise ValueError(f'model.architecture must be one of {ARCHITECTURES}, got {architecture!r}')
    return VAE(
        encoder=encoder,
        decoder=decoder,
        num_pseudo_inputs=num_pseudo_inputs,
        event_shape=tuple(event_shape) if num_pseudo_inputs else (),
    )


def init_params(
    model: VAE | HierarchicalVAE, key: jax.Array, event_shape: tuple[int, ...], latent_dim: int
):
    """Initial parameters for one example shape; ``latent_dim``: the top latent's size."""
    x = jnp.zeros((1, *event_shape), jnp.float32)
    z = jnp.zeros((1, latent_dim), jnp.float32)
    return model.init(key, x, z)['params']


# The Bernoulli decoder's output bias at step 0: 'zero', or 'data_mean' (the logit of
# the training set's mean image, as Burda et al.'s code starts).
DECODER_BIASES = ('zero', 'data_mean')


def with_decoder_bias_at_data_mean(params, train_mean: jax.Array):
    """``params`` with the Bernoulli MLP decoder's output bias at logit(mean pixel).

    ``train_mean``: the training images' mean, ``[*event_shape]`` in [0, 1]; clipped
    to [0.001, 0.999] (Burda et al.'s code) so that a pixel that is always 0 or 1 gets a
    finite bias. The untrained decoder then predicts the mean image instead of 1/2 at
    every pixel.
    """
    bias = params['decoder']['head']['bias']
    p = jnp.clip(jnp.asarray(train_mean, bias.dtype).reshape(bias.shape), 1e-3, 1 - 1e-3)
    head = {**params['decoder']['head'], 'bias': jnp.log(p) - jnp.log1p(-p)}
    return {**params, 'decoder': {**params['decoder'], 'head': head}}


def latent_model(model: VAE | HierarchicalVAE, params) -> objectives.LatentModel:
    """``model`` with ``params`` as the interface every objective and estimator uses."""
    apply = functools.partial(model.apply, {'params': params})
    encode = lambda x: apply(x, method=model.encode)  # noqa: E731
    decode = lambda z: apply(z, method=model.decode)  # noqa: E731
    sample_prior = lambda key, num: apply(key, num, method=model.sample_prior)  # noqa: E731
    if isinstance(model, HierarchicalVAE):
        return objectives.LatentModel(
            sample_posterior=lambda key, x, k: apply(key, x, k, method=model.sample_posterior),
            log_prior=lambda z: apply(z, method=model.log_prior),
            decode=decode,
            sample_prior=sample_prior,
        )
    if not model.num_pseudo_inputs:
        return objectives.gaussian_latent_model(encode, decode, model.encoder.latent_dim)

    def sample_posterior(key, x, num_samples):
        mean, log_var = encode(x)
        z, log_q = distributions.sample_diag_gaussian_with_log_prob(key, mean, log_var, num_samples)
        return objectives.PosteriorDraws(z, log_q, None)  # No closed-form KL to a mixture.

    return objectives.LatentModel(
        sample_posterior,
        lambda z: apply(z, method=model.log_prior),
        decode,
        sample_prior=sample_prior,
        posterior=lambda x: likelihoods.DiagonalGaussian(*encode(x)),
    )


def has_standard_prior(model: VAE | HierarchicalVAE) -> bool:
    """One Gaussian latent layer with the N(0, I) prior (what AIS, Appendix D, the
    baselines, the posterior diagnostics and the manifold plot are written for)."""
    return isinstance(model, VAE) and not model.num_pseudo_inputs


def latent_sizes(model: VAE | HierarchicalVAE) -> tuple[int, ...]:
    """The size of each stochastic layer, bottom (next to x) first."""
    if isinstance(model, HierarchicalVAE):
        return tuple(model.latent_dims)
    return (model.encoder.latent_dim,)


def sample_prior(model: VAE | HierarchicalVAE, params, key: jax.Array, num: int):
    """``num`` draws of z ~ p(z): ``[num, D]``, or the hierarchical model's tuple of layers."""
    return model.apply({'params': params}, key, num, method=model.sample_prior)


def posterior_mean_latents(model: VAE | HierarchicalVAE, params, x: jax.Array):
    """The posterior mean of z given x (per layer, given the means below): for pictures."""
    if isinstance(model, HierarchicalVAE):
        return model.apply({'params': params}, x, method=model.posterior_means)
    return model.apply({'params': params}, x, method=model.encode)[0]
