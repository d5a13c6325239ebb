r"""Frey Face with the settings of Kingma & Welling (2013), Section 5, at N_z = 2.

  python -m vae_jax.main --config=configs/frey_face.py --config.data_dir=../shared/data \
      --workdir=/tmp/vae_frey

`configs/paper/frey_face.py` with its per-field citations: 1,965 images of 28x20
grey levels (1,765 train / 100 valid / 100 test, a fixed split), Gaussian
decoder with learned diagonal variance whose mean goes through a sigmoid
(Sec. 5; `model.gaussian_mean='sigmoid'`, set in configs/paper/frey_face.py),
2-D latent space (the paper's Figure 4), 5 x 10^4 steps.
"""

from configs.paper import frey_face


def get_config():
    config = frey_face.get_config('2')
    config.num_steps = 50_000
    config.eval_test_during_training = False  # Model selection looks at validation only.
    return config
