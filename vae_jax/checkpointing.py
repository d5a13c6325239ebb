"""Checkpoints (orbax) in ``workdir/checkpoints``, checked on save and on restore.

Integrity: every checkpoint saved here is finite (``save`` refuses anything else) and
carries the size and SHA-256 of each of its files (``DIGEST_FILE`` in the step's
folder). ``restore`` tries the latest step first and falls back to older ones when a
checkpoint's files changed since the save (truncated, overwritten, missing), when orbax
cannot read it, or when it holds a NaN or infinity,
warning with both steps; if none is usable it raises ``CorruptCheckpointError`` and
leaves the workdir alone until the user passes ``--restart``
(``workdir_files.move_run_aside``). The workdir's layout and its recorded config are
:mod:`vae_jax.workdir_files`'s.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
from collections.abc import Iterator
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from absl import logging

from vae_jax import reporting, workdir_files

# Written into each checkpoint's step folder after orbax has finished it (so orbax's own
# clean-up of old steps removes it too): the size and SHA-256 of every file orbax wrote.
DIGEST_FILE = 'vae_jax_digest.json'


class CheckpointMismatchError(workdir_files.WorkdirConflictError):
    """A checkpoint's arrays do not have the shapes this config and data make."""


class CorruptCheckpointError(workdir_files.WorkdirConflictError):
    """No checkpoint in the workdir can be restored; ``--restart`` starts the run over."""


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """orbax logs a dozen INFO lines per save; keep the training log readable."""
    level = logging.get_verbosity()
    logging.set_verbosity(min(level, logging.WARNING))  # absl: larger is more verbose.
    try:
        yield
    finally:
        logging.set_verbosity(level)


def manager(workdir: str, keep: int, *, read_only: bool = False) -> ocp.CheckpointManager:
    """The run's orbax manager; ``read_only`` neither creates nor cleans the folder."""
    # Synchronous saves: checkpoints are small and a save must be complete
    # before the step after it can be trusted to resume from. Folders of saves cut
    # short by a kill (orbax's *.orbax-checkpoint-tmp-*) are removed on start.
    # The handler is named so that `item_metadata` can read a checkpoint's shapes
    # before anything was saved or restored with this manager.
    directory = os.path.abspath(os.path.join(workdir, workdir_files.CHECKPOINT_DIR))
    multiprocess = {}
    if jax.process_count() > 1:
        # Multi-host runs keep replicated state: process 0 alone saves and restores it
        # (vae_jax/train.py), so orbax must not wait for the other processes.
        if not read_only:
            os.makedirs(directory, exist_ok=True)  # orbax cannot create it in this mode.
        multiprocess['multiprocessing_options'] = ocp.options.MultiprocessingOptions(
            primary_host=jax.process_index(), active_processes={jax.process_index()}
        )
    with _quiet():
        return ocp.CheckpointManager(
            directory,
            item_handlers=ocp.StandardCheckpointHandler(),
            options=ocp.CheckpointManagerOptions(
                max_to_keep=keep,
                create=not read_only and not multiprocess,
                enable_async_checkpointing=False,
                cleanup_tmp_directories=not read_only,
                **multiprocess,
            ),
        )


def _leaves_with_paths(tree: Any) -> list[tuple[str, Any]]:
    """``[(path, leaf)]`` with paths like ``params/encoder/hidden_0/kernel``."""

    def name(key) -> str:
        for attr in ('key', 'name', 'idx'):
            if hasattr(key, attr):
                return str(getattr(key, attr))
        return str(key)

    flat, _ = jax.tree_util.tree_flatten_with_path(tree)
    return [('/'.join(name(k) for k in path), leaf) for path, leaf in flat]


def _host(leaf: Any) -> np.ndarray:
    if isinstance(leaf, jax.Array) and jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):
        leaf = jax.random.key_data(leaf)
    return np.asarray(leaf)


def file_digests(step_dir: str) -> dict[str, list]:
    """``{relative path: [size, sha256]}`` of the files of a checkpoint's step folder."""
    out = {}
    for root, _, files in os.walk(step_dir):
        for name in files:
            path = os.path.join(root, name)
            rel = os.path.relpath(path, step_dir)
            if rel == DIGEST_FILE:
                continue
            h = hashlib.sha256()
            with open(path, 'rb') as f:
                while chunk := f.read(1 << 20):
                    h.update(chunk)
            out[rel] = [os.path.getsize(path), h.hexdigest()]
    return out


