"""The evaluators a training run and ``python -m vae_jax.evaluate`` share.

Batched application over a split (:func:`map_batches`, padding the last batch so one
compiled shape serves), means with standard errors (:func:`summarize`), the compiled
ELBO of a model (:func:`make_elbo_fn`, over a split :func:`elbo_pass`, summarised
:func:`summarize_elbo`), importance-sampled log p(x) with the IWAE curve
(:func:`importance_sampling`), AIS from the prior (:func:`make_ais_log_px`), a training
run's evaluations (:class:`RunEvaluation`: during training and the final test
evaluation) and its image grids (:func:`save_images`).
"""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging

from vae_jax import ais, algorithms, estimators, models, objectives, plotting, reporting


def with_matmul_precision(fn: Callable, precision: str) -> Callable:
    """``fn`` traced under ``jax.default_matmul_precision(precision)`` (config.precision)."""

    @functools.wraps(fn)
    def wrapped(*args, **kwargs):
        with jax.default_matmul_precision(precision):
            return fn(*args, **kwargs)

    return wrapped


def make_elbo_fn(model: models.VAE, precision: str, *, posterior: bool = False) -> Callable:
    """Jitted (params, x, key) -> per-example ELBO terms ``[B]`` (one z per example).

    ``precision``: float32 matmul precision (``config.precision.eval``). ``posterior``:
    also q's ``mean`` ``[B, D]`` (and ``log_var`` for one Gaussian layer; for the
    hierarchical model each layer's mean given the means below, concatenated), which the
    posterior diagnostics read.
    """
    gaussian = isinstance(model, models.VAE)

    def elbo_terms(params, x, key):
        lm = models.latent_model(model, params)
        # Estimator B where the model has a closed-form KL (lower variance), A otherwise.
        kl = 'analytic' if lm.analytic_kl else 'monte_carlo'
        terms = objectives.elbo(key, x, lm, num_samples=1, kl_estimator=kl)
        if posterior and gaussian:
            mean, log_var = model.apply({'params': params}, x, method=model.encode)
            terms.update(mean=mean, log_var=log_var)
        elif posterior:
            means = model.apply({'params': params}, x, method=model.posterior_means)
            terms['mean'] = jnp.concatenate(means, axis=-1)
        return terms

    return jax.jit(with_matmul_precision(elbo_terms, precision))


def elbo_pass(
    elbo_fn: Callable,
    params,
    x: np.ndarray,
    batch_size: int,
    key: jax.Array,
    *,
    progress: str | None = None,
) -> dict[str, np.ndarray]:
    """``make_elbo_fn``'s terms for every example of ``x`` ``[N, ...]``: each ``[N]`` (or
    ``[N, D]``); batch b draws its z from ``fold_in(key, b)``."""
    return map_batches(lambda xb, k: elbo_fn(params, xb, k), x, batch_size, key, progress=progress)


def summarize_elbo(terms: dict[str, np.ndarray]) -> dict[str, float]:
    """``elbo`` (mean over examples) with its ``elbo_stderr``, mean ``kl`` and
    ``reconstruction``: the ELBO fields of a training run's results and of
    ``vae_jax.evaluate``'s (which prefix them with ``test_``)."""
    elbo, elbo_se = summarize(terms['elbo'])
    return {
        'elbo': elbo,
        'elbo_stderr': elbo_se,
        'kl': float(np.mean(terms['kl'])),
        'reconstruction': float(np.mean(terms['reconstruction'])),
    }


def make_ais_log_px(model: models.VAE, config: ml_collections.ConfigDict) -> Callable:
    """Jitted (params, x, key) -> ``[B]`` AIS estimates of log p(x) from the prior.

    Needs no encoder (for MCEM): ``config.eval_ais_steps`` annealing steps and
    ``config.eval_ais_chains`` chains per example (``vae_jax.ais.ais_log_likelihood``).
    """

    def log_px(params, x, key):
        return ais.ais_log_likelihood(
            key,
            x,
            models.latent_model(model, params),
            num_annealing_steps=config.eval_ais_steps,
            num_chains=config.eval_ais_chains,
        )['log_px']

    return jax.jit(with_matmul_precision(log_px, config.precision.eval))


