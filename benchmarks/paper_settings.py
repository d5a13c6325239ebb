r"""Training rate of the paper configurations through `vae_jax.main`'s own code path.

  python benchmarks/paper_settings.py [--data_dir=../shared/data] [--steps_scale=1.0]
      [--only=fig2_z20_aevb,iwae_l1_vae_k1,...|--only='iwae_*'] [--precision_check]

Each run is a short `train.train_and_evaluate` of one paper config (every setting
the paper's, only `num_steps` cut, evaluation trimmed to 100 test images), so the
rate is what the figure and table scripts get. Each prints one JSON line: device,
examples/s and steps/s after compilation, and `paper_schedule_hours`, the config's
full `num_steps` at that rate (training only; the final K = 5000 evaluation is
extra). With --precision_check, the first IWAE run's model is then evaluated on 2,000
test images (K = 1000, one seed) with float32 and with TF32 matrix products, and a
line gives how far log p(x) moves (no-op on CPUs).
Needs MNIST under --data_dir.
"""

import argparse
import fnmatch
import json
import os
import sys
import tempfile
import time

import jax

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..'))
from absl import logging  # noqa: E402

from configs.paper import mnist as fig2_config  # noqa: E402
from configs.paper import mnist_marginal as fig3_config  # noqa: E402
from configs.paper.iwae import mnist as iwae_config  # noqa: E402
from experiments.iwae import table1  # noqa: E402
from vae_jax import algorithms, evaluate, train  # noqa: E402

DEFAULT_DATA = os.path.join(
    os.path.dirname(os.path.abspath(__file__)), '..', '..', 'shared', 'data'
)
# name -> (config, steps timed at --steps_scale=1).
RUNS = {
    'fig2_z20_aevb': (lambda: fig2_config.get_config('20'), 30_000),
    'fig2_z20_wake_sleep': (lambda: _with(fig2_config.get_config('20'), 'wake_sleep'), 30_000),
    # Figure 3's 784-100-3 model on N_train = 1,000, the three algorithms it compares.
    'fig3_n1000_aevb': (lambda: fig3_config.get_config('1000'), 30_000),
    'fig3_n1000_wake_sleep': (lambda: _with(fig3_config.get_config('1000'), 'wake_sleep'), 30_000),
    'fig3_n1000_mcem': (lambda: _with(fig3_config.get_config('1000'), 'mcem'), 5_000),
    # MCEM keeps one chain per training example: the 50-times larger table of Figure 3's
    # other N_train.
    'fig3_n50000_mcem': (lambda: _with(fig3_config.get_config('50000'), 'mcem'), 5_000),
}
# Burda et al.'s Table 1: its ten distinct models, named as experiments/iwae/table1.py
# names them; fewer steps timed where a step costs more.
TABLE1_STEPS = {1: 30_000, 5: 20_000, 50: 10_000}


def _table1_run(layers: int, objective: str, k: int):
    return lambda: iwae_config.get_config(f'{layers},{objective},{k}'), TABLE1_STEPS[k]


RUNS.update({'iwae_' + table1.model_name(*m): _table1_run(*m) for m in table1.all_models()})


def _with(config, algorithm: str):
    config.algorithm = algorithm
    return config


def run_one(name: str, data_dir: str, steps_scale: float, workdir: str) -> dict:
    make, steps = RUNS[name]
    config = make()
    full_steps = config.num_steps
    config.data_dir = data_dir
    dispatch = config.steps_per_dispatch
    config.num_steps = max(3, round(steps * steps_scale / dispatch)) * dispatch
    config.log_every_steps = dispatch
    config.eval_every_steps = 0
    config.checkpoint_every_steps = config.num_steps
    config.eval_max_examples = 100
    config.eval_num_importance_samples = 10
    if not algorithms.of(config).trains_encoder:  # Its final log p(x) is AIS.
        config.eval_ais_steps = 10
    t0 = time.perf_counter()
    results = train.train_and_evaluate(config, workdir)
    wall = time.perf_counter() - t0
    rate = results['train_examples_per_sec']
    steps_per_sec = rate / config.batch_size
    return {
        'bench': 'paper_settings',
        'run': name,
        'device': str(jax.devices()[0]),
        'batch': config.batch_size,
        'steps': config.num_steps,
        'examples_per_sec': round(rate, 1),
        'steps_per_sec': round(steps_per_sec, 1),
        'paper_steps': full_steps,
        'paper_schedule_hours': round(full_steps / steps_per_sec / 3600, 3),
        'wall_s': round(wall, 1),
        'precision_train': config.precision.train,
    }


def precision_check(workdir: str, name: str) -> dict:
    """log p(x) of one trained model with float32 against TF32 matrix products."""
    out = {}
    for precision in ('float32', 'tensorfloat32'):
        r = evaluate.evaluate_run(
            workdir,
            num_importance_samples=1000,
            max_examples=2000,
            precision=precision,
            write=False,
        )
        out[precision] = r['log_likelihood']
    return {
        'bench': 'eval_precision',
        'device': str(jax.devices()[0]),
        'workdir_model': name,
        'log_px_float32': out['float32'],
        'log_px_tf32': out['tensorfloat32'],
        'tf32_minus_float32': out['tensorfloat32'] - out['float32'],
        'num_examples': 2000,
        'num_importance_samples': 1000,
    }


def _expand(names: list[str]) -> list[str]:
    """Each name as it is, or every run it matches where it is a pattern (in RUNS' order)."""
    out = []
    for name in names:
        matched = [r for r in RUNS if fnmatch.fnmatchcase(r, name)] if '*' in name else []
        out.extend(matched or [name])  # An unmatched pattern stays, to be refused by name.
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--data_dir', default=DEFAULT_DATA)
    p.add_argument('--steps_scale', type=float, default=1.0, help='multiplies every run length')
    p.add_argument(
        '--only',
        default='',
        help="comma-separated names of RUNS, or patterns ('iwae_l2_*'); default: all",
    )
    p.add_argument('--precision_check', action='store_true')
    args = p.parse_args()
    logging.set_verbosity(logging.WARNING)
    names = _expand([n for n in args.only.split(',') if n]) or list(RUNS)
    unknown = sorted(set(names) - set(RUNS))
    if unknown:
        sys.exit(f'error: --only names {unknown}; known: {sorted(RUNS)}')
    with tempfile.TemporaryDirectory() as root:
        checked = False
        # A name may repeat (to bracket this machine's drift): each run its own workdir.
        for i, name in enumerate(names):
            workdir = os.path.join(root, f'{i}_{name}')
            print(json.dumps(run_one(name, args.data_dir, args.steps_scale, workdir)), flush=True)
            if args.precision_check and not checked and name.startswith('iwae'):
                print(json.dumps(precision_check(workdir, name)), flush=True)
                checked = True


if __name__ == '__main__':
    main()
