r"""MNIST for the marginal-likelihood comparison of Kingma & Welling (2013), Figure 3.

  python -m vae_jax.main --config=configs/paper/mnist_marginal.py:1000 \
      --config.data_dir=../shared/data --workdir=/tmp/paper_fig3_n1000 \
      [--config.algorithm=wake_sleep|mcem]

The text after ':' is the training-set size N_train (Fig. 3: 1,000 and 50,000).
Sec. 5: "this time with 100 hidden units, and 3 latent variables; for higher
dimensional latent space the estimates became unreliable". The marginal
likelihood itself is estimated with App. D's estimator
(`vae_jax.appendix_d.hmc_marginal_likelihood`, `--method=appendix_d` of `vae_jax.evaluate`).
"""

from configs.paper import mnist


def get_config(num_train: str = '1000'):
    config = mnist.get_config('3')  # Sec. 5: 3 latent variables.
    config.num_train_examples = int(num_train)  # Fig. 3: N_train = 1,000 or 50,000.
    config.model.hidden_dims = (100,)  # Sec. 5: 100 hidden units.
    # The N(0, I) parameter prior is spread over the examples actually trained on.
    config.optimizer.weight_decay = 1.0 / int(num_train)
    # Fig. 3's horizontal axis counts tens of millions of training samples evaluated;
    # 6 x 10^5 steps of M = 100 is 6 x 10^7.
    config.num_steps = 600_000
    config.eval_test_during_training = False
    return config