def save_images(config, workdir, model, params, x, key, step: int | None = None) -> None:
    """Sample and reconstruction grids; samples only for MCEM, whose encoder is untrained."""
    if algorithms.of(config).trains_encoder:
        plotting.save_sample_and_reconstruction_grids(workdir, model, params, x, key, step=step)
        return
    if x.ndim == 2 and math.isqrt(x.shape[1]) ** 2 != x.shape[1]:
        logging.warning('data of shape %s is not an image; no grids drawn', x.shape[1:])
        return
    z = jax.random.normal(key, (64, config.latent_dim))
    samples = np.asarray(model.apply({'params': params}, z, method=model.decode).mean())
    plotting.save_grid(os.path.join(workdir, 'samples.png'), samples, 8)
    if step is not None:
        os.makedirs(os.path.join(workdir, 'images'), exist_ok=True)
        plotting.save_grid(os.path.join(workdir, 'images', f'samples_{step:08d}.png'), samples, 8)


def map_batches(
    fn: Callable, x: np.ndarray, batch_size: int, key: jax.Array, *, progress: str | None = None
) -> dict[str, np.ndarray]:
    """Applies fn(x_batch, key_b) -> dict of [b] arrays over x in batches; concatenates.

    The last batch is padded to ``batch_size`` so that one compiled shape serves.
    ``progress``: a label; long passes then log their progress with an ETA
    (``reporting.Countdown``).
    """
    outs: dict[str, list] = {}
    n = x.shape[0]
    num_batches = -(-n // batch_size)
    countdown = reporting.Countdown(progress, num_batches) if progress else None
    for b, start in enumerate(range(0, n, batch_size)):
        xb = x[start : start + batch_size]
        valid = xb.shape[0]
        if valid < batch_size:
            xb = np.concatenate([xb, np.repeat(xb[:1], batch_size - valid, axis=0)])
        res = fn(jnp.asarray(xb), jax.random.fold_in(key, b))
        res = res if isinstance(res, dict) else {'value': res}
        for k, v in res.items():
            outs.setdefault(k, []).append(np.asarray(v)[:valid])
        if countdown is not None:
            countdown.update(b + 1)
    return {k: np.concatenate(v) for k, v in outs.items()}


def summarize(values: np.ndarray) -> tuple[float, float]:
    """Mean and its standard error over examples."""
    values = np.asarray(values, np.float64).ravel()
    if values.size < 2:
        return float(values.mean()), 0.0
    return float(values.mean()), float(values.std(ddof=1) / math.sqrt(values.size))


def importance_sampling(
    lm: objectives.LatentModel,
    x: np.ndarray,
    key: jax.Array,
    *,
    num_samples: int,
    report_k: tuple[int, ...],
    batch_size: int,
    max_chunk: int,
) -> dict[str, Any]:
    """IS estimate of log p(x) with K = ``num_samples`` and the IWAE bound at ``report_k``.

    Returns:
      ``log_likelihood`` (mean), its ``_stderr``, the per-example values, and
      ``iwae_curve`` {K: [mean, stderr]}. Every bound uses the first K of the
      same sequence of samples (sample k is drawn from ``fold_in(key, k)``), so
      the curve is nested; K that are multiples of the chunk size come from the
      main pass, other K cost a pass of their own. The final evaluation of a training
      run and ``vae_jax.evaluate`` both estimate log p(x) here.
    """
    chunk = estimators.chunk_size_for(num_samples, max_chunk)

    def estimate(k: int, c: int) -> np.ndarray:
        fn = jax.jit(
            lambda xb, kb: estimators.running_importance_log_likelihood(
                kb, xb, lm, num_samples=k, chunk_size=c
            )
        )
        out = map_batches(
            lambda xb, kb: {'v': fn(xb, kb).T},
            x,
            batch_size,
            key,
            progress=f'importance sampling, K = {k}, {x.shape[0]} examples',
        )
        return out['v']  # [N, k // c]

    running = estimate(num_samples, chunk)
    curve = {}
    for k in sorted(set(report_k) | {num_samples}):
        if k % chunk == 0 and k <= num_samples:
            values = running[:, k // chunk - 1]
        else:
            values = estimate(k, estimators.chunk_size_for(k, max_chunk))[:, -1]
        curve[k] = list(summarize(values))
    final = running[:, -1]
    mean, se = summarize(final)
    return {
        'log_likelihood': mean,
        'log_likelihood_stderr': se,
        'iwae_curve': curve,
        'per_example': final,
    }


class RunEvaluation:
    """A training run's evaluations: the ELBO during training and the final evaluation.

    Written once for single runs and each point of a vectorised sweep, with the run's own
    evaluation stream ``eval_key`` (``train.Streams.eval``).
    """

    def __init__(
        self,
        config,
        model,
        eval_key: jax.Array,
        valid: np.ndarray,
        test: np.ndarray,
        *,
        elbo_fn: Callable | None = None,
    ):
        """``elbo_fn``: ``make_elbo_fn``'s, already compiled (sweep points share one)."""
        self.config, self.model, self.key = config, model, eval_key
        self.valid, self.test = valid, test
        if elbo_fn is None:
            elbo_fn = make_elbo_fn(model, config.precision.eval)
        self.elbo_fn = elbo_fn
        self.has_encoder = algorithms.of(config).trains_encoder  # Else no ELBO.

    def mean_elbo(self, params, x: np.ndarray) -> float:
        res = elbo_pass(self.elbo_fn, params, x, self.config.eval_batch_size, self.key)
        return float(np.mean(res['elbo']))

    def during_training(self, params) -> dict[str, float]:
        """The validation ELBO (and the test ELBO with ``config.eval_test_during_training``)."""
        scalars = {'valid_elbo': self.mean_elbo(params, self.valid)}
        if self.config.eval_test_during_training:
            scalars['test_elbo'] = self.mean_elbo(params, self.test)
        return scalars

    def final(self, params, test: np.ndarray) -> dict[str, Any]:
        """Test ELBO terms and log p(x) (importance sampling; AIS without an encoder)."""
        if not self.has_encoder:
            return final_eval_mcem(self.config, self.model, params, test, self.key)
        config = self.config
        test_terms = elbo_pass(
            self.elbo_fn, params, test, config.eval_batch_size, jax.random.fold_in(self.key, 1)
        )
        num_is = config.eval_num_importance_samples
        with jax.default_matmul_precision(config.precision.eval):
            log_px = importance_sampling(
                models.latent_model(self.model, params),
                test,
                jax.random.fold_in(self.key, 2),
                num_samples=num_is,
                report_k=(),
                batch_size=config.eval_batch_size,
                max_chunk=config.eval_chunk_size,
            )
        return {
            'dataset': config.dataset,
            'algorithm': config.algorithm,
            'test_examples': int(test.shape[0]),
            **{f'test_{k}': v for k, v in summarize_elbo(test_terms).items()},
            'test_log_likelihood': log_px['log_likelihood'],
            'test_log_likelihood_stderr': log_px['log_likelihood_stderr'],
            'test_log_likelihood_num_samples': num_is,
            'valid_elbo': self.mean_elbo(params, self.valid),
        }


def final_eval_mcem(config, model, params, test, eval_key: jax.Array) -> dict[str, Any]:
    """Test log p(x) by AIS from the prior; the ELBO fields are None (no trained encoder)."""
    log_px = map_batches(
        functools.partial(make_ais_log_px(model, config), params),
        test,
        config.eval_batch_size,
        jax.random.fold_in(eval_key, 2),
        progress=f'AIS, {config.eval_ais_steps} steps, {test.shape[0]} examples',
    )['value']
    test_ll, test_ll_se = summarize(log_px)
    return {
        'dataset': config.dataset,
        'algorithm': config.algorithm,
        'test_examples': int(test.shape[0]),
        'test_elbo': None,
        'test_elbo_stderr': None,
        'test_kl': None,
        'test_reconstruction': None,
        'test_elbo_note': (
            'algorithm=mcem trains no encoder, so there is no ELBO; test_log_likelihood is '
            'annealed importance sampling from the prior (a stochastic lower bound).'
        ),
        'test_log_likelihood': test_ll,
        'test_log_likelihood_stderr': test_ll_se,
        'test_log_likelihood_method': 'ais_from_prior',
        'test_log_likelihood_ais_steps': config.eval_ais_steps,
        'test_log_likelihood_num_samples': config.eval_ais_chains,
        'valid_elbo': None,
    }
