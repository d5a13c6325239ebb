"""The Kingma & Welling (2013) figure scripts run end to end at a tiny scale."""

import argparse
import csv
import importlib
import importlib.util
import logging
import subprocess
import sys
from pathlib import Path

import pytest

from vae_jax import configuration

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = REPO / 'experiments' / 'aevb'


def load(name):
    spec = importlib.util.spec_from_file_location(name, SCRIPTS / f'{name}.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope='module')
def out(tmp_path_factory):
    """One output folder for all figures, so runs with equal settings are shared."""
    return tmp_path_factory.mktemp('aevb')


@pytest.fixture(autouse=True)
def runs_count_to_their_total(monkeypatch):
    """Each figure's log says 'run i of N': after the figure, i reached N exactly."""
    monkeypatch.syspath_prepend(str(SCRIPTS))
    common = importlib.import_module('common')  # The module the scripts' `import common` gets.
    runners = []
    make = common.Runs.__init__

    def recorded(self, *a, **kw):
        make(self, *a, **kw)
        runners.append(self)

    monkeypatch.setattr(common.Runs, '__init__', recorded)
    yield
    for runner in runners:
        assert runner.started == runner.total, (runner.figure, runner.started, runner.total)


def rows_of(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def args(out, data_dir=None):
    return ['--scale=tiny', f'--out={out}'] + ([f'--data_dir={data_dir}'] if data_dir else [])


def test_fig5_samples(out):
    load('fig5_samples').main(args(out))
    rows = rows_of(out / 'fig5_samples.csv')
    assert [int(r['latent_dim']) for r in rows] == [2, 3]
    assert (out / 'fig5_samples.png').stat().st_size > 0
    assert 'fig5_samples.py' in (out / 'commands.log').read_text()


def test_fig4_manifold(out, shared_data_dir):
    load('fig4_manifold').main(args(out, shared_data_dir))
    rows = rows_of(out / 'fig4_manifold.csv')
    assert {r['dataset'] for r in rows} == {'frey_face', 'mnist'}
    for name in ('fig4_manifold.png', 'fig4_manifold_frey_face.png', 'fig4_manifold_mnist.png'):
        assert (out / name).stat().st_size > 0


def test_fig2_lower_bound(out, shared_data_dir):
    load('fig2_lower_bound').main(args(out, shared_data_dir))
    rows = rows_of(out / 'fig2_lower_bound.csv')
    assert {(r['dataset'], r['algorithm']) for r in rows} == {
        (d, a) for d in ('mnist', 'frey_face') for a in ('aevb', 'wake_sleep')
    }
    assert all(float(r['samples_evaluated']) > 0 for r in rows)
    assert (out / 'fig2_lower_bound.png').stat().st_size > 0


def test_fig3_marginal_likelihood(out, monkeypatch, caplog):
    fig3 = load('fig3_marginal_likelihood')
    with caplog.at_level(logging.WARNING, logger='absl'):
        fig3.main(args(out))
    rows = rows_of(out / 'fig3_marginal_likelihood.csv')
    assert {r['algorithm'] for r in rows} == {'aevb', 'wake_sleep', 'mcem'}
    assert sorted({int(r['step']) for r in rows}) == [10, 20]
    for r in rows:
        assert float(r['train_log_likelihood']) < 0 and float(r['test_log_likelihood']) < 0
        # Each curve's last point has the run's own lower bound beside it, and App. D is
        # not under it (beyond the tolerance) on these models.
        if int(r['step']) == 20:
            assert float(r['test_lower_bound']) < 0
        else:
            assert r['test_lower_bound'] == ''
    assert not [m for m in caplog.messages if 'own lower bound' in m]
    assert (out / 'fig3_marginal_likelihood.png').stat().st_size > 0

    # Resumed after every run has finished, each point is still its own checkpoint's
    # estimate: with the recorded estimates deleted, they are recomputed from the
    # checkpoint of their step (not the run's latest), to the same digits.
    def points(rows):
        return [(r['train_log_likelihood'], r['test_log_likelihood']) for r in rows]

    records = sorted(out.glob('runs/*n*/appendix_d.json'))
    assert len(records) == len({(r['algorithm'], r['num_train']) for r in rows})
    for record in records:
        record.unlink()
    results = {p: p.read_bytes() for p in out.glob('runs/*n*/results.json')}
    fig3.main(args(out))
    again = rows_of(out / 'fig3_marginal_likelihood.csv')
    assert points(again) == points(rows)
    # Nothing retrained or re-evaluated: each run's results (its training time) stay.
    assert {p: p.read_bytes() for p in results} == results
    for first, last in zip(rows[::2], rows[1::2], strict=True):  # Steps 10 and 20 of a run.
        assert (first['algorithm'], first['num_train']) == (last['algorithm'], last['num_train'])
        assert points([first]) != points([last])
    fig3.main(args(out))  # Read from the records this time.
    again = rows_of(out / 'fig3_marginal_likelihood.csv')
    assert points(again) == points(rows)
    assert [r['test_lower_bound'] for r in again] == [r['test_lower_bound'] for r in rows]

    # An App. D estimate under a run's own lower bound is named in a warning, per run.
    for record in records:
        record.unlink()
    monkeypatch.setattr(fig3, 'appendix_d', lambda run, x, scale, seed: -1e4)
    with caplog.at_level(logging.WARNING, logger='absl'):
        fig3.main(args(out))
    warned = [m for m in caplog.messages if 'own lower bound' in m]
    assert len(warned) == len(records)
    assert {m.split(' ')[0] for m in warned} == {r.parent.name for r in records}


@pytest.mark.parametrize('scale_name', ['tiny', 'quick', 'medium', 'paper'])
def test_every_scale_builds_configs_that_validate(scale_name, monkeypatch):
    """A scale's mistake (a field out of range, a step count the schedule refuses) shows
    here in a second, not hours into a figure run."""
    monkeypatch.syspath_prepend(str(SCRIPTS))
    common = importlib.import_module('common')
    scale = common.SCALES[scale_name]
    args = argparse.Namespace(data_dir='/nonexistent', seed=0)
    for dataset in ('mnist', 'frey_face'):
        sizes = set(scale.latent_sizes[dataset]) | {2}  # Figure 4 trains N_z = 2.
        if dataset == 'mnist':
            sizes |= set(scale.sample_latent_sizes)
        for nz in sorted(sizes):
            for algorithm in ('aevb', 'wake_sleep'):
                configuration.validate(common.paper_config(dataset, nz, algorithm, scale, args))
    fig3 = load('fig3_marginal_likelihood')
    for num_train in scale.fig3_train_sizes:
        for algorithm in fig3.ALGORITHMS:
            configuration.validate(fig3.run_config(algorithm, num_train, scale, args))
    assert list(scale.fig3_steps) == sorted(set(scale.fig3_steps))


def test_the_medium_scale_spends_the_budget_its_docs_state(monkeypatch):
    """README: 10^7 samples per run for Figure 2 (both datasets) and Figure 3, every N_z of
    the paper's."""
    monkeypatch.syspath_prepend(str(SCRIPTS))
    common = importlib.import_module('common')
    medium, paper = common.SCALES['medium'], common.SCALES['paper']
    args = argparse.Namespace(data_dir='/nonexistent', seed=0)
    for dataset in ('mnist', 'frey_face'):
        config = common.paper_config(dataset, 3 if dataset == 'mnist' else 2, 'aevb', medium, args)
        assert config.num_steps * config.batch_size == 10**7
    config = common.paper_config('mnist', 3, 'aevb', medium, args, num_train=1000)
    assert max(medium.fig3_steps) * config.batch_size == 10**7
    assert medium.latent_sizes == paper.latent_sizes
    assert medium.steps['frey_face'] == paper.steps['frey_face']


def test_a_figure_script_run_by_hand_shows_its_progress(tmp_path):
    """absl hides INFO outside app.run: 'run i of N' and the training log must still print."""
    out = subprocess.run(
        [sys.executable, str(SCRIPTS / 'fig5_samples.py'), '--scale=tiny', f'--out={tmp_path}'],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert 'Figure 5: run 1 of 2' in out.stderr and 'Figure 5: run 2 of 2' in out.stderr
    assert 'steps/s' in out.stderr  # Training's own progress lines.
