r"""Evaluates a trained run: log p(x) estimates, bounds and posterior diagnostics.

  python -m vae_jax.evaluate --workdir=DIR [--split=test] [--method=is|iwae|ais]
      [--num_importance_samples=5000] [--report_k=1,10,100,1000,5000] [--batch_size=500]

Prints one JSON line and writes ``DIR/eval_<split>_<method>_<K>.json``, and beside it
each example's estimate of log p(x) (``..._per_example.npy``, float64 ``[N]``, in the
split's order), which ``vae_jax.compare`` pairs with another run's.

* ``is``: importance sampling with the encoder as proposal, K samples per
  example, drawn in chunks with a running logsumexp (memory independent of K).
  The estimate with K samples is the IWAE bound with K samples; ``--report_k``
  adds the bound at other K to the same file.
* ``iwae``: the same computation, reported as the IWAE_K bound.
* ``ais``: annealed importance sampling with HMC transitions (``vae_jax/ais.py``),
  from q(z|x) to the posterior over ``--ais_steps`` intermediate densities;
  ``--num_importance_samples`` is then the number of chains per example
  (default 16). Bidirectional Monte Carlo on ``--bdmc_examples`` examples
  simulated from the model adds a lower and an upper bound with the same
  settings (``bdmc``), so the file says how tight AIS is on this model.
* ``appendix_d``: Kingma & Welling's (2013) Appendix D HMC estimator (small
  latent spaces only; ``--num_importance_samples`` posterior samples).

Every file says which side of log p(x) its number lies on in expectation:
``bound`` is ``'lower'`` (IS, IWAE and AIS: each weight is an unbiased estimate
of p(x), so by Jensen the log of their mean is below log p(x) in expectation),
``'upper'`` (Appendix D: with exact posterior samples it averages
q(z) / p(x, z), unbiased for 1 / p(x), so the log of the inverse is above
log p(x) in expectation; its HMC samples are not exact, so the direction is
that of the ideal estimator) or ``'none'`` (for an estimator with no guaranteed
direction; none of these four); ``elbo``
is always a lower bound, and the BDMC block's ``lower`` and ``upper`` are named
for theirs.

``bits_per_dim`` (= -log_likelihood / (D ln 2)) is written only when the scored
data are binary: it is then the code length of discrete data. For grey levels
under a Bernoulli decoder (a continuous relaxation, not a distribution over the
grey values) and for Gaussian densities of continuous data, a density in nats
per example is not a code length in bits; the file says so in
``bits_per_dim_note`` instead.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from absl import flags, logging

from vae_jax import (
    algorithms,
    cli,
    configuration,
    data,
    diagnostics,
    evaluators,
    models,
    runs,
)

METHODS = ('is', 'iwae', 'ais', 'appendix_d')
# K when --num_importance_samples is not given: the community's IS standard, and
# Wu et al.'s (2017) 16 chains for AIS.
DEFAULT_K = {'is': 5000, 'iwae': 5000, 'ais': 16, 'appendix_d': 1000}
# Which side of log p(x) each method's estimate lies on in expectation (module docstring).
BOUND = {'is': 'lower', 'iwae': 'lower', 'ais': 'lower', 'appendix_d': 'upper'}


def _mcmc_estimate(
    run: runs.Run,
    x: np.ndarray,
    key: jax.Array,
    *,
    method: str,
    num_samples: int,
    batch_size: int,
    ais_steps: int,
    bdmc_examples: int,
) -> dict[str, Any]:
    """AIS (with a BDMC sandwich on simulated data) or the Appendix D estimator."""
    from vae_jax import ais, appendix_d  # Deferred: pulls in blackjax.

    lm = models.latent_model(run.model, run.params)
    # From the encoder where it is trained and its density closed-form; MCEM's is untrained.
    encoder_start = algorithms.of(run.config).trains_encoder and lm.posterior is not None
    start = 'encoder' if encoder_start else 'prior'
    if method == 'ais':
        fn = jax.jit(
            lambda xb, kb: ais.ais_log_likelihood(
                kb, xb, lm, num_annealing_steps=ais_steps, num_chains=num_samples, start=start
            )
        )
    else:
        fn = jax.jit(
            lambda xb, kb: {
                'log_px': appendix_d.hmc_marginal_likelihood(
                    kb, xb, lm, num_posterior_samples=num_samples, start=start
                )
            }
        )
    out = evaluators.map_batches(
        lambda xb, kb: {
            k: v for k, v in fn(xb, kb).items() if k not in ('log_weights', 'step_sizes')
        },
        x,
        batch_size,
        jax.random.fold_in(key, 0),
        progress=f'{method}, {x.shape[0]} examples',
    )
    mean, se = evaluators.summarize(out['log_px'])
    result: dict[str, Any] = {
        'log_likelihood': mean,
        'log_likelihood_stderr': se,
        'per_example': out['log_px'],
    }
    if method == 'appendix_d':
        return result
    result['ais_steps'] = ais_steps
    result['ais_start'] = start
    result['acceptance_rate'] = float(np.mean(out['acceptance_rate']))
    if bdmc_examples > 0:
        sandwich = jax.jit(
            lambda kb: ais.bdmc(
                kb,
                lm,
                event_shape=run.splits.event_shape,
                num_examples=bdmc_examples,
                num_annealing_steps=ais_steps,
                num_chains=num_samples,
                start=start,
            )
        )(jax.random.fold_in(key, 1))
        lower, upper = np.asarray(sandwich['lower']), np.asarray(sandwich['upper'])
        result['bdmc'] = {
            'num_examples': bdmc_examples,
            'lower': float(lower.mean()),
            'upper': float(upper.mean()),
            'gap': float((upper - lower).mean()),
            'note': 'on data simulated from the model; true mean log p(x) lies between',
        }
    return result


def evaluate_run(
    workdir: str,
    *,
    split: str = 'test',
    method: str = 'is',
    num_importance_samples: int | None = None,
    report_k: tuple[int, ...] = (),
    batch_size: int = 100,
    max_chunk: int = 100,
    max_examples: int = 0,
    seed: int = 0,
    ais_steps: int = 500,
    bdmc_examples: int = 16,
    precision: str | None = None,
    write: bool = True,
) -> dict[str, Any]:
    """Evaluates the latest checkpoint in ``workdir``; returns (and writes) the results.

    ``precision``: float32 matmul precision (``configuration.PRECISIONS``); None for the
    run's ``config.precision.eval``.
    """
    if method not in METHODS:
        raise ValueError(f'--method must be one of {METHODS}, got {method!r}')
    if num_importance_samples is None:
        num_importance_samples = DEFAULT_K[method]
    if num_importance_samples <= 0:
        raise ValueError(f'--num_importance_samples must be > 0, got {num_importance_samples}')
    t0 = time.perf_counter()
    run = runs.load_run(workdir)
    if write:  # Before minutes of work, not after.
        cli.require_writable(workdir, 'the results file')
    if precision is None:
        precision = run.config.precision.eval
    if precision not in configuration.PRECISIONS:
        raise ValueError(
            f'--precision must be one of {configuration.PRECISIONS}, got {precision!r}'
        )
    # jit traces under this context (it is part of the compilation cache key).
    with jax.default_matmul_precision(precision):
        x = runs.split_data(run, split)
        if max_examples:
            x = x[:max_examples]
        batch_size = min(batch_size, x.shape[0])
        key = jax.random.key(seed)
        # MCEM trains no encoder: nothing that goes through q(z|x) means anything for it.
        has_encoder = algorithms.of(run.config).trains_encoder
        if not has_encoder and method in ('is', 'iwae'):
            raise ValueError(
                f'{workdir} was trained with algorithm=mcem, which trains no encoder to propose '
                'from; use --method=ais (annealed from the prior) or --method=appendix_d.'
            )
        terms = {}
        if has_encoder:  # The same ELBO pass as a training run's final evaluation.
            terms = evaluators.elbo_pass(
                evaluators.make_elbo_fn(run.model, precision, posterior=True),
                run.params,
                x,
                batch_size,
                jax.random.fold_in(key, 0),
                progress=f'ELBO, {x.shape[0]} examples',
            )
        result: dict[str, Any] = {
            'workdir': os.path.abspath(workdir),
            'checkpoint_step': run.step,
            'dataset': run.config.dataset,
            'split': split,
            'num_examples': int(x.shape[0]),
            'method': method,
            'num_importance_samples': num_importance_samples,
            **(evaluators.summarize_elbo(terms) if terms else {}),
        }
        if method in ('is', 'iwae'):
            est = evaluators.importance_sampling(
                models.latent_model(run.model, run.params),
                x,
                jax.random.fold_in(key, 1),
                num_samples=num_importance_samples,
                report_k=tuple(report_k),
                batch_size=batch_size,
                max_chunk=max_chunk,
            )
            result.update(est)
            if method == 'iwae':
                result['iwae_bound'] = result['log_likelihood']
        else:
            result.update(
                _mcmc_estimate(
                    run,
                    x,
                    jax.random.fold_in(key, 2),
                    method=method,
                    num_samples=num_importance_samples,
                    batch_size=batch_size,
                    ais_steps=ais_steps,
                    bdmc_examples=bdmc_examples,
                )
            )
        result['bound'] = BOUND[method]
        if data.is_binary(x):
            num_dims = math.prod(run.splits.event_shape)
            result['bits_per_dim'] = -result['log_likelihood'] / (num_dims * math.log(2.0))
        else:
            result['bits_per_dim_note'] = (
                'not reported: the scored data are not binary, so log p(x) is a density '
                '(Gaussian) or a relaxation (grey levels under a Bernoulli), not a code length'
            )
        if has_encoder and models.has_standard_prior(run.model):
            result['diagnostics'] = diagnostics.posterior_diagnostics(
                jax.random.fold_in(key, 3),
                jnp.asarray(terms['mean']),
                jnp.asarray(terms['log_var']),
            )
        elif has_encoder:  # Other priors or layers: active units per layer only.
            sizes = models.latent_sizes(run.model)
            splits = np.split(np.asarray(terms['mean']), np.cumsum(sizes)[:-1], axis=-1)
            per_layer = [diagnostics.active_units(jnp.asarray(m))[0] for m in splits]
            result['diagnostics'] = {
                'active_units': sum(per_layer),
                'active_units_per_layer': per_layer,
                'active_unit_threshold': diagnostics.ACTIVE_UNIT_THRESHOLD,
            }
    per_example = np.asarray(result.pop('per_example'), np.float64)
    result['wall_seconds'] = time.perf_counter() - t0
    if write:
        path = os.path.join(workdir, f'eval_{split}_{method}_{num_importance_samples}.json')
        result['per_example_file'] = os.path.basename(per_example_path(path))
        np.save(per_example_path(path), per_example)
        with open(path, 'w') as f:
            json.dump(result, f, indent=2)
        result['path'] = path
    return result


def per_example_path(results_path: str) -> str:
    """Where the per-example estimates of ``eval_<split>_<method>_<K>.json`` are saved."""
    return results_path.removesuffix('.json') + '_per_example.npy'


def plot_diagnostics(result: dict[str, Any], path: str) -> None:
    """Bar charts of KL per dimension and posterior-mean variance (active units)."""
    import matplotlib  # Deferred: about a second of imports.

    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    diag = result['diagnostics']
    dims = np.arange(len(diag['kl_per_dimension']))
    fig, axes = plt.subplots(1, 2 + bool(result.get('iwae_curve')), figsize=(13, 3.5))
    axes[0].bar(dims, diag['kl_per_dimension'])
    axes[0].set(xlabel='latent dimension', ylabel='KL (nats)', title='KL per dimension')
    axes[1].bar(dims, diag['posterior_mean_variance'])
    axes[1].axhline(diag['active_unit_threshold'], color='r', ls='--')
    axes[1].set(
        yscale='log',
        xlabel='latent dimension',
        ylabel='Cov_x E_q[z_i]',
        title=f'active units: {diag["active_units"]}',
    )
    if result.get('iwae_curve'):
        ks = sorted(int(k) for k in result['iwae_curve'])
        means = [result['iwae_curve'][k][0] for k in ks]
        axes[2].plot(ks, means, 'o-')
        axes[2].axhline(result['elbo'], color='gray', ls=':', label='ELBO')
        axes[2].set(xscale='log', xlabel='K', ylabel='nats', title='IWAE_K bound')
        axes[2].legend()
    fig.suptitle(
        f'I(x; z) = {diag["mutual_information"]:.2f} nats (max log N = '
        f'{diag["mutual_information_max"]:.2f}),  '
        f'KL(q(z) || p(z)) = {diag["aggregate_kl"]:.2f} nats'
    )
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


_WORKDIR = flags.DEFINE_string('workdir', None, 'Workdir of a training run.')
_SPLIT = flags.DEFINE_enum('split', 'test', ['train', 'valid', 'test'], 'Data split.')
_METHOD = flags.DEFINE_enum('method', 'is', list(METHODS), 'Estimator of log p(x).')
_K = flags.DEFINE_integer(
    'num_importance_samples',
    None,
    f'K: samples per example for is/iwae, chains for ais, posterior samples for appendix_d '
    f'(default {DEFAULT_K}).',
    lower_bound=1,
    upper_bound=cli.MAX_INT,
)
_REPORT_K = flags.DEFINE_list('report_k', [], 'Also report the IWAE bound at these K.')
_BATCH = flags.DEFINE_integer(
    'batch_size', 100, 'Examples per batch.', lower_bound=1, upper_bound=cli.MAX_INT
)
_CHUNK = flags.DEFINE_integer(
    'chunk_size',
    100,
    'Most samples of z per example drawn at once. batch_size x chunk_size decoder rows stay '
    'in cache on a CPU: 100 x 100 ran ~1.7x faster than 100 x 500 (benchmarks/README.md).',
    lower_bound=1,
    upper_bound=cli.MAX_INT,
)
_MAX_EXAMPLES = flags.DEFINE_integer(
    'max_examples',
    0,
    'Use only the first N examples (0: all).',
    lower_bound=0,
    upper_bound=cli.MAX_INT,
)
_SEED = flags.DEFINE_integer(
    'seed', 0, 'Seed of the estimator.', lower_bound=0, upper_bound=cli.MAX_INT
)
_AIS_STEPS = flags.DEFINE_integer(
    'ais_steps', 500, 'AIS intermediate distributions.', lower_bound=1, upper_bound=cli.MAX_INT
)
_BDMC = flags.DEFINE_integer(
    'bdmc_examples',
    16,
    'ais: examples simulated for BDMC (0: none).',
    lower_bound=0,
    upper_bound=cli.MAX_INT,
)
_PRECISION = flags.DEFINE_enum(
    'precision',
    '',
    ['', *configuration.PRECISIONS],
    "float32 matmul precision; '' for the run's config.precision.eval (GPUs: TF32 or not).",
)
_PLOT = flags.DEFINE_string('plot', '', 'If set, draw the diagnostics to this PNG.')


@flags.validator('report_k', message='--report_k takes distinct positive integers, e.g. 1,5,50')
def _distinct_positive_ints(values: list[str]) -> bool:
    try:
        ks = [int(v) for v in values]
    except ValueError:
        return False
    return all(k > 0 for k in ks) and len(set(ks)) == len(ks)


def main(argv):
    del argv  # cli.run refuses positional arguments.
    try:
        if _PLOT.value:
            cli.require_png(_PLOT.value, '--plot')
        result = evaluate_run(
            _WORKDIR.value,
            split=_SPLIT.value,
            method=_METHOD.value,
            num_importance_samples=_K.value,
            report_k=tuple(int(k) for k in _REPORT_K.value),
            batch_size=_BATCH.value,
            max_chunk=_CHUNK.value,
            max_examples=_MAX_EXAMPLES.value,
            seed=_SEED.value,
            ais_steps=_AIS_STEPS.value,
            bdmc_examples=_BDMC.value,
            precision=_PRECISION.value or None,
        )
    except (FileNotFoundError, ValueError, data.DataError) as e:
        sys.exit(f'error: {e}')  # Once: not also through absl's log.
    if _PLOT.value and 'diagnostics' in result:
        plot_diagnostics(result, _PLOT.value)
    elif _PLOT.value:
        logging.warning('no posterior diagnostics to plot: the run has no trained encoder')
    print(json.dumps(result))


if __name__ == '__main__':
    flags.mark_flags_as_required(['workdir'])
    cli.run(main)
