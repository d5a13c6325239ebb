r"""Frey Face with the settings of Kingma & Welling (2013), Section 5.

  python -m vae_jax.main --config=configs/frey_face.py --config.data_dir=../shared/data \
      --workdir=/tmp/vae_frey

1,965 images of 28x20 grey levels (1,765 train / 100 valid / 100 test, a fixed
split; the paper reports training-set bounds for Frey Face). Gaussian decoder
with learned diagonal variance; its mean goes through a sigmoid (Appendix C.2).
"""

from configs import default


def get_config():
    config = default.get_config()
    config.dataset = 'frey_face'
    config.binarization = 'none'  # Continuous data in [0, 1].
    config.likelihood = 'gaussian'  # Appendix C.2: Gaussian MLP decoder.
    config.latent_dim = 2  # Fig. 2 uses 2 to 20; Fig. 4 the 2-D manifold.
    config.num_samples = 1  # Sec. 5: L = 1.
    config.batch_size = 100  # Sec. 5: M = 100.
    config.num_steps = 50_000
    config.optimizer.name = 'adagrad'  # Sec. 5.
    # Sec. 5: the global step size was chosen from {0.01, 0.02, 0.1}.
    config.optimizer.learning_rate = 0.01
    # Sec. 5: N(0, I) parameter prior, 1 / (number of training images).
    config.optimizer.weight_decay = 1.0 / 1765
    config.model.hidden_dims = (200,)  # Sec. 5: 200 hidden units for Frey Face.
    config.model.activation = 'tanh'  # Appendix C.
    config.log_every_steps = 1000
    config.eval_every_steps = 5000
    config.checkpoint_every_steps = 5000
    config.eval_num_importance_samples = 1000
    config.eval_batch_size = 100
    return config
