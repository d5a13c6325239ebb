"""Shared pieces of the Kingma & Welling (2013) figure scripts: scales, runs, CSV, logs.

Every figure script trains through the normal entry point (`train.train_and_evaluate`
on a config from `configs/paper/`), so a figure run is an ordinary workdir that
`vae_jax.evaluate` and `vae_jax.sample` can open. Runs live in `<out>/runs/<name>/`
and are shared between figures that need the same model; a finished run is not
trained again, an interrupted one resumes.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import shlex
import sys

import ml_collections
from absl import logging

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
if REPO not in sys.path:  # Run as a script from anywhere: `configs` and `vae_jax` import.
    sys.path.insert(0, REPO)

from configs.paper import frey_face, mnist, mnist_marginal  # noqa: E402
from vae_jax import sweep  # noqa: E402

DEFAULT_DATA_DIR = os.path.join(os.path.dirname(REPO), 'shared', 'data')


@dataclasses.dataclass(frozen=True)
class Scale:
    """How much of the paper's budget a figure run spends.

    Attributes:
      steps: training steps per run, by dataset ('mnist', 'frey_face').
      points: learning-curve points per run (evaluations of the test bound).
      latent_sizes: N_z per dataset for Figure 2.
      sample_latent_sizes: N_z for Figure 5.
      fig3_train_sizes: N_train for Figure 3.
      fig3_steps: training steps at which Figure 3 estimates log p(x).
      fig3_eval_examples: first this many train and test examples for App. D.
      fig3_posterior_samples, fig3_burnin: App. D's HMC sample and burn-in counts.
      fig3_ais_steps: AIS steps of the MCEM runs' final test log p(x) (they have no
        encoder for importance sampling).
      mnist_dataset: 'mnist' (IDX files in data_dir) or 'embedded' (tests).
    """

    steps: dict[str, int]
    points: int
    latent_sizes: dict[str, tuple[int, ...]]
    sample_latent_sizes: tuple[int, ...]
    fig3_train_sizes: tuple[int, ...]
    fig3_steps: tuple[int, ...]
    fig3_eval_examples: int
    fig3_posterior_samples: int
    fig3_burnin: int
    fig3_ais_steps: int
    mnist_dataset: str = 'mnist'


SCALES = {
    # The paper's budgets: Fig. 2 to 10^8 (MNIST) / 10^7 (Frey Face) samples, all of
    # its latent sizes; Fig. 3 to 6 x 10^7 samples, App. D on the first 1,000 points.
    'paper': Scale(
        steps={'mnist': 1_000_000, 'frey_face': 100_000},
        points=30,
        latent_sizes={'mnist': (3, 5, 10, 20, 200), 'frey_face': (2, 5, 10, 20)},
        sample_latent_sizes=(2, 5, 10, 20),
        fig3_train_sizes=(1000, 50_000),
        fig3_steps=tuple(int(s) for s in (1e3, 3e3, 1e4, 3e4, 1e5, 2e5, 4e5, 6e5)),
        fig3_eval_examples=1000,
        fig3_posterior_samples=1000,
        fig3_burnin=1000,
        fig3_ais_steps=1000,
    ),
    # Where the paper's curves flatten, in a few hours on 2 CPU cores: Frey Face at the
    # paper's whole budget (10^7 samples), MNIST at 10^7 samples per run (two thirds of
    # the paper's log axis, 10^5..10^8), every N_z of the paper. App. D's budget is cut
    # so that its 60 estimates take ~25 minutes, not ~5 hours.
    'medium': Scale(
        steps={'mnist': 100_000, 'frey_face': 100_000},
        points=20,
        latent_sizes={'mnist': (3, 5, 10, 20, 200), 'frey_face': (2, 5, 10, 20)},
        sample_latent_sizes=(2, 5, 10, 20),
        fig3_train_sizes=(1000, 50_000),
        fig3_steps=tuple(int(s) for s in (1e3, 3e3, 1e4, 3e4, 1e5)),
        fig3_eval_examples=500,
        fig3_posterior_samples=500,
        fig3_burnin=500,
        fig3_ais_steps=100,
    ),
    # Every figure on 2 CPU cores in under 20 minutes altogether.
    'quick': Scale(
        steps={'mnist': 3000, 'frey_face': 3000},
        points=10,
        latent_sizes={'mnist': (3, 20, 200), 'frey_face': (2, 10)},
        sample_latent_sizes=(2, 5, 10, 20),
        fig3_train_sizes=(1000, 50_000),
        fig3_steps=(100, 300, 1000, 3000),
        fig3_eval_examples=100,
        fig3_posterior_samples=200,
        fig3_burnin=200,
        fig3_ais_steps=50,
    ),
    # For the test suite: seconds, on the embedded digits.
    'tiny': Scale(
        steps={'mnist': 20, 'frey_face': 20},
        points=2,
        latent_sizes={'mnist': (2,), 'frey_face': (2,)},
        sample_latent_sizes=(2, 3),
        fig3_train_sizes=(200,),
        fig3_steps=(10, 20),
        fig3_eval_examples=4,
        fig3_posterior_samples=8,
        fig3_burnin=8,
        fig3_ais_steps=5,
        mnist_dataset='embedded',
    ),
}


def parse_args(description: str, argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=description)
    p.add_argument('--scale', choices=sorted(SCALES), default='quick')
    p.add_argument('--out', default=None, help='output folder (default experiments/aevb/<scale>)')
    p.add_argument('--data_dir', default=DEFAULT_DATA_DIR, help='MNIST and Frey Face files')
    p.add_argument('--seed', type=int, default=0)
    args = p.parse_args(argv)
    if args.out is None:
        args.out = os.path.join(REPO, 'experiments', 'aevb', args.scale)
    os.makedirs(args.out, exist_ok=True)
    return args


def log_command(out: str, script: str, argv: list[str] | None) -> None:
    """Appends the command that produced the outputs to `<out>/commands.log`."""
    cmd = ' '.join(shlex.quote(a) for a in ['python', script, *(argv or sys.argv[1:])])
    stamp = datetime.datetime.now(datetime.UTC).strftime('%Y-%m-%d %H:%M UTC')
    with open(os.path.join(out, 'commands.log'), 'a') as f:
        f.write(f'{stamp}  {cmd}\n')


def paper_config(
    dataset: str, latent_dim: int, algorithm: str, scale: Scale, args, num_train: int | None = None
) -> ml_collections.ConfigDict:
    """The `configs/paper/` config of one run, shortened to ``scale``."""
    if num_train is not None:
        config = mnist_marginal.get_config(str(num_train))
        config.latent_dim = latent_dim
    elif dataset == 'mnist':
        config = mnist.get_config(str(latent_dim))
    else:
        config = frey_face.get_config(str(latent_dim))
    if dataset == 'mnist':
        config.dataset = scale.mnist_dataset
    config.data_dir = args.data_dir
    config.algorithm = algorithm
    config.seed = args.seed
    steps = scale.steps[dataset]
    config.num_steps = steps
    every = max(1, steps // scale.points)
    config.log_every_steps = every
    config.eval_every_steps = every
    config.checkpoint_every_steps = steps
    config.steps_per_dispatch = every
    # The figures need learning curves, not a K = 1000 estimate at the end of each run.
    config.eval_num_importance_samples = 100
    config.eval_chunk_size = 100
    if dataset == 'mnist' and scale.mnist_dataset == 'embedded':
        config.optimizer.weight_decay = 1.0 / 4000
        if num_train is not None:
            config.optimizer.weight_decay = 1.0 / num_train
    return config


def run_name(dataset: str, latent_dim: int, algorithm: str, num_train: int | None = None) -> str:
    suffix = f'_n{num_train}' if num_train is not None else ''
    return f'{dataset}_z{latent_dim}_{algorithm}{suffix}'


class Runs:
    """Trains, resumes or skips a figure's runs exactly as sweep points are
    (``sweep.run_point``), logging which of how many is starting."""

    def __init__(self, figure: str, total: int):
        self.figure, self.total, self.started = figure, total, 0

    def __call__(
        self, config: ml_collections.ConfigDict, workdir: str, *, past_ok: bool = False
    ) -> dict:
        """``sweep.run_point``'s results.

        ``past_ok``: a run trained past ``config.num_steps`` already (a figure that
        continues one run through several lengths, resumed) is skipped and gives ``{}``
        instead of raising ``sweep.TrainedPastError``.
        """
        self.started += 1
        name = os.path.basename(workdir)
        logging.info(
            '%s: run %d of %d: %s to step %d',
            self.figure,
            self.started,
            self.total,
            name,
            config.num_steps,
        )
        try:
            return sweep.run_point(config, workdir)
        except sweep.TrainedPastError as e:
            if not past_ok:
                raise
            logging.info('%s: skipped, trained to step %d already', name, e.latest)
            return {}


write_csv = sweep.write_csv


def read_metrics(workdir: str) -> list[dict[str, float]]:
    """metrics.jsonl as a list of dicts, one per logged step (last write of a step wins)."""
    rows: dict[int, dict[str, float]] = {}
    with open(os.path.join(workdir, 'metrics.jsonl')) as f:
        for line in f:
            row = json.loads(line)
            rows.setdefault(int(row['step']), {}).update(row)
    return [rows[s] for s in sorted(rows)]


def pyplot():
    """matplotlib.pyplot on the Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    return plt
