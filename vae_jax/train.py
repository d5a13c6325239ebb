"""Training: state, the jit-compiled step, the loop, and `train_and_evaluate`.

Algorithm 1 of Kingma & Welling (2013): draw a minibatch of M examples, draw
noise for L samples of z per example, take a gradient step on the SGVB
estimate of the bound. Every random number is derived from (config.seed,
step), never from process history, so a resumed run continues exactly.

``config.algorithm`` selects the paper's Sec. 5 baselines instead, on the same
networks and loop; each algorithm's state and update are a row of
:mod:`vae_jax.algorithms`, which this loop asks, never the algorithm's name. MCEM
trains no encoder, so its final evaluation reports log p(x) by AIS from the prior and
no ELBO.

Reliability (docs/reliability.md, "Resuming, pre-emption and errors"): SIGTERM or SIGINT during the
loop saves a checkpoint at the current step and raises ``TrainingInterrupted``; a
non-finite loss, term or gradient stops the run (``config.nonfinite='stop'``) or leaves
the state unchanged for that step (``'skip'``, counted in ``train_skipped_steps``).
"""

from __future__ import annotations

import json
import math
import os
import queue
import signal
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging

from vae_jax import (
    algorithms,
    checkpointing,
    configuration,
    data,
    evaluators,
    models,
    optimizers,
    parallel,
    reporting,
)

Params = Any
TrainState = algorithms.TrainState  # The state of every algorithm (vae_jax.algorithms).


class TrainingInterrupted(Exception):  # noqa: N818 (not an error: the run stopped on request)
    """SIGTERM or SIGINT stopped training after a checkpoint at ``step`` was saved.

    ``exit_code`` is the shell's convention for a process ended by that signal,
    128 + the signal number: 143 for SIGTERM, 130 for SIGINT.
    """

    def __init__(self, signum: int, step: int, workdir: str):
        self.signum, self.step, self.workdir = signum, step, workdir
        self.exit_code = 128 + signum
        super().__init__(
            f'{signal.Signals(signum).name} at step {step}: saved a checkpoint at step '
            f'{step} in {os.path.join(workdir, checkpointing.CHECKPOINT_DIR)}; rerun the same '
            'command to resume.'
        )


class _StopSignals:
    """While active, SIGTERM and SIGINT set ``signum`` instead of ending the process.

    The loop polls ``signum`` between dispatches. A second signal raises
    KeyboardInterrupt at once. The previous handlers come back on exit. Handlers can
    only be installed from the main thread; elsewhere signals keep their defaults.
    """

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __enter__(self) -> _StopSignals:
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}
        if threading.current_thread() is threading.main_thread():
            for s in self.SIGNALS:
                self._previous[s] = signal.signal(s, self._handle)
        return self

    def _handle(self, signum: int, frame) -> None:
        del frame
        if self.signum is not None:
            raise KeyboardInterrupt(f'second {signal.Signals(signum).name}: stopping at once')
        self.signum = signum

    def __exit__(self, *exc) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, signal.SIG_DFL if handler is None else handler)


# --------------------------------------------------------------------------- setup


def make_model(
    config: ml_collections.ConfigDict, event_shape: tuple[int, ...]
) -> models.VAE | models.HierarchicalVAE:
    return models.build_vae(
        architecture=config.model.architecture,
        event_shape=tuple(event_shape),
        latent_dim=config.latent_dim,
        hidden_dims=tuple(config.model.hidden_dims),
        activation=config.model.activation,
        likelihood=config.likelihood,
        conv_channels=tuple(config.model.conv_channels),
        init_std=config.model.init_std,
        gaussian_mean=config.model.gaussian_mean,
        min_log_var=config.model.min_log_var,
        upper_latent_dims=tuple(config.model.upper_latent_dims),
        upper_hidden_dims=tuple(tuple(h) for h in config.model.upper_hidden_dims),
        num_pseudo_inputs=config.model.num_pseudo_inputs if config.model.prior == 'vamp' else 0,
    )


