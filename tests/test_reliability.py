"""Fault injection: pre-emption, damaged checkpoints, non-finite steps and bad input.

Each test names the point of the reliability contract it checks (docs/reliability.md, "Resuming,
pre-emption and errors"):
  1. SIGTERM / SIGINT save a checkpoint and exit 143 / 130; SIGKILL loses at most the
     steps since the last checkpoint; rerunning resumes to bitwise the same parameters.
  2. A damaged latest checkpoint falls back to the one before; with none usable the run
     refuses until ``--restart``.
  3. A NaN in a batch stops the run naming step, term and last checkpoint, or is
     skipped and counted; nothing non-finite is saved.
  4. Bad input fails before training with one line naming the field or file.
  5. A changed config on a used workdir is refused (shapes included).

The subprocess tests run ``python -m vae_jax.main`` on a 784-32-4 MLP as a user would;
the rest call ``train.train_and_evaluate`` in-process, which is faster.
"""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import assert_trees_equal, params_of, tiny_config

from vae_jax import (
    checkpointing,
    cli,
    configuration,
    data,
    loop,
    optimizers,
    reporting,
    train,
    workdir_files,
)

REPO = Path(__file__).resolve().parents[1]

REPORTED = cli.REPORTED  # What the command lines report as one `error:` line.

# --------------------------------------------------------------------------- helpers

# The subprocess runs: long enough (in steps) for a signal to land mid-training, cheap
# at the end (the final evaluation on 100 test examples with K = 2).
CLI_STEPS = 400
CLI = {
    'model.hidden_dims': (32,),
    'latent_dim': 4,
    'batch_size': 32,
    'num_steps': CLI_STEPS,
    'steps_per_dispatch': 5,
    'log_every_steps': 5,
    'eval_every_steps': 0,
    'checkpoint_every_steps': 50,
    'eval_batch_size': 100,
    'eval_max_examples': 100,
    'eval_num_importance_samples': 2,
    'eval_chunk_size': 2,
}
PROGRESS = re.compile(r'step\s+(\d+)/\d+ \|')


def _flag(field, value) -> str:
    return f'--config.{field}={value}'


def _command(workdir, overrides=None, *extra) -> list[str]:
    fields = {**CLI, **(overrides or {})}
    return [
        sys.executable,
        '-m',
        'vae_jax.main',
        f'--config={REPO / "configs" / "default.py"}',
        f'--workdir={workdir}',
        *(_flag(k, v) for k, v in fields.items()),
        *extra,
    ]


