"""The training loop, written once for single runs, data-parallel runs and vectorised sweeps.

One compiled ``lax.scan`` over steps (:func:`make_multi_step`) is fed by one batch source:
:class:`DeviceBatches` (the training set resident on the device, each batch gathered by
index inside the scan) or :class:`HostBatches` (batches gathered on the host and sent in
chunks; data-parallel runs send each process's rows of the global batch). :func:`train`
runs it from step to step at which the host must act and calls the periodic work
after each dispatch as hooks (:mod:`vae_jax.hooks`: logs, validation ELBO, the
non-finite check, checkpoints, pictures); a stop signal saves a checkpoint and raises
:class:`TrainingInterrupted`. Callers: ``train.train_and_evaluate``
(one run, on one device or data-parallel) and ``vectorized.train_vectorized`` (P points
at once, whose hooks look at one point each).

  dispatch = loop.dispatcher(jax.jit(loop.make_multi_step(step, source.gather)), source, key)
  state, timer = loop.train(config, state, dispatch, start_step=0, hooks=[...], on_stop=save)
"""

from __future__ import annotations

import queue
import signal
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging

from vae_jax import parallel

Hook = Callable[[int, Any, dict[str, np.ndarray]], None]  # (step, state, metrics) -> None


class TrainingInterrupted(Exception):  # noqa: N818 (not an error: the run stopped on request)
    """SIGTERM or SIGINT stopped training after a checkpoint at ``step`` was saved.

    ``exit_code`` is the shell's convention for a process ended by that signal,
    128 + the signal number: 143 for SIGTERM, 130 for SIGINT.
    """

    def __init__(self, signum: int, step: int, saved_in: str):
        """``saved_in``: where the checkpoints of ``step`` went ('' if nowhere)."""
        self.signum, self.step, self.saved_in = signum, step, saved_in
        self.exit_code = 128 + signum
        super().__init__(
            f'{signal.Signals(signum).name} at step {step}: '
            + (
                f'saved a checkpoint at step {step} in {saved_in}; rerun the same command to '
                'resume.'
                if saved_in
                else 'nothing was saved (no workdir).'
            )
        )


class StopSignals:
    """While active, SIGTERM and SIGINT set ``signum`` instead of ending the process.

    The loop polls ``signum`` between dispatches. A second signal raises
    KeyboardInterrupt at once. The previous handlers come back on exit. Handlers can
    only be installed from the main thread; elsewhere signals keep their defaults.
    """

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __enter__(self) -> StopSignals:
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


# --------------------------------------------------------------------------- batches


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


class DeviceBatches:
    """The training set ``[N, ...]`` resident on the device; the scan gathers each batch.

    One transfer of ``[n, M]`` indices per dispatch; the fastest source when the data fit.
    """

    def __init__(
        self, train: np.ndarray, seed: int, batch_size: int, put: Callable = jax.device_put
    ):
        self.data = put(train)
        self._seed, self._num_train = seed, train.shape[0]
        self._batch_size, self._put = batch_size, put

    @staticmethod
    def gather(data: jax.Array, idx: jax.Array) -> tuple[jax.Array, jax.Array]:
        return jnp.take(data, idx, axis=0), idx

    def chunks(self, start: int, stop: int) -> Iterator[jax.Array]:
        idx = batch_indices(self._seed, self._num_train, self._batch_size, start, stop - start)
        yield self._put(idx)


