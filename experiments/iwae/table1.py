r"""Burda, Grosse & Salakhutdinov (2016), Table 1 (MNIST): ours beside theirs.

  python experiments/iwae/table1.py --scale=paper_div100 [--rows=l1_vae_k1,l1_iwae_k5]
      [--data_dir=../shared/data] [--workdir_root=experiments/iwae/runs] [--out=...]
      [--init=flax] [--seed=1] [--table_only]

Trains every distinct model of the table (the k = 1 rows of VAE and IWAE are one
model), each through the normal entry point on `configs/paper/iwae/mnist.py`, then
evaluates each with `vae_jax.evaluate` (importance sampling, K = 5000, on the 10,000
test images, which also gives the IWAE_K curve and the active units) and writes, in
`--out` (default `experiments/iwae/<scale>/`): `table1.csv` (one row per table
entry), `table1.md` (the paper's layout, ours beside theirs) and `iwae_curves.png`.

Resumable: a model's workdir is `<workdir_root>/<scale>/<model>`; an interrupted
training resumes from its checkpoint, a finished one is not trained again, and a
finished evaluation (`eval_test_is_5000.json` in the workdir) is read, not redone.
Each finished model's numbers are recorded in `--out` (`models/<model>.json`, with its
IWAE_K curve); the table is every model recorded there, so rows run on different
machines or days merge into one table by copying their records, and a recorded model
is not run again (delete its record to redo it from its workdir). `--table_only` writes
the table from the records alone, training and evaluating nothing (after copying records
in: without it, every model not yet recorded would start training).

Scales keep every setting of the paper but the length of the schedule:
`paper` (stage i = 3**i passes, 3,280 passes), `paper_div10`, `paper_div50` and
`paper_div100` (every stage 10, 50 or 100 times shorter: 328, 64.9 and 31.9 passes, the
same learning rates), and
`tiny` (tests: the embedded digits, 3 short stages, a small evaluation).

Every model starts as the authors' code does (`configs/paper/iwae/mnist.py`:
Glorot-uniform weights, the decoder's output bias at the logit of the training mean).
`--init=flax` starts it from flax's defaults instead (LeCun-normal weights, zero
biases), the ablation of that choice; its workdirs are
`<workdir_root>/<scale>_flax_init/<model>`, its default `--out`
`experiments/iwae/<scale>_flax_init`.

`--seed=N` trains the same models from another seed (`config.seed`: the initial
parameters, the minibatches, the binarisation draws and the reparameterisation noise;
the test images and their binarisation stay the same). Its workdirs are
`<workdir_root>/<scale>[_<init>_init]_seedN/<model>`, its default `--out` the same name
under `experiments/iwae/`. The paper reports one run per model; the spread across seeds
is the training noise that a number's standard error (over test images) leaves out.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
if REPO not in sys.path:  # Run as a script from anywhere: `configs` and `vae_jax` import.
    sys.path.insert(0, REPO)

import ml_collections  # noqa: E402
from absl import logging  # noqa: E402

from configs.paper.iwae import mnist as iwae_mnist  # noqa: E402
from vae_jax import cli, evaluate, sweep  # noqa: E402

DEFAULT_DATA_DIR = os.path.join(os.path.dirname(REPO), 'shared', 'data')
# How the parameters start: config overrides. 'authors' is configs/paper/iwae/mnist.py
# as it is (github.com/yburda/iwae's start); 'flax' is flax's default initialisers.
INITS = {
    'authors': {},
    'flax': {'weight_init': 'lecun_normal', 'decoder_bias': 'zero'},
}
# Records written before --init existed started from flax's defaults; records written
# before --seed existed trained from seed 0.
UNMARKED_RECORD = {'init': 'flax', 'seed': 0}


@dataclasses.dataclass(frozen=True)
class Variant:
    """Which run of a model: how its parameters start (``INITS``) and its training seed.

    Each variant has workdirs, records and a table of its own.
    """

    init: str = 'authors'
    seed: int = 0

    def folder(self, scale_name: str) -> str:
        """A scale's folder of models under ``--workdir_root`` (and its default ``--out``)."""
        name = scale_name if self.init == 'authors' else f'{scale_name}_{self.init}_init'
        return name if self.seed == 0 else f'{name}_seed{self.seed}'

    def describe(self) -> str:
        """How the table's caption says it differs from the paper's run ('' if it does not)."""
        said = ''
        if self.init != 'authors':
            said += f", started from {self.init}'s defaults (`--init={self.init}`)"
        if self.seed != 0:
            said += f', trained from seed {self.seed} (`--seed={self.seed}`)'
        return said

    def check(self, record: dict, where: str) -> None:
        """Raises ValueError unless ``record`` (read from ``where``) is of this variant."""
        for flag, what in (('init', 'initialisation'), ('seed', 'seed')):
            recorded, wanted = record.get(flag, UNMARKED_RECORD[flag]), getattr(self, flag)
            if recorded != wanted:
                raise ValueError(
                    f'{where} records --{flag}={recorded}, not --{flag}={wanted}: '
                    f'one --out folder holds one {what}'
                )


