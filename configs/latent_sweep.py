r"""The default model at several latent sizes and seeds: an example sweep.

  python -m vae_jax.sweep --config=configs/latent_sweep.py --workdir=/tmp/latent_sweep

`get_config()` is configs/default.py; `get_sweep()` lists the points, each a
dict of dotted config fields to override. `--sweep='latent_dim=2,8;seed=0'` on
the command line replaces the list.
"""

from configs import default
from vae_jax import sweep_points


def get_config():
    return default.get_config()


def get_sweep():
    return sweep_points.product(latent_dim=[2, 5, 10, 20, 50], seed=[0, 1])
