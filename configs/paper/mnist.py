r"""MNIST as in Kingma & Welling (2013), Sec. 5 (Figures 2, 4 and 5).

  python -m vae_jax.main --config=configs/paper/mnist.py:20 --config.data_dir=../shared/data \
      --workdir=/tmp/paper_mnist_z20 [--config.algorithm=wake_sleep]

The text after ':' is the latent size N_z (default 20); Figure 2 uses 3, 5, 10,
20 and 200, Figure 5 uses 2, 5, 10 and 20, Figure 4 uses 2.
"""

from configs import default


def get_config(latent_dim: str = '20'):
    config = default.get_config()
    config.dataset = 'mnist'
    # The paper does not binarise; grey levels are Bernoulli means (App. C.1's
    # Bernoulli MLP decoder on MNIST's [0, 1] intensities).
    config.binarization = 'none'
    config.latent_dim = int(latent_dim)  # Sec. 5, Fig. 2: N_z in {3, 5, 10, 20, 200}.
    config.likelihood = 'bernoulli'  # App. C.1: Bernoulli MLP decoder for MNIST.
    config.objective = 'elbo'
    config.kl_estimator = 'analytic'  # Sec. 2.3, Eq. 10 (estimator B), used in Sec. 5.
    config.num_samples = 1  # Sec. 5: L = 1 sample per datapoint.
    config.batch_size = 100  # Sec. 5: minibatches of size M = 100.
    # Sec. 5, Fig. 2: up to 10^8 training samples evaluated = 10^6 steps of M = 100.
    config.num_steps = 1_000_000
    config.optimizer.name = 'adagrad'  # Sec. 5: step sizes adapted with Adagrad.
    # Sec. 5: Adagrad's global step size was chosen from {0.01, 0.02, 0.1} by training
    # performance in the first iterations; the paper does not say which won. We use
    # 0.02 (override with --config.optimizer.learning_rate).
    config.optimizer.learning_rate = 0.02
    # Sec. 5: "a small weight decay term corresponding to a prior p(theta) = N(0, I)":
    # log p(theta) spread over the N = 50,000 training examples of the per-example loss.
    config.optimizer.weight_decay = 1.0 / 50_000
    config.model.hidden_dims = (500,)  # Sec. 5: 500 hidden units for MNIST.
    config.model.activation = 'tanh'  # App. C: MLPs with tanh hidden layers.
    # Sec. 5: "initialized by random sampling from N(0, 0.01)", read as variance
    # 0.01 (the paper writes N(mean, covariance), as in N(0, I)): std 0.1.
    config.model.init_std = 0.1
    config.algorithm = 'aevb'  # Sec. 5 compares 'aevb' and 'wake_sleep' (same encoder).
    config.log_every_steps = 1000
    config.eval_every_steps = 10_000
    config.eval_test_during_training = True  # Fig. 2 plots train and test bounds.
    config.checkpoint_every_steps = 10_000
    config.eval_num_importance_samples = 1000
    return config
