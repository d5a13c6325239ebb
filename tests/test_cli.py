"""The command-line tools, table-driven: bad flags end in one `error:` line naming the flag,
exit status 1, no traceback, and the workdir as it was."""

import json
import os
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest
from helpers import REPO, tiny_config

from vae_jax import cli, evaluate, train

# Every flag of every tool, with values it must refuse; test_the_table_has_every_flag fails
# when a tool gains a flag that is not here. {run} is a trained run, {tmp} a scratch
# folder, {file} a file where a folder belongs. Each value replaces that flag in the tool's
# otherwise good command line (BASE); the error line must name the flag.
HUGE = '99999999999999999999'  # More than any int64.
# Config files that fail to load, written into {tmp} by the test.
CONFIG_FILES = {
    'syntax_error.py': 'def get_config(:\n',
    'no_get_config.py': 'x = 1\n',
    'returns_an_int.py': 'def get_config():\n    return 5\n',
}
BAD = {
    'main': {
        # A syntax error, no get_config(), a get_config() that returns an int (CONFIG_FILES).
        'config': ['configs/nonexistent.py', 'configs', '', *('{tmp}/' + f for f in CONFIG_FILES)],
        'workdir': ['', '{file}', '{file}/sub'],
        'restart': ['maybe'],
        'coordinator_address': ['localhost:1234'],  # Without the other two.
        'num_processes': ['0', '-1', 'abc', HUGE],
        'process_id': ['-1', 'abc', HUGE],
        'multihost': ['maybe'],
    },
    'evaluate': {
        'workdir': ['', '{tmp}/missing', '{file}'],
        'split': ['nope', ''],
        'method': ['nope'],
        'num_importance_samples': ['0', '-5', 'abc', '1.5', HUGE],
        'report_k': ['5,5', 'abc', '0', '-1'],
        'batch_size': ['0', '1e9x', HUGE],
        'chunk_size': ['-1', '0', HUGE],
        'max_examples': ['-1', HUGE],
        'seed': ['-1', 'x', HUGE],
        'ais_steps': ['0', HUGE],
        'bdmc_examples': ['-1', HUGE],
        'precision': ['fast'],
        'plot': ['{tmp}/missing/d.png', '{tmp}/d.jpg'],
    },
    'sample': {
        'workdir': ['', '{tmp}/missing'],
        'num': ['0', 'abc', HUGE],
        'source': ['nope'],
        'split': ['nope'],
        'means': ['maybe'],
        'manifold': ['-2', '3', HUGE],  # 3: the run's latent space is not 2-D.
        'seed': ['-1', HUGE],
        'out': ['', '{tmp}/missing/s.png', '{tmp}/s.jpg'],
    },
    'compare': {
        # {file}: not JSON; {run}: a workdir without K = 5000 results; config.json: not results.
        'a': ['', '{tmp}/missing.json', '{file}', '{run}', '{run}/config.json'],
        'b': ['', '{run}/eval_valid_is_4.json'],  # The validation images, not the test's.
    },
    'sweep': {
        'config': ['configs/nonexistent.py', ''],
        'workdir': ['', '{file}'],
        'sweep': ['seed=', 'seed=1,1', 'latnt_dim=2', 'latent_dim=-1', 'nonsense', 'seed=a'],
        'vectorize': ['maybe'],
    },
}
# The good command line each case starts from.
BASE = {
    'main': {'config': 'configs/default.py', 'workdir': '{tmp}/new'},
    'evaluate': {'workdir': '{run}'},
    'sample': {'workdir': '{run}', 'out': '{tmp}/s.png'},
    'sweep': {'config': 'configs/default.py', 'workdir': '{tmp}/new', 'sweep': 'seed=0,1'},
    'compare': {'a': '{run}/eval_test_is_4.json', 'b': '{run}/eval_test_is_4.json'},
}
# Config fields through the command line (every field's bad values: test_config_fields.py),
# and a positional argument, which no tool takes.
CONFIG_CASES = [
    ('main', ['--config.batch_size=abc'], '--config.batch_size'),
    ('main', ['--config.nosuch=1'], '--config.nosuch'),
    ('main', ['--config.batch_size=-1'], 'config.batch_size'),
    ('main', ['--config.beta=nan'], 'config.beta'),
    *(
        (tool, ['stray'], 'unexpected arguments')
        for tool in ('main', 'evaluate', 'sample', 'sweep', 'compare')
    ),
]
CASES = [
    (tool, [f'--{k}={v}' for k, v in {**BASE[tool], flag: value}.items()], f'--{flag}')
    for tool, table in BAD.items()
    for flag, values in table.items()
    for value in values
] + [
    (tool, [f'--{k}={v}' for k, v in BASE[tool].items()] + args, says)
    for tool, args, says in CONFIG_CASES
]
# Which flags a tool defines: its own module's and cli's (absl's --help, --verbosity and
# the like are absl's).
LIST_FLAGS = """
import importlib, json, sys
from absl import flags
tool = importlib.import_module('vae_jax.' + sys.argv[1])
getattr(tool, '_define_flags', lambda: None)()
names = {f.name for f in flags.FLAGS.get_flags_for_module(tool.__name__)}
print(json.dumps(sorted(names)))
"""


