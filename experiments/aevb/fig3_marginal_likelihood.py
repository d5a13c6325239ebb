r"""Figure 3 of Kingma & Welling (2013): marginal log-likelihood against training samples.

  python experiments/aevb/fig3_marginal_likelihood.py --scale=quick [--data_dir=../shared/data]

MNIST, N_z = 3, 100 hidden units (configs/paper/mnist_marginal.py), for each
training-set size N_train: AEVB, wake-sleep and Monte Carlo EM are trained, and
at several points of training log p(x) is estimated on the first examples of
the training and test sets with the paper's Appendix D estimator
(`vae_jax.appendix_d.hmc_marginal_likelihood`: HMC posterior samples, a Gaussian fitted
to them, a harmonic-mean-type estimate). Every algorithm is estimated the same
way, from chains started at the best of 1,000 prior draws (MCEM has no encoder),
on the checkpoint saved at that point (every segment's is kept). Each estimate is
recorded in its run's workdir (`appendix_d.json`), so a resumed figure reads the
estimates it has and computes the rest; a segment its run has trained past is neither
trained nor evaluated again (its row's `run_wall_seconds` is then empty). Writes
fig3_marginal_likelihood.png and .csv to --out.

App. D is not a bound. At the last point of each curve the CSV gives, beside it, the
run's own final test log p(x) on the same images (`test_lower_bound`: importance
sampling from the encoder, or AIS from the prior for MCEM), a stochastic lower bound;
an App. D estimate more than LOWER_BOUND_TOLERANCE under it is logged as a warning.
"""

from __future__ import annotations

import json
import os
import sys

import jax
import numpy as np
from absl import logging
from matplotlib.ticker import NullFormatter
from ml_collections import ConfigDict

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

from vae_jax import algorithms, cli, models, runs, train  # noqa: E402
from vae_jax.appendix_d import hmc_marginal_likelihood  # noqa: E402

ALGORITHMS = ('aevb', 'wake_sleep', 'mcem')
ESTIMATES_FILE = 'appendix_d.json'  # In each run's workdir: {step: estimates}.
# Each chain starts at the best of this many prior draws: from one draw, chains on the
# sharp posteriors of long runs stayed in regions of no posterior mass (appendix_d.py).
START_CANDIDATES = 1000
# nats: App. D's own error where one chain sees one of several comparable posterior modes
# (tests/test_ais.py); further below a lower bound, an estimate is wrong.
LOWER_BOUND_TOLERANCE = 1.0
STYLE = {
    'aevb': dict(color='tab:red', label='AEVB'),
    'wake_sleep': dict(color='tab:blue', label='Wake-Sleep'),
    'mcem': dict(color='tab:green', label='MCEM'),
}


_ESTIMATORS: dict = {}


def appendix_d(run: runs.Run, x: np.ndarray, scale: common.Scale, seed: int) -> float:
    """Mean App. D estimate of log p(x) over the rows of ``x``.

    The parameters are an argument of the compiled estimator, so every checkpoint of
    every run with the same shapes reuses one compilation.
    """
    cache_key = (run.model, run.config.likelihood, run.config.latent_dim, x.shape)
    if cache_key not in _ESTIMATORS:
        model = run.model

        def estimate(params, key, xb):
            return hmc_marginal_likelihood(
                key,
                xb,
                models.latent_model(model, params),
                num_posterior_samples=scale.fig3_posterior_samples,
                num_burnin=scale.fig3_burnin,
                start_candidates=START_CANDIDATES,
            )

        _ESTIMATORS[cache_key] = jax.jit(estimate)
    fn = _ESTIMATORS[cache_key]
    return float(np.mean(np.asarray(fn(run.params, jax.random.key(seed), jax.numpy.asarray(x)))))


def run_config(algorithm: str, num_train: int, scale: common.Scale, args) -> ConfigDict:
    """The config of one Figure 3 run (its num_steps is the last of ``scale.fig3_steps``)."""
    config = common.paper_config('mnist', 3, algorithm, scale, args, num_train=num_train)
    config.num_steps = config.checkpoint_every_steps = scale.fig3_steps[-1]
    # Every segment's checkpoint stays: each point of the curve is estimated on its own.
    config.keep_checkpoints = len(scale.fig3_steps)
    config.eval_every_steps = 0  # The App. D estimates are this figure's curve.
    config.eval_test_during_training = False
    # Each segment ends with the usual final evaluation; keep it to the examples
    # this figure estimates on (MCEM's is AIS from the prior, the costly one).
    config.eval_max_examples = scale.fig3_eval_examples
    if not algorithms.of(config).trains_encoder:  # Its final log p(x) is AIS.
        config.eval_ais_steps = scale.fig3_ais_steps
    return config


