"""Training: state, the jit-compiled step, the loop, and `train_and_evaluate`.

Algorithm 1 of Kingma & Welling (2013): draw a minibatch of M examples, draw
noise for L samples of z per example, take a gradient step on the SGVB
estimate of the bound. Every random number is derived from (config.seed,
step), never from process history, so a resumed run continues exactly.
"""

from __future__ import annotations

import functools
import json
import math
import os
import queue
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging

from vae_jax import (
    checkpointing,
    configuration,
    data,
    estimators,
    models,
    objectives,
    plotting,
    reporting,
)

Params = Any


@flax.struct.dataclass
class TrainState:
    """Everything that changes during training; saved in every checkpoint."""

    step: jax.Array
    params: Params
    opt_state: optax.OptState


# --------------------------------------------------------------------------- setup


def make_model(config: ml_collections.ConfigDict, event_shape: tuple[int, ...]) -> models.VAE:
    return models.build_vae(
        architecture=config.model.architecture,
        event_shape=tuple(event_shape),
        latent_dim=config.latent_dim,
        hidden_dims=tuple(config.model.hidden_dims),
        activation=config.model.activation,
        likelihood=config.likelihood,
        conv_channels=tuple(config.model.conv_channels),
    )


def make_optimizer(config: ml_collections.ConfigDict) -> optax.GradientTransformation:
    """The optax chain for ``config.optimizer``: clip, weight decay, optimizer."""
    opt = config.optimizer
    lr: optax.ScalarOrSchedule = opt.learning_rate
    if opt.schedule == 'cosine':
        lr = optax.cosine_decay_schedule(opt.learning_rate, config.num_steps)
    elif opt.schedule == 'warmup_cosine':
        lr = optax.warmup_cosine_decay_schedule(
            0.0, opt.learning_rate, max(opt.warmup_steps, 1), config.num_steps
        )
    parts = []
    if opt.grad_clip_norm > 0:
        parts.append(optax.clip_by_global_norm(opt.grad_clip_norm))
    if opt.weight_decay > 0 and opt.name != 'adamw':
        parts.append(optax.add_decayed_weights(opt.weight_decay))
    if opt.name == 'adam':
        parts.append(optax.adam(lr))
    elif opt.name == 'adamw':
        parts.append(optax.adamw(lr, weight_decay=opt.weight_decay))
    elif opt.name == 'adagrad':
        parts.append(optax.adagrad(lr, initial_accumulator_value=opt.adagrad_initial_accumulator))
    elif opt.name == 'sgd':
        parts.append(optax.sgd(lr))
    elif opt.name == 'rmsprop':
        parts.append(optax.rmsprop(lr))
    return optax.chain(*parts)


class Streams:
    """Named PRNG streams from the one root key ``config.seed``."""

    def __init__(self, seed: int):
        root = jax.random.key(seed)
        self.init, self.train, self.binarize, self.eval, self.images = jax.random.split(root, 5)


def init_state(config, model, tx, event_shape, streams: Streams) -> TrainState:
    params = models.init_params(model, streams.init, event_shape, config.latent_dim)
    return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params))


# --------------------------------------------------------------------------- the step


def make_loss_fn(model: models.VAE, config: ml_collections.ConfigDict):
    """loss(params, x, key) -> (mean negative objective, per-batch mean terms)."""

    def loss_fn(params, x, key):
        encode = functools.partial(model.apply, {'params': params}, method=model.encode)
        decode = functools.partial(model.apply, {'params': params}, method=model.decode)
        terms = objectives.compute(
            key,
            x,
            encode,
            decode,
            objective=config.objective,
            likelihood=config.likelihood,
            num_samples=config.num_samples,
            kl_estimator=config.kl_estimator,
            beta=config.beta,
        )
        means = {k: jnp.mean(v) for k, v in terms.items()}
        return -means['objective'], means

    return loss_fn


def make_train_step(model, tx, config) -> Callable:
    """step(state, x, key) -> (state, metrics); one update of Algorithm 1.

    ``key`` is the run's training stream; the step folds in its own number so
    that the noise of step t is the same however the run was split or resumed.
    """
    loss_fn = make_loss_fn(model, config)
    dynamic = config.binarization == 'dynamic'

    def step(state: TrainState, x: jax.Array, key: jax.Array):
        step_key = jax.random.fold_in(key, state.step)
        bin_key, z_key = jax.random.split(step_key)
        if dynamic:
            x = data.binarize(bin_key, x)
        grads, metrics = jax.grad(loss_fn, has_aux=True)(state.params, x, z_key)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        metrics['grad_norm'] = optax.tree.norm(grads)
        return TrainState(step=state.step + 1, params=params, opt_state=opt_state), metrics

    return step


