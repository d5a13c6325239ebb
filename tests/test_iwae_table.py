"""experiments/iwae/table1.py end to end at the tiny scale: rows, resume, the CSV's columns."""

import csv
import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
import tarfile

import pytest

from experiments.iwae import table1

REQUIRED = (
    'scale',
    'layers',
    'objective',
    'k',
    'nll',
    'nll_stderr',
    'paper_nll',
    'active_units',
    'epochs',
    'train_seconds',
)


@pytest.fixture(scope='module')
def tiny_table(tmp_path_factory):
    root = tmp_path_factory.mktemp('iwae_table')
    argv = [
        '--scale=tiny',
        f'--workdir_root={root / "runs"}',
        f'--out={root / "out"}',
        '--rows=l1_vae_k1,l1_iwae_k5,l2_vae_k1',
    ]
    rows = table1.main(argv)
    return root, argv, rows


def test_table_has_every_entry_of_the_models_run(tiny_table):
    root, _, rows = tiny_table
    with open(root / 'out' / 'table1.csv') as f:
        csv_rows = list(csv.DictReader(f))
    assert set(REQUIRED) <= set(csv_rows[0])
    keyed = {(int(r['layers']), r['objective'], int(r['k'])): r for r in csv_rows}
    # k = 1: VAE and IWAE are one model, hence one number.
    assert keyed[(1, 'vae', 1)]['nll'] == keyed[(1, 'iwae', 1)]['nll']
    assert keyed[(1, 'vae', 1)]['model'] == keyed[(1, 'iwae', 1)]['model'] == 'l1_vae_k1'
    for key in ((1, 'vae', 1), (1, 'iwae', 5)):  # One stochastic layer of 50 units.
        r = keyed[key]
        nll, se = float(r['nll']), float(r['nll_stderr'])
        assert 0 < nll < 784 * 0.7 and 0 < se < 10
        assert float(r['paper_nll']) == table1.PAPER_NLL[key]
        assert float(r['diff']) == pytest.approx(nll - table1.PAPER_NLL[key], abs=2e-3)
        assert 0 <= int(r['active_units']) <= 50
    # The two-layer model: a number, and active units per stochastic layer.
    two = keyed[(2, 'vae', 1)]
    assert 0 < float(two['nll']) < 784 * 0.7 and two['model'] == 'l2_vae_k1'
    assert two['nll'] == keyed[(2, 'iwae', 1)]['nll']
    units = [int(u) for u in two['active_units'].split('+')]
    assert len(units) == 2 and 0 <= units[0] <= 100 and 0 <= units[1] <= 50
    md = (root / 'out' / 'table1.md').read_text()
    assert '| 1 | IWAE |' in md and '| 2 | VAE |' in md and '/ 85.33' in md
    assert (root / 'out' / 'iwae_curves.png').stat().st_size > 0


def test_finished_models_are_neither_trained_nor_evaluated_again(tiny_table):
    root, argv, rows = tiny_table
    workdir = root / 'runs' / 'tiny' / 'l1_vae_k1'
    stamps = {p: os.path.getmtime(workdir / p) for p in ('results.json', 'eval_test_is_20.json')}
    again = table1.main(argv)
    assert [r['nll'] for r in again] == [r['nll'] for r in rows]
    assert {p: os.path.getmtime(workdir / p) for p in stamps} == stamps


def test_a_table_is_every_model_recorded_in_its_folder(tiny_table):
    """Rows run elsewhere merge by their records; a deleted record is made again from its
    workdir, the same; a folder of two scales is refused."""
    root, argv, rows = tiny_table
    elsewhere = root / 'elsewhere'  # Another machine: none of the workdirs, only --out.
    again = table1.main(['--scale=tiny', f'--workdir_root={elsewhere}', f'--out={root / "out"}',
                         '--rows=l1_vae_k1'])  # fmt: skip
    assert again == rows and not elsewhere.exists()

    record = root / 'out' / 'models' / 'l1_iwae_k5.json'
    before = json.loads(record.read_text())
    assert before['scale'] == 'tiny' and before['iwae_curve']
    record.unlink()
    assert table1.main(argv) == rows
    assert json.loads(record.read_text()) == before

    mixed = root / 'mixed'
    shutil.copytree(root / 'out', mixed)
    (mixed / 'models' / 'l2_vae_k1.json').write_text(json.dumps({**before, 'scale': 'paper'}))
    with pytest.raises(ValueError, match="l2_vae_k1.json records scale 'paper', not 'tiny'"):
        table1.main(['--scale=tiny', f'--workdir_root={elsewhere}', f'--out={mixed}'])