def _start(workdir, overrides=None, *extra) -> subprocess.Popen:
    return subprocess.Popen(
        _command(workdir, overrides, *extra),
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def _run(workdir, overrides=None, *extra) -> tuple[int, str]:
    proc = _start(workdir, overrides, *extra)
    _, err = proc.communicate(timeout=300)
    return proc.returncode, err


def _read_until_step(proc: subprocess.Popen, step: int) -> str:
    """stderr of ``proc`` up to the first progress line at ``step`` or later."""
    seen = []
    for line in proc.stderr:
        seen.append(line)
        m = PROGRESS.search(line)
        if m and int(m.group(1)) >= step:
            return ''.join(seen)
    proc.wait()
    raise AssertionError(f'the run ended before step {step}:\n{"".join(seen)}')


def _cli_config(**overrides):
    config = tiny_config(**{**CLI, **overrides})
    return config


def _checkpoint_steps(workdir) -> list[int]:
    folder = Path(workdir) / 'checkpoints'
    return sorted(int(p.name) for p in folder.iterdir() if p.name.isdigit())


@pytest.fixture(scope='module')
def cli_reference(tmp_path_factory):
    """Parameters of the uninterrupted CLI configuration, trained in-process."""
    workdir = tmp_path_factory.mktemp('reference')
    train.train_and_evaluate(_cli_config(), str(workdir))
    return params_of(workdir)


# --------------------------------------------------------------------------- 1. pre-emption


def test_sigterm_saves_a_checkpoint_exits_143_and_resumes_bitwise(tmp_path, cli_reference):
    workdir = tmp_path / 'run'
    proc = _start(workdir)
    seen = _read_until_step(proc, 20)
    proc.send_signal(signal.SIGTERM)
    err = seen + proc.communicate(timeout=120)[1]
    assert proc.returncode == 143, err
    m = re.search(r'interrupted: SIGTERM at step (\d+): saved a checkpoint at step \1 in ', err)
    assert m, err
    stopped = int(m.group(1))
    assert 20 <= stopped < CLI_STEPS
    assert stopped in _checkpoint_steps(workdir)
    assert 'Traceback' not in err
    assert not (workdir / 'results.json').exists()

    rc, err = _run(workdir)
    assert rc == 0, err
    assert f'resumed from step {stopped}' in err
    assert_trees_equal(params_of(workdir), cli_reference)


@pytest.mark.parametrize('seed', [1, 2])
def test_sigkill_at_a_random_step_then_rerun_is_bitwise(tmp_path, cli_reference, seed):
    rng = np.random.default_rng(seed)
    kill_at = int(rng.integers(10, CLI_STEPS - 100))
    workdir = tmp_path / 'run'
    proc = _start(workdir)
    _read_until_step(proc, kill_at)
    proc.kill()
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    saved = _checkpoint_steps(workdir) if (workdir / 'checkpoints').exists() else []
    assert all(s % CLI['checkpoint_every_steps'] == 0 for s in saved)

    rc, err = _run(workdir)
    assert rc == 0, err
    if saved:
        assert f'resumed from step {max(saved)}' in err
    assert_trees_equal(params_of(workdir), cli_reference)
    steps = [json.loads(s)['step'] for s in (workdir / 'metrics.jsonl').read_text().splitlines()]
    assert steps == sorted(steps)  # Lines logged after the lost checkpoint were dropped.


def test_resume_drops_metric_lines_of_lost_steps(tmp_path):
    """After a kill: lines past the checkpoint resumed from, and a half-written line, go."""
    path = tmp_path / 'metrics.jsonl'
    path.write_text('{"step": 5}\n{"step": 10}\n{"step": 15}\n{"step": 2')
    reporting.trim_jsonl(str(path), 10)
    assert path.read_text() == '{"step": 5}\n{"step": 10}\n'


def test_sigint_in_process_stops_at_a_dispatch_and_restores_handlers(tmp_path, monkeypatch):
    """SIGINT raised from inside the loop (deterministic): stop at the dispatch's end."""
    if threading.current_thread() is not threading.main_thread():
        pytest.skip('signal handlers can only be installed from the main thread')
    config = tiny_config(num_steps=20, checkpoint_every_steps=10, eval_max_examples=50)
    full = tmp_path / 'full'
    train.train_and_evaluate(config, str(full))

    original = loop.batch_indices

    def batch_indices(seed, num_train, batch_size, start, count):
        if start == 5:  # The dispatch of steps 6..10: the signal arrives during it.
            os.kill(os.getpid(), signal.SIGINT)
        return original(seed, num_train, batch_size, start, count)

    monkeypatch.setattr(loop, 'batch_indices', batch_indices)
    before = signal.getsignal(signal.SIGINT)
    run = tmp_path / 'run'
    with pytest.raises(loop.TrainingInterrupted, match='SIGINT at step 10') as err:
        train.train_and_evaluate(config, str(run))
    assert err.value.exit_code == 130
    assert signal.getsignal(signal.SIGINT) is before
    assert _checkpoint_steps(run) == [10]
    monkeypatch.undo()
    results = train.train_and_evaluate(config, str(run))
    assert results['train_steps'] == 20
    assert_trees_equal(params_of(run), params_of(full))


# --------------------------------------------------------------------------- 2. checkpoints


def _data_files(step_dir: Path) -> list[Path]:
    """The files holding the arrays of a checkpoint (orbax's OCDBT data), largest first."""
    files = [p for p in step_dir.rglob('*') if p.is_file() and '/d/' in p.as_posix()]
    assert files, sorted(str(p) for p in step_dir.rglob('*'))
    return sorted(files, key=lambda p: p.stat().st_size, reverse=True)


def _truncate(step_dir: Path) -> None:
    for p in _data_files(step_dir):
        p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])


def _garble(step_dir: Path) -> None:
    p = _data_files(step_dir)[0]
    raw = bytearray(p.read_bytes())
    mid = len(raw) // 2
    raw[mid : mid + 64] = bytes(np.random.default_rng(0).integers(0, 256, 64, dtype=np.uint8))
    p.write_bytes(bytes(raw))


def _delete_arrays(step_dir: Path) -> None:
    for p in _data_files(step_dir):
        p.unlink()


