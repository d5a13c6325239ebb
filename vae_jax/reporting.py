"""Metrics to TensorBoard and ``metrics.jsonl``; the progress line; finiteness checks."""

from __future__ import annotations

import datetime
import json
import math
import os
import sys
import time
from typing import Any

import numpy as np
from absl import logging


class MetricWriter:
    """Writes scalars to TensorBoard event files and one JSON line per step.

    tensorboardX writes event files without TensorFlow (clu's writer needs TF,
    a 600 MB dependency for one file format).
    """

    def __init__(self, workdir: str):
        from tensorboardX import SummaryWriter  # Deferred: ~0.5 s of imports.

        self._tb = SummaryWriter(os.path.join(workdir, 'tensorboard'))
        self._jsonl = open(os.path.join(workdir, 'metrics.jsonl'), 'a')

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


class NonFiniteError(FloatingPointError):
    """Training produced a NaN or infinity; the message names the step and the term."""


def check_finite(metrics: dict[str, Any], step: int, manager: Any) -> None:
    """Raises NonFiniteError naming the first non-finite term and the last checkpoint.

    Args:
      metrics: per-step arrays ``[n]`` (or scalars) for the steps ending at ``step``.
    """
    for name in ('reconstruction', 'kl', 'objective', 'grad_norm'):
        if name not in metrics:
            continue
        values = np.atleast_1d(np.asarray(metrics[name]))
        bad = np.flatnonzero(~np.isfinite(values))
        if bad.size:
            bad_step = step - values.size + int(bad[0]) + 1
            last = manager.latest_step()
            raise NonFiniteError(
                f'non-finite {name} ({values[bad[0]]}) at step {bad_step}; nothing after step '
                f'{last} was saved (last good checkpoint: {last}). Lower '
                '--config.optimizer.learning_rate or set --config.optimizer.grad_clip_norm.'
            )
