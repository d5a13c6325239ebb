"""A run's workdir: what it holds, the config recorded there, moving a run aside.

``CONFIG_FILE`` records the resolved config of the run; a rerun on the workdir resumes
only if its config equals it but for ``RESUME_SAFE_FIELDS`` (``write_or_check_config``).
The checkpoints themselves (orbax, with digests and fallback) are
:mod:`vae_jax.checkpointing`'s.
"""

from __future__ import annotations

import datetime
import json
import os
import shutil
from typing import Any

import ml_collections
from absl import logging

CONFIG_FILE = 'config.json'
CHECKPOINT_DIR = 'checkpoints'
# Unreadable checkpoints that a run fell back past are moved here, not deleted.
QUARANTINE_DIR = 'checkpoints.corrupt'
# What a run writes into its workdir; `move_run_aside` (--restart) moves all of it.
RUN_FILES = (
    CONFIG_FILE,
    CHECKPOINT_DIR,
    QUARANTINE_DIR,
    'metrics.jsonl',
    'tensorboard',
    'results.json',
    'samples.png',
    'reconstructions.png',
    'images',
)
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
        'eval_max_examples',
        'eval_ais_steps',
        'eval_ais_chains',
        'precision.eval',
        'data_dir',
        'data_placement',
        'device_data_max_mb',
        # Where the work runs: on one process, not what it computes (equal to float
        # tolerance); with several, the data order depends on the process count
        # (vae_jax/parallel.py), as docs/scale.md ("Several hosts") says.
        'data_parallel',
        # What a NaN or infinity does (stop or skip that step): nothing before it changes.
        'nonfinite',
    }
)


class WorkdirConflictError(ValueError):
    """The workdir holds a run with a different config."""


class TrainedPastError(WorkdirConflictError):
    """A run asked for fewer steps than its workdir's latest checkpoint."""

    def __init__(self, workdir: str, latest: int, num_steps: int):
        super().__init__(
            f'{workdir} is trained to step {latest}, past num_steps={num_steps}: resuming '
            f'would evaluate the step-{latest} model as if it were the step-{num_steps} '
            'one. Use a new workdir, --restart (main), or num_steps >= the trained steps.'
        )
        self.workdir, self.latest, self.num_steps = workdir, latest, num_steps


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
    then rewritten with the new values. A workdir without a checkpoint has nothing to
    resume, so its stored config is replaced (with a warning): a start that failed before
    its first checkpoint never locks the workdir.
    """
    path = os.path.join(workdir, CONFIG_FILE)
    new = config_to_dict(config)
    old = None
    if os.path.exists(path):
        try:
            old = _load_json(path)
        except CorruptConfigError as e:
            if _has_checkpoint(workdir):
                raise
            # Nothing to resume: the new config replaces it.
            logging.warning('%s; replacing it (the workdir holds no checkpoint)', e)
    if old is not None:
        old_flat, new_flat = _flatten(old), _flatten(new)
        changed = sorted(
            k
            for k in set(old_flat) | set(new_flat)
            if old_flat.get(k) != new_flat.get(k) and k not in RESUME_SAFE_FIELDS
        )
        if changed and not _has_checkpoint(workdir):
            logging.warning(
                '%s holds no checkpoint: replacing its stored config (%s differed)',
                workdir,
                ', '.join(changed),
            )
        elif changed:
            diffs = '; '.join(
                f'{k}: {old_flat[k]!r} -> {new_flat.get(k)!r}'
                if k in old_flat
                else f'{k}: absent -> {new_flat.get(k)!r}'
                for k in changed
            )
            hint = (
                ' (a field absent from the stored config means an earlier version of vae_jax '
                'wrote it; this version resumes only its own runs)'
                if any(k not in old_flat for k in changed)
                else ''
            )
            raise WorkdirConflictError(
                f'{workdir} holds a run with a different config ({diffs}){hint}. Use a new '
                '--workdir, or restore those values to resume.'
            )
    write_atomically(path, json.dumps(new, indent=2, sort_keys=True))


def _has_checkpoint(workdir: str) -> bool:
    """Whether ``workdir`` holds a checkpoint step folder (usable or not)."""
    folder = os.path.join(workdir, CHECKPOINT_DIR)
    return os.path.isdir(folder) and any(name.isdigit() for name in os.listdir(folder))


def write_atomically(path: str, text: str) -> None:
    """A kill at any moment leaves either the old file or the new one, never half of one."""
    tmp = f'{path}.tmp'
    with open(tmp, 'w') as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


class CorruptConfigError(WorkdirConflictError):
    """The workdir's ``config.json`` is not a config that vae_jax wrote."""


def _load_json(path: str) -> dict[str, Any]:
    """``config.json`` as a dict; CorruptConfigError where it is not JSON of an object."""
    try:
        with open(path) as f:
            value = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        value, why = None, f'not JSON: {e}'
    else:
        why = f'a JSON {type(value).__name__}, not an object'
    if not isinstance(value, dict):
        raise CorruptConfigError(
            f'{path} is not a config vae_jax wrote ({why}); restore it from a copy, or start '
            'over with --restart (main) or a new --workdir'
        )
    return value


def read_config(workdir: str) -> ml_collections.ConfigDict:
    path = os.path.join(workdir, CONFIG_FILE)
    if not os.path.exists(path):
        raise FileNotFoundError(f'no {CONFIG_FILE} in {workdir}: is it the --workdir of a run?')
    return ml_collections.ConfigDict(_load_json(path))


def stamp() -> str:
    """The UTC time, for the names of folders moved aside."""
    return datetime.datetime.now(datetime.UTC).strftime('%Y%m%dT%H%M%S%fZ')


def move_run_aside(workdir: str) -> str | None:
    """``--restart``: moves what a run wrote (``RUN_FILES``) into ``workdir/previous-<time>``.

    Returns:
      The folder they went to, or None when the workdir held no run.
    """
    present = [n for n in RUN_FILES if os.path.exists(os.path.join(workdir, n))]
    if not present:
        return None
    dest = os.path.join(workdir, f'previous-{stamp()}')
    os.makedirs(dest)
    for name in present:
        shutil.move(os.path.join(workdir, name), os.path.join(dest, name))
    logging.warning('--restart: moved %s from %s into %s', ', '.join(present), workdir, dest)
    return dest
