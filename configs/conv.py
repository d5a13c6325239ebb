r"""A small convolutional VAE on the embedded digits (the second architecture).

python -m vae_jax.main --config=configs/conv.py --workdir=/tmp/vae_conv
"""

from configs import default


def get_config():
    config = default.get_config()
    config.model.architecture = 'conv'
    config.model.conv_channels = (32, 64)
    config.model.hidden_dims = (256,)
    config.model.activation = 'relu'
    config.num_steps = 2000
    return config
