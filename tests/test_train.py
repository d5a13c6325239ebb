"""The training loop: compilation, reproducibility, resume, workdir outputs, errors."""

import importlib.util
import json
import os
import subprocess
import sys

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import REPO, SHARED_DATA, assert_trees_equal, params_of, tiny_config

from vae_jax import configuration, data, loop, runs, train, workdir_files


def test_workdir_outputs(tmp_path):
    results = train.train_and_evaluate(tiny_config(), str(tmp_path))
    for name in (
        'config.json',
        'metrics.jsonl',
        'results.json',
        'samples.png',
        'reconstructions.png',
    ):
        assert (tmp_path / name).exists(), name
    assert list((tmp_path / 'tensorboard').iterdir())
    assert sorted(int(p.name) for p in (tmp_path / 'checkpoints').iterdir()) == [10, 20]
    lines = [json.loads(s) for s in (tmp_path / 'metrics.jsonl').read_text().splitlines()]
    assert [m['step'] for m in lines] == [5, 10, 15, 20, 20]
    assert 'final_test_log_likelihood' in lines[-1]
    assert {'train_elbo', 'train_kl', 'train_reconstruction', 'valid_elbo'} <= set(lines[1])
    assert 'steps_per_sec' in lines[-2]
    on_disk = json.loads((tmp_path / 'results.json').read_text())
    assert on_disk == pytest.approx(results)
    assert results['train_steps'] == 20
    assert results['test_log_likelihood_num_samples'] == 4
    # The importance-sampled estimate is at least the ELBO on average (K >= 1).
    assert results['test_log_likelihood'] >= results['test_elbo'] - 3 * results['test_elbo_stderr']
    assert results['test_elbo'] == pytest.approx(
        results['test_reconstruction'] - results['test_kl'], rel=1e-5
    )


def test_training_improves_the_bound(tmp_path):
    results = train.train_and_evaluate(tiny_config(num_steps=200), str(tmp_path))
    lines = [json.loads(s) for s in (tmp_path / 'metrics.jsonl').read_text().splitlines()]
    assert lines[-2]['train_elbo'] > lines[0]['train_elbo'] + 50
    assert results['test_elbo'] > -250


def test_step_compiles_once():
    config = tiny_config()
    streams = train.Streams(0)
    setup = train.build(config, (28, 28), streams, binary_data=False)
    state = setup.state
    step = jax.jit(chex.assert_max_traces(setup.step, n=1))
    x = jnp.full((config.batch_size, 28, 28), 0.5)
    for _ in range(3):
        state, metrics = step(state, x, streams.train)
    assert int(state.step) == 3
    assert np.isfinite(float(metrics['elbo']))


def test_batch_indices_cover_each_epoch_once():
    idx = loop.batch_indices(seed=3, num_train=100, batch_size=30, start=0, count=6)
    assert idx.shape == (6, 30)
    for epoch in range(2):
        block = idx[3 * epoch : 3 * epoch + 3].ravel()
        assert len(set(block.tolist())) == 90  # No repeats within an epoch.
    assert not np.array_equal(idx[:3], idx[3:])  # A fresh order each epoch.
    np.testing.assert_array_equal(
        loop.batch_indices(3, 100, 30, 4, 2), idx[4:6]
    )  # Depends on the step alone.


def test_rerun_is_reproducible_and_seed_matters(tmp_path):
    r1 = train.train_and_evaluate(tiny_config(), str(tmp_path / 'a'))
    r2 = train.train_and_evaluate(tiny_config(), str(tmp_path / 'b'))
    assert_trees_equal(params_of(tmp_path / 'a'), params_of(tmp_path / 'b'))
    assert r1['test_elbo'] == r2['test_elbo']
    train.train_and_evaluate(tiny_config(seed=1), str(tmp_path / 'c'))
    a, c = params_of(tmp_path / 'a'), params_of(tmp_path / 'c')
    assert not np.array_equal(a['encoder']['head']['kernel'], c['encoder']['head']['kernel'])


