r"""Trains a VAE from a config file and evaluates it.

  python -m vae_jax.main --config=configs/default.py --workdir=/tmp/vae \
      [--config.latent_dim=2 --config.optimizer.learning_rate=3e-4 ...] [--restart]

Rerunning the same command on the same workdir resumes from the latest usable
checkpoint. Exit status: 0 done; 1 an error, reported as one line that names the
field or file and the fix (bad config or data, a workdir holding another run or
unusable checkpoints, a non-finite loss); 143 or 130 stopped by SIGTERM or SIGINT
after saving a checkpoint (rerun to resume).

Multi-host (docs/scale.md, "Several hosts"): start one process per host with
``--config.data_parallel=True`` and ``--coordinator_address=HOST:PORT --num_processes=N
--process_id=I`` (or the environment variables JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES,
JAX_PROCESS_ID), or ``--multihost`` alone where jax detects the cluster (SLURM, Open MPI,
Kubernetes, Cloud TPU).
"""

import sys

from absl import flags
from ml_collections import config_flags

from vae_jax import cli, parallel, train

_CONFIG = config_flags.DEFINE_config_file(
    'config', None, 'Path to a config file with get_config().', lock_config=True
)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Directory for checkpoints, logs and results.')
_RESTART = flags.DEFINE_bool(
    'restart',
    False,
    'Move the run already in --workdir (checkpoints, config, logs, results) into '
    'WORKDIR/previous-<time>/ and train from step 0, e.g. when no checkpoint is usable.',
)
_COORDINATOR = flags.DEFINE_string(
    'coordinator_address',
    None,
    f'Multi-host: HOST:PORT of process 0 (default ${parallel.ENV_COORDINATOR}).',
)
_NUM_PROCESSES = flags.DEFINE_integer(
    'num_processes',
    None,
    f'Multi-host: number of processes (default ${parallel.ENV_NUM_PROCESSES}).',
    lower_bound=1,
    upper_bound=cli.MAX_INT,
)
_PROCESS_ID = flags.DEFINE_integer(
    'process_id',
    None,
    f'Multi-host: this process, 0..N-1 (default ${parallel.ENV_PROCESS_ID}).',
    lower_bound=0,
    upper_bound=cli.MAX_INT,
)
_MULTIHOST = flags.DEFINE_bool(
    'multihost',
    False,
    'Multi-host with the cluster detected by jax (SLURM, Open MPI, Kubernetes, Cloud TPU) '
    'when no coordinator address, process count or id is given.',
)
flags.mark_flags_as_required(['config', 'workdir'])


def main(argv):
    del argv  # cli.run refuses positional arguments.
    try:
        parallel.initialize(
            _COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value, auto=_MULTIHOST.value
        )
    except ValueError as e:
        sys.exit(f'error: {e}')
    config = cli.config_value(_CONFIG)
    try:
        cli.require_workdir(_WORKDIR.value)
    except ValueError as e:
        sys.exit(f'error: {e}')
    with cli.outcomes_in_one_line():
        train.train_and_evaluate(config, _WORKDIR.value, restart=_RESTART.value)


if __name__ == '__main__':
    cli.run(main)
