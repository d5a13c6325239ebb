"""Sweeps: points from get_sweep() or --sweep, one workdir each, resumable, one CSV."""

import csv
import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import tiny_config

from vae_jax import configuration, sweep, sweep_points

REPO = Path(__file__).resolve().parents[1]


def test_product_and_parse():
    assert sweep_points.product(seed=[0, 1], optimizer__learning_rate=[1e-3]) == [
        {'seed': 0, 'optimizer.learning_rate': 1e-3},
        {'seed': 1, 'optimizer.learning_rate': 1e-3},
    ]
    config = tiny_config()
    points = sweep_points.parse_sweep('latent_dim=2,3; optimizer.learning_rate=0.01', config)
    assert points == [
        {'latent_dim': 2, 'optimizer.learning_rate': 0.01},
        {'latent_dim': 3, 'optimizer.learning_rate': 0.01},
    ]
    assert sweep_points.parse_sweep('model.hidden_dims=8x8,16', config) == [
        {'model.hidden_dims': (8, 8)},
        {'model.hidden_dims': (16,)},
    ]
    with pytest.raises(configuration.ConfigError, match='latnt_dim'):
        sweep_points.parse_sweep('latnt_dim=2', config)
    assert sweep_points.point_name({'latent_dim': 2, 'model.hidden_dims': (8, 8)}) == (
        'latent_dim=2,model.hidden_dims=8x8'
    )


def test_bad_point_fails_before_any_training(tmp_path):
    points = [{'latent_dim': 2}, {'latent_dim': 0}]
    with pytest.raises(configuration.ConfigError, match='latent_dim'):
        sweep.run_sweep(tiny_config(), points, str(tmp_path))
    assert not any(tmp_path.iterdir())


def test_sweep_runs_each_point_once_and_writes_the_table(tmp_path):
    config = tiny_config(num_steps=10)
    points = sweep_points.product(seed=[0, 1])
    rows = sweep.run_sweep(config, points, str(tmp_path))
    assert [r['seed'] for r in rows] == [0, 1]
    assert rows[0]['test_elbo'] != rows[1]['test_elbo']  # the seed reached the run
    for name in ('seed=0', 'seed=1'):
        assert json.loads((tmp_path / name / 'config.json').read_text())['seed'] == int(name[-1])
        assert (tmp_path / name / 'results.json').exists()
    with open(tmp_path / 'sweep_results.csv') as f:
        table = list(csv.DictReader(f))
    assert [t['point'] for t in table] == ['seed=0', 'seed=1']
    assert {'test_elbo', 'test_log_likelihood', 'train_steps', 'wall_seconds'} <= set(table[0])
    assert (tmp_path / 'sweep_results.png').stat().st_size > 0

    # A rerun trains nothing: finished points are skipped (their files are untouched).
    stamp = os.stat(tmp_path / 'seed=0' / 'results.json').st_mtime_ns
    again = sweep.run_sweep(config, points, str(tmp_path))
    assert os.stat(tmp_path / 'seed=0' / 'results.json').st_mtime_ns == stamp
    assert [r['test_elbo'] for r in again] == [r['test_elbo'] for r in rows]


def test_a_run_trained_past_num_steps_is_refused_and_left_as_it_is(tmp_path):
    """Shortened on resume, a point would evaluate its longer-trained model under the
    shorter label and overwrite its results: it fails instead, naming both steps."""
    workdir = str(tmp_path / 'run')
    first = sweep.run_point(tiny_config(num_steps=10, checkpoint_every_steps=5), workdir)
    assert first['train_steps'] == 10
    files = {p: p.read_bytes() for p in Path(workdir).rglob('*') if p.is_file()}
    with pytest.raises(sweep.TrainedPastError, match='trained to step 10, past num_steps=5'):
        sweep.run_point(tiny_config(num_steps=5, checkpoint_every_steps=5), workdir)
    assert {p: p.read_bytes() for p in Path(workdir).rglob('*') if p.is_file()} == files


