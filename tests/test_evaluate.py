"""The evaluation CLI on a tiny trained workdir."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from test_train import tiny_config

from vae_jax import evaluate, train

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope='module')
def workdir(tmp_path_factory):
    path = tmp_path_factory.mktemp('run')
    train.train_and_evaluate(tiny_config(num_steps=40), str(path))
    return path


def test_importance_sampling_file_and_curve(workdir):
    result = evaluate.evaluate_run(
        str(workdir),
        split='test',
        method='is',
        num_importance_samples=40,
        report_k=(1, 4, 40),
        batch_size=50,
        max_chunk=20,
        max_examples=120,
    )
    path = workdir / 'eval_test_is_40.json'
    assert result['path'] == str(path)
    saved = json.loads(path.read_text())
    for key in (
        'log_likelihood',
        'log_likelihood_stderr',
        'elbo',
        'kl',
        'reconstruction',
        'num_importance_samples',
        'wall_seconds',
        'dataset',
        'split',
        'bits_per_dim',
        'iwae_curve',
        'diagnostics',
    ):
        assert key in saved, key
    assert saved['num_examples'] == 120 and saved['split'] == 'test'
    assert saved['dataset'] == 'embedded'
    assert saved['checkpoint_step'] == 40
    assert saved['elbo'] == pytest.approx(saved['reconstruction'] - saved['kl'], abs=0.5)
    curve = {int(k): v[0] for k, v in saved['iwae_curve'].items()}
    assert sorted(curve) == [1, 4, 40]
    assert curve[40] == saved['log_likelihood']
    # Averages over 120 examples: far apart compared with their Monte Carlo noise here.
    assert saved['elbo'] < curve[4] < curve[40]
    assert saved['bits_per_dim'] == pytest.approx(-saved['log_likelihood'] / (784 * math.log(2.0)))
    assert saved['diagnostics']['active_units'] <= 4


def test_chunking_does_not_change_the_estimate(workdir):
    kw = dict(method='is', num_importance_samples=24, max_examples=60, write=False)
    whole = evaluate.evaluate_run(str(workdir), max_chunk=24, **kw)
    chunked = evaluate.evaluate_run(str(workdir), max_chunk=6, **kw)
    # Same key, same samples, different chunking: equal up to float32 summation order.
    assert chunked['log_likelihood'] == pytest.approx(whole['log_likelihood'], abs=1e-3)


def test_ais_reports_a_bdmc_sandwich(workdir):
    result = evaluate.evaluate_run(
        str(workdir),
        method='ais',
        num_importance_samples=2,
        ais_steps=10,
        bdmc_examples=3,
        max_examples=8,
        batch_size=8,
        write=False,
    )
    assert np.isfinite(result['log_likelihood'])
    assert 0.0 < result['acceptance_rate'] <= 1.0
    bdmc = result['bdmc']
    assert bdmc['num_examples'] == 3
    assert bdmc['gap'] == pytest.approx(bdmc['upper'] - bdmc['lower'], abs=1e-3)
    # Ten annealing steps are far too few: the sandwich is wide open, as it should say.
    assert bdmc['gap'] > 0


def test_bad_arguments_are_refused(workdir):
    with pytest.raises(ValueError, match='--method'):
        evaluate.evaluate_run(str(workdir), method='nope')
    with pytest.raises(ValueError, match='--num_importance_samples'):
        evaluate.evaluate_run(str(workdir), num_importance_samples=0)


def test_command_line_prints_one_json_line(workdir, tmp_path):
    plot = tmp_path / 'diag.png'
    cmd = [
        sys.executable,
        '-m',
        'vae_jax.evaluate',
        f'--workdir={workdir}',
        '--split=valid',
        '--num_importance_samples=8',
        '--report_k=1,8',
        '--max_examples=30',
        f'--plot={plot}',
    ]
    env = {**os.environ, 'JAX_PLATFORMS': 'cpu'}
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    line = out.stdout.strip().splitlines()[-1]
    result = json.loads(line)
    assert result['split'] == 'valid' and result['num_importance_samples'] == 8
    assert (workdir / 'eval_valid_is_8.json').exists()
    assert plot.stat().st_size > 0


def test_command_line_missing_workdir_says_so(tmp_path):
    cmd = [sys.executable, '-m', 'vae_jax.evaluate', f'--workdir={tmp_path / "none"}']
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=300)
    assert out.returncode != 0
    assert 'error' in out.stderr.lower()
    assert 'Traceback' not in out.stderr


def test_mcem_run_is_evaluated_without_its_encoder(tmp_path):
    config = tiny_config(num_steps=10, algorithm='mcem', eval_ais_steps=3)
    train.train_and_evaluate(config, str(tmp_path))
    with pytest.raises(ValueError, match='no encoder'):
        evaluate.evaluate_run(str(tmp_path), method='is', write=False)
    result = evaluate.evaluate_run(
        str(tmp_path),
        method='ais',
        num_importance_samples=2,
        ais_steps=5,
        bdmc_examples=2,
        max_examples=4,
        write=False,
    )
    assert np.isfinite(result['log_likelihood'])
    assert 'elbo' not in result and 'diagnostics' not in result
