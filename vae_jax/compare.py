r"""Two runs' log p(x) on the same examples: their difference and its paired standard error.

  python -m vae_jax.compare --a=RESULTS_A --b=RESULTS_B

RESULTS_* is an ``eval_<split>_<method>_<K>.json`` that ``vae_jax.evaluate`` wrote (or
a workdir holding ``eval_test_is_5000.json``). Prints one JSON line: both means, their
difference A - B and its standard error.

Why paired: on one test set, an image that is hard for one model is hard for the
other, so most of the image-to-image spread of log p(x) is shared. Each number's own
standard error (sd over images / sqrt N, about 0.23 nats on MNIST's 10,000 test images)
counts that shared spread; the difference's standard error is sd_i(log p_A(x_i) -
log p_B(x_i)) / sqrt(N), which leaves it out: it is the smaller whenever the two models
agree on which images are hard, and two numbers whose error bars overlap may still differ
with confidence.
Neither counts the training noise (another seed gives another model).
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

import numpy as np
from absl import flags

from vae_jax import cli, evaluate, evaluators

# What two results must share for their examples to be the same ones, in the same order.
SAME_EXAMPLES = ('dataset', 'split', 'num_examples')
DEFAULT_RESULTS = 'eval_test_is_5000.json'


def load(path: str) -> tuple[dict[str, Any], np.ndarray]:
    """A results file (or a workdir's ``eval_test_is_5000.json``) and its per-example values.

    Returns:
      The results and their per-example log p(x) estimates, float64 ``[num_examples]``.

    Raises:
      FileNotFoundError: no results there, or results written before per-example values were
        saved (evaluate the run again).
      ValueError: a file that is not such results.
    """
    if os.path.isdir(path):
        path = os.path.join(path, DEFAULT_RESULTS)
    if not os.path.isfile(path):
        raise FileNotFoundError(f'{path}: no such results file (python -m vae_jax.evaluate)')
    with open(path) as f:
        try:
            result = json.load(f)
        except json.JSONDecodeError as e:
            raise ValueError(f'{path} is not a results file vae_jax.evaluate wrote ({e})') from e
    if not isinstance(result, dict) or 'log_likelihood' not in result:
        raise ValueError(f'{path} is not a results file vae_jax.evaluate wrote')
    values_path = evaluate.per_example_path(path)
    if not os.path.isfile(values_path):
        raise FileNotFoundError(
            f'{values_path}: no per-example estimates beside {path} (written by vae_jax.evaluate '
            'since 2026-11-28); evaluate the run again to pair it'
        )
    values = np.load(values_path)
    if values.shape != (result['num_examples'],):
        raise ValueError(f'{values_path} holds {values.shape}, not ({result["num_examples"]},)')
    return result, values


def paired_difference(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """Mean of ``a - b`` and its standard error, pairing example i of each. Shapes ``[N]``."""
    if a.shape != b.shape:
        raise ValueError(f'paired values need one shape, got {a.shape} and {b.shape}')
    return evaluators.summarize(a - b)


def compare(path_a: str, path_b: str) -> dict[str, Any]:
    """The difference of two results' log p(x), A - B, on the same examples (``load``)."""
    return compare_loaded(path_a, load(path_a), path_b, load(path_b))


def compare_loaded(
    path_a: str,
    loaded_a: tuple[dict[str, Any], np.ndarray],
    path_b: str,
    loaded_b: tuple[dict[str, Any], np.ndarray],
) -> dict[str, Any]:
    """``compare`` of two results already loaded.

    Raises:
      ValueError: the two scored different examples (dataset, split or number of examples).
    """
    (ra, a), (rb, b) = loaded_a, loaded_b
    for key in SAME_EXAMPLES:
        if ra.get(key) != rb.get(key):
            raise ValueError(
                f'{path_a} and {path_b} scored different examples: {key} {ra.get(key)!r} '
                f'against {rb.get(key)!r}'
            )
    difference, stderr = paired_difference(a, b)
    unpaired = np.hypot(ra['log_likelihood_stderr'], rb['log_likelihood_stderr'])
    return {
        'a': path_a,
        'b': path_b,
        **{key: ra[key] for key in SAME_EXAMPLES},
        'log_likelihood_a': ra['log_likelihood'],
        'log_likelihood_b': rb['log_likelihood'],
        'difference': difference,
        'difference_stderr': stderr,
        # What the two numbers' own error bars would say, for contrast.
        'unpaired_stderr': float(unpaired),
        'method_a': f'{ra["method"]}, K = {ra["num_importance_samples"]}',
        'method_b': f'{rb["method"]}, K = {rb["num_importance_samples"]}',
    }


_A = flags.DEFINE_string('a', None, 'Results file (or workdir) A.')
_B = flags.DEFINE_string('b', None, 'Results file (or workdir) B.')


def main(argv):
    del argv  # cli.run refuses positional arguments.
    loaded = []
    for flag in (_A, _B):
        try:
            loaded.append(load(flag.value))
        except (FileNotFoundError, ValueError) as e:
            sys.exit(f'error: --{flag.name}: {e}')  # Once: not also through absl's log.
    try:
        result = compare_loaded(_A.value, loaded[0], _B.value, loaded[1])
    except ValueError as e:
        sys.exit(f'error: --a, --b: {e}')
    print(json.dumps(result))


if __name__ == '__main__':
    flags.mark_flags_as_required(['a', 'b'])
    cli.run(main)
