r"""Vectorised sweep against sequential runs: 8 seeds of the 784-400-20 MLP VAE.

Sequential: the points one after another, each with the same compiled program as
`vae_jax.main` (`loop.make_multi_step(train.make_train_step(...))`, jitted,
`steps_per_dispatch` steps per dispatch, data resident on the device), timed from
building its model to its last step, compile included, as a user running the
points one by one pays it. Vectorised: `vectorized.train_vectorized` on all the
points, also compile included. Both use the classic MNIST VAE (ReLU, Bernoulli
decoder, analytic KL, Adam 1e-3, batch 128) on random binary data of MNIST's shape
(values do not affect speed); evaluation is not timed by either.

Beside the times it prints the ceiling that compute puts on any speedup here:
``step_flops`` (XLA's cost analysis of one compiled training step) times points times
steps, at this machine's best measured float32 matmul rate (``peak_matmul_gflops``,
square products of 512 to 2048), is ``compute_bound_seconds``, the least time any
program could train the points in; ``max_speedup`` = sequential / that. Vectorising
removes compiles and dispatches, not FLOPs, so where the sequential runs already
compute near the peak (a CPU) no vectorised program can beat ``max_speedup``.

  python benchmarks/sweep_throughput.py [--points 8] [--steps 1000]

The last line printed is one JSON object.
"""

import argparse
import json
import os
import platform
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..'))
from train_throughput import bench_config, bench_model  # noqa: E402  (one benchmark model for both)

from vae_jax import loop, vectorized  # noqa: E402


def train_one(config, train_np: np.ndarray, num_steps: int) -> dict[str, float]:
    """One point as `train.train_and_evaluate` trains it (no evaluation): seconds."""
    t0 = time.perf_counter()
    streams, state, step_fn = bench_model(config, train_np.shape[1:])
    multi = jax.jit(loop.make_multi_step(step_fn), donate_argnums=(0,))
    key_data = jax.random.key_data(streams.train)
    train_dev = jax.device_put(train_np)
    first = None
    for step in range(0, num_steps, config.steps_per_dispatch):
        n = min(config.steps_per_dispatch, num_steps - step)
        idx = loop.batch_indices(config.seed, train_np.shape[0], config.batch_size, step, n)
        state, metrics = multi(state, train_dev, jnp.asarray(idx), key_data)
        if first is None:
            jax.block_until_ready(metrics)
            first = time.perf_counter() - t0
    jax.block_until_ready(state)
    return {'seconds': time.perf_counter() - t0, 'first_dispatch_seconds': first}


def step_flops(config, event_shape: tuple[int, ...]) -> float:
    """FLOPs of one training step of one point, from XLA's cost analysis of the compiled step."""
    streams, state, step_fn = bench_model(config, event_shape)
    x = jnp.zeros((config.batch_size, *event_shape), jnp.float32)
    compiled = jax.jit(step_fn).lower(state, x, streams.train).compile()
    return float(compiled.cost_analysis()['flops'])


def peak_matmul_rate(sizes=(512, 1024, 2048), repeats: int = 5) -> float:
    """Best measured float32 FLOP/s of square matmuls: this machine's practical peak."""
    best = 0.0
    for n in sizes:
        a = jax.random.normal(jax.random.key(0), (n, n))
        b = jax.random.normal(jax.random.key(1), (n, n))
        f = jax.jit(jnp.matmul)
        jax.block_until_ready(f(a, b))
        for _ in range(repeats):
            t0 = time.perf_counter()
            jax.block_until_ready(f(a, b))
            best = max(best, 2 * n**3 / (time.perf_counter() - t0))
    return best


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--points', type=int, default=8, help='seeds 0..points-1')
    p.add_argument('--steps', type=int, default=1000, help='training steps per point')
    p.add_argument('--batch', type=int, default=128)
    p.add_argument('--steps_per_dispatch', type=int, default=100)
    p.add_argument('--num_train', type=int, default=50000)
    args = p.parse_args()

    config = bench_config(args.batch, args.steps_per_dispatch)
    rng = np.random.default_rng(1)
    train_np = rng.integers(0, 2, size=(args.num_train, 784), dtype=np.uint8).astype(np.float32)
    points = [{'seed': s} for s in range(args.points)]

    # Untimed: one short run first, so that neither side pays process start-up (backend,
    # first traces of the library) that a user pays once for the whole sweep.
    warmup = train_one(config, train_np, args.steps_per_dispatch)['seconds']

    runs = []
    t0 = time.perf_counter()
    for point in points:
        c = config.copy_and_resolve_references()
        c.seed = point['seed']
        runs.append(train_one(c, train_np, args.steps))
        print(f'sequential seed {point["seed"]}: {runs[-1]}', flush=True)
    sequential = time.perf_counter() - t0

    dispatch_times = []
    t0 = time.perf_counter()
    result = vectorized.train_vectorized(
        config,
        points,
        args.steps,
        train_data=train_np,
        on_dispatch=lambda: dispatch_times.append(time.perf_counter() - t0),
    )
    jax.block_until_ready(result.state)
    vectorised = time.perf_counter() - t0
    print(f'vectorised: {vectorised:.2f}s ({len(dispatch_times)} dispatches)', flush=True)

    seq_steady = sum(r['seconds'] - r['first_dispatch_seconds'] for r in runs)
    flops = step_flops(config, train_np.shape[1:])
    peak = peak_matmul_rate()
    total_flops = flops * args.points * args.steps
    compute_bound = total_flops / peak
    out = {
        'bench': 'vae_jax_sweep_throughput',
        'sequential_seconds': round(sequential, 3),
        'vectorised_seconds': round(vectorised, 3),
        'speedup': round(sequential / vectorised, 3),
        'step_flops': flops,
        'peak_matmul_gflops': round(peak / 1e9, 1),
        'compute_bound_seconds': round(compute_bound, 3),
        'max_speedup': round(sequential / compute_bound, 3),
        'sequential_gflops': round(total_flops / sequential / 1e9, 1),
        'vectorised_gflops': round(total_flops / vectorised / 1e9, 1),
        'sequential_first_dispatch_seconds': [round(r['first_dispatch_seconds'], 3) for r in runs],
        'sequential_after_first_dispatch_seconds': round(seq_steady, 3),
        'warmup_seconds': round(warmup, 3),
        'num_points': args.points,
        'num_steps': args.steps,
        'batch': args.batch,
        'steps_per_dispatch': args.steps_per_dispatch,
        'final_objective_mean': float(np.mean(result.metrics['objective'][:, -1])),
        'device': str(jax.devices()[0]),
        'cpu_count': os.cpu_count(),
        'versions': {'jax': jax.__version__, 'python': platform.python_version()},
    }
    print(json.dumps(out))


if __name__ == '__main__':
    main()
