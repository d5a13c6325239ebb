"""The evaluation CLI on a tiny trained workdir."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import tiny_config

from vae_jax import ais, cli, diagnostics, evaluate, likelihoods, runs, train

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
    # An exact identity per example (analytic KL), so equal up to float32 summation order:
    # measured 2e-5 apart on ~-440.
    assert saved['elbo'] == pytest.approx(saved['reconstruction'] - saved['kl'], rel=1e-5)
    curve = {int(k): v[0] for k, v in saved['iwae_curve'].items()}
    assert sorted(curve) == [1, 4, 40]
    assert curve[40] == saved['log_likelihood']
    # Averages over 120 examples: far apart compared with their Monte Carlo noise here.
    assert saved['elbo'] < curve[4] < curve[40]
    assert saved['bits_per_dim'] == pytest.approx(-saved['log_likelihood'] / (784 * math.log(2.0)))
    assert saved['bound'] == 'lower'
    _assert_diagnostics_match_the_encoder(workdir, saved, num_examples=120)


def test_grey_data_get_no_bits_per_dim_and_appendix_d_is_an_upper_bound(tmp_path):
    """Grey levels under a Bernoulli decoder: nats, not a code length, so no bits_per_dim.

    Every method labels its direction: IS below log p(x), Appendix D above (in expectation).
    """
    train.train_and_evaluate(
        tiny_config(num_steps=5, checkpoint_every_steps=5, binarization='none', latent_dim=2),
        str(tmp_path),
    )
    common = dict(max_examples=4, batch_size=4, write=False)
    grey = evaluate.evaluate_run(str(tmp_path), num_importance_samples=4, **common)
    assert 'bits_per_dim' not in grey and 'not binary' in grey['bits_per_dim_note']
    assert grey['bound'] == 'lower'
    upper = evaluate.evaluate_run(
        str(tmp_path), method='appendix_d', num_importance_samples=20, **common
    )
    assert upper['bound'] == 'upper'


def _assert_diagnostics_match_the_encoder(workdir, saved, num_examples):
    """The file's KL terms, posterior-mean variances and active units, recomputed.

    In float64 numpy from the encoder's outputs on the same data, independently of
    vae_jax.diagnostics.
    """
    run = runs.load_run(str(workdir))
    x = jnp.asarray(runs.split_data(run, saved['split'])[:num_examples])
    mean, log_var = run.model.apply({'params': run.params}, x, method=run.model.encode)
    mean, log_var = np.asarray(mean, np.float64), np.asarray(log_var, np.float64)
    kl_dims = np.mean(0.5 * (mean**2 + np.exp(log_var) - 1.0 - log_var), axis=0)
    variance = np.var(mean, axis=0)
    diag = saved['diagnostics']
    np.testing.assert_allclose(diag['kl_per_dimension'], kl_dims, rtol=1e-4)
    assert saved['kl'] == pytest.approx(np.sum(kl_dims), rel=1e-5)
    np.testing.assert_allclose(diag['posterior_mean_variance'], variance, rtol=1e-4)
    # Burda et al.'s count; measured variances 0.04-0.16 here, far from the 0.01 threshold.
    assert diag['active_unit_threshold'] == diagnostics.ACTIVE_UNIT_THRESHOLD == 0.01
    assert np.all(np.abs(variance - 0.01) > 0.005)
    assert diag['active_units'] == int(np.sum(variance > 0.01))


def test_chunking_does_not_change_the_estimate(workdir):
    kw = dict(method='is', num_importance_samples=24, max_examples=60, write=False)
    whole = evaluate.evaluate_run(str(workdir), max_chunk=24, **kw)
    chunked = evaluate.evaluate_run(str(workdir), max_chunk=6, **kw)
    # Same key, same samples, different chunking: equal up to float32 summation order.
    assert chunked['log_likelihood'] == pytest.approx(whole['log_likelihood'], abs=1e-3)


def test_ais_reports_a_bdmc_sandwich(workdir, monkeypatch):
    """The sandwich is ais.bdmc with the evaluation's settings, reduced over examples.

    A spy records what ais.bdmc is called with and its per-example bounds, so the file's
    numbers are checked against an independent reduction rather than against each other.
    """
    calls, decoders, bounds = [], [], []
    real_bdmc = ais.bdmc

    def spy(key, model, **kwargs):
        calls.append(kwargs)
        decoders.append(model.decode(jnp.zeros((1, 4), jnp.float32)))
        out = real_bdmc(key, model, **kwargs)
        jax.debug.callback(
            lambda lo, up: bounds.append((np.asarray(lo), np.asarray(up))),
            out['lower'],
            out['upper'],
        )
        return out

    monkeypatch.setattr(ais, 'bdmc', spy)
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

    jax.effects_barrier()
    (kwargs,) = calls
    assert kwargs['num_examples'] == 3
    assert kwargs['num_annealing_steps'] == 10 and kwargs['num_chains'] == 2
    assert kwargs['start'] == 'encoder'  # p0 = q(z|x): the run has a trained encoder.
    assert result['ais_start'] == 'encoder'
    (p_x,) = decoders  # The run's decoder: p(x|z) of its config.likelihood='bernoulli'.
    assert isinstance(p_x, likelihoods.Bernoulli)
    ((lower, upper),) = bounds
    assert lower.shape == upper.shape == (3,)
    assert bdmc['lower'] == pytest.approx(np.mean(lower), rel=1e-6)
    assert bdmc['upper'] == pytest.approx(np.mean(upper), rel=1e-6)
    assert bdmc['gap'] == pytest.approx(np.mean(upper - lower), rel=1e-5)
    # Open, but not absurd: measured 12-21 nats over seeds 0-2 (per example 0.3-33). A sign
    # error in either bound puts it near 2 |log p(x)| ~ 1000.
    assert bdmc['gap'] < 60


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


def test_long_evaluation_passes_log_progress_with_an_eta():
    """A pass over batches logs done/total and an ETA from the time per batch so far."""
    from vae_jax import reporting

    now, lines = [0.0], []
    countdown = reporting.Countdown(
        'importance sampling',
        10,
        every_seconds=5.0,
        clock=lambda: now[0],
        log=lambda fmt, *args: lines.append(fmt % args),
    )
    for done in range(1, 11):
        now[0] += 2.0  # Two seconds per batch.
        countdown.update(done)
    # At 6 s (3 batches: ETA 14 s), 12 s (6 batches), 18 s (9 batches) and at the end.
    assert lines[0] == 'importance sampling: 3/10 batches | elapsed 0:00:06 | ETA 0:00:14'
    assert len(lines) == 4 and lines[-1].startswith('importance sampling: 10/10 batches')
    assert lines[-1].endswith('ETA 0:00:00')


def test_a_short_pass_stays_silent():
    from vae_jax import reporting

    lines = []
    countdown = reporting.Countdown('ELBO', 3, every_seconds=60.0, log=lambda *a: lines.append(a))
    for done in range(1, 4):
        countdown.update(done)
    assert not lines


def test_an_unwritable_output_is_refused_before_any_work(workdir, tmp_path, monkeypatch):
    cmd = [
        sys.executable,
        '-m',
        'vae_jax.evaluate',
        f'--workdir={workdir}',
        '--num_importance_samples=8',
        f'--plot={tmp_path / "missing" / "d.png"}',
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=300)
    assert out.returncode == 1 and 'Traceback' not in out.stderr
    assert 'error: cannot write --plot=' in out.stderr and 'does not exist' in out.stderr
    assert 'importance sampling' not in out.stderr  # Refused before any evaluation.

    # A workdir that cannot take the results file (read-only mount; root ignores chmod).
    def read_only(*args, **kwargs):
        raise PermissionError(30, 'Read-only file system')

    monkeypatch.setattr(cli.tempfile, 'NamedTemporaryFile', read_only)
    started = []
    monkeypatch.setattr(evaluate.runs, 'split_data', lambda *a: started.append(1))
    with pytest.raises(ValueError, match='cannot write the results file into .*Read-only'):
        evaluate.evaluate_run(str(workdir), num_importance_samples=8)
    assert not started
