"""Checkpoints (orbax) and the run's resolved config in the workdir."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from typing import Any

import jax
import ml_collections
import orbax.checkpoint as ocp
from absl import logging

CONFIG_FILE = 'config.json'
# Fields that may change when a run is resumed: they change how long or how
# verbosely it runs, not what it computes up to the step it stopped at.
RESUME_SAFE_FIELDS = frozenset(
    {
        'num_steps',
        'log_every_steps',
        'eval_every_steps',
        'eval_test_during_training',
        'checkpoint_every_steps',
        'keep_checkpoints',
        'image_every_steps',
        'eval_batch_size',
        'eval_num_importance_samples',
        'eval_chunk_size',
        'data_dir',
        'data_placement',
        'device_data_max_mb',
    }
)


class WorkdirConflictError(ValueError):
    """The workdir holds a run with a different config."""


def _flatten(d: dict, prefix: str = '') -> dict[str, Any]:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f'{prefix}{k}.'))
        else:
            out[f'{prefix}{k}'] = list(v) if isinstance(v, tuple) else v
    return out


def config_to_dict(config: ml_collections.ConfigDict) -> dict[str, Any]:
    return json.loads(config.to_json())


def write_or_check_config(config: ml_collections.ConfigDict, workdir: str) -> None:
    """Writes ``config.json``; refuses a workdir whose run used a different config.

    Only ``RESUME_SAFE_FIELDS`` may differ from the stored config; the file is
    then rewritten with the new values.
    """
    path = os.path.join(workdir, CONFIG_FILE)
    new = config_to_dict(config)
    if os.path.exists(path):
        with open(path) as f:
            old = json.load(f)
        old_flat, new_flat = _flatten(old), _flatten(new)
        changed = sorted(
            k
            for k in set(old_flat) | set(new_flat)
            if old_flat.get(k) != new_flat.get(k) and k not in RESUME_SAFE_FIELDS
        )
        if changed:
            diffs = '; '.join(f'{k}: {old_flat.get(k)!r} -> {new_flat.get(k)!r}' for k in changed)
            raise WorkdirConflictError(
                f'{workdir} holds a run with a different config ({diffs}). Use a new --workdir, '
                'or restore those values to resume.'
            )
    with open(path, 'w') as f:
        json.dump(new, f, indent=2, sort_keys=True)


def read_config(workdir: str) -> ml_collections.ConfigDict:
    path = os.path.join(workdir, CONFIG_FILE)
    if not os.path.exists(path):
        raise FileNotFoundError(f'no {CONFIG_FILE} in {workdir}: is it the --workdir of a run?')
    with open(path) as f:
        return ml_collections.ConfigDict(json.load(f))


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """orbax logs a dozen INFO lines per save; keep the training log readable."""
    level = logging.get_verbosity()
    logging.set_verbosity(min(level, logging.WARNING))  # absl: larger is more verbose.
    try:
        yield
    finally:
        logging.set_verbosity(level)


def manager(workdir: str, keep: int) -> ocp.CheckpointManager:
    # Synchronous saves: checkpoints are small and a save must be complete
    # before the step after it can be trusted to resume from.
    with _quiet():
        return ocp.CheckpointManager(
            os.path.abspath(os.path.join(workdir, 'checkpoints')),
            options=ocp.CheckpointManagerOptions(
                max_to_keep=keep, create=True, enable_async_checkpointing=False
            ),
        )


def save(mngr: ocp.CheckpointManager, step: int, state: Any) -> None:
    if mngr.latest_step() == step:
        return
    with _quiet():
        mngr.save(step, args=ocp.args.StandardSave(state))


def restore_latest(mngr: ocp.CheckpointManager, state: Any, workdir: str) -> Any:
    """The latest checkpoint restored into the structure of ``state``, or ``state``."""
    step = mngr.latest_step()
    if step is None:
        return state
    target = jax.tree.map(ocp.utils.to_shape_dtype_struct, state)
    try:
        with _quiet():
            return mngr.restore(step, args=ocp.args.StandardRestore(target))
    except (ValueError, KeyError) as e:
        raise ValueError(
            f"the checkpoint at step {step} in {workdir} does not match this config's model "
            f'({e}). Use a new --workdir for a different model.'
        ) from e


def restore_from_workdir(workdir: str, state: Any) -> Any:
    """Latest checkpointed state of the run in ``workdir`` (for sampling and evaluation)."""
    mngr = manager(workdir, keep=1000)
    if mngr.latest_step() is None:
        raise FileNotFoundError(f'no checkpoint in {workdir}/checkpoints: has the run started?')
    logging.info('loading checkpoint %d from %s', mngr.latest_step(), workdir)
    return restore_latest(mngr, state, workdir)


def wait(mngr: ocp.CheckpointManager) -> None:
    with _quiet():
        mngr.wait_until_finished()
