r"""IWAE (Burda et al. 2016) with K = 5 on the embedded digits.

python -m vae_jax.main --config=configs/iwae.py --workdir=/tmp/vae_iwae
"""

from configs import default


def get_config():
    config = default.get_config()
    config.objective = 'iwae'
    config.kl_estimator = 'monte_carlo'  # The bound is estimated from importance weights.
    config.num_samples = 5
    return config