class Streams:
    """Named PRNG streams from the one root key ``config.seed``."""

    def __init__(self, seed: int):
        root = jax.random.key(seed)
        self.init, self.train, self.binarize, self.eval, self.images = jax.random.split(root, 5)


def init_state(
    config, model, tx, event_shape, streams: Streams, num_train: int | None = None
) -> TrainState:
    """The state at step 0; ``num_train`` (training examples) is needed for MCEM only.

    MCEM's chains start at prior draws from ``fold_in(streams.init, 1)``, so the
    parameters (from ``streams.init``) are the same for every algorithm.
    """
    upper = tuple(config.model.upper_latent_dims)
    top = upper[-1] if upper else config.latent_dim  # What the model's init decodes from.
    params = models.init_params(model, streams.init, event_shape, top)
    return algorithms.of(config).init(
        config, params, tx.init(params), jax.random.fold_in(streams.init, 1), num_train
    )


# --------------------------------------------------------------------------- the step


def _all_finite(tree) -> jax.Array:
    leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.array(True)


def _skip_nonfinite(update: Callable) -> Callable:
    """``config.nonfinite='skip'``: a step whose metrics (loss terms, gradient norm) or
    new parameters are not all finite leaves the state as it was, but for the step count.

    Adds the metric ``skipped`` (1.0 for a skipped step, else 0.0); the other metrics of a
    skipped step stay as computed (non-finite) and are left out of the logged means.
    """

    def guarded(state: TrainState, batch: algorithms.Batch, key: jax.Array):
        new, metrics = update(state, batch, key)
        ok = _all_finite(metrics) & _all_finite(new.params)
        kept = jax.tree.map(lambda n, o: jnp.where(ok, n, o), new, state)
        metrics['skipped'] = jnp.where(ok, 0.0, 1.0).astype(jnp.float32)
        return kept.replace(step=new.step), metrics

    return guarded


def make_train_step(model, tx, config, *, binary_data: bool) -> Callable:
    """step(state, x, key, idx=None) -> (state, metrics); one update of Algorithm 1.

    ``key`` is the run's training stream; the step folds in its own number so
    that the noise of step t is the same however the run was split or resumed.
    ``idx`` ``[M]`` are the batch's indices in the training set; only
    ``config.algorithm='mcem'`` reads them (to find each example's chain).
    ``binary_data``: whether the training data are 0/1 as loaded
    (``data.Splits.binary``); wake-sleep's dreams follow it (``algorithms.wake_sleep_loss``).
    """
    update = algorithms.of(config).make_update(model, tx, config, binary_data=binary_data)
    if config.nonfinite == 'skip':
        update = _skip_nonfinite(update)
    dynamic = config.binarization == 'dynamic'

    def step(state: TrainState, x: jax.Array, key: jax.Array, idx: jax.Array | None = None):
        step_key = jax.random.fold_in(key, state.step)
        bin_key, z_key = jax.random.split(step_key)
        if dynamic:
            x = data.binarize(bin_key, x)
        batch = {'x': x} if idx is None else {'x': x, 'idx': idx}
        return update(state, batch, z_key)

    return evaluators.with_matmul_precision(step, config.precision.train)


def make_multi_step(step: Callable) -> Callable:
    """state, train_data [N, ...], indices [n, M], key -> state, metrics [n].

    Runs n steps in one compiled call with the training set resident on the
    device (one dispatch instead of n).
    """

    def multi_step(state, train_data, indices, key):
        def body(state, idx):
            return step(state, jnp.take(train_data, idx, axis=0), key, idx)

        return jax.lax.scan(body, state, indices)

    return multi_step


def make_multi_step_on_batches(step: Callable) -> Callable:
    """state, batches [n, M, ...], key data -> state, metrics [n]: n steps on given batches.

    For data-parallel training (``vae_jax.parallel``), where the batches arrive split over
    the devices; ``key_data`` is ``jax.random.key_data`` of the training stream so that it
    can be replicated like any array. No example indices: MCEM is not data-parallel.
    """

    def multi_step(state, batches, key_data):
        key = jax.random.wrap_key_data(key_data)
        return jax.lax.scan(lambda s, x: step(s, x, key, None), state, batches)

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