def _nan_params(step_dir: Path) -> None:
    """Replaces the checkpoint by one of the same structure whose params hold a NaN.

    Written with orbax directly: ``checkpointing.save`` refuses such a state.
    """
    import orbax.checkpoint as ocp

    workdir = step_dir.parents[1]
    step = int(step_dir.name)
    config = workdir_files.read_config(str(workdir))
    model = train.make_model(config, (28, 28))
    tx = optimizers.make_optimizer(config)
    state = train.init_state(config, model, tx, (28, 28), train.Streams(config.seed))
    state = state.replace(
        step=jnp.asarray(step, jnp.int32),
        params=jax.tree.map(lambda p: p.at[(0,) * p.ndim].set(jnp.nan), state.params),
    )
    shutil.rmtree(step_dir)
    mngr = checkpointing.manager(str(workdir), keep=10)
    mngr.save(step, args=ocp.args.StandardSave(state), force=True)
    mngr.wait_until_finished()


@pytest.fixture(scope='module')
def twenty_steps(tmp_path_factory):
    """A finished 20-step run (checkpoints 10 and 20) and the params of a 30-step one."""
    base = tmp_path_factory.mktemp('base')
    train.train_and_evaluate(tiny_config(eval_max_examples=50), str(base))
    longer = tmp_path_factory.mktemp('longer')
    train.train_and_evaluate(tiny_config(num_steps=30, eval_max_examples=50), str(longer))
    return base, params_of(longer)


@pytest.mark.parametrize(
    'damage',
    [_truncate, _garble, _delete_arrays, _nan_params],
    ids=['truncated', 'garbled', 'arrays_deleted', 'nan_params'],
)
def test_damaged_latest_checkpoint_falls_back_to_the_previous(
    tmp_path, twenty_steps, caplog, damage
):
    base, params_30 = twenty_steps
    workdir = tmp_path / 'run'
    shutil.copytree(base, workdir)
    damage(workdir / 'checkpoints' / '20')
    results = train.train_and_evaluate(
        tiny_config(num_steps=30, eval_max_examples=50), str(workdir)
    )
    assert results['train_steps'] == 30
    warning = [r.getMessage() for r in caplog.records if 'checkpoint unusable' in r.getMessage()]
    assert len(warning) == 1, [r.getMessage() for r in caplog.records]
    assert 'step 20' in warning[0] and 'Falling back to the checkpoint at step 10' in warning[0]
    assert [p.name.split('.')[0] for p in (workdir / 'checkpoints.corrupt').iterdir()] == ['20']
    # Steps 11..30 were recomputed from step 10: the same numbers as an unbroken run.
    assert_trees_equal(params_of(workdir), params_30)


def test_no_usable_checkpoint_is_refused_until_restart(tmp_path, twenty_steps):
    base, _ = twenty_steps
    workdir = tmp_path / 'run'
    shutil.copytree(base, workdir)
    _truncate(workdir / 'checkpoints' / '20')
    _nan_params(workdir / 'checkpoints' / '10')
    config = tiny_config(eval_max_examples=50)
    with pytest.raises(checkpointing.CorruptCheckpointError) as err:
        train.train_and_evaluate(config, str(workdir))
    msg = str(err.value)
    assert 'step 20' in msg and 'step 10: non-finite' in msg and '--restart' in msg
    assert _checkpoint_steps(workdir) == [10, 20]  # Nothing was touched.

    results = train.train_and_evaluate(config, str(workdir), restart=True)
    assert results['train_steps'] == 20
    (previous,) = workdir.glob('previous-*')
    assert {'checkpoints', 'config.json', 'metrics.jsonl'} <= {p.name for p in previous.iterdir()}
    assert_trees_equal(params_of(workdir), params_of(base))


def test_a_shorter_num_steps_on_resume_is_refused_until_restart(tmp_path, twenty_steps):
    """Resumed with num_steps below its checkpoints, a run would evaluate the step-20
    model and write its results as the step-10 run's: it is refused, untouched."""
    base, _ = twenty_steps
    workdir = tmp_path / 'run'
    shutil.copytree(base, workdir)
    files = {p: p.read_bytes() for p in workdir.rglob('*') if p.is_file()}
    config = tiny_config(num_steps=10, eval_max_examples=50)
    with pytest.raises(
        workdir_files.TrainedPastError, match='trained to step 20, past num_steps=10'
    ):
        train.train_and_evaluate(config, str(workdir))
    assert {p: p.read_bytes() for p in workdir.rglob('*') if p.is_file()} == files

    assert train.train_and_evaluate(config, str(workdir), restart=True)['train_steps'] == 10
    assert _checkpoint_steps(workdir) == [10]


