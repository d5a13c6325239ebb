"""Metrics to TensorBoard and ``metrics.jsonl``; the progress line; finiteness checks."""

from __future__ import annotations

import datetime
import json
import math
import os
import sys
import time
from collections.abc import Callable
from typing import Any

import jax
import numpy as np
from absl import logging


class MetricWriter:
    """Writes scalars to TensorBoard event files and one JSON line per step.

    tensorboardX writes event files without TensorFlow (clu's writer needs TF,
    a 600 MB dependency for one file format).
    """

    def __init__(self, workdir: str, start_step: int = 0):
        """Appends to the workdir's logs of a run resumed at ``start_step``.

        Lines of ``metrics.jsonl`` after ``start_step`` describe steps whose checkpoint
        was lost (a kill after logging them); they are dropped, with a half-written last
        line, because the resumed run logs those steps again.
        """
        from tensorboardX import SummaryWriter  # Deferred: ~0.5 s of imports.

        path = os.path.join(workdir, 'metrics.jsonl')
        trim_jsonl(path, start_step)
        self._tb = SummaryWriter(os.path.join(workdir, 'tensorboard'))
        self._jsonl = open(path, 'a')

    def write(self, step: int, scalars: dict[str, float]) -> None:
        for k, v in scalars.items():
            self._tb.add_scalar(k, v, step)
        self._jsonl.write(
            json.dumps({'step': step, **{k: float(v) for k, v in scalars.items()}}) + '\n'
        )
        self._jsonl.flush()
        self._tb.flush()

    def close(self) -> None:
        self._tb.close()
        self._jsonl.close()


def trim_jsonl(path: str, last_step: int) -> None:
    """Keeps the lines of ``path`` whose ``step`` is at most ``last_step`` (atomically)."""
    if not os.path.exists(path):
        return
    with open(path) as f:
        lines = f.read().splitlines(keepends=True)
    kept = []
    for line in lines:
        try:
            record = json.loads(line)
        except ValueError:
            continue  # Half a line: the process was killed while writing it.
        if line.endswith('\n') and isinstance(record, dict) and record.get('step', 0) <= last_step:
            kept.append(line)
    if len(kept) == len(lines):
        return
    logging.info(
        'resuming at step %d: dropped %d lines of %s logged after it',
        last_step,
        len(lines) - len(kept),
        path,
    )
    tmp = f'{path}.tmp'
    with open(tmp, 'w') as f:
        f.writelines(kept)
    os.replace(tmp, path)


class Progress:
    """Step, ELBO, steps/s and ETA: a self-rewriting line on a terminal, log lines otherwise."""

    def __init__(self, total: int, start: int, stream=None):
        self._total = total
        self._stream = stream or sys.stderr
        self._tty = hasattr(self._stream, 'isatty') and self._stream.isatty()
        self._t0 = time.perf_counter()
        self._start = start

    def update(self, step: int, elbo: float, steps_per_sec: float) -> None:
        if not math.isfinite(steps_per_sec) or steps_per_sec <= 0:
            elapsed = time.perf_counter() - self._t0
            steps_per_sec = (step - self._start) / elapsed if elapsed > 0 else float('nan')
        eta = (
            (self._total - step) / steps_per_sec
            if math.isfinite(steps_per_sec) and steps_per_sec > 0
            else float('nan')
        )
        eta_text = str(datetime.timedelta(seconds=round(eta))) if math.isfinite(eta) else '?'
        width = len(str(self._total))
        line = (
            f'step {step:>{width}}/{self._total} | elbo {elbo:9.3f} | '
            f'{steps_per_sec:8.1f} steps/s | ETA {eta_text}'
        )
        if self._tty:
            self._stream.write('\r' + line)
            self._stream.flush()
        else:
            logging.info(line)

    def close(self) -> None:
        if self._tty:
            self._stream.write('\n')
            self._stream.flush()


class Countdown:
    """Progress of a long pass (an evaluation over batches): done/total, elapsed, ETA.

    Logs ``label: i/n batches | elapsed 0:01:02 | ETA 0:02:10`` at most every
    ``every_seconds`` and once at the end, so that a three-minute importance-sampling
    pass is not silent; a pass shorter than ``every_seconds`` logs nothing.
    """

    def __init__(
        self,
        label: str,
        total: int,
        every_seconds: float = 10.0,
        clock: Callable[[], float] = time.perf_counter,
        log: Callable[..., None] = logging.info,
    ):
        self._label, self._total, self._every, self._clock = label, total, every_seconds, clock
        self._log = log
        self._t0 = self._last = clock()

    def update(self, done: int) -> None:
        now = self._clock()
        elapsed = now - self._t0
        if now - self._last < self._every and not (done == self._total and elapsed >= self._every):
            return
        self._last = now
        eta = elapsed / done * (self._total - done) if done else float('nan')
        self._log(
            '%s: %d/%d batches | elapsed %s | ETA %s',
            self._label,
            done,
            self._total,
            _duration(elapsed),
            _duration(eta),
        )


def _duration(seconds: float) -> str:
    return str(datetime.timedelta(seconds=round(seconds))) if math.isfinite(seconds) else '?'


class NonFiniteError(FloatingPointError):
    """Training produced a NaN or infinity; the message names the step and the term."""


# Named first when several terms are non-finite at the same step.
_TERMS = ('reconstruction', 'kl', 'objective', 'elbo', 'grad_norm')


def check_finite(
    metrics: dict[str, Any], step: int, manager: Any, *, name: str | None = None
) -> None:
    """Raises NonFiniteError at the first step with a non-finite metric.

    The message names that step, every term that is non-finite at it (reconstruction,
    kl, grad_norm, ...) and the last checkpoint saved, which holds only finite values.

    Args:
      metrics: per-step arrays ``[n]`` (or scalars) for the n steps ending at ``step``.
      manager: the run's orbax ``CheckpointManager`` (``latest_step``, ``directory``); None
        where no checkpoints are kept (the processes other than 0 of a multi-host run,
        a vectorised sweep without workdirs).
      name: the sweep point the metrics belong to, named first in the message.
    """
    found: dict[int, list[str]] = {}
    names = [k for k in _TERMS if k in metrics] + sorted(k for k in metrics if k not in _TERMS)
    for term in names:
        values = np.atleast_1d(np.asarray(metrics[term]))
        if not np.issubdtype(values.dtype, np.inexact):
            continue
        for i in np.flatnonzero(~np.isfinite(values)):
            bad_step = step - values.size + int(i) + 1
            found.setdefault(bad_step, []).append(f'{term} ({values[i]})')
    if not found:
        return
    bad_step = min(found)
    last = None
    if manager is None:
        where = 'none kept here' if jax.process_index() == 0 else "see process 0's log"
    else:
        last = manager.latest_step()
        where = (
            f'step {last} in {manager.directory}'
            if last is not None
            else 'none, the run had not saved one yet'
        )
    raise NonFiniteError(
        f'{f"point {name}: " if name else ""}non-finite {", ".join(found[bad_step])} at '
        f'step {bad_step}; training stopped and '
        f'nothing after step {last or 0} was saved (last good checkpoint: {where}). Check the '
        'data, lower --config.optimizer.learning_rate or set '
        '--config.optimizer.grad_clip_norm, or set --config.nonfinite=skip to skip such '
        'steps.'
    )