# --------------------------------------------------------------------------- the loop


def prepare_data(config, streams: Streams, splits: data.Splits | None = None):
    """Loads the dataset, checks it against the config, applies fixed binarisation.

    ``splits``: the dataset as ``data.load`` gives it, when the caller has it already
    (``load_run`` does); otherwise it is loaded here.

    Returns:
      (splits, train, valid, test) with arrays as float32 numpy. Evaluation
      splits of grey data trained with binarisation get one fixed Bernoulli draw
      per dataset (``data.binarize_for_evaluation``, independent of the seed), the
      usual protocol for reporting on dynamically binarised MNIST. The training
      split of ``'static'`` is one draw fixed by ``config.seed``.
    """
    if splits is None:
        splits = data.load(config.dataset, config.data_dir, valid_size=config.valid_size)
    train, valid, test = splits.train, splits.valid, splits.test
    if config.num_train_examples is not None:
        if config.num_train_examples > train.shape[0]:
            raise configuration.ConfigError(
                f'config.num_train_examples={config.num_train_examples} is more than the '
                f'{train.shape[0]} training examples of {splits.source}.'
            )
        train = train[: config.num_train_examples]
    # Every split the run reads must fit the likelihood, not only the training split.
    configuration.validate_against_data(
        config,
        train.shape[0],
        min(float(a.min()) for a in (train, valid, test)),
        max(float(a.max()) for a in (train, valid, test)),
        splits.source,
    )
    if config.binarization != 'none' and not splits.binary:
        valid = data.binarize_for_evaluation(config.dataset, 'valid', valid)
        test = data.binarize_for_evaluation(config.dataset, 'test', test)
        if config.binarization == 'static':
            train_key = jax.random.split(streams.binarize, 3)[0]  # The key of earlier versions.
            train = np.asarray(data.binarize(train_key, jnp.asarray(train)))
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


def merge_metrics(pending: list[dict[str, np.ndarray]]) -> dict[str, float]:
    """Per-step metrics of a logging window -> window means; ``skipped`` -> a count.

    Steps skipped for non-finite values (``config.nonfinite='skip'``) are left out of
    the means; a window whose every step was skipped has the count only.
    """
    cat = {k: np.concatenate([np.atleast_1d(p[k]) for p in pending]) for k in pending[0]}
    if 'skipped' not in cat:
        return {k: float(np.mean(v)) for k, v in cat.items()}
    kept = cat.pop('skipped') == 0
    merged = {k: float(np.mean(v[kept])) for k, v in cat.items() if kept.any()}
    merged['skipped_steps'] = float(np.sum(~kept))
    return merged


def _on_device(config, train: np.ndarray) -> bool:
    if config.data_placement != 'auto':
        return config.data_placement == 'device'
    return train.nbytes <= config.device_data_max_mb * 2**20


