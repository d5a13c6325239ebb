r"""MNIST with the settings of Kingma & Welling (2013), Section 5, at N_z = 20.

  python -m vae_jax.main --config=configs/mnist.py --config.data_dir=../shared/data \
      --workdir=/tmp/vae_mnist

`configs/paper/mnist.py` with its per-field citations, shortened for everyday
use: the paper trains to 10^8 training samples (10^6 steps at M = 100); here
`num_steps` is 10^5 (10^7 samples), which already reaches most of the bound.
Change it with --config.num_steps, the latent size with --config.latent_dim.
"""

from configs.paper import mnist


def get_config():
    config = mnist.get_config('20')
    config.num_steps = 100_000
    config.eval_test_during_training = False  # Model selection looks at validation only.
    return config
