"""HMC on a latent-variable model: blackjax's kernel, step-size adaptation, flat latents.

What AIS, BDMC (:mod:`vae_jax.ais`), Kingma & Welling's Appendix D estimator
(:mod:`vae_jax.appendix_d`) and Monte Carlo EM (:mod:`vae_jax.mcem`) share. A
model is seen through :class:`vae_jax.objectives.LatentModel` only; one example's
latents (any pytree, e.g. the hierarchical model's (z_1, z_2)) are one flat vector, the
state of its chain (:class:`FlatLatents`). The transitions are blackjax's HMC kernel
(``blackjax.mcmc.hmc.build_kernel``) with an identity mass matrix; its
``logdensity_fn`` is an argument of each call, so one kernel serves every target.
"""

from __future__ import annotations

import functools
import importlib
import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NamedTuple

import jax
import jax.numpy as jnp

from vae_jax import objectives

if TYPE_CHECKING:
    import blackjax

# Where a chain or an annealing path starts: the prior p(z), or the encoder's q(z|x).
STARTS = ('prior', 'encoder')

# Step-size adaptation constants of Wu et al.'s released code (hmc.py of their BDMC code):
# multiply by 1.02 when the smoothed acceptance is above target, else by 0.98, and clip.
TARGET_ACCEPTANCE = 0.65
_STEP_INC, _STEP_DEC = 1.02, 0.98
_STEP_MIN, _STEP_MAX = 1e-4, 0.5
_ACCEPTANCE_SMOOTHING = 0.9


def blackjax_hmc():
    """``blackjax.mcmc.hmc``, imported on first use.

    Importing blackjax starts jax's backend, which must wait for
    ``jax.distributed.initialize`` in multi-host runs (vae_jax/parallel.py).
    """
    return importlib.import_module('blackjax.mcmc.hmc')


@functools.cache
def _hmc_kernel():
    """Velocity-Verlet HMC; built once, the target density is an argument of each call."""
    return blackjax_hmc().build_kernel()


class FlatLatents(NamedTuple):
    """One example's latents (a pytree) as one vector ``[D]``, the state of an HMC chain.

    ``flatten(z, lead)``: leaves ``[*lead, ...]`` -> ``[*lead, D]``; ``unflatten(v)``:
    ``[D]`` -> the pytree for a batch of one example (leaves ``[1, ...]``).
    """

    size: int
    flatten: Callable[[Any, int], jax.Array]
    unflatten: Callable[[jax.Array], Any]


def flat_latents(model: objectives.LatentModel, x: jax.Array) -> FlatLatents:
    """The layout of ``model``'s latents, read from the shapes of one posterior draw.

    Hand-written rather than ``jax.flatten_util.ravel_pytree``, which flattens one
    pytree, not a pytree whose leaves carry leading chain and batch axes.
    """
    shapes = jax.eval_shape(model.sample_posterior, jax.random.key(0), x[:1], None).z
    leaves, treedef = jax.tree.flatten(shapes)
    event_shapes = [leaf.shape[1:] for leaf in leaves]
    sizes = [math.prod(shape) for shape in event_shapes]

    def flatten(z, lead: int):
        parts = jax.tree.leaves(z)
        return jnp.concatenate([p.reshape(*p.shape[:lead], -1) for p in parts], axis=-1)

    def unflatten(v):
        parts, offset = [], 0
        for shape, size in zip(event_shapes, sizes, strict=True):
            parts.append(v[offset : offset + size].reshape(1, *shape))
            offset += size
        return jax.tree.unflatten(treedef, parts)

    return FlatLatents(sum(sizes), flatten, unflatten)


def log_joint_fn(model: objectives.LatentModel, flat: FlatLatents) -> Callable:
    """(z ``[D]``, x_b ``[*event]``) -> log p(x_b|z) + log p(z), a scalar."""

    def log_joint(z, x_b):
        z = flat.unflatten(z)
        return model.decode(z).log_prob(x_b[None])[0] + model.log_prior(z)[0]

    return log_joint


def require_posterior(model: objectives.LatentModel) -> None:
    if model.posterior is None:
        raise ValueError(
            "start='encoder' needs log q(z|x) at any z (LatentModel.posterior), which this "
            "model has not (a hierarchical posterior); use start='prior'"
        )


def start_draws(
    key: jax.Array,
    model: objectives.LatentModel,
    x: jax.Array,
    start: str,
    flat: FlatLatents,
    num_chains: int,
) -> jax.Array:
    """``[C, B, D]`` draws where chains start: of p(z) (``'prior'``) or q(z|x) (``'encoder'``)."""
    batch = x.shape[0]
    if start == 'encoder':
        return flat.flatten(model.sample_posterior(key, x, num_chains).z, 2)
    if model.sample_prior is None:
        raise ValueError("start='prior' needs draws of p(z) (LatentModel.sample_prior)")
    z = flat.flatten(model.sample_prior(key, num_chains * batch), 1)
    return z.reshape(num_chains, batch, flat.size)


def adapt_hmc_step_size(
    step_size: jax.Array,
    avg_acceptance: jax.Array,
    acceptance: jax.Array,
    target_acceptance: float = TARGET_ACCEPTANCE,
) -> tuple[jax.Array, jax.Array]:
    """Wu et al.'s multiplicative rule on a smoothed acceptance rate, per example ``[B]``.

    The smoothed rate is 0.9 * ``avg_acceptance`` + 0.1 * ``acceptance``; the step is
    multiplied by 1.02 when it is above ``target_acceptance`` (0.65 by default, as in Wu et
    al.'s code), else by 0.98, and clipped to [1e-4, 0.5].

    Returns:
      ``(step_size, avg_acceptance)``, each ``[B]``.
    """
    avg_acceptance = (
        _ACCEPTANCE_SMOOTHING * avg_acceptance + (1.0 - _ACCEPTANCE_SMOOTHING) * acceptance
    )
    factor = jnp.where(avg_acceptance > target_acceptance, _STEP_INC, _STEP_DEC)
    return jnp.clip(step_size * factor, _STEP_MIN, _STEP_MAX), avg_acceptance


def hmc_step(
    key: jax.Array,
    state: blackjax.mcmc.hmc.HMCState,
    logdensity_fn: Callable[[jax.Array], jax.Array],
    step_size: jax.Array,
    num_leapfrog_steps: int,
) -> tuple[blackjax.mcmc.hmc.HMCState, blackjax.mcmc.hmc.HMCInfo]:
    """One blackjax HMC transition for one chain (``z`` ``[D]``, identity mass matrix).

    The kernel takes ``logdensity_fn`` per call, so the same kernel can target a different
    density at every step; ``state`` must hold that density's value and gradient.

    A fixed trajectory length can be (nearly) periodic on a Gaussian-like posterior, so the
    chain barely moves (seen on the pPCA test model at step 0.5 x 10 leapfrog steps); a
    random +-20 % step size per transition breaks the resonance and, drawn independently
    of the state, keeps detailed balance (Neal 2011, "MCMC using Hamiltonian dynamics",
    Sec. 5.4.2.2).
    """
    key_jitter, key_kernel = jax.random.split(key)
    step_size = step_size * jax.random.uniform(key_jitter, (), jnp.float32, 0.8, 1.2)
    inverse_mass_matrix = jnp.ones(state.position.shape, state.position.dtype)
    return _hmc_kernel()(
        key_kernel, state, logdensity_fn, step_size, inverse_mass_matrix, num_leapfrog_steps
    )
