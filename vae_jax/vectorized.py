"""Vectorised sweeps: many points of a sweep trained together in one compiled program.

Points that differ only in numeric values (``sweep_points.VECTORIZABLE_FIELDS``: seed, learning
rate, beta, weight decay) share every shape, so their train states stack along a
leading point axis ``P`` and one ``jax.vmap`` of the training step of
:func:`vae_jax.train.make_train_step` trains all of them, ``steps_per_dispatch``
steps per dispatch with ``lax.scan`` and the training set resident on the device.

Each point keeps everything a single run of ``train.train_and_evaluate`` would have:
its own ``train.Streams(seed)`` (initial parameters, binarisation and z noise), its
own data order ``train.batch_indices(seed, ...)`` and its own hyperparameters, so the
final parameters equal those of the single runs to float tolerance (vmapped matrix
products may sum in another order). Only training is vectorised: there is no
evaluation, checkpoint or workdir here (``vae_jax.sweep --vectorize`` adds them).

With several local devices and a number of points that they divide, the points are
spread over the devices (a ``Mesh`` with a ``points`` axis; each device trains
``P / devices`` of them, the training set copied to each): no communication at all.

  result = vectorized.train_vectorized(config, sweep_points.product(seed=[0, 1, 2]))
  result.params[1]  # The parameters of the point seed=1.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from vae_jax import (
    checkpointing,
    configuration,
    data,
    evaluators,
    hooks,
    loop,
    optimizers,
    parallel,
    reporting,
    sweep_points,
    train,
    workdir_files,
)


class UnequalSteps(workdir_files.WorkdirConflictError):
    """The points' workdirs hold checkpoints at different steps: they cannot train together."""


class VectorizedResult(NamedTuple):
    """The outcome of :func:`train_vectorized`.

    Attributes:
      configs: each point's full config (the base config with the point applied).
      state: the stacked final ``train.TrainState``; every leaf has a leading axis ``[P]``.
      params: each point's final parameters, unstacked: ``params[i]`` is point i's.
      metrics: per-step training metrics, each ``[P, num_steps]`` (numpy).
    """

    configs: list[ml_collections.ConfigDict]
    state: train.TrainState
    params: list[train.Params]
    metrics: dict[str, np.ndarray]


class _ConfigView:
    """``config`` with some fields replaced by traced values, for the step builders.

    Hand-written because a ConfigDict's fields are type-checked and refuse tracers; the
    step builders only read attributes and ``get``.
    """

    def __init__(self, config: ml_collections.ConfigDict, **overrides: Any):
        self._config, self._overrides = config, overrides

    def __getattr__(self, name: str) -> Any:
        if name in self._overrides:
            return self._overrides[name]
        return getattr(self._config, name)

    def get(self, name: str, default: Any = None) -> Any:
        if name in self._overrides:
            return self._overrides[name]
        return self._config.get(name, default)


def make_vectorized_multi_step(
    model, config: ml_collections.ConfigDict, *, decay: bool, data_axis, binary_data: bool
):
    """The P-point version of ``loop.make_multi_step(train.make_train_step(...))``.

    Returns ``multi(state [P], train_data, indices [P, n, M], key_data [P, ...], hyper) ->
    (state [P], metrics [P, n])`` where ``train_data`` is ``[N, ...]`` shared by all
    points (``data_axis=None``) or ``[P, N, ...]`` (``data_axis=0``) and ``hyper`` maps
    ``'learning_rate'``, ``'weight_decay'``, ``'beta'`` to ``[P]`` float32.
    ``binary_data``: as ``train.make_train_step``'s (whether the data are 0/1 as loaded).
    """

    def one_point(state, train_data, indices, key_data, hyper):
        tx = optimizers.make_optimizer(
            config,
            learning_rate=hyper['learning_rate'],
            weight_decay=hyper['weight_decay'],
            decay=decay,
        )
        view = _ConfigView(config, beta=hyper['beta'])
        step = train.make_train_step(model, tx, view, binary_data=binary_data)
        return loop.make_multi_step(step)(state, train_data, indices, key_data)

    return jax.vmap(one_point, in_axes=(0, data_axis, 0, 0, 0))


def _stack(trees: Sequence[Any]) -> Any:
    return jax.tree.map(lambda *leaves: jnp.stack(leaves), *trees)


def _point(i: int) -> Callable[[Any], Any]:
    """Point i's slice of a stacked tree (state ``[P, ...]``, metrics ``[P, n]``)."""
    return lambda tree: jax.tree.map(lambda x: x[i], tree)


class _PointBatches:
    """The batch source of P points: each point's own data order over the resident data."""

    def __init__(self, data, seeds: Sequence[int], num_train: int, batch_size: int, place):
        self.data, self._seeds, self._place = data, seeds, place
        self._num_train, self._batch_size = num_train, batch_size

    def chunks(self, start: int, stop: int):
        idx = [
            loop.batch_indices(s, self._num_train, self._batch_size, start, stop - start)
            for s in self._seeds
        ]
        yield self._place(np.stack(idx))


