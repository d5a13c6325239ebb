"""Devices and processes: training meshes, per-process data shards, multi-host start.

Every run trains on a ``jax.sharding.Mesh`` with a ``data`` axis (:class:`DataParallel`):
of one device, or with ``config.data_parallel=True`` of every device of every process,
each minibatch split along that axis, parameters and optimizer state replicated. The
step is the same single-device step, jit-compiled with these shardings; XLA inserts the
gradient all-reduce where there are several devices. Because jax's threefry keys are
partitionable, the noise of every example is the same however the batch is split, so
on one process the data-parallel run equals the single-device run to float tolerance
(reductions may sum in another order).

Several processes (hosts): ``initialize`` calls ``jax.distributed.initialize``. The
training set is split into ``jax.process_count()`` contiguous shards; process p keeps
shard p and contributes ``batch_size / process_count`` examples of each minibatch, drawn
by the usual (seed, epoch) permutation of its shard. With one process this is the whole
training set and the whole batch, so nothing changes. Only process 0 writes the workdir.
"""

from __future__ import annotations

import os
from typing import Any

import jax
import numpy as np
from absl import logging
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from vae_jax import configuration

# Environment variables read when the corresponding flag is not given (the names jax's own
# launcher examples use; jax itself reads only the first).
ENV_COORDINATOR = 'JAX_COORDINATOR_ADDRESS'
ENV_NUM_PROCESSES = 'JAX_NUM_PROCESSES'
ENV_PROCESS_ID = 'JAX_PROCESS_ID'

DATA_AXIS = 'data'
POINTS_AXIS = 'points'


def initialize(
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    *,
    auto: bool = False,
) -> bool:
    """Joins a multi-process run; returns whether one was joined.

    Arguments not given come from ``JAX_COORDINATOR_ADDRESS``, ``JAX_NUM_PROCESSES`` and
    ``JAX_PROCESS_ID``. With none of them set, ``auto=True`` lets jax detect the cluster
    (SLURM, Open MPI, Kubernetes, Cloud TPU) and ``auto=False`` stays single-process.
    Must run before anything touches a device.
    """
    env = os.environ
    coordinator_address = coordinator_address or env.get(ENV_COORDINATOR) or None
    if num_processes is None and env.get(ENV_NUM_PROCESSES):
        num_processes = int(env[ENV_NUM_PROCESSES])
    if process_id is None and env.get(ENV_PROCESS_ID):
        process_id = int(env[ENV_PROCESS_ID])
    explicit = (coordinator_address, num_processes, process_id)
    if all(v is None for v in explicit):
        if not auto:
            return False
        jax.distributed.initialize()  # Cluster auto-detection.
    else:
        if any(v is None for v in explicit):
            raise ValueError(
                'multi-host needs all three of --coordinator_address, --num_processes and '
                f'--process_id (or {ENV_COORDINATOR}, {ENV_NUM_PROCESSES}, {ENV_PROCESS_ID}); '
                f'got coordinator_address={coordinator_address!r}, '
                f'num_processes={num_processes!r}, process_id={process_id!r}.'
            )
        jax.distributed.initialize(
            coordinator_address=coordinator_address,
            num_processes=num_processes,
            process_id=process_id,
        )
    logging.info(
        'process %d of %d; %d local and %d global devices',
        jax.process_index(),
        jax.process_count(),
        jax.local_device_count(),
        jax.device_count(),
    )
    return True


def is_primary() -> bool:
    """Whether this process writes the workdir (process 0)."""
    return jax.process_index() == 0


def process_shard(train: np.ndarray) -> np.ndarray:
    """This process's contiguous share of the training set ``[N // process_count, ...]``.

    The last ``N % process_count`` examples are dropped so that every process has as many.
    """
    count, index = jax.process_count(), jax.process_index()
    size = train.shape[0] // count
    return train[index * size : (index + 1) * size]


class DataParallel:
    """The mesh and shardings of training over ``devices`` (every device of every process).

    A run that is not data-parallel is the same with one device (``jax.devices()[:1]``):
    one code path places the state and the batches for both.

    Args:
      batch_size: the global minibatch M; must be a multiple of the number of devices
        (checked by ``check``).
      devices: the mesh's devices; ``None`` for ``jax.devices()``.
    """

    def __init__(self, batch_size: int, devices: list[jax.Device] | None = None):
        devices = jax.devices() if devices is None else devices
        check(batch_size, len(devices))
        self.mesh = Mesh(np.array(devices), (DATA_AXIS,))
        self.replicated = NamedSharding(self.mesh, PartitionSpec())
        # Batches of several steps [n, M, ...]: split along the examples.
        self.batches = NamedSharding(self.mesh, PartitionSpec(None, DATA_AXIS))
        processes = {d.process_index for d in devices}
        self.local_batch_size = batch_size // len(processes)

    def replicate(self, tree: Any) -> Any:
        """Host values (equal on every process) -> global arrays copied to every device."""

        def one(x):
            x = np.asarray(x)
            return jax.make_array_from_callback(x.shape, self.replicated, lambda index: x[index])

        return jax.tree.map(one, tree)

    def global_batches(self, local: np.ndarray | None) -> jax.Array | None:
        """This process's rows ``[n, M / process_count, ...]`` -> the global ``[n, M, ...]``."""
        if local is None:
            return None
        return jax.make_array_from_process_local_data(self.batches, local)


def check(batch_size: int, devices: int | None = None) -> None:
    """Raises ConfigError unless the batch splits evenly over ``devices`` (default: all)."""
    devices = jax.device_count() if devices is None else devices
    if batch_size % devices:
        raise configuration.ConfigError(
            f'config.batch_size={batch_size} does not split over {devices} devices; with '
            f'config.data_parallel=True use a multiple of {devices}.'
        )


def to_host(tree: Any) -> Any:
    """Fully replicated (global) arrays -> numpy copies from this process's first device."""

    def one(x):
        if isinstance(x, jax.Array) and not x.is_fully_addressable:
            if not x.is_fully_replicated:
                raise ValueError(f'array of shape {x.shape} is not replicated: {x.sharding}')
            x = x.addressable_data(0)
        return np.asarray(x)

    return jax.tree.map(one, tree)


def broadcast_from_primary(tree: Any) -> Any:
    """Process 0's values of ``tree`` on every process (no-op with one process)."""
    if jax.process_count() == 1:
        return tree
    return jax.tree.map(np.asarray, multihost_utils.broadcast_one_to_all(tree))


def any_process(flag: bool) -> bool:
    """Whether ``flag`` is true on any process (every process must call this together)."""
    if jax.process_count() == 1:
        return flag
    flags = multihost_utils.process_allgather(np.array([flag], np.int32))
    return bool(np.any(flags))