class HostBatches:
    """Batches gathered on the host and sent to the device in chunks, one chunk ahead.

    For training sets too large for the device and for data-parallel runs (each process
    gathers its rows of the global batch; ``put`` assembles them). A dispatch of n steps
    is sent in chunks of at most ``chunk_bytes`` of examples, so host memory stays bounded
    whatever ``steps_per_dispatch`` is; the next chunk is gathered and sent from a
    background thread while the device trains on the current one.

    Args:
      with_indices: also send the batches' example indices (MCEM reads them).
    """

    data = None  # The scan's inputs are the batches themselves.

    def __init__(
        self,
        train: np.ndarray,
        seed: int,
        batch_size: int,
        put: Callable = jax.device_put,
        *,
        with_indices: bool = True,
        chunk_bytes: int = 64 * 2**20,
    ):
        self._train, self._seed, self._batch_size, self._put = train, seed, batch_size, put
        self._with_indices = with_indices
        self._chunk_steps = max(1, chunk_bytes // max(1, batch_size * train[0].nbytes))

    @staticmethod
    def gather(data: None, inputs: tuple[jax.Array, Any]) -> tuple[jax.Array, Any]:
        del data
        return inputs

    def chunks(self, start: int, stop: int) -> Iterator[Any]:
        def host():
            for s in range(start, stop, self._chunk_steps):
                count = min(self._chunk_steps, stop - s)
                idx = batch_indices(self._seed, self._train.shape[0], self._batch_size, s, count)
                yield self._put((self._train[idx], idx if self._with_indices else None))

        return _prefetch(host())


def _prefetch(items: Iterator[Any], size: int = 1) -> Iterator[Any]:
    """Runs ``items`` (host work and transfers) in a background thread, ``size`` ahead."""
    q: queue.Queue = queue.Queue(maxsize=size)
    done = object()
    failed: list[BaseException] = []

    def worker():
        try:
            for item in items:
                q.put(item)
        except BaseException as e:  # Re-raised in the consumer's thread.
            failed.append(e)
        q.put(done)

    threading.Thread(target=worker, daemon=True).start()
    while (item := q.get()) is not done:
        yield item
    if failed:
        raise failed[0]


# --------------------------------------------------------------------------- the scan


def make_multi_step(step: Callable, gather: Callable = DeviceBatches.gather) -> Callable:
    """``multi(state, data, inputs, key_data) -> (state, metrics [n])``: n steps, one scan.

    ``step(state, x, key, idx) -> (state, metrics)`` is one training step
    (``train.make_train_step``); ``gather(data, inputs[i]) -> (x, idx)`` makes step i's
    batch from the source's ``data`` and its scan inputs (see the batch sources);
    ``key_data`` is ``jax.random.key_data`` of the run's training stream, an ordinary
    array so that it can be replicated or stacked like any other.
    """

    def multi_step(state, data, inputs, key_data):
        key = jax.random.wrap_key_data(key_data)

        def body(state, inp):
            x, idx = gather(data, inp)
            return step(state, x, key, idx)

        return jax.lax.scan(body, state, inputs)

    return multi_step


def dispatcher(multi: Callable, source: Any, *args: Any, fetch: Callable = jax.device_get):
    """``dispatch(state, start, stop) -> (state, metrics)``: steps [start, stop) on the device.

    ``multi`` is the jitted scan, called on each of the source's chunks as
    ``multi(state, source.data, chunk, *args)``; the metrics come back to the host
    (``fetch``), per step along their last axis.
    """

    def dispatch(state, start: int, stop: int):
        parts = []
        for chunk in source.chunks(start, stop):
            state, metrics = multi(state, source.data, chunk, *args)
            parts.append(metrics)
        parts = [fetch(m) for m in parts]
        if len(parts) == 1:
            return state, parts[0]
        return state, jax.tree.map(lambda *v: np.concatenate(v, axis=-1), *parts)

    return dispatch


# --------------------------------------------------------------------------- the loop


def _boundaries(config: ml_collections.ConfigDict) -> tuple[int, ...]:
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


def next_stop(step: int, config: ml_collections.ConfigDict) -> int:
    """The next step at which the host must act: dispatch sizes depend only on the step."""
    stop = min(config.num_steps, step + config.steps_per_dispatch)
    for every in _boundaries(config):
        stop = min(stop, (step // every + 1) * every)
    return stop


class Timer:
    """Training time and steps after the first dispatch (which includes compilation)."""

    def __init__(self):
        self.seconds, self.steps = 0.0, 0

    @property
    def steps_per_sec(self) -> float:
        return self.steps / self.seconds if self.seconds else float('nan')


def train(
    config: ml_collections.ConfigDict,
    state: Any,
    dispatch: Callable,
    *,
    start_step: int,
    hooks: Sequence[Hook],
    on_stop: Callable[[int, Any], None],
    saved_in: str,
    timer: Timer | None = None,
) -> tuple[Any, Timer]:
    """Trains from ``start_step`` to ``config.num_steps``, calling ``hooks`` after each dispatch.

    Args:
      dispatch: from :func:`dispatcher`.
      hooks: ``hook(step, state, metrics)`` in order after each dispatch; ``metrics`` are
        the dispatch's per-step metrics on the host. A hook's ``close()``, where it has
        one, is called when the loop ends, however it ends.
      on_stop: ``on_stop(step, state)`` saves a checkpoint when a stop signal arrives;
        then :class:`TrainingInterrupted` is raised, naming ``saved_in``, where it went.
      timer: where the training time is counted (hooks may read it).

    Returns:
      The final state and the timer.
    """
    timer = timer or Timer()
    step = start_step
    try:
        with StopSignals() as signals:
            while True:
                # With several processes all must stop at the same step: they agree here.
                if parallel.any_process(signals.signum is not None):
                    signum = signals.signum or signal.SIGTERM  # Another process was signalled.
                    # Between dispatches the state is that of `step` (hooks checked it).
                    logging.warning(
                        '%s received: saving a checkpoint at step %d and stopping',
                        signal.Signals(signum).name,
                        step,
                    )
                    on_stop(step, state)
                    raise TrainingInterrupted(signum, step, saved_in)
                if step >= config.num_steps:
                    return state, timer
                stop = next_stop(step, config)
                t0 = time.perf_counter()
                state, metrics = dispatch(state, step, stop)
                if step > start_step:  # The first dispatch includes compilation.
                    timer.seconds += time.perf_counter() - t0
                    timer.steps += stop - step
                step = stop
                for hook in hooks:
                    hook(step, state, metrics)
    finally:
        for hook in hooks:
            getattr(hook, 'close', lambda: None)()
