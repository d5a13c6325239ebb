"""Training: building a run, the jit-compiled step, placing it on a mesh, `train_and_evaluate`.

Algorithm 1 of Kingma & Welling (2013): draw a minibatch of M examples, draw
noise for L samples of z per example, take a gradient step on the SGVB
estimate of the bound. Every random number is derived from (config.seed,
step), never from process history, so a resumed run continues exactly.

``config.algorithm`` selects the paper's Sec. 5 baselines instead, on the same
networks and loop; each algorithm's state and update are a row of
:mod:`vae_jax.algorithms`, which this loop asks, never the algorithm's name. MCEM
trains no encoder, so its final evaluation reports log p(x) by AIS from the prior and
no ELBO.

The loop itself (one ``lax.scan`` over steps, stop signals) is :mod:`vae_jax.loop`'s,
its periodic work :mod:`vae_jax.hooks`'s, the evaluations :mod:`vae_jax.evaluators`'.

Reliability (docs/reliability.md, "Resuming, pre-emption and errors"): SIGTERM or SIGINT
during the loop saves a checkpoint at the current step and raises ``TrainingInterrupted``; a
non-finite loss, term or gradient stops the run (``config.nonfinite='stop'``) or leaves
the state unchanged for that step (``'skip'``, counted in ``train_skipped_steps``).
"""

from __future__ import annotations

import functools
import json
import os
import time
from collections.abc import Callable
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
    hooks,
    loop,
    models,
    optimizers,
    parallel,
    reporting,
    workdir_files,
)

Params = Any
TrainState = algorithms.TrainState  # The state of every algorithm (vae_jax.algorithms).


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
        weight_init=config.model.weight_init,
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
    config,
    model,
    tx,
    event_shape,
    streams: Streams,
    num_train: int | None = None,
    train_images: np.ndarray | None = None,
) -> TrainState:
    """The state at step 0; ``num_train`` (training examples) is needed for MCEM only,
    ``train_images`` (``[n, *event_shape]``) for ``model.decoder_bias='data_mean'`` only,
    which starts the output bias at their mean.

    MCEM's chains start at prior draws from ``fold_in(streams.init, 1)``, so the
    parameters (from ``streams.init``) are the same for every algorithm.
    """
    upper = tuple(config.model.upper_latent_dims)
    top = upper[-1] if upper else config.latent_dim  # What the model's init decodes from.
    params = models.init_params(model, streams.init, event_shape, top)
    if config.model.decoder_bias == 'data_mean':
        if train_images is None:
            raise ValueError("model.decoder_bias='data_mean' needs the training images")
        params = models.with_decoder_bias_at_data_mean(params, np.mean(train_images, axis=0))
    return algorithms.of(config).init(
        config, params, tx.init(params), jax.random.fold_in(streams.init, 1), num_train
    )


class Setup(NamedTuple):
    """What a run is built from (``build``): every caller builds it the same way."""

    model: models.VAE | models.HierarchicalVAE
    tx: Any  # optax.GradientTransformation
    state: TrainState  # At step 0.
    step: Callable  # make_train_step's step(state, x, key, idx=None), not jitted.


def build(
    config: ml_collections.ConfigDict,
    event_shape: tuple[int, ...],
    streams: Streams,
    num_train: int | None = None,
    binary_data: bool = True,
    *,
    tx: Any = None,
    train_images: np.ndarray | None = None,
) -> Setup:
    """The model, optimizer, initial state and training step of ``config``.

    ``num_train``: training examples (MCEM's chains); ``binary_data``: whether the
    training data are 0/1 as loaded (``data.Splits.binary``, read by wake-sleep);
    ``tx``: an optimizer other than ``optimizers.make_optimizer(config)`` (sweeps);
    ``train_images``: ``[n, *event_shape]``, read by ``model.decoder_bias='data_mean'`` only.
    """
    model = make_model(config, event_shape)
    tx = optimizers.make_optimizer(config) if tx is None else tx
    state = init_state(
        config, model, tx, event_shape, streams, num_train=num_train, train_images=train_images
    )
    return Setup(model, tx, state, make_train_step(model, tx, config, binary_data=binary_data))


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
            train_key = jax.random.split(streams.binarize, 3)[0]  # Fixed: it defines static runs.
            train = np.asarray(data.binarize(train_key, jnp.asarray(train)))
    return splits, train, valid, test