def make_multi_step(step: Callable) -> Callable:
    """state, train_data [N, ...], indices [n, M], key -> state, metrics [n].

    Runs n steps in one compiled call with the training set resident on the
    device (one dispatch instead of n).
    """

    def multi_step(state, train_data, indices, key):
        def body(state, idx):
            return step(state, jnp.take(train_data, idx, axis=0), key)

        return jax.lax.scan(body, state, indices)

    return multi_step


def batch_indices(seed: int, num_train: int, batch_size: int, start: int, count: int) -> np.ndarray:
    """Example indices of steps [start, start + count): ``[count, batch_size]`` int32.

    Each epoch is a fresh permutation drawn from (seed, epoch) alone; the last
    incomplete minibatch of an epoch is dropped so every step sees M examples.
    """
    steps_per_epoch = num_train // batch_size
    out = np.empty((count, batch_size), np.int32)
    perm, perm_epoch = None, -1
    for i, s in enumerate(range(start, start + count)):
        epoch, pos = divmod(s, steps_per_epoch)
        if epoch != perm_epoch:
            perm = np.random.default_rng([seed, epoch]).permutation(num_train)
            perm_epoch = epoch
        out[i] = perm[pos * batch_size : (pos + 1) * batch_size]
    return out


def _prefetch(batches: Iterator[np.ndarray], size: int = 2) -> Iterator[jax.Array]:
    """Moves host batches to the device from a background thread, ``size`` ahead."""
    q: queue.Queue = queue.Queue(maxsize=size)
    done = object()

    def worker():
        for b in batches:
            q.put(jax.device_put(b))
        q.put(done)

    threading.Thread(target=worker, daemon=True).start()
    while (item := q.get()) is not done:
        yield item


# --------------------------------------------------------------------------- evaluation


def make_eval_fns(model: models.VAE, config: ml_collections.ConfigDict):
    """Jitted per-example ELBO terms and importance-sampled log p(x) on a batch."""

    def elbo_terms(params, x, key):
        encode = functools.partial(model.apply, {'params': params}, method=model.encode)
        decode = functools.partial(model.apply, {'params': params}, method=model.decode)
        return objectives.elbo(
            key,
            x,
            encode,
            decode,
            likelihood=config.likelihood,
            num_samples=1,
            kl_estimator='analytic',
        )

    def log_px(params, x, key, num_samples, chunk_size):
        encode = functools.partial(model.apply, {'params': params}, method=model.encode)
        decode = functools.partial(model.apply, {'params': params}, method=model.decode)
        return estimators.importance_log_likelihood(
            key,
            x,
            encode,
            decode,
            likelihood=config.likelihood,
            num_samples=num_samples,
            chunk_size=chunk_size,
        )

    return jax.jit(elbo_terms), jax.jit(log_px, static_argnums=(3, 4))


def map_batches(
    fn: Callable, x: np.ndarray, batch_size: int, key: jax.Array
) -> dict[str, np.ndarray]:
    """Applies fn(x_batch, key_b) -> dict of [b] arrays over x in batches; concatenates.

    The last batch is padded to ``batch_size`` so that one compiled shape serves.
    """
    outs: dict[str, list] = {}
    n = x.shape[0]
    for b, start in enumerate(range(0, n, batch_size)):
        xb = x[start : start + batch_size]
        valid = xb.shape[0]
        if valid < batch_size:
            xb = np.concatenate([xb, np.repeat(xb[:1], batch_size - valid, axis=0)])
        res = fn(jnp.asarray(xb), jax.random.fold_in(key, b))
        res = res if isinstance(res, dict) else {'value': res}
        for k, v in res.items():
            outs.setdefault(k, []).append(np.asarray(v)[:valid])
    return {k: np.concatenate(v) for k, v in outs.items()}


