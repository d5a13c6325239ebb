r"""Runs every point of a hyperparameter sweep, each in its own workdir.

  python -m vae_jax.sweep --config=configs/latent_sweep.py --workdir=/tmp/sweep \
      [--sweep='latent_dim=2,5,10;seed=0,1'] [--config.num_steps=2000 ...]

The points come from ``--sweep`` if given (a product: fields separated by ``;``,
values by ``,``), else from the config file's own ``get_sweep()``, which returns a
list of ``{dotted.field: value}`` dicts (``product`` below builds one). Each point
trains with the normal entry point in ``WORKDIR/<point-name>/`` (config, checkpoints,
logs, results as for ``vae_jax.main``); a point whose ``results.json`` is already
there for its ``num_steps`` is skipped, so an interrupted sweep resumes where it
stopped; one whose workdir is trained past its ``num_steps`` fails, naming both.
``WORKDIR/sweep_results.csv`` gets one row per point (its overrides, final test ELBO
and log-likelihood, steps, wall time) and ``WORKDIR/sweep_results.png`` plots the test
metrics against the first swept field.

``--vectorize`` trains the points that differ only in numeric values (seed, learning
rate, beta, weight decay) together in one compiled program per group of equal shapes
(``vae_jax.vectorized``), then evaluates each point in its workdir as above.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import os
import sys
import time
from typing import Any

import ml_collections
from absl import flags, logging
from ml_collections import config_flags

from vae_jax import (
    cli,
    configuration,
    sweep_points,
    train,
    vectorized,
    workdir_files,
)


def load_sweep(config_path: str) -> list[sweep_points.Point] | None:
    """The config file's ``get_sweep()``, or None when it defines none."""
    path = config_path.split(':', 1)[0]
    spec = importlib.util.spec_from_file_location('_sweep_config', path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_sweep() if hasattr(module, 'get_sweep') else None


def run_sweep(
    config: ml_collections.ConfigDict,
    points: list[sweep_points.Point],
    workdir: str,
    *,
    vectorize: bool = False,
) -> list[dict[str, Any]]:
    """Trains every point not finished yet; writes and returns the results table.

    ``vectorize``: points that differ only in ``sweep_points.VECTORIZABLE_FIELDS`` train
    together, one compiled program per group (``sweep_points.groups``), before each point
    is evaluated in its workdir; points with a checkpoint of their own already (an
    interrupted earlier sweep) resume alone.
    """
    configs = check_points(config, points)
    names = [sweep_points.point_name(p) for p in points]
    os.makedirs(workdir, exist_ok=True)
    shared_seconds = [0.0] * len(points)  # Each point's share of its group's training.
    if vectorize:
        shared_seconds = _train_groups(
            config, points, configs, [os.path.join(workdir, n) for n in names]
        )
    rows = []
    for i, (point, name, c) in enumerate(zip(points, names, configs, strict=True)):
        logging.info('sweep point %d/%d: %s', i + 1, len(points), name)
        results = run_point(c, os.path.join(workdir, name), extra_seconds=shared_seconds[i])
        rows.append(
            {
                'point': name,
                **point,
                'test_elbo': results.get('test_elbo'),
                'test_log_likelihood': results.get('test_log_likelihood'),
                'test_log_likelihood_stderr': results.get('test_log_likelihood_stderr'),
                'train_steps': results.get('train_steps'),
                'wall_seconds': results.get('wall_seconds'),
            }
        )
    write_csv(os.path.join(workdir, 'sweep_results.csv'), rows)
    _plot(rows, list(points[0]), os.path.join(workdir, 'sweep_results.png'))
    return rows


def check_points(
    config: ml_collections.ConfigDict, points: list[sweep_points.Point]
) -> list[ml_collections.ConfigDict]:
    """Each point's config, every one checked before the first trains.

    Raises:
      configuration.ConfigError: no points, a repeated point, or a point's bad config.
    """
    if not points:
        raise configuration.ConfigError('the sweep has no points.')
    names = [sweep_points.point_name(p) for p in points]
    if len(set(names)) != len(names):
        raise configuration.ConfigError(f'the sweep repeats a point: {names}')
    configs = [sweep_points.apply(config, p) for p in points]
    for c in configs:
        configuration.validate(c)
    return configs


def _train_groups(
    config: ml_collections.ConfigDict,
    points: list[sweep_points.Point],
    configs: list[ml_collections.ConfigDict],
    workdirs: list[str],
) -> list[float]:
    """Vectorised training of the points not trained yet; each point's share of the time.

    Points interrupted together resume together from their checkpoints; a group whose
    points' checkpoints are at different steps is left to ``run_point``, one by one.
    """

    shares = [0.0] * len(points)
    todo = [i for i, (c, w) in enumerate(zip(configs, workdirs, strict=True)) if not _done(c, w)]
    for group in sweep_points.groups([configs[i] for i in todo]):
        members = [todo[g] for g in group]
        if len(members) < 2:
            continue  # Trained alone by run_point.
        logging.info(
            'training %d points together: %s', len(members), [workdirs[i] for i in members]
        )
        try:
            t0 = time.perf_counter()
            vectorized.train_vectorized(
                config, [points[i] for i in members], workdirs=[workdirs[i] for i in members]
            )
            seconds = time.perf_counter() - t0
        except vectorized.UnequalSteps as e:
            logging.warning('%s: these points train one by one', e)
            continue
        for i in members:
            shares[i] = seconds / len(members)
    return shares


# Kept here too: sweeps were where the refusal first lived.
TrainedPastError = workdir_files.TrainedPastError


def _done(config: ml_collections.ConfigDict, workdir: str) -> bool:
    """Whether ``workdir`` holds the results of ``config`` trained to its ``num_steps``."""
    path = os.path.join(workdir, 'results.json')
    if not os.path.exists(path):
        return False
    with open(path) as f:
        return json.load(f).get('train_steps') == config.num_steps


def run_point(
    config: ml_collections.ConfigDict, workdir: str, *, extra_seconds: float = 0.0
) -> dict[str, Any]:
    """Trains (or resumes) one run and returns its results, adding ``wall_seconds``.

    A run whose ``results.json`` is already there for ``config.num_steps`` is not
    trained again: its results are returned as they are. ``extra_seconds`` (the point's
    share of a vectorised training, see ``run_sweep``) is added to ``wall_seconds``.

    Raises:
      TrainedPastError: ``workdir`` holds a checkpoint past ``config.num_steps`` (its
        results would be a longer-trained model's; nothing is written).
    """
    path = os.path.join(workdir, 'results.json')
    if _done(config, workdir):
        logging.info('%s: already done', workdir)
        with open(path) as f:
            return json.load(f)
    t0 = time.perf_counter()
    results = train.train_and_evaluate(config, workdir)
    results['wall_seconds'] = time.perf_counter() - t0 + extra_seconds
    with open(path, 'w') as f:
        json.dump(results, f, indent=2)
    return results


def write_csv(path: str, rows: list[dict[str, Any]]) -> None:
    """One row per dict; the columns are every key in first-seen order, tuples as ``8x8``."""
    fields: list[str] = []
    for row in rows:
        fields += [k for k in row if k not in fields]
    with open(path, 'w', newline='') as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        for row in rows:
            writer.writerow(
                {k: 'x'.join(map(str, v)) if isinstance(v, tuple) else v for k, v in row.items()}
            )


def _plot(rows: list[dict[str, Any]], fields: list[str], path: str) -> None:
    """Test ELBO and log p(x) against the first swept field, one line per other value."""
    if not fields:
        return
    import matplotlib  # Deferred: about a second of imports.

    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    x_field, rest = fields[0], fields[1:]
    groups: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault(','.join(f'{f}={row[f]}' for f in rest), []).append(row)
    numeric = all(isinstance(r[x_field], (int, float)) for r in rows)
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for ax, metric in zip(axes, ('test_elbo', 'test_log_likelihood'), strict=True):
        for label, sel in groups.items():
            sel = [r for r in sel if r[metric] is not None]
            xs = [r[x_field] if numeric else str(r[x_field]) for r in sel]
            ax.plot(xs, [r[metric] for r in sel], 'o-', label=label or None)
        ax.set(xlabel=x_field, ylabel=f'{metric} (nats)', title=metric)
        if numeric and min(r[x_field] for r in rows) > 0:
            values = sorted({r[x_field] for r in rows})
            if len(values) > 2 and values[-1] / values[0] > 20:
                ax.set_xscale('log')
    if rest:
        axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


_FLAGS: dict[str, Any] = {}


def _define_flags() -> None:
    """Flags are defined only when run as a program, so config files may import ``product``."""
    _FLAGS['config'] = config_flags.DEFINE_config_file(
        'config', None, 'Config file with get_config() (and optionally get_sweep()).'
    )
    _FLAGS['workdir'] = flags.DEFINE_string(
        'workdir', None, 'Sweep directory: one workdir per point.'
    )
    _FLAGS['sweep'] = flags.DEFINE_string(
        'sweep',
        '',
        "Points as a product, e.g. 'latent_dim=2,5,10;seed=0,1' (tuples as 400x400). "
        "Empty: the config file's get_sweep().",
    )
    _FLAGS['vectorize'] = flags.DEFINE_bool(
        'vectorize',
        False,
        'Train points that differ only in seed, learning rate, beta or weight decay together '
        '(one jax.vmap program per group of equal shapes; vae_jax/vectorized.py), spread over '
        'the local devices when their number divides the group.',
    )
    flags.mark_flags_as_required(['config', 'workdir'])


def main(argv):
    del argv  # cli.run refuses positional arguments.
    config = cli.config_value(_FLAGS['config'])
    workdir, spec = _FLAGS['workdir'].value, _FLAGS['sweep'].value
    try:
        cli.require_workdir(workdir)
    except ValueError as e:
        sys.exit(f'error: {e}')
    # A stopped point ends the sweep in one `interrupted:` line and status 143 / 130, as
    # `vae_jax.main` does; rerunning resumes it from its checkpoint.
    with cli.outcomes_in_one_line():
        configuration.validate(config)  # The base config's own errors, named as such.
        source = f'--sweep={spec}' if spec else "--config's get_sweep()"
        try:
            if spec:
                points = sweep_points.parse_sweep(spec, config)
            else:
                points = load_sweep(flags.FLAGS['config'].config_filename)
                if points is None:
                    raise configuration.ConfigError(
                        'the config file defines no get_sweep(); pass --sweep=field=v1,v2;...'
                    )
            check_points(config, points)
        except configuration.ConfigError as e:
            sys.exit(f'error: {source}: {e}')
        rows = run_sweep(config, points, workdir, vectorize=_FLAGS['vectorize'].value)
    print(json.dumps({'points': len(rows), 'csv': os.path.join(workdir, 'sweep_results.csv')}))


if __name__ == '__main__':
    _define_flags()
    cli.run(main)
