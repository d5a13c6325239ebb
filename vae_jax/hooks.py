"""The periodic work of training, as hooks called after each dispatch of ``loop.train``.

A hook is ``hook(step, state, metrics)`` (``loop.Hook``; clu's periodic actions are the
pattern): :class:`Reporter` (the non-finite check, the window's training metrics, the
validation ELBO, the progress line), :class:`Checkpointer`, :class:`Periodic` (e.g.
pictures). Each looks at one run: ``select`` picks its part of the loop's state and
metrics (a sweep point's slice, host copies of replicated arrays).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import ml_collections
import numpy as np
from absl import logging

from vae_jax import checkpointing, reporting
from vae_jax.loop import Timer


def _identity(tree: Any) -> Any:
    return tree


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


class Reporter:
    """One run's training metrics: checked after every dispatch, logged every window.

    After each dispatch: with ``config.nonfinite='stop'``, a non-finite metric raises
    ``reporting.NonFiniteError`` (naming ``name``, the sweep point, when given). Every
    ``log_every_steps`` and at the last step: the window's means as ``train_*``, the
    rate, and ``evaluate(params)``'s scalars (validation ELBO) every ``eval_every_steps``,
    to ``writer`` and ``progress`` (either may be None: other processes, sweeps).

    Args:
      select: this run's part of the loop's state and metrics (a sweep point's slice;
        host copies of replicated arrays).
    """

    def __init__(
        self,
        config: ml_collections.ConfigDict,
        timer: Timer,
        *,
        writer: reporting.MetricWriter | None,
        progress: reporting.Progress | None,
        manager: Any,
        evaluate: Callable[[Any], dict[str, float]] | None = None,
        select: Callable[[Any], Any] = _identity,
        name: str | None = None,
    ):
        self._config, self._timer, self._writer, self._progress = config, timer, writer, progress
        self._manager, self._evaluate, self._select, self._name = manager, evaluate, select, name
        self._pending: list[dict[str, np.ndarray]] = []

    def __call__(self, step: int, state: Any, metrics: dict[str, np.ndarray]) -> None:
        config = self._config
        metrics = self._select(metrics)
        self._pending.append(metrics)
        if config.nonfinite != 'skip':  # 'skip' kept the state of every non-finite step.
            reporting.check_finite(metrics, step, self._manager, name=self._name)
        if step % config.log_every_steps and step != config.num_steps:
            return
        merged = merge_metrics(self._pending)
        self._pending = []
        if merged.get('skipped_steps'):
            logging.warning(
                '%sskipped %d steps up to step %d: non-finite loss, gradient or '
                'parameters (config.nonfinite=skip)',
                f'{self._name}: ' if self._name else '',
                merged['skipped_steps'],
                step,
            )
        rate = self._timer.steps_per_sec
        scalars = {f'train_{k}': v for k, v in merged.items()}
        if math.isfinite(rate):  # Unknown until a dispatch after compilation.
            scalars['steps_per_sec'] = rate
        if self._evaluate and config.eval_every_steps and step % config.eval_every_steps == 0:
            scalars.update(self._evaluate(self._select(state).params))
        if self._writer is not None:
            self._writer.write(step, scalars)
        if self._progress is not None:
            self._progress.update(
                step, merged.get('elbo', merged.get('objective', float('nan'))), rate
            )

    def close(self) -> None:
        if self._progress is not None:
            self._progress.close()


class Checkpointer:
    """Saves ``select(state)`` every ``checkpoint_every_steps`` and at the last step."""

    def __init__(
        self,
        manager: Any,
        config: ml_collections.ConfigDict,
        select: Callable[[Any], Any] = _identity,
    ):
        self.manager, self._config, self._select = manager, config, select

    def __call__(self, step: int, state: Any, metrics: Any = None) -> None:
        if step % self._config.checkpoint_every_steps == 0 or step == self._config.num_steps:
            checkpointing.save(self.manager, step, self._select(state))

    def save_now(self, step: int, state: Any) -> None:
        checkpointing.save(self.manager, step, self._select(state))
        checkpointing.wait(self.manager)


class Periodic:
    """Calls ``fn(step, select(state))`` every ``every`` steps (never when ``every`` is 0)."""

    def __init__(self, every: int, fn: Callable[[int, Any], None], select=_identity):
        self._every, self._fn, self._select = every, fn, select

    def __call__(self, step: int, state: Any, metrics: Any = None) -> None:
        if self._every and step % self._every == 0:
            self._fn(step, self._select(state))