def estimates_at(
    workdir: str, step: int, train_x: np.ndarray, test_x: np.ndarray, scale: common.Scale, seed: int
) -> dict:
    """App. D estimates of the run's checkpoint at ``step`` on ``train_x`` and ``test_x``,
    read from the workdir's record when it holds them with these settings."""
    settings = {
        'eval_examples': int(train_x.shape[0]),
        'posterior_samples': scale.fig3_posterior_samples,
        'burnin': scale.fig3_burnin,
        'seed': seed,
        'start_candidates': START_CANDIDATES,
    }
    path = os.path.join(workdir, ESTIMATES_FILE)
    record = {}
    if os.path.exists(path):
        with open(path) as f:
            record = json.load(f)
    entry = record.get(str(step))
    if entry is not None and entry['settings'] == settings:
        return entry
    run = runs.load_run(workdir, step=step)
    entry = {
        'train_log_likelihood': appendix_d(run, train_x, scale, seed),
        'test_log_likelihood': appendix_d(run, test_x, scale, seed + 1),
        'settings': settings,
    }
    record[str(step)] = entry
    with open(path + '.tmp', 'w') as f:
        json.dump(record, f, indent=1)
    os.replace(path + '.tmp', path)  # Whole or not at all, if the run is stopped here.
    return entry


def check_against_lower_bound(
    workdir: str, step: int, n: int, estimates: dict, results: dict
) -> float | str:
    """The run's final test log p(x) (a stochastic lower bound) when it was computed at
    ``step`` on the same ``n`` test images, else ''; warns when App. D sits further than
    LOWER_BOUND_TOLERANCE under it."""
    bound = results.get('test_log_likelihood')
    if bound is None or results.get('train_steps') != step or results.get('test_examples') != n:
        return ''
    gap = bound - estimates['test_log_likelihood']
    if gap > LOWER_BOUND_TOLERANCE:
        method = results.get('test_log_likelihood_method', 'importance sampling')
        logging.warning(
            '%s at step %d: the App. D test estimate %.2f is %.2f nats under the run\'s own '
            'lower bound %.2f (%s, %d images): its chains missed posterior mass '
            '(docs/evaluation.md)',
            os.path.basename(workdir), step, estimates['test_log_likelihood'], gap, bound,
            method, n,
        )  # fmt: skip
    return bound


def main(argv: list[str] | None = None) -> list[dict]:
    args = common.parse_args(__doc__.splitlines()[0], argv)
    common.log_command(args.out, 'experiments/aevb/fig3_marginal_likelihood.py', argv)
    scale = common.SCALES[args.scale]
    rows = []
    # One "run" per training segment: each continues its model to the next of fig3_steps.
    total = len(scale.fig3_train_sizes) * len(ALGORITHMS) * len(scale.fig3_steps)
    runner = common.Runs('Figure 3', total)
    for num_train in scale.fig3_train_sizes:
        for algorithm in ALGORITHMS:
            config = run_config(algorithm, num_train, scale, args)
            workdir = os.path.join(
                args.out, 'runs', common.run_name('mnist', 3, algorithm, num_train)
            )
            # The examples App. D estimates on: the run's own, loaded once per run.
            _, train_x, _, test_x = train.prepare_data(config, train.Streams(config.seed))
            for steps in scale.fig3_steps:
                # num_steps may grow on resume: each segment continues the same run.
                config.num_steps = steps
                config.checkpoint_every_steps = steps
                # Resumed past `steps`, its checkpoint at `steps` is all the estimate needs.
                results = runner(config, workdir, past_ok=True)
                n = scale.fig3_eval_examples
                estimates = estimates_at(workdir, steps, train_x[:n], test_x[:n], scale, args.seed)
                bound = ''
                if steps == scale.fig3_steps[-1]:
                    bound = check_against_lower_bound(workdir, steps, n, estimates, results)
                rows.append(
                    {
                        'num_train': num_train,
                        'algorithm': algorithm,
                        'step': steps,
                        'samples_evaluated': steps * config.batch_size,
                        'train_log_likelihood': estimates['train_log_likelihood'],
                        'test_log_likelihood': estimates['test_log_likelihood'],
                        'eval_examples': n,
                        'test_lower_bound': bound,
                        'run_wall_seconds': results.get('wall_seconds', ''),
                    }
                )
    common.write_csv(os.path.join(args.out, 'fig3_marginal_likelihood.csv'), rows)
    plot(rows, os.path.join(args.out, 'fig3_marginal_likelihood.png'), scale)
    return rows


def plot(rows: list[dict], path: str, scale: common.Scale) -> None:
    plt = common.pyplot()
    sizes = scale.fig3_train_sizes
    fig, axes = plt.subplots(1, len(sizes), figsize=(5 * len(sizes), 4), squeeze=False)
    for ax, num_train in zip(axes[0], sizes, strict=True):
        for algorithm in ALGORITHMS:
            sel = [r for r in rows if r['num_train'] == num_train and r['algorithm'] == algorithm]
            x = [r['samples_evaluated'] for r in sel]
            ax.plot(x, [r['train_log_likelihood'] for r in sel], 'o-', **STYLE[algorithm])
            kw = dict(STYLE[algorithm], label=STYLE[algorithm]['label'] + ' (test)')
            ax.plot(x, [r['test_log_likelihood'] for r in sel], 'o--', **kw)
        ax.set_xscale('log')
        ax.xaxis.set_minor_formatter(NullFormatter())  # Only the decades.
        ax.set_title(f'$N_{{train}} = {num_train}$')
        ax.set_xlabel('# training samples evaluated')
        ax.set_ylabel('marginal log-likelihood (App. D)')
    axes[0][0].legend(fontsize=7)
    fig.suptitle('Figure 3 (Kingma & Welling 2013): AEVB vs wake-sleep vs MCEM, N_z = 3')
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == '__main__':
    cli.run_script(main)
