"""p(x|z) as distribution objects: what a decoder returns.

A decoder maps z ``[..., B, D]`` to one of these, with parameters of shape
``[..., B, *event_shape]``; objectives and estimators only call ``log_prob``,
``sample`` and ``mean``, so a new likelihood is one class here and nothing else
changes. Hand-written (two small classes) because distrax is not a dependency and
its log-densities would not keep the written-out softplus that makes evaluation
fast on CPUs (``distributions.softplus``). Both are pytrees (they pass through
``jit`` and ``vmap``); ``event_ndim`` is static. ``DiagonalGaussian`` also serves as
a diagonal q(z|x) (``objectives.LatentModel.posterior``).
"""

from __future__ import annotations

import flax
import jax

from vae_jax import distributions

# Names of config.likelihood, one per class below.
LIKELIHOODS = ('bernoulli', 'gaussian')


@flax.struct.dataclass
class Bernoulli:
    """Independent Bernoulli pixels with probabilities sigmoid(logits)."""

    logits: jax.Array
    event_ndim: int = flax.struct.field(pytree_node=False, default=1)

    def log_prob(self, x: jax.Array) -> jax.Array:
        """``[..., B]``: x ``[B, *event]`` in [0, 1] (grey levels: the cross-entropy)."""
        return distributions.bernoulli_log_prob(x, self.logits, self.event_ndim)

    def mean(self) -> jax.Array:
        return jax.nn.sigmoid(self.logits)

    def sample(self, key: jax.Array) -> jax.Array:
        """0/1 draws of the shape of ``logits``."""
        return jax.random.bernoulli(key, jax.nn.sigmoid(self.logits)).astype(self.logits.dtype)


@flax.struct.dataclass
class DiagonalGaussian:
    """Independent Gaussian coordinates: pixels of p(x|z), or the latents of a diagonal q(z|x)."""

    loc: jax.Array
    log_var: jax.Array
    event_ndim: int = flax.struct.field(pytree_node=False, default=1)

    def log_prob(self, x: jax.Array) -> jax.Array:
        """``[..., B]`` for x ``[B, *event]``."""
        return distributions.diag_gaussian_log_prob(x, self.loc, self.log_var, self.event_ndim)

    def mean(self) -> jax.Array:
        return self.loc

    def sample(self, key: jax.Array) -> jax.Array:
        return distributions.reparameterize(
            self.loc, self.log_var, jax.random.normal(key, self.loc.shape, self.loc.dtype)
        )


Likelihood = Bernoulli | DiagonalGaussian
