r"""MNIST with the settings of Kingma & Welling (2013), Section 5.

  python -m vae_jax.main --config=configs/mnist.py --config.data_dir=../shared/data \
      --workdir=/tmp/vae_mnist

Reads the MNIST IDX files from `data_dir` (50,000 train / 10,000 valid / 10,000
test; see vae_jax/data.py). The paper trains up to 10^8 training samples
(10^6 steps at M=100); `num_steps` here is 10^5 (10^7 samples), which already
reaches most of the bound: change it with --config.num_steps.
"""

from configs import default


def get_config():
    config = default.get_config()
    config.dataset = 'mnist'
    # Sec. 5: grey levels are used as Bernoulli means, as in the paper's code.
    config.binarization = 'none'
    # Sec. 5 / Fig. 2: latent sizes 3, 5, 10, 20 and 200 were compared.
    config.latent_dim = 20
    config.likelihood = 'bernoulli'
    config.objective = 'elbo'
    config.kl_estimator = 'analytic'  # Estimator B, Sec. 2.3 (Eq. 10).
    config.num_samples = 1  # Sec. 5: L = 1.
    config.batch_size = 100  # Sec. 5: M = 100.
    config.num_steps = 100_000
    config.optimizer.name = 'adagrad'  # Sec. 5: Adagrad.
    # Sec. 5: the global step size was chosen from {0.01, 0.02, 0.1}.
    config.optimizer.learning_rate = 0.02
    # Sec. 5: weight decay corresponding to a N(0, I) prior on the parameters,
    # i.e. log p(theta) / N on the per-example objective: 1 / 50,000.
    config.optimizer.weight_decay = 1.0 / 50_000
    config.model.hidden_dims = (500,)  # Sec. 5: 500 hidden units for MNIST.
    config.model.activation = 'tanh'  # Appendix C: tanh MLPs.
    config.log_every_steps = 1000
    config.eval_every_steps = 10_000
    config.checkpoint_every_steps = 10_000
    config.eval_num_importance_samples = 1000
    return config
