"""vae_jax.parallel on one process, and the multi-device suite on 4 simulated devices."""

import os
import re
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from vae_jax import parallel

TESTS = Path(__file__).resolve().parent


def test_multidevice_suite():
    """tests/multidevice in a process that sees 4 CPU devices (XLA_FLAGS before jax starts)."""
    env = dict(os.environ, XLA_FLAGS='--xla_force_host_platform_device_count=4')
    proc = subprocess.run(
        [sys.executable, '-m', 'pytest', '-p', 'no:cacheprovider', str(TESTS / 'multidevice')],
        cwd=TESTS.parent,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    report = proc.stdout[-6000:] + proc.stderr[-3000:]
    assert proc.returncode == 0, report
    passed = re.search(r'(\d+) passed', proc.stdout)
    assert passed and int(passed.group(1)) == 6, report
    assert 'skipped' not in proc.stdout, report


def test_single_process_defaults(monkeypatch):
    for name in (parallel.ENV_COORDINATOR, parallel.ENV_NUM_PROCESSES, parallel.ENV_PROCESS_ID):
        monkeypatch.delenv(name, raising=False)
    assert parallel.initialize() is False  # Nothing asked for: stays one process.
    assert parallel.is_primary()
    train = np.arange(10)
    np.testing.assert_array_equal(parallel.process_shard(train), train)
    assert parallel.any_process(True) and not parallel.any_process(False)
    tree = {'a': jax.numpy.ones(3)}
    assert parallel.broadcast_from_primary(tree) is tree
    assert isinstance(parallel.to_host(tree)['a'], np.ndarray)


def test_partial_multihost_settings_are_refused(monkeypatch):
    monkeypatch.delenv(parallel.ENV_PROCESS_ID, raising=False)
    monkeypatch.delenv(parallel.ENV_COORDINATOR, raising=False)
    monkeypatch.setenv(parallel.ENV_NUM_PROCESSES, '2')
    with pytest.raises(ValueError, match='--coordinator_address.*--process_id'):
        parallel.initialize()


def test_process_shards_cover_the_training_set_once(monkeypatch):
    train = np.arange(10)
    monkeypatch.setattr(jax, 'process_count', lambda: 3)
    shards = []
    for p in range(3):
        monkeypatch.setattr(jax, 'process_index', lambda p=p: p)
        shards.append(parallel.process_shard(train))
    # Equal contiguous shares; the last 10 % 3 examples are dropped.
    assert [s.tolist() for s in shards] == [[0, 1, 2], [3, 4, 5], [6, 7, 8]]
