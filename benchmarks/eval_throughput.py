r"""Importance-sampled log p(x) with K = 5000 on 10,000 MNIST test images, against matmul time.

  python benchmarks/eval_throughput.py [--num_examples=10000] [--num_samples=5000]
      [--data_dir=../shared/data]

The model is the 784-400-20 MLP VAE (ReLU, Bernoulli) with random parameters:
the cost does not depend on the values. The estimator is the one
`python -m vae_jax.evaluate` runs (`estimators.running_importance_log_likelihood`,
chunked over K with a running logsumexp).

Beside it, the script measures this machine's float32 matmul rate on the
decoder's own shapes and prints `matmul_seconds`: the decoder's matmul FLOPs
(2 * (20*400 + 400*784) per example and sample) at that rate, the floor for any
implementation. The last line is one JSON object with `seconds`,
`matmul_seconds` and `ratio_to_matmul`.
"""

import argparse
import json
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..'))
from vae_jax import data, estimators, models  # noqa: E402

DEFAULT_DATA = os.path.join(
    os.path.dirname(os.path.abspath(__file__)), '..', '..', 'shared', 'data'
)


def matmul_rate(
    rows: int, hidden: int = 400, out: int = 784, latent: int = 20, repeats: int = 5
) -> float:
    """Measured float32 FLOP/s of the decoder's two matmuls at ``rows`` rows.

    The weights are constants of the compiled program, as the model's are in
    the estimator (evaluate closes over the parameters), so both get the same
    matmul kernels.
    """
    key = jax.random.key(0)
    z = jax.random.normal(key, (rows, latent))
    w1 = jax.random.normal(key, (latent, hidden)) * 0.1
    w2 = jax.random.normal(key, (hidden, out)) * 0.1

    @jax.jit
    def f(z):
        # Only the two products; a cheap reduction keeps XLA from dropping them.
        return jnp.sum((z @ w1) @ w2)

    jax.block_until_ready(f(z))
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(f(z))
        times.append(time.perf_counter() - t0)
    flops = 2 * rows * (latent * hidden + hidden * out)
    return flops / float(np.median(times))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--num_examples', type=int, default=10_000)
    p.add_argument('--num_samples', type=int, default=5000)
    p.add_argument('--batch_size', type=int, default=100)
    p.add_argument('--chunk_size', type=int, default=100)
    p.add_argument('--data_dir', default=DEFAULT_DATA)
    args = p.parse_args()

    try:
        x = data.load('mnist', args.data_dir).test
        source = 'mnist test (grey levels as Bernoulli means)'
    except data.DataError:
        x = np.random.default_rng(0).integers(0, 2, (10_000, 28, 28)).astype(np.float32)
        source = 'random binary (MNIST files not found)'
    x = x[: args.num_examples]
    model = models.build_vae(
        architecture='mlp',
        event_shape=(28, 28),
        latent_dim=20,
        hidden_dims=(400,),
        activation='relu',
        likelihood='bernoulli',
    )
    params = models.init_params(model, jax.random.key(0), (28, 28), 20)
    lm = models.latent_model(model, params)
    chunk = estimators.chunk_size_for(args.num_samples, args.chunk_size)
    fn = jax.jit(
        lambda xb, kb: estimators.importance_log_likelihood(
            kb,
            xb,
            lm,
            num_samples=args.num_samples,
            chunk_size=chunk,
        )
    )
    key = jax.random.key(1)
    jax.block_until_ready(fn(jnp.asarray(x[: args.batch_size]), key))  # Compile.

    t0 = time.perf_counter()
    outs = []
    for b, start in enumerate(range(0, x.shape[0], args.batch_size)):
        outs.append(fn(jnp.asarray(x[start : start + args.batch_size]), jax.random.fold_in(key, b)))
    log_px = np.concatenate([np.asarray(o) for o in outs])
    seconds = time.perf_counter() - t0

    # The floor is the best rate the matmuls reach at any of these row counts, the
    # estimator's own included: a conservative (high) rate makes the ratio honest.
    rows = sorted({args.batch_size * chunk, 1000, 10_000, 50_000})
    rates = {r: matmul_rate(r) for r in rows}
    rate = max(rates.values())
    flops = 2.0 * x.shape[0] * args.num_samples * (20 * 400 + 400 * 784)
    matmul_seconds = flops / rate
    print(
        json.dumps(
            {
                'bench': 'vae_jax_eval_throughput',
                'seconds': seconds,
                'matmul_seconds': matmul_seconds,
                'ratio_to_matmul': seconds / matmul_seconds,
                'matmul_gflops_per_sec': rate / 1e9,
                'matmul_gflops_per_sec_by_rows': {r: v / 1e9 for r, v in rates.items()},
                'decoder_tflops': flops / 1e12,
                'num_examples': int(x.shape[0]),
                'num_samples': args.num_samples,
                'batch_size': args.batch_size,
                'chunk_size': chunk,
                'mean_log_px': float(log_px.mean()),
                'data': source,
                'device': str(jax.devices()[0]),
                'cpu_count': os.cpu_count(),
                'jax': jax.__version__,
            }
        )
    )


if __name__ == '__main__':
    main()
