r"""Figure 5 of Kingma & Welling (2013): random samples from MNIST models of several N_z.

  python experiments/aevb/fig5_samples.py --scale=quick [--data_dir=../shared/data]

Trains AEVB on MNIST (configs/paper/mnist.py, shortened to the scale) for each
latent size, draws z ~ p(z) and shows the decoder means E[x|z], one panel per
N_z as in the paper. Writes fig5_samples.png, fig5_samples_z<N>.png and
fig5_samples.csv (each model's test bound and log-likelihood) to --out.
"""

from __future__ import annotations

import os
import sys

import jax

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

from vae_jax import cli, plotting, runs  # noqa: E402

NUM = 100  # 10 x 10 per panel.


def main(argv: list[str] | None = None) -> list[dict]:
    args = common.parse_args(__doc__.splitlines()[0], argv)
    common.log_command(args.out, 'experiments/aevb/fig5_samples.py', argv)
    scale = common.SCALES[args.scale]
    rows, grids = [], {}
    runner = common.Runs('Figure 5', len(scale.sample_latent_sizes))
    for nz in scale.sample_latent_sizes:
        config = common.paper_config('mnist', nz, 'aevb', scale, args)
        workdir = os.path.join(args.out, 'runs', common.run_name('mnist', nz, 'aevb'))
        results = runner(config, workdir)
        run = runs.load_run(workdir)
        images = plotting.draw(
            jax.random.key(args.seed),
            run.model,
            run.params,
            num=NUM,
            source='prior',
            means=True,
        )
        grids[nz] = plotting.tile(images, 10)
        plotting.save_grid(os.path.join(args.out, f'fig5_samples_z{nz}.png'), images, 10)
        rows.append(
            {
                'latent_dim': nz,
                'samples_evaluated': results['train_steps'] * config.batch_size,
                'test_elbo': results['test_elbo'],
                'test_log_likelihood': results['test_log_likelihood'],
            }
        )
    common.write_csv(os.path.join(args.out, 'fig5_samples.csv'), rows)
    plt = common.pyplot()
    fig, axes = plt.subplots(1, len(grids), figsize=(3.2 * len(grids), 3.6), squeeze=False)
    for ax, (nz, grid) in zip(axes[0], grids.items(), strict=True):
        ax.imshow(grid, cmap='gray', vmin=0.0, vmax=1.0)
        ax.set_title(f'({"abcdefgh"[list(grids).index(nz)]}) {nz}-D latent space')
        ax.axis('off')
    fig.tight_layout()
    fig.savefig(os.path.join(args.out, 'fig5_samples.png'), dpi=110)
    plt.close(fig)
    return rows


if __name__ == '__main__':
    cli.run_script(main)