def test_table_only_writes_the_table_from_the_records_and_runs_nothing(tiny_table, capsys):
    """Records copied in from elsewhere make the table alone: no model of the scale is
    trained or evaluated, though none has a workdir here."""
    root, _, rows = tiny_table
    copied = root / 'copied'
    shutil.copytree(root / 'out' / 'models', copied / 'models')
    nowhere = root / 'nowhere'
    argv = ['--scale=tiny', f'--workdir_root={nowhere}', f'--out={copied}', '--table_only']
    assert table1.main(argv) == rows and not nowhere.exists()
    assert (copied / 'table1.csv').read_text() == (root / 'out' / 'table1.csv').read_text()
    assert (copied / 'table1.md').read_text() == (root / 'out' / 'table1.md').read_text()
    assert sorted(os.listdir(copied / 'models')) == sorted(os.listdir(root / 'out' / 'models'))

    empty = root / 'empty'
    with pytest.raises(SystemExit, match=f'--table_only: no model recorded in {empty}'):
        table1.main(['--scale=tiny', f'--workdir_root={nowhere}', f'--out={empty}', '--table_only'])
    assert not empty.exists() and not nowhere.exists()
    with pytest.raises(SystemExit):
        table1.main([*argv, '--rows=l1_vae_k1'])
    assert '--table_only writes every model recorded in --out' in capsys.readouterr().err


def test_device_script_carries_a_row_out_and_back_where_the_table_records_it(tiny_table, tmp_path):
    """experiments/iwae/device.sh: a row goes out as a tar (config, metrics, its latest
    checkpoint alone, its evaluation) and, unpacked on another machine, is recorded from
    what came back: the same numbers, nothing trained or evaluated again."""
    root, _, rows = tiny_table
    device = tmp_path / 'device'  # The lent machine's carried folder.
    workdir = device / 'iwae' / 'tiny' / 'l1_vae_k1'
    shutil.copytree(root / 'runs' / 'tiny' / 'l1_vae_k1', workdir)
    shutil.copytree(workdir / 'checkpoints' / '26', workdir / 'checkpoints' / '13')
    script = os.path.join(os.path.dirname(table1.__file__), 'device.sh')
    env = {**os.environ, 'VAE_JAX_DEVICE_DIR': str(device), 'PYTHON': sys.executable,
           'OUT': str(tmp_path / 'out')}  # fmt: skip
    sent = subprocess.run(['bash', script, 'train', 'tiny', 'l1_vae_k1', '600'], env=env,
                          capture_output=True, text=True, check=True)  # fmt: skip
    assert 'l1_vae_k1: step 26' in sent.stdout and 'evaluated' in sent.stdout
    with tarfile.open(tmp_path / 'out' / 'l1_vae_k1.tar') as tar:
        names = set(tar.getnames())
    assert {'config.json', 'metrics.jsonl', 'checkpoints/26'} <= names
    assert {'eval_test_is_20.json', 'eval_test_is_20_per_example.npy'} <= names
    assert not any(n.startswith('checkpoints/13') for n in names)
    # Without $OUT (not on a lent machine) the tars stay inside the carried, ignored folder.
    no_out = {k: v for k, v in env.items() if k != 'OUT'}
    subprocess.run(['bash', script, 'train', 'tiny', 'l1_vae_k1', '600'], env=no_out,
                   capture_output=True, check=True)  # fmt: skip
    assert (device / 'out' / 'l1_vae_k1.tar').exists()
    # prepare sends no earlier output back out (a stale record in table/ would skip the row), and
    # asks the index for no wheel the folder already holds (PIP_NO_INDEX fails any download).
    data = tmp_path / 'data' / 'mnist'
    data.mkdir(parents=True)
    (data / 't10k-images-idx3-ubyte.gz').write_bytes(b'')
    (device / 'whl').mkdir(exist_ok=True)
    for name in ('ml_collections', 'tensorboardX'):
        version = importlib.metadata.version(name)
        (device / 'whl' / f'{name.lower()}-{version}-py3-none-any.whl').write_bytes(b'')
    offline = {**no_out, 'PIP_NO_INDEX': '1'}
    subprocess.run(['bash', script, 'prepare', str(tmp_path / 'data')], env=offline,
                   capture_output=True, check=True)  # fmt: skip
    assert (device / 'data' / 'mnist' / 't10k-images-idx3-ubyte.gz').exists()
    assert not (device / 'out').exists() and not (device / 'table').exists()

    here = tmp_path / 'here'
    subprocess.run(['bash', script, 'unpack', str(tmp_path / 'out'), str(here), 'tiny'],
                   env=env, check=True, capture_output=True)  # fmt: skip
    came_back = here / 'tiny' / 'l1_vae_k1'
    stamps = {p: os.path.getmtime(came_back / p) for p in ('config.json', 'eval_test_is_20.json')}
    again = table1.main(['--scale=tiny', f'--workdir_root={here}', f'--out={tmp_path / "table"}',
                         '--rows=l1_vae_k1'])  # fmt: skip
    assert [r['nll'] for r in again] == [r['nll'] for r in rows if r['model'] == 'l1_vae_k1']
    assert {p: os.path.getmtime(came_back / p) for p in stamps} == stamps
    assert sorted(os.listdir(came_back / 'checkpoints')) == ['26']