def test_resume_matches_uninterrupted_run(tmp_path):
    train.train_and_evaluate(tiny_config(), str(tmp_path / 'full'))
    train.train_and_evaluate(tiny_config(num_steps=10), str(tmp_path / 'split'))
    # num_steps may change on resume; the rerun continues from step 10.
    results = train.train_and_evaluate(tiny_config(), str(tmp_path / 'split'))
    assert results['train_steps'] == 20
    assert_trees_equal(params_of(tmp_path / 'full'), params_of(tmp_path / 'split'))


@pytest.mark.parametrize('algorithm', ['aevb', 'wake_sleep'])
def test_the_host_cadence_changes_nothing_computed(tmp_path, algorithm):
    """What a speed-up of the figure runs tunes (steps per dispatch; how often the host
    logs, evaluates, checkpoints and draws) leaves every parameter and result as it was."""
    busy = dict(steps_per_dispatch=5, log_every_steps=5, eval_every_steps=5, image_every_steps=10)
    quiet = dict(steps_per_dispatch=20, log_every_steps=20, eval_every_steps=0, image_every_steps=0)
    results = {}
    for name, cadence in (('busy', busy), ('quiet', quiet)):
        config = tiny_config(algorithm=algorithm, checkpoint_every_steps=20, **cadence)
        results[name] = train.train_and_evaluate(config, str(tmp_path / name))
    assert_trees_equal(params_of(tmp_path / 'busy'), params_of(tmp_path / 'quiet'))
    for field in ('test_elbo', 'test_log_likelihood', 'valid_elbo'):
        assert results['busy'][field] == results['quiet'][field], field


def test_host_streaming_matches_device_resident(tmp_path):
    train.train_and_evaluate(tiny_config(data_placement='device'), str(tmp_path / 'dev'))
    train.train_and_evaluate(tiny_config(data_placement='host'), str(tmp_path / 'host'))
    for x, y in zip(
        jax.tree.leaves(params_of(tmp_path / 'dev')),
        jax.tree.leaves(params_of(tmp_path / 'host')),
        strict=True,
    ):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-4, atol=1e-5)


def test_changed_config_on_same_workdir_is_refused(tmp_path):
    train.train_and_evaluate(tiny_config(num_steps=5, checkpoint_every_steps=5), str(tmp_path))
    with pytest.raises(workdir_files.WorkdirConflictError, match='latent_dim: 4 -> 5'):
        train.train_and_evaluate(tiny_config(latent_dim=5), str(tmp_path))


@pytest.mark.parametrize(
    'field, value, message',
    [
        ('latent_dim', 0, 'config.latent_dim must be > 0'),
        ('num_samples', -1, 'config.num_samples must be > 0'),
        ('optimizer.learning_rate', -1e-3, 'config.optimizer.learning_rate must be > 0'),
        ('optimizer.learning_rate', float('nan'), 'learning_rate must be a finite number'),
        ('beta', float('inf'), 'config.beta must be a finite number'),
        ('optimizer.grad_clip_norm', float('nan'), 'config.optimizer.grad_clip_norm must be a fin'),
        ('optimizer.name', 'adamm', "config.optimizer.name='adamm' is not one of"),
        ('likelihood', 'poisson', "config.likelihood='poisson' is not one of"),
        ('kl_estimator', 'exact', "config.kl_estimator='exact'"),
        ('model.activation', 'tanhh', "config.model.activation='tanhh'"),
        ('model.gaussian_mean', 'softplus', "config.model.gaussian_mean='softplus'"),
        ('model.min_log_var', float('nan'), 'config.model.min_log_var must be None or a finite'),
        ('batch_size', 5000, 'config.batch_size=5000 is larger than the training set'),
    ],
)
def test_bad_config_values_fail_before_training(tmp_path, field, value, message):
    with pytest.raises(configuration.ConfigError, match=message.replace('(', r'\(')):
        train.train_and_evaluate(tiny_config(**{field: value}), str(tmp_path))
    assert not (tmp_path / 'checkpoints').exists()


