r"""Trains a VAE from a config file and evaluates it.

  python -m vae_jax.main --config=configs/default.py --workdir=/tmp/vae \
      [--config.latent_dim=2 --config.optimizer.learning_rate=3e-4 ...]

Rerunning the same command on the same workdir resumes from the latest
checkpoint.
"""

import sys

from absl import app, flags, logging
from ml_collections import config_flags

from vae_jax import checkpointing, configuration, data, train

_CONFIG = config_flags.DEFINE_config_file(
    'config', None, 'Path to a config file with get_config().', lock_config=True
)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Directory for checkpoints, logs and results.')
flags.mark_flags_as_required(['config', 'workdir'])


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f'unexpected arguments: {argv[1:]}')
    try:
        train.train_and_evaluate(_CONFIG.value, _WORKDIR.value)
    except (configuration.ConfigError, data.DataError, checkpointing.WorkdirConflictError) as e:
        # A mistake in the command, not a bug: one line that says what to change.
        logging.error('%s', e)
        sys.exit(f'error: {e}')


if __name__ == '__main__':
    app.run(main)