def test_the_markdown_rounds_each_number_once():
    """0.23509 is 0.24: rounding to 3 places first (0.235) would print 0.23; the paper's
    82.90 keeps its two places."""
    record = {'model': 'l2_vae_k1', 'nll': 86.90433, 'nll_stderr': 0.23509, 'active_units': '75+7'}
    rows = table1.table_rows({'l2_vae_k1': record}, 'paper_div10')
    assert rows[0]['nll_stderr'] == 0.23509
    md = table1.markdown(rows, 'paper_div10')
    assert '| 2 | VAE | 86.90 ± 0.24 / 85.33 |' in md and '| — / 82.90 |' in md


def test_scales_keep_the_paper_settings_but_the_schedule_length():
    paper = table1.model_config(1, 'iwae', 50, table1.SCALES['paper'], '/data')
    div50 = table1.model_config(1, 'iwae', 50, table1.SCALES['paper_div50'], '/data')
    div100 = table1.model_config(1, 'iwae', 50, table1.SCALES['paper_div100'], '/data')
    assert paper.num_steps == 3280 * 2980 and div100.num_steps == 3280 * 29
    # A unit of 2,980 steps (one pass) shortened 50 times rounds down to 59 steps.
    assert div50.num_steps == 3280 * 59 and div50.optimizer.stage_steps == 59
    for config in (paper, div50, div100):
        assert (config.batch_size, config.num_samples, config.objective) == (20, 50, 'iwae')
        assert config.optimizer.eps == 1e-4 and config.optimizer.num_stages == 8
        assert config.dataset == 'mnist' and config.valid_size == 400
        # Started as the authors' code starts (the paper does not say).
        assert (config.model.weight_init, config.model.decoder_bias) == (
            'glorot_uniform',
            'data_mean',
        )
    assert table1.model_name(1, 'iwae', 1) == table1.model_name(1, 'vae', 1) == 'l1_vae_k1'


