"""Variational objectives: the ELBO (SGVB estimators A and B) and the IWAE bound.

Each objective is a pure function of a PRNG key, a batch ``x`` of shape
``[B, *event_shape]`` and a :class:`LatentModel`: the generative model p(x|z) p(z)
and its approximate posterior q(z|x) as four pure functions, for any latent
structure (z is a pytree; its leaves lead with the sample and batch axes). Every
estimator of the package sees a model through this interface;
:func:`gaussian_latent_model` makes one from the plain VAE's ``encode`` and
``decode``, ``models.latent_model`` from any model of :mod:`vae_jax.models`.

They return a dict of per-example terms, each ``[B]``, in nats; the caller
reduces. References: Kingma & Welling (2013), "Auto-Encoding Variational
Bayes", Eq. 6-7 and Algorithm 1; Burda, Grosse & Salakhutdinov (2016),
"Importance Weighted Autoencoders", Eq. 8.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from vae_jax import distributions, likelihoods

Latents = Any  # A pytree of arrays whose leaves lead with [K, B] (or [B]).
Encode = Callable[[jax.Array], tuple[jax.Array, jax.Array]]
Decode = Callable[[Latents], likelihoods.Likelihood]

KL_ESTIMATORS = ('analytic', 'monte_carlo')
OBJECTIVES = ('elbo', 'iwae')


class PosteriorDraws(NamedTuple):
    """Draws of q(z|x): ``z`` (leaves ``[K, B, ...]``), ``log_q`` ``[K, B]`` and ``kl`` ``[B]``,
    KL(q(z|x) || p(z)) in closed form, or None where the model has none."""

    z: Latents
    log_q: jax.Array
    kl: jax.Array | None


class LatentModel(NamedTuple):
    """A latent-variable model and its posterior approximation, as pure functions.

    Attributes:
      sample_posterior: ``(key, x, K) -> PosteriorDraws``: K reparameterised draws;
        ``K=None`` draws one (leaves ``[B, ...]``, ``log_q`` ``[B]``). The closed-form
        KL comes with the draws so that both use one pass of the encoder.
      log_prior: ``z -> log p(z)`` over the leaves' leading axes.
      decode: ``z -> p(x|z)``, a distribution of :mod:`vae_jax.likelihoods`.
      analytic_kl: whether ``sample_posterior`` gives the KL in closed form
        (estimator B possible); estimator A needs only the draws.
      sample_prior: ``(key, N) -> z`` (leaves ``[N, ...]``), draws of p(z): for AIS and
        BDMC from the prior, and for generating. None where the model cannot.
      posterior: ``x -> q(z|x)`` as a distribution object whose ``log_prob(z)`` takes any
        z (leaves ``[..., B, ...]``) and whose arrays lead with B: needed only by AIS and
        BDMC annealing from q(z|x) and by the Appendix D chain's start. None where
        log q(z|x) has no closed form at arbitrary z (the hierarchical posterior).
    """

    sample_posterior: Callable[[jax.Array, jax.Array, int | None], PosteriorDraws]
    log_prior: Callable[[Latents], jax.Array]
    decode: Decode
    analytic_kl: bool = False
    sample_prior: Callable[[jax.Array, int], Latents] | None = None
    posterior: Callable[[jax.Array], Any] | None = None


def gaussian_latent_model(
    encode: Encode, decode: Decode, latent_dim: int | None = None
) -> LatentModel:
    """The VAE of Kingma & Welling: q(z|x) = N(encode(x)), p(z) = N(0, I), closed-form KL.

    ``encode(x) -> (mean, log_var)``, each ``[B, D]``; ``decode(z)`` for ``z`` ``[..., B, D]``.
    ``latent_dim`` = D gives the model ``sample_prior`` (AIS from the prior needs it).
    """

    def sample_posterior(key, x, num_samples):
        mean, log_var = encode(x)
        z, log_q = distributions.sample_diag_gaussian_with_log_prob(key, mean, log_var, num_samples)
        return PosteriorDraws(z, log_q, distributions.gaussian_kl_to_std_normal(mean, log_var))

    def sample_prior(key, num):
        return jax.random.normal(key, (num, latent_dim), jnp.float32)

    return LatentModel(
        sample_posterior,
        distributions.std_normal_log_prob,
        decode,
        analytic_kl=True,
        sample_prior=None if latent_dim is None else sample_prior,
        posterior=lambda x: likelihoods.DiagonalGaussian(*encode(x)),
    )


def log_importance_weights_at(
    model: LatentModel, z: Latents, log_qz: jax.Array, x: jax.Array
) -> dict[str, jax.Array]:
    """log w = log p(x|z) + log p(z) - log q(z|x) of given draws ``z`` with ``log_qz`` ``[K, B]``.

    Returns:
      dict with ``log_w``, ``log_px_z``, ``log_pz`` and ``log_qz``, each ``[K, B]``.
    """
    log_px_z = model.decode(z).log_prob(x)
    log_pz = model.log_prior(z)
    return dict(log_w=log_px_z + log_pz - log_qz, log_px_z=log_px_z, log_pz=log_pz, log_qz=log_qz)


def log_importance_weights(
    key: jax.Array, x: jax.Array, model: LatentModel, *, num_samples: int
) -> dict[str, jax.Array]:
    """:func:`log_importance_weights_at` for z_k ~ q(z|x), k = 1..K: each ``[K, B]``."""
    draws = model.sample_posterior(key, x, num_samples)
    return log_importance_weights_at(model, draws.z, draws.log_q, x)


def elbo(
    key: jax.Array,
    x: jax.Array,
    model: LatentModel,
    *,
    num_samples: int = 1,
    kl_estimator: str = 'analytic',
    beta: float = 1.0,
) -> dict[str, jax.Array]:
    """The SGVB estimator of the ELBO with L = ``num_samples`` draws per example.

    ``kl_estimator='monte_carlo'`` is the paper's estimator A (Eq. 6): the KL is
    estimated from the same draws as log q(z|x) - log p(z), valid for any prior.
    ``'analytic'`` is estimator B (Eq. 7): the KL in closed form (``model.analytic_kl``),
    lower variance; a model without one refuses it.

    Returns:
      dict of ``[B]`` arrays: ``reconstruction`` (E_q log p(x|z)), ``kl``,
      ``elbo`` (= reconstruction - kl, the bound on log p(x)) and ``objective``
      (= reconstruction - beta * kl, what training maximises).
    """
    if kl_estimator not in KL_ESTIMATORS:
        raise ValueError(f'kl_estimator must be one of {KL_ESTIMATORS}, got {kl_estimator!r}')
    if kl_estimator == 'analytic' and not model.analytic_kl:
        raise ValueError(
            "kl_estimator='analytic' needs a closed-form KL, which this model has not; "
            "use kl_estimator='monte_carlo'"
        )
    z, log_qz, kl = model.sample_posterior(key, x, num_samples)
    reconstruction = jnp.mean(model.decode(z).log_prob(x), axis=0)
    if kl_estimator == 'monte_carlo':
        kl = jnp.mean(log_qz - model.log_prior(z), axis=0)
    return dict(
        reconstruction=reconstruction,
        kl=kl,
        elbo=reconstruction - kl,
        objective=reconstruction - beta * kl,
    )


def iwae(
    key: jax.Array, x: jax.Array, model: LatentModel, *, num_samples: int = 1
) -> dict[str, jax.Array]:
    """The importance-weighted bound log (1/K) sum_k w_k with K = ``num_samples``.

    Equals the Monte Carlo ELBO for K = 1 and tightens monotonically (in
    expectation) as K grows (Burda et al. 2016, Theorem 1).

    Returns:
      dict of ``[B]`` arrays: ``iwae`` and ``objective`` (both the bound), and
      the sample means ``reconstruction`` and ``kl`` (of log q(z|x) - log p(z))
      for diagnostics.
    """
    terms = log_importance_weights(key, x, model, num_samples=num_samples)
    bound = jax.nn.logsumexp(terms['log_w'], axis=0) - math.log(num_samples)
    return dict(
        reconstruction=jnp.mean(terms['log_px_z'], axis=0),
        kl=jnp.mean(terms['log_qz'] - terms['log_pz'], axis=0),
        iwae=bound,
        objective=bound,
    )


def compute(
    key: jax.Array,
    x: jax.Array,
    model: LatentModel,
    *,
    objective: str,
    num_samples: int,
    kl_estimator: str = 'analytic',
    beta: float = 1.0,
) -> dict[str, jax.Array]:
    """Dispatches on ``objective`` (``'elbo'`` or ``'iwae'``); see those functions."""
    if objective == 'elbo':
        return elbo(key, x, model, num_samples=num_samples, kl_estimator=kl_estimator, beta=beta)
    if objective == 'iwae':
        return iwae(key, x, model, num_samples=num_samples)
    raise ValueError(f'objective must be one of {OBJECTIVES}, got {objective!r}')