def _on_device(config, train: np.ndarray) -> bool:
    if config.data_placement != 'auto':
        return config.data_placement == 'device'
    return train.nbytes <= config.device_data_max_mb * 2**20


def place(config, step_fn: Callable, train: np.ndarray, state: TrainState, streams: Streams):
    """Where training runs: -> (state placed, dispatch, host view of the state).

    A mesh of one device, or with ``config.data_parallel`` of every device of every
    process (the global batch split over them; ``vae_jax.parallel``); the state is
    replicated over the mesh. One device reads the training set on the device when it
    fits (``config.data_placement``), else batches from the host; data-parallel runs
    send each process's rows of the global batch.
    """
    data_parallel = config.data_parallel
    dp = parallel.DataParallel(config.batch_size, None if data_parallel else jax.devices()[:1])
    if data_parallel:
        logging.info('data-parallel over %d devices: %s', jax.device_count(), dp.mesh)
    if not data_parallel and _on_device(config, train):
        source = loop.DeviceBatches(train, config.seed, config.batch_size, put=dp.replicate)
    else:
        source = loop.HostBatches(
            parallel.process_shard(train),  # This process's examples.
            config.seed,
            dp.local_batch_size,
            put=lambda batch: tuple(dp.global_batches(b) for b in batch),
            with_indices=not data_parallel,  # MCEM, the one reader of indices.
        )
    multi = jax.jit(
        loop.make_multi_step(step_fn, source.gather),
        out_shardings=dp.replicated,
        donate_argnums=(0,),
    )
    key_data = dp.replicate(jax.random.key_data(streams.train))
    dispatch = loop.dispatcher(multi, source, key_data, fetch=parallel.to_host)
    # Hooks read a one-device state where it is; a replicated one as a host copy.
    host = parallel.to_host if data_parallel else (lambda s: s)
    return dp.replicate(state), dispatch, host


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
        (``workdir_files.move_run_aside``) and train from step 0.
      on_trained: called with the final state (this process's local arrays) on every
        process before the final evaluation (the multi-host test compares processes).

    Returns:
      The final results, also written to ``workdir/results.json``.

    Raises:
      configuration.ConfigError, data.DataError: bad config or data, before any training
        and before anything is written to ``workdir``.
      workdir_files.WorkdirConflictError: ``workdir`` holds a run with another config;
        its subclasses CheckpointMismatchError and CorruptCheckpointError for checkpoints
        that do not fit or cannot be read, TrainedPastError for a checkpoint past
        ``config.num_steps`` (without ``restart``).
      reporting.NonFiniteError: a NaN or infinity with ``config.nonfinite='stop'``.
      loop.TrainingInterrupted: SIGTERM or SIGINT; a checkpoint at the current step was saved.
    """
    configuration.validate(config)
    if jax.process_count() > 1 and not config.data_parallel:
        raise configuration.ConfigError(
            f'{jax.process_count()} processes would each train a copy of the run: set '
            '--config.data_parallel=True for multi-host training.'
        )
    streams = Streams(config.seed)
    splits, train, valid, test = prepare_data(config, streams)
    logging.info(
        'data %s: train %s valid %s test %s from %s',
        *(config.dataset, train.shape, valid.shape, test.shape, splits.source),
    )
    primary = parallel.is_primary()  # Only process 0 writes the workdir.
    manager = open_workdir(config, workdir, restart) if primary else None
    setup = build(
        config, splits.event_shape, streams, train.shape[0], splits.binary, train_images=train
    )
    state = checkpointing.restore(manager, setup.state, workdir) if primary else setup.state
    state = parallel.broadcast_from_primary(state)
    start_step = int(state.step)
    if start_step:
        logging.info('resumed from step %d in %s', start_step, workdir)
    state, dispatch, host = place(config, setup.step, train, state, streams)
    evaluation = evaluators.RunEvaluation(config, setup.model, streams.eval, valid, test)
    work = _periodic_work(config, workdir, setup, evaluation, manager, host, start_step, streams)
    state, timer = loop.train(
        config, state, dispatch, start_step=start_step, hooks=work.actions, on_stop=work.on_stop,
        saved_in=os.path.join(workdir, workdir_files.CHECKPOINT_DIR), timer=work.timer,
    )  # fmt: skip
    state = host(state)
    if primary:
        work.checkpointer.save_now(int(state.step), state)
    if on_trained is not None:
        on_trained(state)
    test = test[: config.eval_max_examples or None]
    results = _final_evaluation(config, evaluation, state, test, timer)
    if primary:
        evaluators.save_images(config, workdir, setup.model, state.params, test, streams.images)
        with open(os.path.join(workdir, 'results.json'), 'w') as f:
            json.dump(results, f, indent=2)
        final = {f'final_{k}': v for k, v in results.items() if isinstance(v, float)}
        work.writer.write(int(state.step), final)
        work.writer.close()
    logging.info('results: %s', json.dumps(results))
    return results


class _Work(NamedTuple):
    """A run's periodic work (``_periodic_work``)."""

    actions: list[loop.Hook]
    on_stop: Callable[[int, TrainState], None]  # Saves a checkpoint at a stop signal.
    checkpointer: hooks.Checkpointer
    writer: reporting.MetricWriter | None  # None on processes other than 0.
    timer: loop.Timer


def _periodic_work(config, workdir, setup, evaluation, manager, host, start_step, streams) -> _Work:
    """The hooks of a single run after each dispatch: logs and the non-finite check (on
    every process), and on process 0 (``manager`` not None) the validation ELBO,
    checkpoints and pictures."""
    primary = manager is not None
    writer = reporting.MetricWriter(workdir, start_step) if primary else None
    timer = loop.Timer()
    checkpointer = hooks.Checkpointer(manager, config, select=host)
    work: list[loop.Hook] = [
        hooks.Reporter(
            config,
            timer,
            writer=writer,
            progress=reporting.Progress(config.num_steps, start_step) if primary else None,
            manager=manager,
            evaluate=evaluation.during_training if evaluation.has_encoder else None,
            select=host,
        )
    ]
    if primary:
        pictures = functools.partial(
            evaluators.save_images,
            config,
            workdir,
            setup.model,
            x=evaluation.test,
            key=streams.images,
        )
        work += [
            checkpointer,
            hooks.Periodic(
                config.image_every_steps, lambda step, s: pictures(s.params, step=step), host
            ),
        ]

    def on_stop(step: int, state: TrainState) -> None:
        if primary:
            checkpointer.save_now(step, state)
            writer.close()

    return _Work(work, on_stop, checkpointer, writer, timer)


def _final_evaluation(config, evaluation, state: TrainState, test, timer: loop.Timer) -> dict:
    """``evaluation.final`` on ``test``, with the training rate and the evaluation's time."""
    t0 = time.perf_counter()
    results = evaluation.final(state.params, test)
    results.update(
        train_steps=int(state.step),
        train_examples_per_sec=(
            timer.steps * config.batch_size / timer.seconds if timer.seconds else None
        ),
        eval_seconds=time.perf_counter() - t0,
    )
    return results


def open_workdir(config: ml_collections.ConfigDict, workdir: str, restart: bool = False):
    """Records the config in ``workdir`` (or checks it against the run there): its manager.

    Called once every check of the config and the data has passed, so that a failed
    start leaves nothing behind (``train_and_evaluate``, and each point of a vectorised
    sweep). Without ``restart``, a workdir trained past ``config.num_steps`` is refused
    (``workdir_files.TrainedPastError``): resuming would report the longer-trained model
    under the shorter run's name.
    """
    if not restart:
        latest = checkpointing.latest_step(workdir)
        if latest is not None and latest > config.num_steps:
            raise workdir_files.TrainedPastError(workdir, latest, config.num_steps)
    os.makedirs(workdir, exist_ok=True)
    if restart:
        workdir_files.move_run_aside(workdir)
    workdir_files.write_or_check_config(config, workdir)
    return checkpointing.manager(workdir, config.keep_checkpoints)