def test_init_flax_starts_from_flax_defaults_in_its_own_folders(tiny_table):
    """The default start is the authors' (Glorot weights, the data-mean output bias);
    --init=flax (LeCun normal, zero biases) has workdirs and records of its own, and its
    records do not mix with the default's. Records without an init field are flax's."""
    root, _, _ = tiny_table
    default_run = json.loads((root / 'runs' / 'tiny' / 'l1_vae_k1' / 'config.json').read_text())
    assert (default_run['model']['weight_init'], default_run['model']['decoder_bias']) == (
        'glorot_uniform',
        'data_mean',
    )
    out = root / 'flax'
    argv = ['--scale=tiny', '--init=flax', f'--workdir_root={root / "runs"}', f'--out={out}',
            '--rows=l1_vae_k1']  # fmt: skip
    (row, row_iwae) = table1.main(argv)
    assert row['init'] == row_iwae['init'] == 'flax' and row['nll'] > 0
    stored = json.loads(
        (root / 'runs' / 'tiny_flax_init' / 'l1_vae_k1' / 'config.json').read_text()
    )
    assert (stored['model']['weight_init'], stored['model']['decoder_bias']) == (
        'lecun_normal',
        'zero',
    )
    assert "started from flax's defaults (`--init=flax`)" in (out / 'table1.md').read_text()
    authors = json.loads((root / 'out' / 'models' / 'l1_vae_k1.json').read_text())
    assert authors['init'] == 'authors' and row['nll'] != authors['nll']

    mixed = root / 'mixed_inits'
    shutil.copytree(root / 'out', mixed)
    shutil.copy(out / 'models' / 'l1_vae_k1.json', mixed / 'models' / 'l1_vae_k1.json')
    with pytest.raises(ValueError, match='records --init=flax, not --init=authors'):
        table1.main(['--scale=tiny', f'--workdir_root={root / "runs"}', f'--out={mixed}'])
    unmarked = {k: v for k, v in authors.items() if k != 'init'}
    (mixed / 'models' / 'l1_vae_k1.json').write_text(json.dumps(unmarked))
    with pytest.raises(ValueError, match='records --init=flax, not --init=authors'):
        table1.main(['--scale=tiny', f'--workdir_root={root / "runs"}', f'--out={mixed}'])
    assert table1.parse_args(['--scale=paper', '--init=flax']).out.endswith(
        os.path.join('experiments', 'iwae', 'paper_flax_init')
    )
    assert table1.parse_args(['--scale=paper']).out.endswith(
        os.path.join('experiments', 'iwae', 'paper')
    )


def test_another_seed_trains_the_same_models_in_folders_of_its_own(tiny_table):
    """--seed=1 is config.seed = 1 with every other setting the same: its own workdir and
    record, another number; its records do not mix with seed 0's, and records written
    before --seed existed are seed 0's."""
    root, _, _ = tiny_table
    out = root / 'seed1'
    argv = ['--scale=tiny', '--seed=1', f'--workdir_root={root / "runs"}', f'--out={out}',
            '--rows=l1_vae_k1']  # fmt: skip
    (row, _) = table1.main(argv)
    seed0 = json.loads((root / 'runs' / 'tiny' / 'l1_vae_k1' / 'config.json').read_text())
    seed1 = json.loads((root / 'runs' / 'tiny_seed1' / 'l1_vae_k1' / 'config.json').read_text())
    assert (seed0['seed'], seed1['seed']) == (0, 1)
    assert {**seed1, 'seed': 0} == seed0
    first = json.loads((root / 'out' / 'models' / 'l1_vae_k1.json').read_text())
    assert first['seed'] == 0 and row['seed'] == 1 and row['nll'] != first['nll']
    assert 'trained from seed 1 (`--seed=1`)' in (out / 'table1.md').read_text()

    mixed = root / 'mixed_seeds'
    shutil.copytree(out, mixed)
    unmarked = {k: v for k, v in first.items() if k != 'seed'}  # Written before --seed.
    (mixed / 'models' / 'l1_iwae_k5.json').write_text(json.dumps(unmarked))
    with pytest.raises(ValueError, match='l1_iwae_k5.json records --seed=0, not --seed=1'):
        table1.main([*argv[:-2], f'--out={mixed}'])
    assert table1.parse_args(['--scale=paper', '--init=flax', '--seed=2']).out.endswith(
        os.path.join('experiments', 'iwae', 'paper_flax_init_seed2')
    )
    with pytest.raises(SystemExit):
        table1.parse_args(['--seed=-1'])
