"""The command-line tools, table-driven: bad flags end in one `error:` line naming the flag,
exit status 1, no traceback, and the workdir as it was."""

import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest
from helpers import REPO, tiny_config

from vae_jax import train

# (tool, flags, what the error line must say). {run} is a trained run, {tmp} a scratch folder.
CASES = [
    ('evaluate', ['--num_importance_samples=0'], '--num_importance_samples=0'),
    ('evaluate', ['--num_importance_samples=-5'], '--num_importance_samples=-5'),
    ('evaluate', ['--batch_size=0'], '--batch_size=0'),
    ('evaluate', ['--chunk_size=-1'], '--chunk_size=-1'),
    ('evaluate', ['--max_examples=-1'], '--max_examples=-1'),
    ('evaluate', ['--ais_steps=0'], '--ais_steps=0'),
    ('evaluate', ['--bdmc_examples=-1'], '--bdmc_examples=-1'),
    ('evaluate', ['--seed=-1'], '--seed=-1'),
    ('evaluate', ['--report_k=5,5'], '--report_k'),
    ('evaluate', ['--report_k=abc'], '--report_k'),
    ('evaluate', ['--report_k=0'], '--report_k'),
    ('evaluate', ['--split=nope'], '--split=nope'),
    ('evaluate', ['--batch_size=1e9x'], '--batch_size'),
    ('evaluate', ['--plot={tmp}/missing/d.png'], '--plot='),
    ('evaluate', ['--plot={tmp}/d.jpg'], '--plot='),
    ('sample', ['--out={tmp}/s.png', '--num=0'], '--num=0'),
    ('sample', ['--out={tmp}/s.png', '--manifold=-2'], '--manifold=-2'),
    ('sample', ['--out={tmp}/s.png', '--seed=-1'], '--seed=-1'),
    ('sample', ['--out={tmp}/missing/s.png'], '--out='),
    ('sample', ['--out='], '--out='),
    ('main', ['--config=configs/nonexistent.py'], '--config'),
    ('main', ['--config=configs'], '--config'),
    ('main', ['--config=configs/default.py', '--config.batch_size=abc'], '--config.batch_size'),
    ('main', ['--config=configs/default.py', '--config.nosuch=1'], '--config.nosuch'),
    ('main', ['--config=configs/default.py', '--config.batch_size=-1'], 'config.batch_size'),
    ('main', ['--config=configs/default.py', '--config.beta=nan'], 'config.beta'),
    ('main', ['--config=configs/default.py', '--num_processes=0'], '--num_processes'),
    ('sweep', ['--config=configs/default.py', '--sweep=seed='], 'seed'),
    ('sweep', ['--config=configs/default.py', '--sweep=seed=1,1'], 'repeats'),
    ('sweep', ['--config=configs/default.py', '--sweep=latnt_dim=2'], 'latnt_dim'),
    ('sweep', ['--config=configs/default.py', '--sweep=latent_dim=-1'], 'config.latent_dim'),
]
# The workdir each tool is pointed at: the trained run (read by evaluate and sample), a
# scratch one (main, sweep), or a file where a folder belongs.
WORKDIR = {'evaluate': '{run}', 'sample': '{run}', 'main': '{tmp}/new', 'sweep': '{tmp}/new'}


@pytest.fixture(scope='module')
def run(tmp_path_factory):
    path = tmp_path_factory.mktemp('run')
    train.train_and_evaluate(tiny_config(num_steps=10, eval_max_examples=20), str(path))
    return path


def _snapshot(folder):
    return sorted(
        (os.path.relpath(os.path.join(d, f), folder), os.stat(os.path.join(d, f)).st_mtime_ns)
        for d, _, files in os.walk(folder)
        for f in files
    )


def _call(tool, args, run, tmp):
    fill = {'run': run, 'tmp': tmp}
    cmd = [
        sys.executable,
        '-m',
        f'vae_jax.{tool}',
        f'--workdir={WORKDIR[tool].format(**fill)}',
        *(a.format(**fill) for a in args),
    ]
    env = {**os.environ, 'JAX_PLATFORMS': 'cpu'}
    return subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, env=env, timeout=300)


def test_every_bad_flag_is_one_error_line(run, tmp_path):
    before = _snapshot(run)
    with ThreadPoolExecutor(2) as pool:
        outs = list(pool.map(lambda c: _call(c[0], c[1], run, tmp_path), CASES))
    problems = []
    for (tool, args, says), out in zip(CASES, outs, strict=True):
        errors = [line for line in out.stderr.splitlines() if line.startswith('error:')]
        if out.returncode != 1 or len(errors) != 1 or says not in errors[0]:
            problems.append((tool, args, out.returncode, out.stderr[-300:]))
        elif 'Traceback' in out.stderr:
            problems.append((tool, args, 'traceback', out.stderr[-300:]))
    assert not problems, problems
    assert _snapshot(run) == before  # Nothing written into the run by any refusal.
    assert not (tmp_path / 'new').exists()


def test_a_workdir_that_is_a_file_is_refused(run, tmp_path):
    (tmp_path / 'file').write_text('')
    for tool in ('main', 'sweep'):
        out = subprocess.run(
            [
                sys.executable,
                '-m',
                f'vae_jax.{tool}',
                '--config=configs/default.py',
                f'--workdir={tmp_path / "file"}',
                *(['--sweep=seed=0,1'] if tool == 'sweep' else []),
            ],
            capture_output=True,
            text=True,
            cwd=REPO,
            timeout=300,
        )
        assert out.returncode == 1 and 'Traceback' not in out.stderr, out.stderr[-500:]
        assert 'is a file, not a folder' in out.stderr