# Table 1 of Burda et al. (2016): test negative log-likelihood (nats, K = 5000) on
# dynamically binarised MNIST; (layers, objective, k) -> NLL.
PAPER_NLL = {
    (1, 'vae', 1): 86.76,
    (1, 'vae', 5): 86.47,
    (1, 'vae', 50): 86.35,
    (1, 'iwae', 1): 86.76,
    (1, 'iwae', 5): 85.54,
    (1, 'iwae', 50): 84.78,
    (2, 'vae', 1): 85.33,
    (2, 'vae', 5): 85.01,
    (2, 'vae', 50): 84.78,
    (2, 'iwae', 1): 85.33,
    (2, 'iwae', 5): 83.89,
    (2, 'iwae', 50): 82.90,
}
KS = (1, 5, 50)
OBJECTIVES = ('vae', 'iwae')
CURVE_K = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000)


@dataclasses.dataclass(frozen=True)
class Scale:
    """How much of the paper's schedule a model trains for.

    Attributes:
      stage_divisor: every stage is this many times shorter than the paper's.
      num_stages: stages run (the paper: 8); the learning rates stay the paper's.
      num_importance_samples: K of the reported log p(x) (the paper: 5000).
      eval_examples: test images evaluated (0: all 10,000).
      curve_k: K at which the IWAE_K curve is reported.
      dataset: 'mnist' (the paper's) or 'embedded' (tests, no data files).
    """

    stage_divisor: int
    num_stages: int = 8
    num_importance_samples: int = 5000
    eval_examples: int = 0
    curve_k: tuple[int, ...] = CURVE_K
    dataset: str = 'mnist'


SCALES = {
    'paper': Scale(stage_divisor=1),
    'paper_div10': Scale(stage_divisor=10),
    # One one-layer k = 50 model fits one 3-hour session on 2 CPU cores (one per core, two do not).
    'paper_div50': Scale(stage_divisor=50),
    'paper_div100': Scale(stage_divisor=100),
    'tiny': Scale(
        stage_divisor=1490,
        num_stages=3,
        num_importance_samples=20,
        eval_examples=50,
        curve_k=(1, 5, 20),
        dataset='embedded',
    ),
}


def model_name(layers: int, objective: str, k: int) -> str:
    """The run that gives a table entry: VAE and IWAE with k = 1 are the same model."""
    if k == 1:
        objective = 'vae'
    return f'l{layers}_{objective}_k{k}'