def _damage(step_dir: str) -> str | None:
    """How the files of a step folder differ from those saved, or None.

    None too for a checkpoint without ``DIGEST_FILE`` (saved before digests existed, or
    killed between orbax's save and the digest): orbax's restore is its only check.
    """
    path = os.path.join(step_dir, DIGEST_FILE)
    if not os.path.exists(path):
        return None
    try:
        with open(path) as f:
            want = json.load(f)['files']
    except (OSError, ValueError, KeyError, TypeError) as e:
        return f'unreadable {DIGEST_FILE} ({e})'
    have = file_digests(step_dir)
    problems = []
    for rel, (size, sha) in sorted(want.items()):
        if rel not in have:
            problems.append(f'{rel} is missing')
        elif have[rel][0] != size:
            problems.append(f'{rel} has {have[rel][0]} bytes, {size} when saved')
        elif have[rel][1] != sha:
            problems.append(f'{rel} changed since it was saved')
    if not problems:
        return None
    more = f' and {len(problems) - 2} more' if len(problems) > 2 else ''
    return 'damaged files: ' + '; '.join(problems[:2]) + more


def nonfinite_leaves(state: Any) -> list[str]:
    """Paths of the floating-point arrays of ``state`` that hold a NaN or infinity."""
    bad = []
    for path, leaf in _leaves_with_paths(state):
        a = _host(leaf)
        if np.issubdtype(a.dtype, np.inexact) and not np.all(np.isfinite(a)):
            bad.append(path)
    return bad


def _step_dir(mngr: ocp.CheckpointManager, step: int) -> str:
    return os.path.join(os.fspath(mngr.directory), str(step))


def save(mngr: ocp.CheckpointManager, step: int, state: Any) -> None:
    """Saves ``state`` at ``step`` (once) with its digest; refuses non-finite arrays.

    Raises:
      reporting.NonFiniteError: ``state`` holds a NaN or infinity; nothing is written.
    """
    if mngr.latest_step() == step:
        return
    bad = nonfinite_leaves(state)
    if bad:
        last = mngr.latest_step()
        raise reporting.NonFiniteError(
            f'refusing to save a checkpoint at step {step}: {", ".join(bad[:3])} '
            f'hold NaN or infinity (last good checkpoint: '
            f'{"none" if last is None else f"step {last}"}). Lower '
            '--config.optimizer.learning_rate, set --config.optimizer.grad_clip_norm, or '
            'set --config.nonfinite=skip.'
        )
    with _quiet():
        saved = mngr.save(step, args=ocp.args.StandardSave(state))
        mngr.wait_until_finished()
    if not saved:  # orbax saves nothing at or below its latest step.
        raise workdir_files.WorkdirConflictError(
            f'cannot save step {step} in {mngr.directory}: it holds a later checkpoint '
            f'(step {mngr.latest_step()}). Use a new --workdir or --restart.'
        )
    step_dir = _step_dir(mngr, step)
    workdir_files.write_atomically(
        os.path.join(step_dir, DIGEST_FILE),
        json.dumps({'step': step, 'files': file_digests(step_dir)}),
    )


def _shape_mismatch(mngr: ocp.CheckpointManager, step: int, state: Any) -> str | None:
    """How the stored arrays' shapes differ from ``state``'s, or None if they agree.

    None too when the metadata cannot be read: that is damage, found by the restore.
    """
    try:
        with _quiet():
            stored = dict(_leaves_with_paths(mngr.item_metadata(step)))
    except Exception:  # noqa: BLE001 (unreadable metadata is reported by the restore)
        return None
    want = dict(_leaves_with_paths(state))
    if not stored or any(not hasattr(v, 'shape') for v in stored.values()):
        return None
    diffs = []
    # The parameters first: the optimizer's moments repeat their shapes.
    for path in sorted(set(stored) | set(want), key=lambda p: (not p.startswith('params'), p)):
        old = tuple(stored[path].shape) if path in stored else None
        new = tuple(np.shape(want[path])) if path in want else None
        if old != new:
            diffs.append(
                f'{path}: {"absent" if old is None else old} in the checkpoint, '
                f'{"absent" if new is None else new} now'
            )
    if not diffs:
        return None
    more = f' and {len(diffs) - 4} more' if len(diffs) > 4 else ''
    return '; '.join(diffs[:4]) + more


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f'{type(e).__name__}: {text[0] if text else ""}'[:300]


def quarantine(workdir: str, steps: list[int]) -> str:
    """Moves the step folders out of orbax's reach into ``QUARANTINE_DIR``; returns it."""
    stamp = workdir_files.stamp()
    dest = os.path.join(workdir, workdir_files.QUARANTINE_DIR)
    os.makedirs(dest, exist_ok=True)
    for step in steps:
        src = os.path.join(workdir, workdir_files.CHECKPOINT_DIR, str(step))
        if os.path.exists(src):
            shutil.move(src, os.path.join(dest, f'{step}.{stamp}'))
    return dest