def test_bernoulli_on_data_outside_unit_interval(tmp_path):
    path = tmp_path / 'wide.npz'
    rng = np.random.default_rng(0)
    np.savez(
        path,
        train=rng.normal(size=(64, 6)).astype(np.float32),
        test=rng.normal(size=(16, 6)).astype(np.float32),
    )
    config = tiny_config(dataset=f'npz:{path}', binarization='none')
    with pytest.raises(configuration.ConfigError, match='likelihood=gaussian'):
        train.train_and_evaluate(config, str(tmp_path / 'w'))
    # The Gaussian decoder fits such data; flat (N, D) arrays need no image shape.
    config = tiny_config(
        dataset=f'npz:{path}',
        binarization='none',
        likelihood='gaussian',
        batch_size=16,
        eval_batch_size=8,
    )
    results = train.train_and_evaluate(config, str(tmp_path / 'w2'))
    assert np.isfinite(results['test_log_likelihood'])


@pytest.mark.parametrize('outside', ['train', 'test'])
def test_data_outside_unit_interval_refused_in_every_split(tmp_path, outside):
    """A split that leaves [0, 1] is found whichever split it is, naming the field."""
    rng = np.random.default_rng(0)
    arrays = {
        'train': rng.uniform(size=(64, 6)).astype(np.float32),
        'test': rng.uniform(size=(16, 6)).astype(np.float32),
    }
    arrays[outside][0, 0] = 1.5
    path = tmp_path / 'data.npz'
    np.savez(path, **arrays)
    common = dict(dataset=f'npz:{path}', binarization='none', batch_size=16, eval_batch_size=8)
    with pytest.raises(configuration.ConfigError, match='config.likelihood=bernoulli'):
        train.train_and_evaluate(tiny_config(**common), str(tmp_path / 'b'))
    sigmoid = dict(common, likelihood='gaussian', **{'model.gaussian_mean': 'sigmoid'})
    with pytest.raises(configuration.ConfigError, match='config.model.gaussian_mean=sigmoid'):
        train.train_and_evaluate(tiny_config(**sigmoid), str(tmp_path / 's'))
    assert not (tmp_path / 's' / 'checkpoints').exists()


CONFIGS = sorted(p.stem for p in (REPO / 'configs').glob('*.py') if p.stem != '__init__')


