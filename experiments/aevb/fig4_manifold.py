r"""Figure 4 of Kingma & Welling (2013): learned 2-D manifolds of Frey Face and MNIST.

  python experiments/aevb/fig4_manifold.py --scale=quick [--data_dir=../shared/data]

Trains AEVB with N_z = 2 (configs/paper/, shortened to the scale) on both
datasets, then decodes a grid of latent values through the inverse Gaussian CDF
(equally spaced quantiles of the prior, the paper's construction) and shows the
decoder means. Writes fig4_manifold.png (both panels), fig4_manifold_<dataset>.png
and fig4_manifold.csv (each run's test bound and log-likelihood) to --out.
"""

from __future__ import annotations

import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

from vae_jax import cli, plotting, runs  # noqa: E402

DATASETS = ('frey_face', 'mnist')
GRID = {'frey_face': 20, 'mnist': 20}  # The paper's panels are about 20 x 20.


def manifold_images(workdir: str, n: int) -> np.ndarray:
    """``[n * n, *event_shape]`` decoder means on the n x n quantile grid."""
    run = runs.load_run(workdir)
    z = plotting.manifold_latents(n, run.config.latent_dim)
    p_x = run.model.apply({'params': run.params}, z, method=run.model.decode)
    return np.asarray(p_x.mean())


def main(argv: list[str] | None = None) -> list[dict]:
    args = common.parse_args(__doc__.splitlines()[0], argv)
    common.log_command(args.out, 'experiments/aevb/fig4_manifold.py', argv)
    scale = common.SCALES[args.scale]
    rows, grids = [], {}
    runner = common.Runs('Figure 4', len(DATASETS))
    for dataset in DATASETS:
        config = common.paper_config(dataset, 2, 'aevb', scale, args)
        workdir = os.path.join(args.out, 'runs', common.run_name(dataset, 2, 'aevb'))
        results = runner(config, workdir)
        images = manifold_images(workdir, GRID[dataset])
        grids[dataset] = plotting.tile(images, GRID[dataset])
        plotting.save_grid(
            os.path.join(args.out, f'fig4_manifold_{dataset}.png'), images, GRID[dataset]
        )
        rows.append(
            {
                'dataset': dataset,
                'latent_dim': 2,
                'samples_evaluated': results['train_steps'] * config.batch_size,
                'test_elbo': results['test_elbo'],
                'test_log_likelihood': results['test_log_likelihood'],
                'grid': GRID[dataset],
            }
        )
    common.write_csv(os.path.join(args.out, 'fig4_manifold.csv'), rows)
    plt = common.pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 6))
    titles = {'frey_face': '(a) Learned Frey Face manifold', 'mnist': '(b) Learned MNIST manifold'}
    for ax, dataset in zip(axes, DATASETS, strict=True):
        ax.imshow(grids[dataset], cmap='gray', vmin=0.0, vmax=1.0)
        ax.set_title(titles[dataset])
        ax.axis('off')
    fig.tight_layout()
    fig.savefig(os.path.join(args.out, 'fig4_manifold.png'), dpi=110)
    plt.close(fig)
    return rows


if __name__ == '__main__':
    cli.run_script(main)