def test_save_refuses_non_finite_state(tmp_path):
    config = tiny_config()
    model = train.make_model(config, (28, 28))
    tx = optimizers.make_optimizer(config)
    state = train.init_state(config, model, tx, (28, 28), train.Streams(0))
    bad = state.replace(
        opt_state=jax.tree.map(lambda x: x * jnp.inf if x.ndim else x, state.opt_state)
    )
    mngr = checkpointing.manager(str(tmp_path), keep=3)
    checkpointing.save(mngr, 1, state)
    with pytest.raises(reporting.NonFiniteError, match='refusing to save a checkpoint at step 2'):
        checkpointing.save(mngr, 2, bad)
    assert _checkpoint_steps(tmp_path) == [1]


def test_shape_mismatch_between_checkpoint_and_data_is_named(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / 'd.npz'
    np.savez(path, train=rng.random((64, 6), np.float32), test=rng.random((16, 6), np.float32))
    config = tiny_config(
        dataset=f'npz:{path}',
        binarization='none',
        batch_size=16,
        num_steps=4,
        steps_per_dispatch=2,
        log_every_steps=2,
        eval_every_steps=0,
        checkpoint_every_steps=2,
        eval_batch_size=16,
    )
    train.train_and_evaluate(config, str(tmp_path / 'w'))
    # The same config, but the file now holds 8 features per example.
    np.savez(path, train=rng.random((64, 8), np.float32), test=rng.random((16, 8), np.float32))
    with pytest.raises(checkpointing.CheckpointMismatchError) as err:
        train.train_and_evaluate(config, str(tmp_path / 'w'))
    msg = str(err.value)
    assert 'step 4' in msg and '(6, 32) in the checkpoint, (8, 32) now' in msg, msg


def test_a_config_from_an_earlier_version_is_refused_not_guessed(tmp_path):
    """A stored config without a field this version has is not filled in with a guess."""
    config = tiny_config(num_steps=5)
    workdir_files.write_or_check_config(config, str(tmp_path))
    (tmp_path / workdir_files.CHECKPOINT_DIR / '5').mkdir(parents=True)  # A run to resume.
    path = tmp_path / workdir_files.CONFIG_FILE
    stored = json.loads(path.read_text())
    del stored['precision']['train']
    path.write_text(json.dumps(stored))
    with pytest.raises(workdir_files.WorkdirConflictError) as err:
        workdir_files.write_or_check_config(config, str(tmp_path))
    msg = str(err.value)
    assert "precision.train: absent -> 'default'" in msg and 'earlier version' in msg, msg


def test_changed_model_on_resume_is_refused_with_fields(tmp_path):
    config = tiny_config(num_steps=5)
    workdir_files.write_or_check_config(config, str(tmp_path))
    (tmp_path / workdir_files.CHECKPOINT_DIR / '5').mkdir(parents=True)  # A run to resume.
    config.model.hidden_dims = (16,)
    config.optimizer.learning_rate = 3e-4
    config.num_steps = 50  # Resume-safe: not listed.
    config.nonfinite = 'skip'  # Resume-safe too.
    with pytest.raises(workdir_files.WorkdirConflictError) as err:
        train.train_and_evaluate(config, str(tmp_path))
    msg = str(err.value)
    assert 'model.hidden_dims: [32] -> [16]' in msg and 'optimizer.learning_rate' in msg
    assert 'num_steps' not in msg and 'nonfinite' not in msg
    assert {'num_steps', 'nonfinite'} <= workdir_files.RESUME_SAFE_FIELDS


# --------------------------------------------------------------------------- 3. non-finite


def _poison(monkeypatch, step: int) -> None:
    """Puts a NaN into the one training example that the batch of ``step`` (1-based) reads."""
    original = train.prepare_data

    def prepare_data(config, streams):
        splits, train_x, valid, test = original(config, streams)
        idx = loop.batch_indices(config.seed, train_x.shape[0], config.batch_size, step - 1, 1)
        train_x = train_x.copy()
        train_x[idx[0, 0], 0, 0] = np.nan
        return splits, train_x, valid, test

    monkeypatch.setattr(train, 'prepare_data', prepare_data)


# Grey-level data as is: dynamic binarisation would turn the NaN into a 0.
NAN_RUN = dict(binarization='none', eval_max_examples=50)


def test_nan_batch_stops_naming_step_term_and_last_checkpoint(tmp_path, monkeypatch):
    _poison(monkeypatch, 13)
    with pytest.raises(reporting.NonFiniteError) as err:
        train.train_and_evaluate(tiny_config(**NAN_RUN), str(tmp_path))
    msg = str(err.value)
    assert 'at step 13' in msg, msg
    assert msg.startswith('non-finite reconstruction (nan), kl (nan)') and 'grad_norm' in msg
    assert f'last good checkpoint: step 10 in {tmp_path / "checkpoints"}' in msg
    assert _checkpoint_steps(tmp_path) == [10]


def test_nan_batch_is_skipped_and_counted(tmp_path, monkeypatch):
    _poison(monkeypatch, 13)
    results = train.train_and_evaluate(tiny_config(nonfinite='skip', **NAN_RUN), str(tmp_path))
    assert np.isfinite(results['test_elbo'])
    lines = [json.loads(s) for s in (tmp_path / 'metrics.jsonl').read_text().splitlines()]
    skipped = {m['step']: m['train_skipped_steps'] for m in lines if 'train_skipped_steps' in m}
    assert skipped == {5: 0, 10: 0, 15: 1, 20: 0}
    assert all(np.isfinite(v) for m in lines for v in m.values())
    assert not checkpointing.nonfinite_leaves(params_of(tmp_path))


def test_skipped_step_leaves_params_and_optimizer_unchanged():
    config = tiny_config(nonfinite='skip', binarization='none')
    model = train.make_model(config, (28, 28))
    tx = optimizers.make_optimizer(config)
    streams = train.Streams(0)
    state = train.init_state(config, model, tx, (28, 28), streams)
    step = jax.jit(train.make_train_step(model, tx, config, binary_data=False))
    x = jnp.full((config.batch_size, 28, 28), 0.5)
    after, metrics = step(state, x.at[3, 4, 5].set(jnp.nan), streams.train)
    assert float(metrics['skipped']) == 1.0 and int(after.step) == 1
    assert_trees_equal((after.params, after.opt_state), (state.params, state.opt_state))
    after, metrics = step(after, x, streams.train)
    assert float(metrics['skipped']) == 0.0 and int(after.step) == 2
    assert not np.array_equal(
        after.params['decoder']['head']['bias'], state.params['decoder']['head']['bias']
    )


# --------------------------------------------------------------------------- 4. bad input


def _idx(images: np.ndarray, magic: int = 2051) -> bytes:
    n, rows, cols = images.shape
    return np.array([magic, n, rows, cols], '>i4').tobytes() + images.astype(np.uint8).tobytes()


def _mnist_dir(root: Path, *, magic: int = 2051, cut: int = 0) -> Path:
    """Synthetic MNIST IDX files; ``magic`` and ``cut`` (bytes off the end) damage train."""
    folder = root / 'mnist'
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    train_bytes = _idx(rng.integers(0, 256, (30, 28, 28)), magic)
    (folder / 'train-images-idx3-ubyte').write_bytes(train_bytes[: len(train_bytes) - cut])
    (folder / 't10k-images-idx3-ubyte').write_bytes(_idx(rng.integers(0, 256, (5, 28, 28))))
    return root


def _npz(root: Path, *, nan: bool = False, wide: bool = False) -> str:
    rng = np.random.default_rng(0)
    train_x = rng.random((64, 6)).astype(np.float32)
    if nan:
        train_x[7, 2] = np.nan
    if wide:
        train_x = train_x * 4 - 2
    root.mkdir(parents=True, exist_ok=True)
    path = root / 'user.npz'
    np.savez(path, train=train_x, test=rng.random((16, 6)).astype(np.float32))
    return f'npz:{path}'


# (config overrides or a function of tmp_path returning them, error type, message parts)
BAD_INPUT = {
    'K=0 for the IS estimate': (
        {'eval_num_importance_samples': 0},
        configuration.ConfigError,
        ['config.eval_num_importance_samples must be > 0'],
    ),
    'K=0 for training': (
        {'num_samples': 0},
        configuration.ConfigError,
        ['config.num_samples must be > 0'],
    ),
    'AIS chains 0': (
        {'eval_ais_chains': 0},
        configuration.ConfigError,
        ['config.eval_ais_chains must be > 0'],
    ),
    'negative seed': ({'seed': -1}, configuration.ConfigError, ['config.seed must be']),
    'unknown nonfinite policy': (
        {'nonfinite': 'ignore'},
        configuration.ConfigError,
        ["config.nonfinite='ignore' is not one of ('stop', 'skip')"],
    ),
    'bernoulli on data outside [0, 1]': (
        lambda d: {'dataset': _npz(d, wide=True), 'binarization': 'none', 'batch_size': 16},
        configuration.ConfigError,
        ['config.likelihood=bernoulli needs data in [0, 1]', '--config.likelihood=gaussian'],
    ),
    'NaN in an npz': (
        lambda d: {'dataset': _npz(d, nan=True), 'binarization': 'none', 'batch_size': 16},
        data.DataError,
        ['user.npz', "'train'", '(7, 2)'],
    ),
    'wrong IDX magic': (
        lambda d: {'dataset': 'mnist', 'data_dir': str(_mnist_dir(d, magic=2049))},
        data.DataError,
        ['train-images-idx3-ubyte', 'magic', '2051'],
    ),
    'truncated IDX': (
        lambda d: {'dataset': 'mnist', 'data_dir': str(_mnist_dir(d, cut=100))},
        data.DataError,
        ['train-images-idx3-ubyte', 'truncated'],
    ),
    'missing data files': (
        lambda d: {'dataset': 'mnist', 'data_dir': str(d / 'nowhere')},
        data.DataError,
        ['no train images file found', 'nowhere', 'download'],
    ),
}


@pytest.mark.parametrize('case', list(BAD_INPUT))
def test_bad_input_fails_before_training_with_a_named_cause(tmp_path, case):
    overrides, error, parts = BAD_INPUT[case]
    if callable(overrides):
        overrides = overrides(tmp_path)
    workdir = tmp_path / 'w'
    with pytest.raises(REPORTED) as err:
        train.train_and_evaluate(tiny_config(**overrides), str(workdir))
    assert isinstance(err.value, error), err.value
    for part in parts:
        assert part in str(err.value), (part, str(err.value))
    assert not (workdir / 'checkpoints').exists()


def _prepared_workdir(root: Path, config, *, damage=None) -> Path:
    """A workdir holding ``config`` and a step-5 checkpoint of its initial state.

    No training: the checkpoint is the initial state saved as if at step 5.
    """
    workdir = root / 'prepared'
    workdir.mkdir(parents=True)
    workdir_files.write_or_check_config(config, str(workdir))
    streams = train.Streams(config.seed)
    splits = data.load(config.dataset, config.data_dir)
    model = train.make_model(config, splits.event_shape)
    tx = optimizers.make_optimizer(config)
    state = train.init_state(config, model, tx, splits.event_shape, streams)
    mngr = checkpointing.manager(str(workdir), keep=3)
    checkpointing.save(mngr, 5, state.replace(step=jnp.asarray(5, jnp.int32)))
    if damage:
        damage(workdir / 'checkpoints' / '5')
    return workdir


def test_cli_reports_each_bad_input_in_one_line(tmp_path):
    """The CLI: exit status 1 and one line naming the cause; never only a traceback."""
    corrupt = _prepared_workdir(tmp_path / 'c', _cli_config(), damage=_truncate)
    npz_dir = tmp_path / 'm'
    npz_dir.mkdir()
    npz_config = {'dataset': _npz(npz_dir), 'binarization': 'none', 'batch_size': 16}
    mismatch = _prepared_workdir(npz_dir, _cli_config(**npz_config))
    path = npz_config['dataset'][len('npz:') :]
    np.savez(path, train=np.full((64, 8), 0.5, np.float32), test=np.full((4, 8), 0.5, np.float32))
    conflict = _prepared_workdir(tmp_path / 'h', _cli_config())

    # name: (workdir, config overrides, other flags, what the output must contain)
    cases = {
        'unknown field': (None, {}, ['--config.lerning_rate=0.1'], ['error: --config.lerning_r']),
        'wrong type': (None, {}, ['--config.latent_dim=abc'], ['--config.latent_dim=abc']),
        'K=0': (None, {'eval_num_importance_samples': 0}, [], ['error: config.eval_num_imp']),
        'NaN in npz': (
            None,
            {'dataset': _npz(tmp_path / 'nan', nan=True), 'binarization': 'none'},
            [],
            ['error: ', 'user.npz', 'non-finite value'],
        ),
        'truncated IDX': (
            None,
            {'dataset': 'mnist', 'data_dir': _mnist_dir(tmp_path / 'idx', cut=99)},
            [],
            ['error: ', 'train-images-idx3-ubyte', 'truncated'],
        ),
        'bernoulli outside [0, 1]': (
            None,
            {'dataset': _npz(tmp_path / 'wide', wide=True), 'binarization': 'none'},
            [],
            ['error: config.likelihood=bernoulli'],
        ),
        'changed model': (
            conflict,
            {'model.hidden_dims': (16,)},
            [],
            ['error: ', 'model.hidden_dims: [32] -> [16]'],
        ),
        'no usable checkpoint': (corrupt, {}, [], ['error: no usable checkpoint', '--restart']),
        'checkpoint shapes': (
            mismatch,
            npz_config,
            [],
            ['error: ', '(6, 32) in the checkpoint, (8, 32) now'],
        ),
    }
    procs = {}
    for name, (workdir, overrides, flags, _) in cases.items():
        workdir = workdir or tmp_path / name.replace(' ', '_')
        procs[name] = subprocess.Popen(
            _command(workdir, overrides, *flags),
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
    for name, proc in procs.items():
        out, err = proc.communicate(timeout=300)
        text = out + err
        assert proc.returncode == 1, (name, text)
        assert 'Traceback' not in text, (name, text)
        for part in cases[name][3]:
            assert part in text, (name, part, text)
    for workdir in (corrupt, mismatch, conflict):
        assert _checkpoint_steps(workdir) == [5]  # Refused: nothing written or moved.


def test_a_start_refused_by_the_data_checks_writes_nothing(tmp_path):
    """The config and the data are checked against each other before the workdir is touched,
    so the corrected command is not refused as 'a different config'."""
    bad = tiny_config(num_steps=5, num_train_examples=10**6)  # More than the 4,000 digits.
    with pytest.raises(configuration.ConfigError, match='num_train_examples'):
        train.train_and_evaluate(bad, str(tmp_path / 'run'))
    assert not (tmp_path / 'run').exists()
    results = train.train_and_evaluate(tiny_config(num_steps=5), str(tmp_path / 'run'))
    assert results['train_steps'] == 5


def test_a_workdir_without_a_checkpoint_takes_a_new_config(tmp_path):
    """A start that stopped before its first checkpoint (a crash, a kill during compilation)
    locks nothing: the next command's config replaces the stored one."""
    workdir_files.write_or_check_config(tiny_config(latent_dim=5), str(tmp_path))
    (tmp_path / workdir_files.CHECKPOINT_DIR).mkdir()  # orbax's empty folder.
    results = train.train_and_evaluate(tiny_config(num_steps=5), str(tmp_path))
    assert results['train_steps'] == 5
    assert json.loads((tmp_path / workdir_files.CONFIG_FILE).read_text())['latent_dim'] == 4
    with pytest.raises(workdir_files.WorkdirConflictError, match='latent_dim: 4 -> 5'):
        train.train_and_evaluate(tiny_config(num_steps=5, latent_dim=5), str(tmp_path))


@pytest.mark.parametrize('text', ['{"latent_dim": 4, ', '[1, 2]', '\xff'])
def test_a_damaged_config_json_is_named_and_replaced_only_without_a_checkpoint(tmp_path, text):
    path = tmp_path / workdir_files.CONFIG_FILE
    path.write_text(text, encoding='latin-1')
    (tmp_path / workdir_files.CHECKPOINT_DIR / '5').mkdir(parents=True)  # A run to resume.
    for call in (
        lambda: workdir_files.write_or_check_config(tiny_config(), str(tmp_path)),
        lambda: workdir_files.read_config(str(tmp_path)),
    ):
        with pytest.raises(workdir_files.CorruptConfigError, match='config.json is not a config'):
            call()
    (tmp_path / workdir_files.CHECKPOINT_DIR / '5').rmdir()  # Nothing to resume any more.
    workdir_files.write_or_check_config(tiny_config(), str(tmp_path))
    assert workdir_files.read_config(str(tmp_path)).latent_dim == tiny_config().latent_dim