def test_command_line_with_a_config_files_get_sweep(tmp_path):
    config_file = tmp_path / 'two_seeds.py'
    config_file.write_text(
        'from configs import default\n'
        'from vae_jax import sweep_points\n\n'
        'def get_config():\n'
        '    c = default.get_config()\n'
        '    c.model.hidden_dims = (16,)\n'
        '    c.latent_dim = 2\n'
        '    c.batch_size = 32\n'
        '    c.num_steps = 6\n'
        '    c.steps_per_dispatch = 3\n'
        '    c.log_every_steps = 3\n'
        '    c.eval_num_importance_samples = 2\n'
        '    return c\n\n'
        'def get_sweep():\n'
        '    return sweep_points.product(seed=[3, 4])\n'
    )
    env = {**os.environ, 'PYTHONPATH': str(REPO)}
    cmd = [
        sys.executable,
        '-m',
        'vae_jax.sweep',
        f'--config={config_file}',
        f'--workdir={tmp_path / "out"}',
        '--config.eval_batch_size=250',
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert json.loads(out.stdout.strip().splitlines()[-1])['points'] == 2
    assert (tmp_path / 'out' / 'seed=3' / 'results.json').exists()
    assert (tmp_path / 'out' / 'seed=4' / 'results.json').exists()

    bad = subprocess.run(
        [*cmd, '--sweep=latnt_dim=2'], capture_output=True, text=True, cwd=REPO, env=env
    )
    assert bad.returncode != 0
    assert 'latnt_dim' in bad.stderr and 'Traceback' not in bad.stderr

    # Shortened below what its points trained: one line naming a point and both steps.
    short = subprocess.run(
        [*cmd, '--config.num_steps=3'], capture_output=True, text=True, cwd=REPO, env=env
    )
    assert short.returncode == 1 and 'Traceback' not in short.stderr
    last = short.stderr.strip().splitlines()[-1]
    assert last.startswith('error: ') and 'seed=3 is trained to step 6, past num_steps=3' in last


def test_vectorized_sweep_matches_point_by_point(tmp_path, monkeypatch):
    from vae_jax import vectorized

    config = tiny_config(num_steps=10, log_every_steps=5)
    points = sweep_points.product(latent_dim=[2, 4], seed=[0, 1])
    alone = sweep.run_sweep(config, points, str(tmp_path / 'alone'))

    groups = []
    train_vectorized = vectorized.train_vectorized

    def recording(config, points, **kw):
        groups.append([dict(p) for p in points])
        return train_vectorized(config, points, **kw)

    monkeypatch.setattr(vectorized, 'train_vectorized', recording)
    together = sweep.run_sweep(config, points, str(tmp_path / 'together'), vectorize=True)
    # One program per latent size (shapes differ), the two seeds of each in it.
    assert groups == [points[:2], points[2:]]
    for a, b in zip(alone, together, strict=True):
        assert a['point'] == b['point'] and b['train_steps'] == 10
        for key in ('test_elbo', 'test_log_likelihood'):
            assert b[key] == pytest.approx(a[key], rel=1e-4)
    for name in ('latent_dim=2,seed=1', 'latent_dim=4,seed=0'):
        run = tmp_path / 'together' / name
        logged = [json.loads(line) for line in (run / 'metrics.jsonl').read_text().splitlines()]
        assert [r['step'] for r in logged if 'train_elbo' in r] == [5, 10]
        assert (run / 'results.json').exists() and (run / 'checkpoints' / '10').is_dir()

    # A rerun trains nothing.
    groups.clear()
    sweep.run_sweep(config, points, str(tmp_path / 'together'), vectorize=True)
    assert groups == []


def test_vectorized_groups_split_by_shape_and_decay():

    base = tiny_config()
    points = [
        {'seed': 0},
        {'seed': 1, 'optimizer.learning_rate': 3e-3},
        {'latent_dim': 2},
        {'optimizer.weight_decay': 1e-3},
        {'seed': 2, 'optimizer.weight_decay': 1e-2},
    ]
    configs = [sweep_points.apply(base, p) for p in points]
    assert sweep_points.groups(configs) == [[0, 1], [2], [3, 4]]


def test_a_sigterm_stops_the_sweep_in_one_line_and_a_rerun_finishes_it(tmp_path):
    """As `vae_jax.main`: status 143, one `interrupted:` line naming the checkpoint, no
    traceback; the rerun resumes the stopped point and runs the rest."""
    overrides = {
        'model.hidden_dims': (16,),
        'latent_dim': 2,
        'batch_size': 32,
        'num_steps': 2000,
        'steps_per_dispatch': 5,
        'log_every_steps': 5,
        'eval_every_steps': 0,
        'checkpoint_every_steps': 500,
        'eval_batch_size': 100,
        'eval_max_examples': 100,
        'eval_num_importance_samples': 2,
    }
    cmd = [
        sys.executable,
        '-m',
        'vae_jax.sweep',
        f'--config={REPO / "configs" / "default.py"}',
        f'--workdir={tmp_path}',
        '--sweep=seed=0,1',
        *(f'--config.{k}={v}' for k, v in overrides.items()),
    ]
    env = {**os.environ, 'PYTHONPATH': str(REPO)}
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stderr=subprocess.PIPE, text=True)
    seen = []
    for line in proc.stderr:
        seen.append(line)
        m = re.search(r'step\s+(\d+)/2000 \|', line)
        if m and int(m.group(1)) >= 20:
            break
    proc.send_signal(signal.SIGTERM)
    err = ''.join(seen) + proc.communicate(timeout=120)[1]
    assert proc.returncode == 143, err[-2000:]
    stopped = re.search(r'interrupted: SIGTERM at step (\d+): saved a checkpoint', err)
    assert stopped, err[-2000:]
    assert 'Traceback' not in err
    assert err.count('interrupted:') == 1
    assert not (tmp_path / 'sweep_results.csv').exists()

    again = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-2000:]
    assert f'resumed from step {stopped.group(1)}' in again.stderr
    assert json.loads(again.stdout.strip().splitlines()[-1])['points'] == 2
