r"""Figure 2 of Kingma & Welling (2013): the lower bound against training samples evaluated.

  python experiments/aevb/fig2_lower_bound.py --scale=quick [--data_dir=../shared/data]

For MNIST and Frey Face and several latent sizes N_z, trains AEVB and wake-sleep
with the paper's settings (configs/paper/) and plots the average lower bound per
datapoint on the training minibatches (solid) and on the test set (dashed)
against the number of training samples evaluated (steps x M), as in the paper.
Writes fig2_lower_bound.png and fig2_lower_bound.csv to --out.
"""

from __future__ import annotations

import os
import sys

import numpy as np
from matplotlib.ticker import NullFormatter

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

from vae_jax import cli  # noqa: E402

ALGORITHMS = ('aevb', 'wake_sleep')
DATASETS = ('mnist', 'frey_face')
STYLE = {
    'aevb': dict(color='tab:red', label='AEVB'),
    'wake_sleep': dict(color='tab:blue', label='Wake-Sleep'),
}


def main(argv: list[str] | None = None) -> list[dict]:
    args = common.parse_args(__doc__.splitlines()[0], argv)
    common.log_command(args.out, 'experiments/aevb/fig2_lower_bound.py', argv)
    scale = common.SCALES[args.scale]
    rows = []
    total = sum(len(scale.latent_sizes[d]) for d in DATASETS) * len(ALGORITHMS)
    runner = common.Runs('Figure 2', total)
    for dataset in DATASETS:
        for nz in scale.latent_sizes[dataset]:
            for algorithm in ALGORITHMS:
                config = common.paper_config(dataset, nz, algorithm, scale, args)
                name = common.run_name(dataset, nz, algorithm)
                results = runner(config, os.path.join(args.out, 'runs', name))
                for m in common.read_metrics(os.path.join(args.out, 'runs', name)):
                    if 'test_elbo' not in m:
                        continue
                    rows.append(
                        {
                            'dataset': dataset,
                            'latent_dim': nz,
                            'algorithm': algorithm,
                            'step': int(m['step']),
                            'samples_evaluated': int(m['step']) * config.batch_size,
                            'train_elbo': m['train_elbo'],
                            'test_elbo': m['test_elbo'],
                            'run_wall_seconds': results.get('wall_seconds', ''),
                        }
                    )
    common.write_csv(os.path.join(args.out, 'fig2_lower_bound.csv'), rows)
    plot(rows, os.path.join(args.out, 'fig2_lower_bound.png'), scale)
    return rows


def plot(rows: list[dict], path: str, scale: common.Scale) -> None:
    plt = common.pyplot()
    ncols = max(len(scale.latent_sizes[d]) for d in DATASETS)
    fig, axes = plt.subplots(len(DATASETS), ncols, figsize=(3.2 * ncols, 5.6), squeeze=False)
    for i, dataset in enumerate(DATASETS):
        for j in range(ncols):
            ax = axes[i][j]
            if j >= len(scale.latent_sizes[dataset]):
                ax.axis('off')
                continue
            nz = scale.latent_sizes[dataset][j]
            for algorithm in ALGORITHMS:
                sel = [
                    r
                    for r in rows
                    if r['dataset'] == dataset
                    and r['latent_dim'] == nz
                    and r['algorithm'] == algorithm
                ]
                x = [r['samples_evaluated'] for r in sel]
                ax.plot(x, [r['train_elbo'] for r in sel], '-', **STYLE[algorithm], lw=1.5)
                kw = dict(STYLE[algorithm], label=STYLE[algorithm]['label'] + ' (test)')
                ax.plot(x, [r['test_elbo'] for r in sel], '--', **kw, lw=1.5)
            ax.set_xscale('log')
            ax.xaxis.set_minor_formatter(NullFormatter())  # Only the decades.
            ax.set_title(f'{"MNIST" if dataset == "mnist" else "Frey Face"}, $N_z = {nz}$')
            ax.set_xlabel('# training samples evaluated')
            if j == 0:
                ax.set_ylabel('lower bound per datapoint (nats)')
            values = [
                r[k]
                for r in rows
                if r['dataset'] == dataset and r['latent_dim'] == nz
                for k in ('train_elbo', 'test_elbo')
            ]
            if values:  # Frame the curves, not the first near-random evaluations.
                lo, hi = np.percentile(values, 20), max(values)
                ax.set_ylim(lo - 0.5 * (hi - lo), hi + 0.1 * (hi - lo) + 1e-3)
    axes[0][0].legend(fontsize=7)
    fig.suptitle(
        'Figure 2 (Kingma & Welling 2013): AEVB vs wake-sleep '
        '(solid: train, dashed: test lower bound)'
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == '__main__':
    cli.run_script(main)
