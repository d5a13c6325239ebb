"""Variational objectives: the ELBO (SGVB estimators A and B) and the IWAE bound.

Each objective is a pure function of a PRNG key, a batch ``x`` of shape
``[B, *event_shape]`` and two callables:

* ``encode(x) -> (mean, log_var)``, each ``[B, D]``: the parameters of the
  diagonal-Gaussian posterior approximation q_phi(z|x);
* ``decode(z) -> params``, ``z`` of shape ``[..., B, D]``: a tuple of arrays of
  shape ``[..., B, *event_shape]``, the parameters of p_theta(x|z) for the
  likelihood named by ``likelihood`` (``(logits,)`` for ``'bernoulli'``,
  ``(mean, log_var)`` for ``'gaussian'``).

They return a dict of per-example terms, each ``[B]``, in nats; the caller
reduces. References: Kingma & Welling (2013), "Auto-Encoding Variational
Bayes", Eq. 6-7 and Algorithm 1; Burda, Grosse & Salakhutdinov (2016),
"Importance Weighted Autoencoders", Eq. 8.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import jax
import jax.numpy as jnp

from vae_jax import distributions

Encode = Callable[[jax.Array], tuple[jax.Array, jax.Array]]
Decode = Callable[[jax.Array], tuple[jax.Array, ...]]

LIKELIHOODS = ('bernoulli', 'gaussian')
KL_ESTIMATORS = ('analytic', 'monte_carlo')
OBJECTIVES = ('elbo', 'iwae')


def log_likelihood(likelihood: str, x: jax.Array, params: tuple[jax.Array, ...]) -> jax.Array:
    """log p_theta(x|z) summed over the event axes of ``x`` (all but the first).

    Args:
      likelihood: ``'bernoulli'`` or ``'gaussian'``.
      x: ``[B, *event_shape]`` data.
      params: decoder output, each ``[..., B, *event_shape]``.

    Returns:
      ``[..., B]`` log-densities (broadcast over leading sample axes).
    """
    event_ndim = x.ndim - 1
    if likelihood == 'bernoulli':
        (logits,) = params
        return distributions.bernoulli_log_prob(x, logits, event_ndim)
    if likelihood == 'gaussian':
        mean, log_var = params
        return distributions.diag_gaussian_log_prob(x, mean, log_var, event_ndim)
    raise ValueError(f'likelihood must be one of {LIKELIHOODS}, got {likelihood!r}')


def log_importance_weights(
    key: jax.Array,
    x: jax.Array,
    encode: Encode,
    decode: Decode,
    *,
    likelihood: str,
    num_samples: int,
) -> dict[str, jax.Array]:
    """log w_k = log p(x|z_k) + log p(z_k) - log q(z_k|x) with z_k ~ q(z|x).

    Returns:
      dict with ``log_w``, ``log_px_z``, ``log_pz`` and ``log_qz``, each ``[K, B]``.
    """
    mean, log_var = encode(x)
    z, log_qz = distributions.sample_diag_gaussian_with_log_prob(key, mean, log_var, num_samples)
    return log_importance_weights_at(z, log_qz, x, decode, likelihood=likelihood)


def log_importance_weights_at(
    z: jax.Array, log_qz: jax.Array, x: jax.Array, decode: Decode, *, likelihood: str
) -> dict[str, jax.Array]:
    """The log weights of draws ``z`` ``[K, B, D]`` of q whose log q(z|x) is ``log_qz`` ``[K, B]``.

    Returns:
      as :func:`log_importance_weights`, each ``[K, B]``.
    """
    log_px_z = log_likelihood(likelihood, x, decode(z))
    log_pz = distributions.std_normal_log_prob(z)
    return dict(log_w=log_px_z + log_pz - log_qz, log_px_z=log_px_z, log_pz=log_pz, log_qz=log_qz)


def elbo(
    key: jax.Array,
    x: jax.Array,
    encode: Encode,
    decode: Decode,
    *,
    likelihood: str = 'bernoulli',
    num_samples: int = 1,
    kl_estimator: str = 'analytic',
    beta: float = 1.0,
) -> dict[str, jax.Array]:
    """The SGVB estimator of the ELBO with L = ``num_samples`` draws per example.

    ``kl_estimator='monte_carlo'`` is the paper's estimator A (Eq. 6): the KL is
    estimated from the same draws as log q(z|x) - log p(z), valid for any prior.
    ``'analytic'`` is estimator B (Eq. 7): the Gaussian KL in closed form, lower
    variance.

    Returns:
      dict of ``[B]`` arrays: ``reconstruction`` (E_q log p(x|z)), ``kl``,
      ``elbo`` (= reconstruction - kl, the bound on log p(x)) and ``objective``
      (= reconstruction - beta * kl, what training maximises).
    """
    mean, log_var = encode(x)
    z, log_qz = distributions.sample_diag_gaussian_with_log_prob(key, mean, log_var, num_samples)
    reconstruction = jnp.mean(log_likelihood(likelihood, x, decode(z)), axis=0)
    if kl_estimator == 'analytic':
        kl = distributions.gaussian_kl_to_std_normal(mean, log_var)
    elif kl_estimator == 'monte_carlo':
        kl = jnp.mean(log_qz - distributions.std_normal_log_prob(z), axis=0)
    else:
        raise ValueError(f'kl_estimator must be one of {KL_ESTIMATORS}, got {kl_estimator!r}')
    return dict(
        reconstruction=reconstruction,
        kl=kl,
        elbo=reconstruction - kl,
        objective=reconstruction - beta * kl,
    )


def iwae(
    key: jax.Array,
    x: jax.Array,
    encode: Encode,
    decode: Decode,
    *,
    likelihood: str = 'bernoulli',
    num_samples: int = 1,
) -> dict[str, jax.Array]:
    """The importance-weighted bound log (1/K) sum_k w_k with K = ``num_samples``.

    Equals the Monte Carlo ELBO for K = 1 and tightens monotonically (in
    expectation) as K grows (Burda et al. 2016, Theorem 1).

    Returns:
      dict of ``[B]`` arrays: ``iwae`` and ``objective`` (both the bound), and
      the sample means ``reconstruction`` and ``kl`` (of log q(z|x) - log p(z))
      for diagnostics.
    """
    terms = log_importance_weights(
        key, x, encode, decode, likelihood=likelihood, num_samples=num_samples
    )
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
    encode: Encode,
    decode: Decode,
    *,
    objective: str,
    likelihood: str,
    num_samples: int,
    kl_estimator: str = 'analytic',
    beta: float = 1.0,
) -> dict[str, jax.Array]:
    """Dispatches on ``objective`` (``'elbo'`` or ``'iwae'``); see those functions."""
    if objective == 'elbo':
        return elbo(
            key,
            x,
            encode,
            decode,
            likelihood=likelihood,
            num_samples=num_samples,
            kl_estimator=kl_estimator,
            beta=beta,
        )
    if objective == 'iwae':
        return iwae(key, x, encode, decode, likelihood=likelihood, num_samples=num_samples)
    raise ValueError(f'objective must be one of {OBJECTIVES}, got {objective!r}')
