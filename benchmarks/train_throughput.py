r"""Training throughput of the 784-400-20 MLP VAE, optionally beside PyTorch.

Times this project's compiled training step (the same code `vae_jax.main`
runs: `train.make_train_step` fused `steps_per_dispatch` at a time with
`lax.scan`, data resident on the device) on the classic MNIST VAE: ReLU,
Bernoulli decoder, analytic KL, Adam 1e-3, batch 128, random binary data of
MNIST's shape (values do not affect speed).

  python benchmarks/train_throughput.py
  python benchmarks/train_throughput.py --reference /path/to/python-with-torch

With --reference, ../shared/bench/torch_vae.py --random-data runs in that
interpreter, alternating with our timed blocks for --rounds rounds, and the
figures gain `reference_examples_per_sec` and `ratio` (ours / reference, both
medians). The last line printed is one JSON object.
"""

import os
import time


def _process_age_s() -> float:
    """Seconds since this process started (Linux), for the start-up figure."""
    try:
        with open('/proc/self/stat') as f:
            rest = f.read().rsplit(')', 1)[1].split()
        return time.clock_gettime(time.CLOCK_BOOTTIME) - int(rest[19]) / os.sysconf('SC_CLK_TCK')
    except (OSError, ValueError, IndexError):
        return float('nan')


_AGE_AT_START = _process_age_s()
_T0 = time.perf_counter()

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..'))
from configs import default as default_config  # noqa: E402
from vae_jax import loop, train  # noqa: E402

REFERENCE = os.path.join(
    os.path.dirname(os.path.abspath(__file__)), '..', '..', 'shared', 'bench', 'torch_vae.py'
)


def bench_config(batch_size: int, steps_per_dispatch: int):
    config = default_config.get_config()
    config.model.hidden_dims = (400,)
    config.model.activation = 'relu'
    config.latent_dim = 20
    config.likelihood = 'bernoulli'
    config.binarization = 'none'  # The data is already binary, as in the reference.
    config.optimizer.name = 'adam'
    config.optimizer.learning_rate = 1e-3
    config.batch_size = batch_size
    config.steps_per_dispatch = steps_per_dispatch
    return config


def bench_model(config, event_shape: tuple[int, ...]):
    """(streams, initial state, training step) of ``config``, as train_and_evaluate builds them."""
    streams = train.Streams(config.seed)
    # The benchmark data are binary (bench_config): 0/1 dreams, were wake-sleep benchmarked.
    setup = train.build(config, event_shape, streams, binary_data=True)
    return streams, setup.state, setup.step


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--steps', type=int, default=400, help='steps per timed block')
    p.add_argument('--warmup', type=int, default=200, help='steps before timing')
    p.add_argument('--repeats', type=int, default=3, help='timed blocks per round')
    p.add_argument('--rounds', type=int, default=3, help='rounds alternating with the reference')
    p.add_argument('--batch', type=int, default=128)
    p.add_argument('--steps_per_dispatch', type=int, default=100)
    p.add_argument('--reference', default='', help='python interpreter that has torch')
    p.add_argument('--reference_script', default=REFERENCE)
    args = p.parse_args()

    config = bench_config(args.batch, args.steps_per_dispatch)
    rng = np.random.default_rng(1)
    train_np = rng.integers(0, 2, size=(60000, 784), dtype=np.uint8).astype(np.float32)
    streams, state, step_fn = bench_model(config, (784,))
    multi = jax.jit(loop.make_multi_step(step_fn), donate_argnums=(0,))
    key_data = jax.random.key_data(streams.train)
    train_dev = jax.device_put(train_np)
    n = args.steps_per_dispatch
    step = 0

    def run(num_steps: int):
        nonlocal state, step
        metrics = None
        for _ in range(num_steps // n):
            idx = loop.batch_indices(config.seed, train_np.shape[0], args.batch, step, n)
            state, metrics = multi(state, train_dev, jnp.asarray(idx), key_data)
            step += n
        return jax.block_until_ready(metrics)

    t_first0 = time.perf_counter()
    run(n)  # First dispatch: compiles, then runs n steps.
    t_first = time.perf_counter()
    # Process start to the end of the first dispatch, which holds the first step
    # (and n - 1 more): an upper bound on start-up to the first finished step.
    startup = _AGE_AT_START + (t_first - _T0)
    run(max(args.warmup - n, 0))

    ours, reference = [], []
    for _ in range(args.rounds if args.reference else 1):
        if args.reference:
            out = subprocess.run(
                [args.reference, args.reference_script, '--random-data'],
                capture_output=True,
                text=True,
                check=True,
            )
            reference.append(json.loads(out.stdout.strip().splitlines()[-1])['examples_per_sec'])
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            metrics = run(args.steps)
            ours.append(args.steps * args.batch / (time.perf_counter() - t0))

    result = {
        'bench': 'vae_jax_train_throughput',
        'examples_per_sec': statistics.median(ours),
        'examples_per_sec_runs': [round(r, 1) for r in ours],
        'ms_per_step': 1000.0 * args.batch / statistics.median(ours),
        'startup_s': round(startup, 3),
        'first_dispatch_s': round(t_first - t_first0, 3),
        'steps_per_dispatch': n,
        'batch': args.batch,
        'final_loss_per_example': -float(metrics['objective'][-1]),
        'device': str(jax.devices()[0]),
        'cpu_count': os.cpu_count(),
        'versions': {'jax': jax.__version__, 'python': platform.python_version()},
    }
    if reference:
        result['reference_examples_per_sec'] = statistics.median(reference)
        result['reference_examples_per_sec_runs'] = [round(r, 1) for r in reference]
        result['ratio'] = result['examples_per_sec'] / result['reference_examples_per_sec']
    print(json.dumps(result))


if __name__ == '__main__':
    main()