def summarize(values: np.ndarray) -> tuple[float, float]:
    """Mean and its standard error over examples."""
    values = np.asarray(values, np.float64).ravel()
    if values.size < 2:
        return float(values.mean()), 0.0
    return float(values.mean()), float(values.std(ddof=1) / math.sqrt(values.size))


# --------------------------------------------------------------------------- the loop


def prepare_data(config, streams: Streams):
    """Loads the dataset, checks it against the config, applies fixed binarisation.

    Returns:
      (splits, train, valid, test) with arrays as float32 numpy. Evaluation
      splits of grey data trained with dynamic binarisation get one fixed
      Bernoulli draw, the usual protocol for reporting on dynamically binarised
      MNIST.
    """
    splits = data.load(
        config.dataset, config.data_dir, valid_size=config.valid_size, seed=config.seed
    )
    configuration.validate_against_data(
        config,
        splits.train.shape[0],
        float(splits.train.min()),
        float(splits.train.max()),
        splits.source,
    )
    train, valid, test = splits.train, splits.valid, splits.test
    if config.binarization != 'none' and not splits.binary:
        keys = jax.random.split(streams.binarize, 3)
        valid = np.asarray(data.binarize(keys[1], jnp.asarray(valid)))
        test = np.asarray(data.binarize(keys[2], jnp.asarray(test)))
        if config.binarization == 'static':
            train = np.asarray(data.binarize(keys[0], jnp.asarray(train)))
    return splits, train, valid, test


def _boundaries(config) -> tuple[int, ...]:
    return tuple(
        e
        for e in (
            config.log_every_steps,
            config.eval_every_steps,
            config.checkpoint_every_steps,
            config.image_every_steps,
        )
        if e > 0
    )