def train_vectorized(
    config: ml_collections.ConfigDict,
    points: Sequence[sweep_points.Point],
    num_steps: int | None = None,
    *,
    train_data: np.ndarray | None = None,
    on_dispatch: Callable[[], None] | None = None,
    devices: Sequence[jax.Device] | None = None,
    workdirs: Sequence[str] | None = None,
) -> VectorizedResult:
    """Trains every point of ``points`` at once: one jitted, vmapped program per dispatch.

    The loop is ``loop.train``'s, as for a single run; each point's hooks see its slice.

    Args:
      config: the sweep's base config.
      points: ``{dotted.field: value}`` overrides (as in ``vae_jax.sweep``); they may
        differ only in ``sweep_points.VECTORIZABLE_FIELDS``.
      num_steps: steps to train; default ``config.num_steps`` (equal for all points).
      train_data: ``[N, ...]`` float32 training set used instead of loading
        ``config.dataset`` (for benchmarks); no binarisation is applied to it beyond
        the config's dynamic binarisation in the step.
      on_dispatch: called after each dispatch (tests count them).
      devices: where to train (default ``jax.local_devices()``); the points are spread
        over them when their number divides the number of points, else all train on the
        first.
      workdirs: one per point: each gets what a single run of the point would write while
        training (its ``config.json``, metrics with the validation ELBO, checkpoints; a
        stop signal saves every point), and training resumes from their checkpoints when
        all are at the same step. ``train.train_and_evaluate`` on a finished workdir then
        runs only the final evaluation.

    Returns:
      A ``VectorizedResult``; ``params[i]`` equals, to float tolerance, the parameters
      ``train.train_and_evaluate(sweep_points.apply(config, points[i]), ...)`` trains.

    Raises:
      configuration.ConfigError: the points differ in another field, or a bad config.
      workdir_files.WorkdirConflictError: a workdir holds another run; its subclass
        UnequalSteps: the points' checkpoints are at different steps.
      reporting.NonFiniteError: a point's loss, terms or gradient became non-finite
        (with ``config.nonfinite='stop'``); the message names the point.
      loop.TrainingInterrupted: SIGTERM or SIGINT (with ``workdirs``).
    """
    if not points:
        raise configuration.ConfigError('the sweep has no points.')
    configs = [sweep_points.apply(config, p) for p in points]
    for c in configs:
        if num_steps is not None:
            c.num_steps = num_steps
        configuration.validate(c)
    sweep_points.check_vectorizable(configs)
    base = configs[0]
    names = [sweep_points.point_name(p) for p in points]

    streams = [train.Streams(c.seed) for c in configs]
    if train_data is None:
        loaded = [train.prepare_data(c, s) for c, s in zip(configs, streams, strict=True)]
        event_shape = loaded[0][0].event_shape
        trains = [t for _, t, _, _ in loaded]
        binary_data = loaded[0][0].binary
    else:
        loaded = None
        event_shape = tuple(train_data.shape[1:])
        trains = [np.asarray(train_data, np.float32)]
        binary_data = data.is_binary(trains[0])
    # Static binarisation draws from each point's own stream: stack only if they differ.
    shared = all(np.array_equal(trains[0], t) for t in trains[1:])
    data_axis = None if shared else 0
    place, place_data = _placement(len(points), devices)
    num_train = trains[0].shape[0]

    decay = any(c.optimizer.weight_decay > 0 for c in configs)
    setups = [
        train.build(
            c,
            event_shape,
            s,
            num_train,
            binary_data,
            tx=optimizers.make_optimizer(c, decay=decay),
            train_images=trains[0 if shared else i],
        )
        for i, (c, s) in enumerate(zip(configs, streams, strict=True))
    ]
    states = [s.state for s in setups]
    managers: list[Any] = [None] * len(points)
    writers: list[Any] = [None] * len(points)
    if workdirs is not None:
        managers = [train.open_workdir(c, w) for c, w in zip(configs, workdirs, strict=True)]
        states = [
            checkpointing.restore(m, s, w)
            for m, s, w in zip(managers, states, workdirs, strict=True)
        ]
        steps = sorted({int(s.step) for s in states})
        if len(steps) > 1:
            raise UnequalSteps(
                f"the points' checkpoints are at different steps {steps}: train them one by "
                'one (vae_jax.sweep does).'
            )
        writers = [reporting.MetricWriter(w, steps[0]) for w in workdirs]
    start_step = int(states[0].step)
    state = place(_stack(states))
    hyper = place(
        {
            'learning_rate': np.asarray([c.optimizer.learning_rate for c in configs], np.float32),
            'weight_decay': np.asarray([c.optimizer.weight_decay for c in configs], np.float32),
            'beta': np.asarray([c.beta for c in configs], np.float32),
        }
    )
    multi = jax.jit(
        make_vectorized_multi_step(
            setups[0].model, base, decay=decay, data_axis=data_axis, binary_data=binary_data
        ),
        donate_argnums=(0,),
    )
    source = _PointBatches(
        place_data(trains[0]) if shared else place(np.stack(trains)),
        [c.seed for c in configs],
        num_train,
        base.batch_size,
        place,
    )
    keys = place(np.stack([np.asarray(jax.random.key_data(s.train)) for s in streams]))
    dispatch = loop.dispatcher(multi, source, keys, hyper)

    timer = loop.Timer()
    collected: list[dict[str, np.ndarray]] = []
    actions: list[loop.Hook] = [lambda step, state, metrics: collected.append(metrics)]
    if on_dispatch is not None:
        actions.append(lambda step, state, metrics: on_dispatch())
    actions.append(_log_points(base, len(points)))
    # The points differ only in sweep_points.VECTORIZABLE_FIELDS, none of which the ELBO reads: one
    # compiled ELBO serves every point (each with its own evaluation stream and splits).
    elbo_fn = evaluators.make_elbo_fn(setups[0].model, base.precision.eval)
    checkpointers = []
    for i, c in enumerate(configs):
        validation = None
        if workdirs is not None and loaded is not None:
            evaluation = evaluators.RunEvaluation(
                c, setups[0].model, streams[i].eval, loaded[i][2], loaded[i][3], elbo_fn=elbo_fn
            )
            validation = evaluation.during_training if evaluation.has_encoder else None
        actions.append(
            hooks.Reporter(
                c,
                timer,
                writer=writers[i],
                progress=None,
                manager=managers[i],
                evaluate=validation,
                select=_point(i),
                name=names[i],
            )
        )
        if workdirs is not None:
            checkpointers.append(hooks.Checkpointer(managers[i], c, select=_point(i)))
    actions += checkpointers

    def on_stop(step: int, state: Any) -> None:
        for ckpt, writer in zip(checkpointers, writers, strict=False):
            ckpt.save_now(step, state)
            writer.close()

    state, _ = loop.train(
        base,
        state,
        dispatch,
        start_step=start_step,
        hooks=actions,
        on_stop=on_stop,
        saved_in=(
            f'{workdir_files.CHECKPOINT_DIR}/ of each point under '
            f'{os.path.commonpath(list(workdirs))}'
            if workdirs
            else ''
        ),
        timer=timer,
    )
    for ckpt, writer in zip(checkpointers, writers, strict=False):
        ckpt.save_now(int(jax.device_get(state.step)[0]), state)
        writer.close()
    metrics = (
        {k: np.concatenate([np.asarray(m[k]) for m in collected], axis=1) for k in collected[0]}
        if collected
        else {}
    )
    params = [_point(i)(state.params) for i in range(len(points))]
    return VectorizedResult(configs, state, params, metrics)