@pytest.mark.parametrize('name', CONFIGS)
def test_every_config_file_trains_a_few_steps(tmp_path, name):
    spec = importlib.util.spec_from_file_location(name, REPO / 'configs' / f'{name}.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.get_config()
    if config.dataset != 'embedded':
        if not SHARED_DATA.is_dir():
            pytest.skip(f'{SHARED_DATA} not found: configs/{name}.py needs the shared datasets')
        config.data_dir = str(SHARED_DATA)
    config.num_steps = 4
    config.batch_size = min(config.batch_size, 32)  # Speed only: the shapes stay the config's.
    config.eval_batch_size = 100
    config.steps_per_dispatch = 2
    config.log_every_steps = 2
    config.eval_every_steps = 4
    config.checkpoint_every_steps = 4
    config.eval_num_importance_samples = 2
    config.eval_chunk_size = 2
    results = train.train_and_evaluate(config, str(tmp_path))
    assert results['train_steps'] == 4
    assert np.isfinite(results['test_elbo'])
    assert os.path.exists(tmp_path / 'samples.png')


def test_evaluation_splits_do_not_change_with_seed_or_binarisation(tmp_path):
    """One fixed Bernoulli draw of valid and test per dataset, whatever the seed.

    So every seed of a sweep, 'static' and 'dynamic', the final evaluation of training
    and ``vae_jax.evaluate`` score the same binary images; 'dynamic' redraws only the
    training batches. The static training set, by contrast, follows the seed.
    """

    def splits(**overrides):
        config = tiny_config(**overrides)
        return train.prepare_data(config, train.Streams(config.seed))[1:]

    train0, valid0, test0 = splits(seed=0)
    for x in (valid0, test0):
        assert set(np.unique(x)) == {0.0, 1.0}
    for overrides in (dict(seed=1), dict(seed=7, binarization='static'), dict(seed=0)):
        _, valid, test = splits(**overrides)
        np.testing.assert_array_equal(valid, valid0)
        np.testing.assert_array_equal(test, test0)
    static0, static1 = splits(binarization='static')[0], splits(binarization='static', seed=1)[0]
    assert not np.array_equal(static0, static1)
    assert not np.array_equal(train0, splits(binarization='static')[0])  # 'dynamic': grey.

    config = tiny_config(seed=3, num_steps=5, checkpoint_every_steps=5)
    train.train_and_evaluate(config, str(tmp_path))
    run = runs.load_run(str(tmp_path))
    np.testing.assert_array_equal(runs.split_data(run, 'test'), test0)
    np.testing.assert_array_equal(runs.split_data(run, 'valid'), valid0)
    # The training split scored under 'dynamic' is fixed per dataset too.
    grey_train = run.splits.train
    np.testing.assert_array_equal(
        runs.split_data(run, 'train'),
        data.binarize_for_evaluation(config.dataset, 'train', grey_train),
    )
    # vae_jax.sample takes its data from the same place.
    out = tmp_path / 'posterior.png'
    done = subprocess.run(
        [
            sys.executable,
            '-m',
            'vae_jax.sample',
            f'--workdir={tmp_path}',
            '--source=posterior',
            '--split=test',
            '--num=4',
            f'--out={out}',
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0 and out.exists(), done.stderr[-2000:]


def test_a_kl_estimator_the_iwae_objective_would_ignore_is_refused():
    with pytest.raises(configuration.ConfigError, match='does not apply to objective=iwae'):
        configuration.validate(tiny_config(objective='iwae', num_samples=5))
    configuration.validate(tiny_config(objective='iwae', num_samples=5, kl_estimator='monte_carlo'))


def test_load_run_at_a_step_gives_that_checkpoint_and_names_the_kept_ones(tmp_path):
    config = tiny_config(num_steps=10, checkpoint_every_steps=5, keep_checkpoints=3)
    train.train_and_evaluate(config, str(tmp_path))
    latest, at5 = runs.load_run(str(tmp_path)), runs.load_run(str(tmp_path), step=5)
    assert (latest.step, at5.step) == (10, 5)
    halfway = tiny_config(num_steps=5, checkpoint_every_steps=5)
    train.train_and_evaluate(halfway, str(tmp_path / 'halfway'))
    assert_trees_equal(at5.params, runs.load_run(str(tmp_path / 'halfway')).params)
    with pytest.raises(FileNotFoundError, match=r'no checkpoint at step 7 .*saved: \[5, 10\]'):
        runs.load_run(str(tmp_path), step=7)


def test_decoder_bias_data_mean_starts_from_the_training_images_mean(tmp_path, monkeypatch):
    """The run's own training split (after num_train_examples) is what the bias sees."""
    seen = []
    real = train.models.with_decoder_bias_at_data_mean
    monkeypatch.setattr(
        train.models,
        'with_decoder_bias_at_data_mean',
        lambda params, mean: seen.append(np.asarray(mean)) or real(params, mean),
    )
    config = tiny_config(num_steps=5, num_train_examples=500, **{'model.decoder_bias': 'data_mean'})
    train.train_and_evaluate(config, str(tmp_path))
    _, train_images, _, _ = train.prepare_data(config, train.Streams(config.seed))
    (mean,) = seen
    np.testing.assert_allclose(mean, train_images.mean(0), rtol=1e-6)
    assert train_images.shape[0] == 500

    with pytest.raises(ValueError, match="decoder_bias='data_mean' needs the training images"):
        train.build(config, (28, 28), train.Streams(0))
