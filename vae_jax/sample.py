r"""Draws samples from a trained VAE and saves them as a PNG grid.

  python -m vae_jax.sample --workdir=DIR --num=64 --source=prior --out=samples.png
  python -m vae_jax.sample --workdir=DIR --source=posterior --split=train --out=post.png
  python -m vae_jax.sample --workdir=DIR --manifold=20 --out=manifold.png   # latent_dim 2

``prior``: z ~ p(z), x ~ p(x|z). ``posterior``: the aggregate posterior as the
new prior: take data x from ``--split``, draw z ~ q(z|x), then x ~ p(x|z).
``--means`` shows E[x|z] instead of draws (sharper for Bernoulli decoders).
"""

from __future__ import annotations

import math
import sys

import jax
import numpy as np
from absl import flags, logging

from vae_jax import cli, data, models, plotting, runs

_WORKDIR = flags.DEFINE_string('workdir', None, 'Workdir of a training run.')
# One PNG grid: 10,000 images (a 100 x 100 grid) is more than a picture can show.
MAX_IMAGES = 10_000
_NUM = flags.DEFINE_integer('num', 64, 'Number of samples.', lower_bound=1, upper_bound=MAX_IMAGES)
_SOURCE = flags.DEFINE_enum('source', 'prior', ['prior', 'posterior'], 'Where z comes from.')
_SPLIT = flags.DEFINE_enum(
    'split', 'train', ['train', 'valid', 'test'], 'Data split for --source=posterior.'
)
_MEANS = flags.DEFINE_bool('means', False, 'Show decoder means E[x|z] instead of draws x ~ p(x|z).')
_MANIFOLD = flags.DEFINE_integer(
    'manifold',
    0,
    'If > 0: draw the n x n learned manifold of a 2-D latent space through the '
    'inverse Gaussian CDF (Kingma & Welling 2013, Figure 4); ignores --num and --source.',
    lower_bound=0,
    upper_bound=math.isqrt(MAX_IMAGES),
)
_SEED = flags.DEFINE_integer(
    'seed', 0, 'Seed of the draws.', lower_bound=0, upper_bound=cli.MAX_INT
)
_OUT = flags.DEFINE_string('out', None, 'Output PNG path.')
flags.mark_flags_as_required(['workdir', 'out'])


def main(argv):
    del argv  # cli.run refuses positional arguments.
    try:
        cli.require_png(_OUT.value, '--out')
        run = runs.load_run(_WORKDIR.value)
    except (FileNotFoundError, ValueError, data.DataError) as e:
        sys.exit(f'error: {e}')
    config, model, params = run.config, run.model, run.params
    key = jax.random.key(_SEED.value)
    if _MANIFOLD.value and not models.has_standard_prior(model):
        sys.exit(
            'error: --manifold draws N(0, I) quantiles of one latent layer; this run has '
            f'another prior or several layers (model.architecture={config.model.architecture}, '
            f'model.prior={config.model.prior}).'
        )
    if _MANIFOLD.value:
        try:
            z = plotting.manifold_latents(_MANIFOLD.value, config.latent_dim)
        except ValueError as e:  # Not a 2-D latent space.
            sys.exit(f'error: --manifold={_MANIFOLD.value}: {e}')
        images = np.asarray(model.apply({'params': params}, z, method=model.decode).mean())
        ncols = _MANIFOLD.value
    else:
        x = runs.split_data(run, _SPLIT.value)  # As evaluation sees it, binarised alike.
        images = plotting.draw(
            key,
            model,
            params,
            num=_NUM.value,
            source=_SOURCE.value,
            x=x,
            means=_MEANS.value,
        )
        ncols = None
    plotting.save_grid(_OUT.value, images, ncols)
    logging.info('wrote %d images to %s', images.shape[0], _OUT.value)


if __name__ == '__main__':
    cli.run(main)
