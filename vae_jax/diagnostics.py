"""Posterior diagnostics: per-dimension KL, active units, I(x; z), KL(q(z) || p(z)).

They make posterior collapse (dimensions with KL ~ 0, few active units, small
mutual information) and prior mismatch (a large KL between the aggregate
posterior and the prior: prior samples land where no data maps) visible.
Inputs are the encoder's ``mean`` and ``log_var`` over a dataset, ``[N, D]``.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from vae_jax import distributions

ACTIVE_UNIT_THRESHOLD = 0.01  # Burda et al. (2016), Sec. 5.2.


def kl_per_dimension(mean: jax.Array, log_var: jax.Array) -> jax.Array:
    """E_x KL(q(z_i|x) || N(0, 1)) for each latent dimension: ``[D]``."""
    return jnp.mean(distributions.gaussian_kl_per_dim(mean, log_var), axis=0)


def active_units(
    mean: jax.Array, threshold: float = ACTIVE_UNIT_THRESHOLD
) -> tuple[int, jax.Array]:
    """Burda et al. (2016): unit i is active if Cov_x(E_q[z_i]) > threshold.

    Returns:
      (number of active units, the per-dimension variances ``[D]``).
    """
    variance = jnp.var(mean, axis=0)
    return int(jnp.sum(variance > threshold)), variance


def _log_aggregate_posterior(
    z: jax.Array, mean: jax.Array, log_var: jax.Array, chunk: int = 256
) -> jax.Array:
    """log q(z) = log (1/N) sum_n q(z | x_n) for z ``[M, D]``: ``[M]``.

    Chunks over M keep the ``[chunk, N, D]`` intermediate bounded.
    """
    n = mean.shape[0]

    @jax.jit
    def block(zc):
        log_q = distributions.diag_gaussian_log_prob(zc[:, None, :], mean[None], log_var[None])
        return jax.nn.logsumexp(log_q, axis=1) - math.log(n)

    return jnp.concatenate([block(z[i : i + chunk]) for i in range(0, z.shape[0], chunk)])


def aggregate_posterior_terms(
    key: jax.Array, mean: jax.Array, log_var: jax.Array, num_samples: int = 2000
) -> dict[str, float]:
    """Monte Carlo estimates of I(x; z) under q and of KL(q(z) || p(z)).

    With x uniform over the N data points, q(x, z) = q(z|x) / N, and
      I(x; z) = E_{q(x,z)} [log q(z|x) - log q(z)]   (at most log N),
      KL(q(z) || p(z)) = E_{q(z)} [log q(z) - log p(z)],
    so E_x KL(q(z|x) || p(z)) = I(x; z) + KL(q(z) || p(z)) (Hoffman & Johnson
    2016, "ELBO surgery"). The aggregate density q(z) is the mixture over all N
    posteriors, evaluated exactly; only the outer expectation is sampled.

    Args:
      key: PRNG key.
      mean, log_var: ``[N, D]`` posterior parameters over a dataset.
      num_samples: M draws of (x, z).

    Returns:
      dict with ``mutual_information``, ``aggregate_kl`` and their standard errors.
    """
    pick_key, z_key = jax.random.split(key)
    rows = jax.random.randint(pick_key, (num_samples,), 0, mean.shape[0])
    m, lv = mean[rows], log_var[rows]
    z, log_q_cond = distributions.sample_diag_gaussian_with_log_prob(z_key, m, lv)
    log_q_agg = _log_aggregate_posterior(z, mean, log_var)
    log_p = distributions.std_normal_log_prob(z)
    mi = np.asarray(log_q_cond - log_q_agg, np.float64)
    kl = np.asarray(log_q_agg - log_p, np.float64)
    se = lambda v: float(v.std(ddof=1) / math.sqrt(v.size))
    return {
        'mutual_information': float(mi.mean()),
        'mutual_information_stderr': se(mi),
        'mutual_information_max': math.log(mean.shape[0]),
        'aggregate_kl': float(kl.mean()),
        'aggregate_kl_stderr': se(kl),
    }


def posterior_diagnostics(
    key: jax.Array, mean: jax.Array, log_var: jax.Array, num_samples: int = 2000
) -> dict:
    """All of the above as one JSON-ready dict."""
    kl_dims = kl_per_dimension(mean, log_var)
    num_active, variances = active_units(mean)
    return {
        'kl_per_dimension': [float(v) for v in kl_dims],
        'active_units': num_active,
        'active_unit_threshold': ACTIVE_UNIT_THRESHOLD,
        'posterior_mean_variance': [float(v) for v in variances],
        **aggregate_posterior_terms(key, mean, log_var, num_samples),
    }
