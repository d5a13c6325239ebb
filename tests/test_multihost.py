"""Two processes on 127.0.0.1 train together (jax.distributed, CPU collectives)."""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
from helpers import tiny_config

from vae_jax import models, parallel, train

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def _env(**extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in (parallel.ENV_COORDINATOR, parallel.ENV_NUM_PROCESSES, parallel.ENV_PROCESS_ID)
    }
    env.pop('XLA_FLAGS', None)  # One CPU device per process.
    return {**env, **extra}


def _popen(args: list[str], env: dict[str, str] | None = None) -> subprocess.Popen:
    """Starts one process of a pair in the repository root, output captured as text."""
    return subprocess.Popen(
        args,
        cwd=ROOT,
        env=_env() if env is None else env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _wait_all(procs: list[subprocess.Popen], timeout: float = 600) -> list[str]:
    outputs = []
    try:
        for p in procs:
            out, _ = p.communicate(timeout=timeout)
            outputs.append(out)
    finally:
        for p in procs:
            p.kill()
    for p, out in zip(procs, outputs, strict=True):
        assert p.returncode == 0, out[-6000:]
    return outputs


def test_two_processes_end_with_identical_parameters(tmp_path):
    port = _free_port()
    procs = [
        _popen(
            [
                sys.executable,
                str(TESTS / 'multihost_worker.py'),
                str(port),
                str(i),
                str(tmp_path / f'workdir{i}'),
                str(tmp_path / f'params{i}.npz'),
            ]
        )
        for i in range(2)
    ]
    outputs = _wait_all(procs)
    assert 'process 1 of 2' in outputs[1]
    p0, p1 = np.load(tmp_path / 'params0.npz'), np.load(tmp_path / 'params1.npz')
    assert len(p0.files) == len(p1.files) > 0
    for name in p0.files:
        np.testing.assert_array_equal(p0[name], p1[name])
    # Only process 0 writes: it has the run, process 1's workdir was never created.
    assert (tmp_path / 'workdir0' / 'results.json').exists()
    assert (tmp_path / 'workdir0' / 'checkpoints').is_dir()
    assert not (tmp_path / 'workdir1').exists()
    # They trained: the parameters moved away from their initial values.
    config = tiny_config(data_parallel=True)
    model = train.make_model(config, (784,))
    init = models.init_params(model, train.Streams(config.seed).init, (784,), config.latent_dim)
    leaves = jax.tree.leaves(init)
    assert len(leaves) == len(p0.files)
    moved = [not np.allclose(p0[f'arr_{i}'], np.asarray(x)) for i, x in enumerate(leaves)]
    assert all(moved)


def _cli(workdir, *overrides: str) -> list[str]:
    return [
        sys.executable,
        '-m',
        'vae_jax.main',
        '--config=configs/default.py',
        f'--workdir={workdir}',
        '--config.data_parallel=True',
        '--config.num_steps=20',
        '--config.batch_size=32',
        '--config.model.hidden_dims=(32,)',
        '--config.latent_dim=4',
        '--config.eval_num_importance_samples=4',
        '--config.eval_max_examples=100',
        '--config.steps_per_dispatch=10',
        '--config.log_every_steps=10',
        *overrides,
    ]


def test_main_cli_flags_and_environment(tmp_path):
    """process 0 from flags, process 1 from JAX_* variables; one shared workdir."""
    port = _free_port()
    workdir = tmp_path / 'run'
    common = _cli(workdir)
    procs = [
        _popen(
            [
                *common,
                f'--coordinator_address=127.0.0.1:{port}',
                '--num_processes=2',
                '--process_id=0',
            ]
        ),
        _popen(
            common,
            _env(
                **{
                    parallel.ENV_COORDINATOR: f'127.0.0.1:{port}',
                    parallel.ENV_NUM_PROCESSES: '2',
                    parallel.ENV_PROCESS_ID: '1',
                }
            ),
        ),
    ]
    _wait_all(procs)
    with open(workdir / 'results.json') as f:
        results = json.load(f)
    assert results['train_steps'] == 20
    assert np.isfinite(results['test_elbo'])


def _start_pair(command: list[str]) -> list[subprocess.Popen]:
    port = _free_port()
    return [
        _popen(
            [
                *command,
                f'--coordinator_address=127.0.0.1:{port}',
                '--num_processes=2',
                f'--process_id={i}',
            ]
        )
        for i in range(2)
    ]


def test_sigterm_to_one_process_stops_both_at_one_step_and_resumes(tmp_path):
    workdir = tmp_path / 'run'
    long_run = _cli(workdir, '--config.num_steps=1000000', '--config.checkpoint_every_steps=100000')
    procs = _start_pair(long_run)
    metrics = workdir / 'metrics.jsonl'
    deadline = time.monotonic() + 300
    while not (metrics.exists() and metrics.read_text().count('\n') >= 2):
        assert time.monotonic() < deadline and all(p.poll() is None for p in procs)
        time.sleep(0.2)
    procs[1].send_signal(signal.SIGTERM)  # Only process 1 is signalled.
    outputs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [143, 143], outputs[0][-3000:] + outputs[1][-3000:]
    stopped = re.search(r'interrupted: SIGTERM at step (\d+)', outputs[0])
    assert stopped, outputs[0][-3000:]
    step = int(stopped.group(1))
    assert (workdir / 'checkpoints' / str(step)).is_dir()  # Saved by process 0.

    procs = _start_pair(_cli(workdir, f'--config.num_steps={step + 20}'))
    outputs = _wait_all(procs)
    assert f'resumed from step {step}' in outputs[0]
    assert json.loads((workdir / 'results.json').read_text())['train_steps'] == step + 20
