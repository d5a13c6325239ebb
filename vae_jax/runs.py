"""A saved run: its latest checkpoint with its config, model and data (``load_run``), and
its splits as the model saw them (``split_data``), for ``vae_jax.evaluate``,
``vae_jax.sample`` and the experiments' scripts.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import ml_collections
import numpy as np

from vae_jax import checkpointing, configuration, data, models, train, workdir_files

Params = Any


class Run(NamedTuple):
    """A trained run loaded from its workdir."""

    config: ml_collections.ConfigDict
    model: models.VAE | models.HierarchicalVAE
    params: Params
    step: int
    splits: data.Splits


def load_run(workdir: str, step: int | None = None) -> Run:
    """The latest checkpoint of the run in ``workdir`` (or the one at ``step``: a
    FileNotFoundError if it was not kept), with its config, model and data."""
    config = stored_config(workdir)
    splits = data.load(config.dataset, config.data_dir, valid_size=config.valid_size)
    num_train = splits.train.shape[0]
    if config.num_train_examples is not None:
        num_train = min(num_train, config.num_train_examples)
    setup = train.build(
        config,
        splits.event_shape,
        train.Streams(config.seed),
        num_train,
        splits.binary,
        train_images=splits.train[:num_train],  # The bias it gives is replaced by the checkpoint's.
    )
    state = checkpointing.restore_from_workdir(workdir, setup.state, step)
    return Run(config, setup.model, state.params, int(state.step), splits)


def stored_config(workdir: str) -> ml_collections.ConfigDict:
    """The config recorded in ``workdir``, checked as a new run's would be.

    Raises:
      workdir_files.WorkdirConflictError: an earlier vae_jax wrote it (a field this version
        reads is absent) or it fails this version's checks; named, not a traceback.
    """
    config = workdir_files.read_config(workdir)
    try:
        configuration.validate(config)
    except (AttributeError, KeyError) as e:  # ConfigDict's ways of saying a field is absent.
        field = configuration.absent_field(e)
        raise workdir_files.WorkdirConflictError(
            f'{workdir}/{workdir_files.CONFIG_FILE} lacks the field {field!r}: an earlier '
            'version of vae_jax wrote it, and this version opens only its own runs (evaluate '
            'it with the version that trained it, or retrain)'
        ) from e
    except ValueError as e:
        raise workdir_files.WorkdirConflictError(
            f"{workdir}/{workdir_files.CONFIG_FILE} fails this version's checks: {e}"
        ) from e
    return config


def split_data(run: Run, split: str) -> np.ndarray:
    """The split as the model saw it: with the run's fixed binarisation of eval data.

    The one place a saved run's splits are prepared for scoring or pictures
    (``vae_jax.evaluate`` and ``vae_jax.sample``): the training split of a statically
    binarised run is its own training draw; grey splits otherwise get
    ``data.binarize_for_evaluation``'s fixed draw.
    """
    streams = train.Streams(run.config.seed)
    _, train_x, valid_x, test_x = train.prepare_data(run.config, streams, run.splits)
    x = {'train': train_x, 'valid': valid_x, 'test': test_x}[split]
    if split == 'train' and run.config.binarization == 'dynamic' and not run.splits.binary:
        x = data.binarize_for_evaluation(run.config.dataset, 'train', x)
    return x
