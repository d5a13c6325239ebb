r"""Frey Face as in Kingma & Welling (2013), Sec. 5 (Figures 2 and 4).

  python -m vae_jax.main --config=configs/paper/frey_face.py:2 --config.data_dir=../shared/data \
      --workdir=/tmp/paper_frey_z2 [--config.algorithm=wake_sleep]

The text after ':' is the latent size N_z (default 2); Figure 2 uses 2, 5, 10 and
20, Figure 4 uses 2.
"""

from configs import default


def get_config(latent_dim: str = '2'):
    config = default.get_config()
    config.dataset = 'frey_face'
    config.binarization = 'none'  # Continuous grey levels in [0, 1].
    config.latent_dim = int(latent_dim)  # Sec. 5, Fig. 2: N_z in {2, 5, 10, 20}.
    # Sec. 5: for Frey Face a decoder with Gaussian outputs (the Gaussian MLP of App. C.2,
    # learned diagonal variance) whose means are constrained to the interval (0, 1) by a
    # sigmoid at the decoder output. Grey levels scaled to [0, 1] fit it; the library's
    # default, 'identity', is for any real data.
    config.likelihood = 'gaussian'
    config.model.gaussian_mean = 'sigmoid'
    # The paper puts no floor on the learned variance; neither do we (the default).
    config.model.min_log_var = None
    config.objective = 'elbo'
    config.kl_estimator = 'analytic'  # Sec. 2.3, Eq. 10 (estimator B).
    config.num_samples = 1  # Sec. 5: L = 1.
    config.batch_size = 100  # Sec. 5: M = 100.
    # Sec. 5, Fig. 2 (Frey Face panels): up to 10^7 training samples = 10^5 steps.
    config.num_steps = 100_000
    config.optimizer.name = 'adagrad'  # Sec. 5: Adagrad.
    # Sec. 5: global step size from {0.01, 0.02, 0.1}, choice not reported; we use
    # the smallest, as a learned-variance Gaussian decoder is the touchier model.
    config.optimizer.learning_rate = 0.01
    # Sec. 5: N(0, I) prior on the parameters, spread over the 1,765 training images.
    config.optimizer.weight_decay = 1.0 / 1765
    # Sec. 5: 200 hidden units for Frey Face ("to prevent overfitting").
    config.model.hidden_dims = (200,)
    config.model.activation = 'tanh'  # App. C.
    config.model.init_std = 0.1  # Sec. 5: N(0, 0.01), variance 0.01.
    config.algorithm = 'aevb'  # Sec. 5 compares 'aevb' and 'wake_sleep'.
    config.log_every_steps = 1000
    config.eval_every_steps = 5000
    config.eval_test_during_training = True
    config.checkpoint_every_steps = 10_000
    config.eval_num_importance_samples = 1000
    config.eval_batch_size = 100
    return config