def restore(
    mngr: ocp.CheckpointManager,
    state: Any,
    workdir: str,
    *,
    move_bad: bool = True,
    step: int | None = None,
) -> Any:
    """The latest usable checkpoint restored into the structure of ``state``, or ``state``.

    Tries the steps from the latest down. A checkpoint is unusable when its files
    differ from those written at save time (``DIGEST_FILE``), when orbax cannot read
    it, or when its arrays hold a NaN or infinity; the fallback is logged
    as a warning naming both steps. With ``move_bad`` the unusable step folders are
    moved to ``workdir/checkpoints.corrupt/`` so that the run can save those steps
    again. With ``step``, that checkpoint only, with no fallback.

    Raises:
      CheckpointMismatchError: the stored shapes are not those of ``state`` (the model
        or the data changed under an unchanged config).
      CorruptCheckpointError: there are checkpoints but none is usable.
    """
    steps = sorted(mngr.all_steps(), reverse=True)
    if step is not None:
        if step not in steps:
            raise FileNotFoundError(
                f'no checkpoint at step {step} in {workdir}/{workdir_files.CHECKPOINT_DIR} '
                f'(saved: {sorted(steps) or "none"})'
            )
        steps = [step]
    if not steps:
        return state
    target = jax.tree.map(ocp.utils.to_shape_dtype_struct, state)
    failures: list[tuple[int, str]] = []
    for step in steps:
        damage = _damage(_step_dir(mngr, step))
        if damage:  # Checked first: orbax reading damaged files prints a lot of noise.
            failures.append((step, damage))
            continue
        mismatch = _shape_mismatch(mngr, step, state)
        if mismatch:
            raise CheckpointMismatchError(
                f'the checkpoint at step {step} in {workdir}/{workdir_files.CHECKPOINT_DIR} does '
                f'not fit this config and data ({mismatch}): the model or the dataset changed '
                'since the run started. Use a new --workdir, or restore the old data and config.'
            )
        try:
            with _quiet():
                restored = mngr.restore(step, args=ocp.args.StandardRestore(target))
            bad = nonfinite_leaves(restored)
            problem = f'non-finite values in {", ".join(bad[:3])}' if bad else None
        except Exception as e:  # noqa: BLE001 (orbax and tensorstore raise many types)
            problem = _first_line(e)
        if problem is None:
            if failures:
                bad = ', '.join(f'step {s} ({why})' for s, why in failures)
                where = ''
                if move_bad:
                    where = f'; moved to {quarantine(workdir, [s for s, _ in failures])}'
                    mngr.reload()
                logging.warning(
                    'checkpoint unusable: %s in %s/%s%s. Falling back to the checkpoint at '
                    'step %d.',
                    bad,
                    workdir,
                    workdir_files.CHECKPOINT_DIR,
                    where,
                    step,
                )
            return restored
        failures.append((step, problem))
    bad = '; '.join(f'step {s}: {why}' for s, why in failures)
    raise CorruptCheckpointError(
        f'no usable checkpoint in {workdir}/{workdir_files.CHECKPOINT_DIR} ({bad}). Rerun with '
        '--restart to move the old run aside (into a previous-<time> folder of the workdir) '
        'and train from step 0, or use a new --workdir.'
    )


def latest_step(workdir: str) -> int | None:
    """The step of the newest checkpoint in ``workdir``, None before the first; read-only."""
    if not os.path.isdir(os.path.join(workdir, workdir_files.CHECKPOINT_DIR)):
        return None
    return manager(workdir, keep=1000, read_only=True).latest_step()


def restore_from_workdir(workdir: str, state: Any, step: int | None = None) -> Any:
    """Latest usable state of the run in ``workdir``, or its state at ``step`` (for
    sampling and evaluation).

    Read-only: a damaged checkpoint is skipped with a warning but left where it is.
    """
    mngr = manager(workdir, keep=1000, read_only=True)
    if mngr.latest_step() is None:
        raise FileNotFoundError(f'no checkpoint in {workdir}/checkpoints: has the run started?')
    logging.info(
        'loading checkpoint %d from %s', mngr.latest_step() if step is None else step, workdir
    )
    return restore(mngr, state, workdir, move_bad=False, step=step)


def wait(mngr: ocp.CheckpointManager) -> None:
    with _quiet():
        mngr.wait_until_finished()