def _log_points(config: ml_collections.ConfigDict, num_points: int) -> loop.Hook:
    """Logs every point's latest training bound every ``log_every_steps``."""

    def hook(step: int, state: Any, metrics: dict[str, np.ndarray]) -> None:
        if step % config.log_every_steps and step != config.num_steps:
            return
        bound = 'elbo' if 'elbo' in metrics else 'objective'
        logging.info(
            'step %d/%d: train %s of the %d points %s',
            step,
            config.num_steps,
            bound,
            num_points,
            np.round(np.asarray(metrics[bound][:, -1]), 2).tolist(),
        )

    return hook


def _placement(num_points: int, devices: Sequence[jax.Device] | None):
    """(place, place_data): put per-point arrays ``[P, ...]`` and the shared training set.

    Per-point arrays are split along the points over ``devices`` when their number divides
    ``num_points``; the shared training set is then copied to each device.
    """
    devices = list(jax.local_devices() if devices is None else devices)
    if len(devices) > 1 and num_points % len(devices) == 0:
        mesh = Mesh(np.array(devices), (parallel.POINTS_AXIS,))
        per_point = NamedSharding(mesh, PartitionSpec(parallel.POINTS_AXIS))
        replicated = NamedSharding(mesh, PartitionSpec())
        logging.info('%d points spread over %d devices', num_points, len(devices))
        return (
            lambda tree: jax.device_put(tree, per_point),
            lambda x: jax.device_put(x, replicated),
        )
    if len(devices) > 1:
        logging.warning(
            '%d points do not split evenly over %d devices: all train on %s',
            num_points,
            len(devices),
            devices[0],
        )
    return (lambda tree: jax.device_put(tree, devices[0]),) * 2
