"""log p(x) estimators whose memory does not grow with the number of samples.

Importance sampling with the encoder as proposal (Burda et al. 2016, Eq. 8;
Rezende et al. 2014, Appendix E):

  log p(x) ~= logsumexp_k [log p(x|z_k) + log p(z_k) - log q(z_k|x)] - log K.

The K samples are drawn ``chunk_size`` at a time and folded into a running
logsumexp, so K = 5000 costs no more memory than K = ``chunk_size``. The same
routine gives the IWAE bound for any K. Sample k's noise comes from
``fold_in(key, k)``, so the draws, and the estimate up to float rounding, do
not depend on the chunk size.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from vae_jax import objectives


def importance_log_weights(
    key: jax.Array,
    x: jax.Array,
    model: objectives.LatentModel,
    *,
    start: jax.Array | int,
    count: int,
) -> jax.Array:
    """log w_k for samples k = start, ..., start + count - 1 of q(z|x): ``[count, B]``.

    Sample k is drawn with ``fold_in(key, k)``: the same k gives the same draw
    whichever chunk it falls in.

    Args:
      start: index of the first sample (may be traced); ``count`` is static.
    """
    keys = jax.vmap(jax.random.fold_in, in_axes=(None, 0))(key, start + jnp.arange(count))
    # x is not batched over the keys: the encoder runs once per chunk, not per sample.
    draws = jax.vmap(lambda k: model.sample_posterior(k, x, None))(keys)
    return objectives.log_importance_weights_at(model, draws.z, draws.log_q, x)['log_w']


def importance_log_likelihood(
    key: jax.Array,
    x: jax.Array,
    model: objectives.LatentModel,
    *,
    num_samples: int,
    chunk_size: int,
) -> jax.Array:
    """The K-sample importance-sampled estimate of log p(x), per example.

    Args:
      key: PRNG key; sample ``k`` uses ``fold_in(key, k)``.
      x: ``[B, *event_shape]``.
      num_samples: K; must be a multiple of ``chunk_size`` (static).
      chunk_size: samples per chunk (static).

    Returns:
      ``[B]`` estimates (a stochastic lower bound on log p(x) in expectation).
    """
    return running_importance_log_likelihood(
        key,
        x,
        model,
        num_samples=num_samples,
        chunk_size=chunk_size,
    )[-1]


def running_importance_log_likelihood(
    key: jax.Array,
    x: jax.Array,
    model: objectives.LatentModel,
    *,
    num_samples: int,
    chunk_size: int,
) -> jax.Array:
    """Estimates after each chunk: row c uses the first (c + 1) * chunk_size samples.

    Row c is the IWAE bound with K = (c + 1) * chunk_size, so one pass gives the
    curve of the bound against K. Arguments as in ``importance_log_likelihood``.

    Returns:
      ``[num_samples // chunk_size, B]``.
    """
    if num_samples % chunk_size:
        raise ValueError(f'num_samples={num_samples} is not a multiple of chunk_size={chunk_size}')
    num_chunks = num_samples // chunk_size

    def body(carry, c):
        running_max, running_sum = carry
        log_w = importance_log_weights(key, x, model, start=c * chunk_size, count=chunk_size)
        new_max = jnp.maximum(running_max, jnp.max(log_w, axis=0))
        running_sum = running_sum * jnp.exp(running_max - new_max) + jnp.sum(
            jnp.exp(log_w - new_max[None]), axis=0
        )
        estimate = new_max + jnp.log(running_sum) - jnp.log((c + 1.0) * chunk_size)
        return (new_max, running_sum), estimate

    # Log weights are at least float32 whatever the data's dtype (bool, uint8, bf16).
    dtype = jnp.promote_types(x.dtype, jnp.float32)
    init = (jnp.full(x.shape[:1], -jnp.inf, dtype), jnp.zeros(x.shape[:1], dtype))
    _, estimates = jax.lax.scan(body, init, jnp.arange(num_chunks))
    return estimates


def chunk_size_for(num_samples: int, max_chunk: int) -> int:
    """The largest divisor of ``num_samples`` that is at most ``max_chunk``."""
    for size in range(min(num_samples, max_chunk), 0, -1):
        if num_samples % size == 0:
            return size
    return 1