def model_config(
    layers: int,
    objective: str,
    k: int,
    scale: Scale,
    data_dir: str,
    variant: Variant = Variant(),
) -> ml_collections.ConfigDict:
    """`configs/paper/iwae/mnist.py` for one model, its schedule shortened to ``scale``,
    started and seeded as ``variant`` says."""
    config = iwae_mnist.get_config(f'{layers},{objective},{k}')
    config.data_dir = data_dir
    config.seed = variant.seed
    config.model.update(INITS[variant.init])
    steps = config.optimizer.stage_steps
    config.optimizer.stage_steps = max(1, steps // scale.stage_divisor)
    config.optimizer.num_stages = scale.num_stages
    growth = config.optimizer.stage_growth
    stage_total = sum(growth**i for i in range(scale.num_stages))
    config.num_steps = config.optimizer.stage_steps * stage_total
    if scale.dataset != 'mnist':
        config.dataset = scale.dataset
        config.valid_size = None
    # The table's number comes from the evaluation below; training's own final estimate
    # only needs to be cheap (eval_* fields may change on resume).
    config.eval_num_importance_samples = 100
    config.eval_max_examples = 500
    for field in ('log_every_steps', 'eval_every_steps', 'checkpoint_every_steps'):
        config[field] = min(config[field], config.num_steps)
    config.steps_per_dispatch = min(config.steps_per_dispatch, config.log_every_steps)
    return config


def _epochs(config: ml_collections.ConfigDict) -> float | None:
    """Passes over the paper's 59,600 training images (None on other data)."""
    if config.dataset != 'mnist':
        return None
    return round(config.num_steps / iwae_mnist.STEPS_PER_EPOCH, 3)


def run_model(layers: int, objective: str, k: int, scale: Scale, args) -> dict:
    """Trains (or resumes, or skips) one model and evaluates it."""
    name = model_name(layers, objective, k)
    config = model_config(layers, objective, k, scale, args.data_dir, args.variant)
    workdir = os.path.join(args.workdir_root, args.variant.folder(args.scale), name)
    results = sweep.run_point(config, workdir)
    path = os.path.join(workdir, f'eval_test_is_{scale.num_importance_samples}.json')
    if os.path.exists(path):
        with open(path) as f:
            ev = json.load(f)
    else:
        ev = evaluate.evaluate_run(
            workdir,
            method='is',
            num_importance_samples=scale.num_importance_samples,
            report_k=tuple(k for k in scale.curve_k if k < scale.num_importance_samples),
            max_examples=scale.eval_examples,
        )
    ev = json.loads(json.dumps(ev))  # The file's form either way: K keys as strings.
    return {
        'model': name,
        'workdir': workdir,
        'epochs': _epochs(config),
        'train_steps': results.get('train_steps'),
        'train_seconds': round(results.get('wall_seconds', float('nan')), 1),
        'eval_seconds': round(ev.get('wall_seconds', float('nan')), 1),
        'nll': -ev['log_likelihood'],
        'nll_stderr': ev['log_likelihood_stderr'],
        'test_elbo': ev.get('elbo'),
        'active_units': '+'.join(
            str(u) for u in ev['diagnostics'].get('active_units_per_layer', [])
        )
        or ev['diagnostics']['active_units'],
        'latent_dim': config.latent_dim,
        'eval_examples': ev['num_examples'],
        'num_importance_samples': ev['num_importance_samples'],
        'iwae_curve': ev.get('iwae_curve', {}),
    }


def records_dir(out: str) -> str:
    """Where ``--out`` records each finished model's numbers, one ``<model>.json`` each."""
    return os.path.join(out, 'models')


def read_records(out: str, scale_name: str, variant: Variant = Variant()) -> dict[str, dict]:
    """Every model recorded in ``out``, by name.

    Raises:
      ValueError: a record of another scale, initialisation or seed (two tables in one folder).
    """
    folder = records_dir(out)
    records = {}
    for file in sorted(os.listdir(folder)) if os.path.isdir(folder) else []:
        if not file.endswith('.json'):
            continue
        with open(os.path.join(folder, file)) as f:
            record = json.load(f)
        if record.get('scale') != scale_name:
            raise ValueError(
                f'{folder}/{file} records scale {record.get("scale")!r}, not {scale_name!r}: '
                'one --out folder holds one scale'
            )
        variant.check(record, f'{folder}/{file}')
        records[record['model']] = record
    return records


def table_rows(
    models: dict[str, dict], scale_name: str, variant: Variant = Variant()
) -> list[dict]:
    """One row per (layers, objective, k) of the paper's table, ours beside theirs."""
    rows = []
    for layers in (1, 2):
        for objective in OBJECTIVES:
            for k in KS:
                m = models.get(model_name(layers, objective, k))
                if m is None:
                    continue
                paper = PAPER_NLL[(layers, objective, k)]
                nll = m['nll']
                rows.append(
                    {
                        'scale': scale_name,
                        **dataclasses.asdict(variant),
                        'layers': layers,
                        'objective': objective,
                        'k': k,
                        'model': m['model'],
                        # As measured: the markdown rounds once (0.23509 -> 0.24, where
                        # 0.235 would print 0.23); diff to 6 places drops float noise alone.
                        'nll': nll,
                        'nll_stderr': m['nll_stderr'],
                        'paper_nll': paper,
                        'diff': round(nll - paper, 6),
                        'active_units': m.get('active_units'),
                        'latent_dim': m.get('latent_dim'),
                        'epochs': m.get('epochs'),
                        'train_seconds': m.get('train_seconds'),
                        'eval_seconds': m.get('eval_seconds'),
                        'eval_examples': m.get('eval_examples'),
                        'num_importance_samples': m.get('num_importance_samples'),
                    }
                )
    return rows


def markdown(rows: list[dict], scale_name: str, variant: Variant = Variant()) -> str:
    """The paper's layout: one line per (layers, objective), k = 1, 5, 50 across."""
    lines = [
        f'Test NLL in nats (ours ± standard error / Burda et al. 2016, Table 1), '
        f'scale `{scale_name}`{variant.describe()}',
        '',
        '| layers | objective | k = 1 | k = 5 | k = 50 | active units (k = 1, 5, 50) |',
        '| --- | --- | --- | --- | --- | --- |',
    ]
    by_key = {(r['layers'], r['objective'], r['k']): r for r in rows}
    for layers in (1, 2):
        for objective in OBJECTIVES:
            cells, units = [], []
            for k in KS:
                r = by_key.get((layers, objective, k))
                if r is None:
                    cells.append(f'— / {PAPER_NLL[(layers, objective, k)]:.2f}')
                    units.append('—')
                else:
                    cells.append(f'{r["nll"]:.2f} ± {r["nll_stderr"]:.2f} / {r["paper_nll"]:.2f}')
                    units.append(str(r['active_units']))
            row = ' | '.join([str(layers), objective.upper(), *cells, ', '.join(units)])
            lines.append(f'| {row} |')
    return '\n'.join(lines) + '\n'


def plot_curves(models: dict[str, dict], path: str) -> None:
    """Mean IWAE_K bound on the test set against K, one line per trained model."""
    import matplotlib  # Deferred: a second of imports.

    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for name, m in sorted(models.items()):
        curve = m.get('iwae_curve')
        if not curve:
            continue
        ks = sorted(int(k) for k in curve)
        by_hand = 'source' in m  # Made from an earlier table: a few K only.
        ax.plot(
            ks,
            [curve[str(k)][0] for k in ks],
            marker='o',
            linestyle='--' if by_hand else '-',
            label=f'{name} (K as recorded)' if by_hand else name,
        )
    ax.set(xscale='log', xlabel='K', ylabel='test IWAE_K bound (nats)', title='IWAE_K curves')
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--scale', choices=sorted(SCALES), default='paper_div100')
    p.add_argument('--rows', default='', help='comma-separated model names (default: all)')
    p.add_argument('--data_dir', default=DEFAULT_DATA_DIR)
    p.add_argument('--workdir_root', default=os.path.join(REPO, 'experiments', 'iwae', 'runs'))
    p.add_argument(
        '--out', default=None, help='default experiments/iwae/<scale>[_<init>_init][_seed<N>]'
    )
    p.add_argument(
        '--init',
        choices=sorted(INITS),
        default='authors',
        help="how parameters start: as the authors' code (authors) or flax's defaults (flax)",
    )
    p.add_argument(
        '--seed',
        type=int,
        default=0,
        help='training seed (config.seed); another seed has workdirs and records of its own',
    )
    p.add_argument(
        '--table_only',
        action='store_true',
        help='write the table from the models recorded in --out; train and evaluate nothing',
    )
    args = p.parse_args(argv)
    if args.seed < 0:
        p.error(f'--seed must be >= 0, got {args.seed}')
    if args.table_only and args.rows:
        p.error('--table_only writes every model recorded in --out; --rows names models to run')
    args.variant = Variant(args.init, args.seed)
    if args.out is None:
        args.out = os.path.join(REPO, 'experiments', 'iwae', args.variant.folder(args.scale))
    return args


def all_models() -> list[tuple[int, str, int]]:
    """Distinct models: (layers, objective, k), the k = 1 model once per layer count."""
    return [
        (layers, objective, k)
        for layers in (1, 2)
        for objective in OBJECTIVES
        for k in KS
        if not (objective == 'iwae' and k == 1)
    ]


def main(argv: list[str] | None = None) -> list[dict]:
    args = parse_args(argv)
    scale = SCALES[args.scale]
    wanted = [m for m in args.rows.split(',') if m]
    known = {model_name(*m): m for m in all_models()}
    unknown = sorted(set(wanted) - set(known))
    if unknown:
        sys.exit(f'error: --rows names {unknown}; known: {sorted(known)}')
    models = read_records(args.out, args.scale, args.variant)
    if args.table_only and not models:
        sys.exit(f'error: --table_only: no model recorded in {records_dir(args.out)}')
    os.makedirs(records_dir(args.out), exist_ok=True)
    todo = [] if args.table_only else [name for name in known if not wanted or name in wanted]
    for i, name in enumerate(todo):
        if name in models:
            logging.info('model %s (%d of %d): recorded, not run again', name, i + 1, len(todo))
            continue
        logging.info('model %s (%d of %d)', name, i + 1, len(todo))
        models[name] = {
            'scale': args.scale,
            **dataclasses.asdict(args.variant),
            **run_model(*known[name], scale, args),
        }
        with open(os.path.join(records_dir(args.out), f'{name}.json'), 'w') as f:
            json.dump(models[name], f, indent=2)
    rows = table_rows(models, args.scale, args.variant)
    table = markdown(rows, args.scale, args.variant)
    sweep.write_csv(os.path.join(args.out, 'table1.csv'), rows)
    with open(os.path.join(args.out, 'table1.md'), 'w') as f:
        f.write(table)
    plot_curves(models, os.path.join(args.out, 'iwae_curves.png'))
    print(table)
    return rows


if __name__ == '__main__':
    cli.run_script(main)
