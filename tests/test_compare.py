"""vae_jax.compare: two runs' log p(x) on the same examples, their difference paired."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import tiny_config

from vae_jax import compare, evaluate, evaluators, train

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope='module')
def two_runs(tmp_path_factory):
    """A model trained 40 steps and another trained 10 from another seed, each scored by
    importance sampling on the first 100 test images."""
    paths = []
    for seed, steps in ((0, 40), (1, 10)):
        path = tmp_path_factory.mktemp(f'seed{seed}')
        train.train_and_evaluate(tiny_config(num_steps=steps, seed=seed), str(path))
        evaluate.evaluate_run(
            str(path), num_importance_samples=8, max_examples=100, batch_size=50, max_chunk=4
        )
        paths.append(path)
    return paths


def test_evaluate_saves_each_example_and_the_file_is_their_mean(two_runs):
    saved = json.loads((two_runs[0] / 'eval_test_is_8.json').read_text())
    assert saved['per_example_file'] == 'eval_test_is_8_per_example.npy'
    values = np.load(two_runs[0] / saved['per_example_file'])
    assert values.shape == (100,) and values.dtype == np.float64
    assert evaluators.summarize(values) == (saved['log_likelihood'], saved['log_likelihood_stderr'])
    # AIS saves its examples too.
    ais = evaluate.evaluate_run(
        str(two_runs[1]),
        method='ais',
        num_importance_samples=2,
        ais_steps=3,
        bdmc_examples=0,
        max_examples=4,
    )
    ais_values = np.load(evaluate.per_example_path(ais['path']))
    assert ais_values.shape == (4,) and ais_values.mean() == pytest.approx(ais['log_likelihood'])


def test_the_difference_pairs_example_i_of_each(two_runs):
    a, b = (str(p / 'eval_test_is_8.json') for p in two_runs)
    va, vb = (np.load(evaluate.per_example_path(p)) for p in (a, b))
    result = compare.compare(a, b)
    assert result['num_examples'] == 100 and result['split'] == 'test'
    assert result['difference'] == pytest.approx(
        result['log_likelihood_a'] - result['log_likelihood_b'], abs=1e-9
    )
    assert result['difference_stderr'] == pytest.approx(np.std(va - vb, ddof=1) / 10, rel=1e-12)
    # Not the unpaired error: the two models agree on which images are hard (2.03 against
    # 2.31 nats when measured).
    assert result['difference_stderr'] < result['unpaired_stderr']
    back = compare.compare(b, a)
    assert back['difference'] == -result['difference']
    assert back['difference_stderr'] == result['difference_stderr']
    itself = compare.compare(a, a)
    assert (itself['difference'], itself['difference_stderr']) == (0.0, 0.0)


def test_results_of_other_examples_or_without_examples_are_refused(two_runs, tmp_path):
    fewer = evaluate.evaluate_run(str(two_runs[1]), num_importance_samples=6, max_examples=50)
    a = str(two_runs[0] / 'eval_test_is_8.json')
    with pytest.raises(ValueError, match='different examples: num_examples 100 against 50'):
        compare.compare(a, fewer['path'])
    old = tmp_path / 'eval_test_is_8.json'  # As written before per-example values were saved.
    shutil.copy(a, old)
    with pytest.raises(FileNotFoundError, match='evaluate the run again'):
        compare.compare(a, str(old))
    with pytest.raises(FileNotFoundError, match='eval_test_is_5000.json: no such results'):
        compare.compare(str(two_runs[0]), a)  # A workdir: its K = 5000 test results.


def test_command_line_prints_one_json_line_or_one_error(two_runs):
    a, b = (str(p / 'eval_test_is_8.json') for p in two_runs)
    cmd = [sys.executable, '-m', 'vae_jax.compare', f'--a={a}', f'--b={b}']
    env = {**os.environ, 'JAX_PLATFORMS': 'cpu'}
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert json.loads(out.stdout.strip().splitlines()[-1]) == compare.compare(a, b)
    bad = subprocess.run(
        [*cmd[:3], f'--a={a}', f'--b={two_runs[1]}'], capture_output=True, text=True, cwd=REPO
    )
    assert bad.returncode == 1 and bad.stderr.startswith('error: ')
    assert 'Traceback' not in bad.stderr