@pytest.fixture(scope='module')
def run(tmp_path_factory):
    path = tmp_path_factory.mktemp('run')
    train.train_and_evaluate(tiny_config(num_steps=10, eval_max_examples=20), str(path))
    for split in ('test', 'valid'):  # Results for compare to read.
        evaluate.evaluate_run(str(path), split=split, num_importance_samples=4, max_examples=20)
    return path


def _snapshot(folder):
    return sorted(
        (os.path.relpath(os.path.join(d, f), folder), os.stat(os.path.join(d, f)).st_mtime_ns)
        for d, _, files in os.walk(folder)
        for f in files
    )


def _call(tool, args, run, tmp):
    fill = {'run': run, 'tmp': tmp, 'file': os.path.join(tmp, 'file')}
    cmd = [sys.executable, '-m', f'vae_jax.{tool}', *(a.format(**fill) for a in args)]
    env = {**os.environ, 'JAX_PLATFORMS': 'cpu'}
    return subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, env=env, timeout=300)


def test_the_table_has_every_flag():
    for tool in BAD:
        out = subprocess.run(
            [sys.executable, '-c', LIST_FLAGS, tool], capture_output=True, text=True, cwd=REPO
        )
        assert out.returncode == 0, out.stderr[-500:]
        assert sorted(BAD[tool]) == json.loads(out.stdout), tool


def test_every_bad_flag_is_one_error_line(run, tmp_path):
    (tmp_path / 'file').write_text('')
    for name, text in CONFIG_FILES.items():
        (tmp_path / name).write_text(text)
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


@pytest.mark.parametrize('text', ['{"latent_dim": 4, ', '[1, 2]'])
def test_a_damaged_config_json_is_one_error_line(run, tmp_path, text):
    damaged = tmp_path / 'damaged'
    shutil.copytree(run, damaged)
    (damaged / 'config.json').write_text(text)
    before = _snapshot(damaged)
    for tool, args in (
        ('evaluate', []),
        ('sample', [f'--out={tmp_path}/s.png']),
        ('main', ['--config=configs/default.py']),
    ):
        out = _call(tool, [f'--workdir={damaged}', *args], run, tmp_path)
        errors = [line for line in out.stderr.splitlines() if line.startswith('error:')]
        assert out.returncode == 1 and 'Traceback' not in out.stderr, out.stderr[-500:]
        assert len(errors) == 1 and 'config.json is not a config vae_jax wrote' in errors[0]
    assert _snapshot(damaged) == before


@pytest.mark.parametrize(
    'edit, message',
    [
        # What an earlier version wrote: fields added since are absent.
        (lambda c: c.pop('precision'), "lacks the field 'precision': an earlier version"),
        (lambda c: c['model'].pop('upper_latent_dims'), "lacks the field 'upper_latent_dims'"),
        (lambda c: c.update(latent_dim=-3), "fails this version's checks: config.latent_dim"),
    ],
)
def test_a_config_json_this_version_cannot_read_is_one_error_line(run, tmp_path, edit, message):
    old = tmp_path / 'old'
    shutil.copytree(run, old)
    config = json.loads((old / 'config.json').read_text())
    edit(config)
    (old / 'config.json').write_text(json.dumps(config))
    before = _snapshot(old)
    for tool, args in (('evaluate', []), ('sample', [f'--out={tmp_path}/s.png'])):
        out = _call(tool, [f'--workdir={old}', *args], run, tmp_path)
        errors = [line for line in out.stderr.splitlines() if line.startswith('error:')]
        assert out.returncode == 1 and 'Traceback' not in out.stderr, out.stderr[-500:]
        assert len(errors) == 1 and message in errors[0], errors
    assert _snapshot(old) == before


def test_a_read_only_workdir_is_refused_before_any_work(monkeypatch, tmp_path):
    """main and sweep call cli.require_workdir first; a read-only mount is found by trying
    (root ignores permission bits, so the failure is simulated)."""

    def read_only(*args, **kwargs):
        raise PermissionError(30, 'Read-only file system')

    monkeypatch.setattr(cli.tempfile, 'NamedTemporaryFile', read_only)
    for workdir in (tmp_path, tmp_path / 'new' / 'run'):
        with pytest.raises(ValueError, match='cannot write --workdir=.*Read-only file system'):
            cli.require_workdir(str(workdir))
    with pytest.raises(ValueError, match='--workdir is empty'):
        cli.require_workdir('')


def test_run_script_ends_a_stopped_run_or_a_mistake_in_one_line(capsys):
    """The experiments' scripts (cli.run_script): no traceback for a SIGTERM or a bad input."""
    import signal

    from vae_jax import data, loop

    def stopped():
        raise loop.TrainingInterrupted(signal.SIGTERM, 700, '/runs/a/checkpoints')

    with pytest.raises(SystemExit) as e:
        cli.run_script(stopped)
    assert e.value.code == 143
    assert capsys.readouterr().err.startswith('interrupted: SIGTERM at step 700: saved')

    def missing_data():
        raise data.DataError('/data/mnist: no such file')

    with pytest.raises(SystemExit) as e:
        cli.run_script(missing_data)
    assert e.value.code == 'error: /data/mnist: no such file'

    def a_bug():
        raise ZeroDivisionError  # Not a mistake of the user's: its traceback stays.

    with pytest.raises(ZeroDivisionError):
        cli.run_script(a_bug)