def _next_stop(step: int, config) -> int:
    """The next step at which the host must act: dispatch sizes depend only on the step."""
    stop = min(config.num_steps, step + config.steps_per_dispatch)
    for every in _boundaries(config):
        stop = min(stop, (step // every + 1) * every)
    return stop


def _on_device(config, train: np.ndarray) -> bool:
    if config.data_placement != 'auto':
        return config.data_placement == 'device'
    return train.nbytes <= config.device_data_max_mb * 2**20


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
    """Trains (resuming from the latest checkpoint in ``workdir``), then evaluates.

    Returns:
      The final results, also written to ``workdir/results.json``.
    """
    configuration.validate(config)
    os.makedirs(workdir, exist_ok=True)
    checkpointing.write_or_check_config(config, workdir)
    streams = Streams(config.seed)
    splits, train, valid, test = prepare_data(config, streams)
    event_shape = splits.event_shape
    logging.info(
        'data %s: train %s valid %s test %s from %s',
        config.dataset,
        train.shape,
        valid.shape,
        test.shape,
        splits.source,
    )

    model = make_model(config, event_shape)
    tx = make_optimizer(config)
    state = init_state(config, model, tx, event_shape, streams)
    manager = checkpointing.manager(workdir, config.keep_checkpoints)
    state = checkpointing.restore_latest(manager, state, workdir)
    start_step = int(state.step)
    if start_step:
        logging.info('resumed from step %d in %s', start_step, workdir)

    step_fn = make_train_step(model, tx, config)
    on_device = _on_device(config, train)
    if on_device:
        train_dev = jax.device_put(train)
        multi = jax.jit(make_multi_step(step_fn), donate_argnums=(0,))
    else:
        single = jax.jit(step_fn, donate_argnums=(0,))
    elbo_fn, log_px_fn = make_eval_fns(model, config)

    def mean_elbo(params, x) -> float:
        res = map_batches(
            lambda xb, k: elbo_fn(params, xb, k), x, config.eval_batch_size, streams.eval
        )
        return float(np.mean(res['elbo']))

    writer = reporting.MetricWriter(workdir)
    progress = reporting.Progress(config.num_steps, start_step)
    num_train = train.shape[0]
    step = start_step
    train_seconds, train_steps_timed = 0.0, 0
    pending: list[dict[str, np.ndarray]] = []
    while step < config.num_steps:
        stop = _next_stop(step, config)
        idx = batch_indices(config.seed, num_train, config.batch_size, step, stop - step)
        t0 = time.perf_counter()
        if on_device:
            state, metrics = multi(state, train_dev, jnp.asarray(idx), streams.train)
        else:
            batches = (train[i] for i in idx)
            per_step = []
            for xb in _prefetch(batches):
                state, m = single(state, xb, streams.train)
                per_step.append(m)
            metrics = jax.tree.map(lambda *v: jnp.stack(v), *per_step)
        metrics = jax.device_get(metrics)
        dt = time.perf_counter() - t0
        if step > start_step:  # the first dispatch includes compilation
            train_seconds += dt
            train_steps_timed += stop - step
        step = stop
        pending.append(metrics)
        reporting.check_finite(metrics, step, manager)

        if step % config.log_every_steps == 0 or step == config.num_steps:
            merged = {
                k: float(np.mean(np.concatenate([np.atleast_1d(p[k]) for p in pending])))
                for k in pending[0]
            }
            pending = []
            rate = train_steps_timed / train_seconds if train_seconds else float('nan')
            scalars = {f'train_{k}': v for k, v in merged.items()}
            if math.isfinite(rate):  # Unknown until a dispatch after compilation.
                scalars['steps_per_sec'] = rate
            if config.eval_every_steps and step % config.eval_every_steps == 0:
                scalars['valid_elbo'] = mean_elbo(state.params, valid)
                if config.eval_test_during_training:
                    scalars['test_elbo'] = mean_elbo(state.params, test)
            writer.write(step, scalars)
            progress.update(step, merged.get('elbo', merged['objective']), rate)
        if step % config.checkpoint_every_steps == 0 or step == config.num_steps:
            checkpointing.save(manager, step, state)
        if config.image_every_steps and step % config.image_every_steps == 0:
            plotting.save_sample_and_reconstruction_grids(
                workdir, model, state.params, test, streams.images, step=step
            )
    progress.close()
    checkpointing.save(manager, int(state.step), state)
    checkpointing.wait(manager)

    # Final evaluation.
    params = state.params
    t0 = time.perf_counter()
    test_terms = map_batches(
        lambda xb, k: elbo_fn(params, xb, k),
        test,
        config.eval_batch_size,
        jax.random.fold_in(streams.eval, 1),
    )
    num_is = config.eval_num_importance_samples
    chunk = estimators.chunk_size_for(num_is, config.eval_chunk_size)
    log_px = map_batches(
        lambda xb, k: log_px_fn(params, xb, k, num_is, chunk),
        test,
        config.eval_batch_size,
        jax.random.fold_in(streams.eval, 2),
    )['value']
    test_elbo, test_elbo_se = summarize(test_terms['elbo'])
    test_ll, test_ll_se = summarize(log_px)
    results = {
        'dataset': config.dataset,
        'test_examples': int(test.shape[0]),
        'test_elbo': test_elbo,
        'test_elbo_stderr': test_elbo_se,
        'test_kl': float(np.mean(test_terms['kl'])),
        'test_reconstruction': float(np.mean(test_terms['reconstruction'])),
        'test_log_likelihood': test_ll,
        'test_log_likelihood_stderr': test_ll_se,
        'test_log_likelihood_num_samples': num_is,
        'valid_elbo': mean_elbo(params, valid),
        'train_steps': int(state.step),
        'train_examples_per_sec': (
            train_steps_timed * config.batch_size / train_seconds if train_seconds else None
        ),
        'eval_seconds': time.perf_counter() - t0,
    }
    plotting.save_sample_and_reconstruction_grids(workdir, model, params, test, streams.images)
    with open(os.path.join(workdir, 'results.json'), 'w') as f:
        json.dump(results, f, indent=2)
    writer.write(
        int(state.step), {f'final_{k}': v for k, v in results.items() if isinstance(v, float)}
    )
    writer.close()
    logging.info('results: %s', json.dumps(results))
    return results


class Run(NamedTuple):
    """A trained run loaded from its workdir."""

    config: ml_collections.ConfigDict
    model: models.VAE
    params: Params
    step: int
    splits: data.Splits


def load_run(workdir: str) -> Run:
    """The latest checkpoint of the run in ``workdir``, with its config, model and data."""
    config = checkpointing.read_config(workdir)
    splits = data.load(config.dataset, config.data_dir, valid_size=config.valid_size)
    model = make_model(config, splits.event_shape)
    tx = make_optimizer(config)
    state = init_state(config, model, tx, splits.event_shape, Streams(config.seed))
    state = checkpointing.restore_from_workdir(workdir, state)
    return Run(config, model, state.params, int(state.step), splits)