def train_and_evaluate(
    config: ml_collections.ConfigDict,
    workdir: str,
    *,
    restart: bool = False,
    on_trained: Callable[[TrainState], None] | None = None,
) -> dict[str, Any]:
    """Trains (resuming from the latest usable checkpoint in ``workdir``), then evaluates.

    Args:
      config: the run's config (``configs/default.py`` documents every field).
      workdir: checkpoints, logs and results; rerunning on it resumes.
      restart: first move the run already in ``workdir`` aside
        (``checkpointing.move_run_aside``) and train from step 0.
      on_trained: called with the final state (this process's local arrays) on every
        process before the final evaluation (the multi-host test compares processes).

    Returns:
      The final results, also written to ``workdir/results.json``.

    Raises:
      configuration.ConfigError, data.DataError: bad config or data, before any training.
      checkpointing.WorkdirConflictError: ``workdir`` holds a run with another config;
        its subclasses CheckpointMismatchError and CorruptCheckpointError for checkpoints
        that do not fit or cannot be read.
      reporting.NonFiniteError: a NaN or infinity with ``config.nonfinite='stop'``.
      TrainingInterrupted: SIGTERM or SIGINT; a checkpoint at the current step was saved.
    """
    configuration.validate(config)
    data_parallel = config.get('data_parallel', False)
    if jax.process_count() > 1 and not data_parallel:
        raise configuration.ConfigError(
            f'{jax.process_count()} processes would each train a copy of the run: set '
            '--config.data_parallel=True for multi-host training.'
        )
    primary = parallel.is_primary()  # Only process 0 writes the workdir.
    if primary:
        os.makedirs(workdir, exist_ok=True)
        if restart:
            checkpointing.move_run_aside(workdir)
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
    tx = optimizers.make_optimizer(config)
    state = init_state(config, model, tx, event_shape, streams, num_train=train.shape[0])
    manager = checkpointing.manager(workdir, config.keep_checkpoints) if primary else None
    if primary:
        state = checkpointing.restore(manager, state, workdir)
    state = parallel.broadcast_from_primary(state)
    start_step = int(state.step)
    if start_step:
        logging.info('resumed from step %d in %s', start_step, workdir)

    step_fn = make_train_step(model, tx, config, binary_data=splits.binary)
    on_device = False
    if data_parallel:
        dp = parallel.DataParallel(config.batch_size)
        logging.info('data-parallel over %d devices: %s', jax.device_count(), dp.mesh)
        train_local = parallel.process_shard(train)  # This process's examples.
        state = dp.replicate(state)
        key_data = dp.replicate(jax.random.key_data(streams.train))
        multi = jax.jit(
            make_multi_step_on_batches(step_fn),
            out_shardings=dp.replicated,
            donate_argnums=(0,),
        )
    else:
        on_device = _on_device(config, train)
        if on_device:
            train_dev = jax.device_put(train)
            multi = jax.jit(make_multi_step(step_fn), donate_argnums=(0,))
        else:
            single = jax.jit(step_fn, donate_argnums=(0,))
    elbo_fn, log_px_fn = evaluators.make_eval_fns(model, config)
    has_encoder = algorithms.of(config).trains_encoder  # Else no ELBO.

    def host_state():
        """The state as this process's local arrays (for evaluation and checkpoints)."""
        return parallel.to_host(state) if data_parallel else state

    def mean_elbo(params, x) -> float:
        res = evaluators.map_batches(
            lambda xb, k: elbo_fn(params, xb, k), x, config.eval_batch_size, streams.eval
        )
        return float(np.mean(res['elbo']))

    writer = reporting.MetricWriter(workdir, start_step) if primary else None
    progress = reporting.Progress(config.num_steps, start_step)
    num_train = train.shape[0]
    step = start_step
    train_seconds, train_steps_timed = 0.0, 0
    pending: list[dict[str, np.ndarray]] = []
    skip = config.nonfinite == 'skip'
    with _StopSignals() as signals:
        while True:
            # With several processes all must stop at the same step: they agree here.
            if parallel.any_process(signals.signum is not None):
                signum = signals.signum or signal.SIGTERM  # Another process was signalled.
                # Between dispatches the state is that of `step`, and finite (checked below).
                logging.warning(
                    '%s received: saving a checkpoint at step %d and stopping',
                    signal.Signals(signum).name,
                    step,
                )
                if primary:
                    checkpointing.save(manager, step, host_state())
                    checkpointing.wait(manager)
                    writer.close()
                progress.close()
                raise TrainingInterrupted(signum, step, workdir)
            if step >= config.num_steps:
                break
            stop = _next_stop(step, config)
            t0 = time.perf_counter()
            if data_parallel:
                idx = batch_indices(
                    config.seed, train_local.shape[0], dp.local_batch_size, step, stop - step
                )
                batches = dp.global_batches(train_local[idx])
                state, metrics = multi(state, batches, key_data)
                metrics = parallel.to_host(metrics)
            else:
                idx = batch_indices(config.seed, num_train, config.batch_size, step, stop - step)
                if on_device:
                    state, metrics = multi(state, train_dev, jnp.asarray(idx), streams.train)
                else:
                    batches = ((train[i], i) for i in idx)
                    per_step = []
                    for xb, ib in _prefetch(batches):
                        state, m = single(state, xb, streams.train, ib)
                        per_step.append(m)
                    metrics = jax.tree.map(lambda *v: jnp.stack(v), *per_step)
                metrics = jax.device_get(metrics)
            dt = time.perf_counter() - t0
            if step > start_step:  # the first dispatch includes compilation
                train_seconds += dt
                train_steps_timed += stop - step
            step = stop
            pending.append(metrics)
            if not skip:  # 'skip' kept the state of every non-finite step unchanged.
                reporting.check_finite(metrics, step, manager)

            if step % config.log_every_steps == 0 or step == config.num_steps:
                merged = merge_metrics(pending)
                pending = []
                if merged.get('skipped_steps'):
                    logging.warning(
                        'skipped %d steps up to step %d: non-finite loss, gradient or '
                        'parameters (config.nonfinite=skip)',
                        merged['skipped_steps'],
                        step,
                    )
                rate = train_steps_timed / train_seconds if train_seconds else float('nan')
                scalars = {f'train_{k}': v for k, v in merged.items()}
                if math.isfinite(rate):  # Unknown until a dispatch after compilation.
                    scalars['steps_per_sec'] = rate
                if has_encoder and config.eval_every_steps and step % config.eval_every_steps == 0:
                    params = host_state().params
                    scalars['valid_elbo'] = mean_elbo(params, valid)
                    if config.eval_test_during_training:
                        scalars['test_elbo'] = mean_elbo(params, test)
                if primary:
                    writer.write(step, scalars)
                    progress.update(
                        step, merged.get('elbo', merged.get('objective', float('nan'))), rate
                    )
            if primary and (step % config.checkpoint_every_steps == 0 or step == config.num_steps):
                checkpointing.save(manager, step, host_state())
            if primary and config.image_every_steps and step % config.image_every_steps == 0:
                evaluators.save_images(
                    config, workdir, model, host_state().params, test, streams.images, step=step
                )
    progress.close()
    state = host_state()
    if primary:
        checkpointing.save(manager, int(state.step), state)
        checkpointing.wait(manager)
    if on_trained is not None:
        on_trained(state)

    # Final evaluation.
    params = state.params
    t0 = time.perf_counter()
    if config.eval_max_examples:
        test = test[: config.eval_max_examples]
    if has_encoder:
        results = evaluators.final_eval_with_encoder(
            config, params, elbo_fn, log_px_fn, mean_elbo, test, valid, streams
        )
    else:
        results = evaluators.final_eval_mcem(config, model, params, test, streams)
    results.update(
        train_steps=int(state.step),
        train_examples_per_sec=(
            train_steps_timed * config.batch_size / train_seconds if train_seconds else None
        ),
        eval_seconds=time.perf_counter() - t0,
    )
    if primary:
        evaluators.save_images(config, workdir, model, params, test, streams.images)
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
    tx = optimizers.make_optimizer(config)
    num_train = splits.train.shape[0]
    if config.get('num_train_examples') is not None:
        num_train = min(num_train, config.num_train_examples)
    state = init_state(
        config, model, tx, splits.event_shape, Streams(config.seed), num_train=num_train
    )
    state = checkpointing.restore_from_workdir(workdir, state)
    return Run(config, model, state.params, int(state.step), splits)


def split_data(run: Run, split: str) -> np.ndarray:
    """The split as the model saw it: with the run's fixed binarisation of eval data.

    The one place a saved run's splits are prepared for scoring or pictures
    (``vae_jax.evaluate`` and ``vae_jax.sample``): the training split of a statically
    binarised run is its own training draw; grey splits otherwise get
    ``data.binarize_for_evaluation``'s fixed draw.
    """
    streams = Streams(run.config.seed)
    _, train_x, valid_x, test_x = prepare_data(run.config, streams, run.splits)
    x = {'train': train_x, 'valid': valid_x, 'test': test_x}[split]
    if split == 'train' and run.config.binarization == 'dynamic' and not run.splits.binary:
        x = data.binarize_for_evaluation(run.config.dataset, 'train', x)
    return x
