"""Checks on a config before any work starts: every error names the field and the fix."""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from typing import Any

import ml_collections

from vae_jax import algorithms, likelihoods, mcem, models, networks, objectives

OPTIMIZERS = ('adam', 'adamw', 'adagrad', 'sgd', 'rmsprop')
SCHEDULES = ('constant', 'cosine', 'warmup_cosine', 'stages')
BINARIZATIONS = ('none', 'static', 'dynamic')
PLACEMENTS = ('auto', 'device', 'host')
# Training algorithms: Kingma & Welling's AEVB and their Sec. 5 baselines (vae_jax/wake_sleep.py,
# vae_jax/mcem.py).
ALGORITHMS = tuple(algorithms.ALGORITHMS)
# What a non-finite loss, term or gradient does (vae_jax/train.py).
NONFINITE = ('stop', 'skip')
# jax.default_matmul_precision values for config.precision.train / .eval.
PRECISIONS = ('default', 'tensorfloat32', 'float32')


class ConfigError(ValueError):
    """A config value that cannot work; the message names the field."""


def absent_field(error: AttributeError | KeyError) -> str:
    """The field name in ml_collections' error for a field a locked ConfigDict lacks.

    Its messages quote the name first ("'name'", or 'Key "name" does not exist ...'),
    sometimes with a did-you-mean after it; the whole message if nothing is quoted.
    """
    found = re.search(r'["\']([A-Za-z_][\w.]*)\\?["\']', str(error))  # Quotes may be escaped.
    return found.group(1) if found else str(error)


def _choice(config: ml_collections.ConfigDict, field: str, allowed: Sequence[str]) -> None:
    value = config
    for part in field.split('.'):
        value = value[part]
    if value not in allowed:
        raise ConfigError(
            f'config.{field}={value!r} is not one of {tuple(allowed)}; '
            f'set --config.{field}=<one of them>.'
        )


def _positive(config: ml_collections.ConfigDict, field: str, *, allow_zero: bool = False) -> None:
    value = config
    for part in field.split('.'):
        value = value[part]
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(
            f'config.{field} must be a number, got {value!r} ({type(value).__name__}).'
        )
    if not math.isfinite(value):  # NaN and infinity pass every comparison below.
        raise ConfigError(f'config.{field} must be a finite number, got {value!r}.')
    if value < 0 or (value == 0 and not allow_zero):
        bound = '>= 0' if allow_zero else '> 0'
        raise ConfigError(f'config.{field} must be {bound}, got {value!r}.')


def _optimizer_fields(opt: ml_collections.ConfigDict) -> None:
    """The stage schedule's and Adam's fields."""
    for field in ('num_stages', 'stage_steps', 'stage_growth'):
        value = opt[field]
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f'config.optimizer.{field} must be an int >= 1, got {value!r}.')
    for field, low, high in (
        ('stage_decay', 0.0, 1.0),
        ('b1', 0.0, 1.0),
        ('b2', 0.0, 1.0),
    ):
        value = opt[field]
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or not math.isfinite(value)
            or not (low <= value <= high)
            or (field == 'stage_decay' and value == 0)
            or (field != 'stage_decay' and value == 1)
        ):
            bounds = '(0, 1]' if field == 'stage_decay' else '[0, 1)'
            raise ConfigError(f'config.optimizer.{field} must be in {bounds}, got {value!r}.')
    eps = opt.eps
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not 0 < eps < math.inf:
        raise ConfigError(f'config.optimizer.eps must be a finite number > 0, got {eps!r}.')


def _positive_ints(values: Sequence) -> bool:
    return all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in values)


def _aevb_with_monte_carlo_kl(config: ml_collections.ConfigDict, model: str) -> None:
    """Models other than one Gaussian layer with N(0, I): AEVB only, no closed-form KL."""
    if not algorithms.of(config).any_model:
        raise ConfigError(
            f'config.algorithm={config.algorithm!r} is written for one Gaussian latent layer '
            f'with the N(0, I) prior; {model} trains with --config.algorithm=aevb.'
        )
    if config.objective == 'elbo' and config.kl_estimator == 'analytic':
        raise ConfigError(
            f"config.kl_estimator='analytic' needs a closed-form KL, which {model} has not; "
            'set --config.kl_estimator=monte_carlo.'
        )


def _int_tuple(value, field: str, what: str = 'positive ints') -> tuple[int, ...]:
    """``value`` as a tuple of positive ints, or ConfigError naming ``config.<field>``."""
    if not isinstance(value, (list, tuple)) or not all(
        isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in value
    ):
        raise ConfigError(f'config.{field} must be a tuple of {what}, got {value!r}.')
    return tuple(value)


def _hierarchy_fields(config: ml_collections.ConfigDict) -> None:
    """model.upper_latent_dims / upper_hidden_dims: hierarchical only, one width tuple per layer."""
    upper = _int_tuple(config.model.upper_latent_dims, 'model.upper_latent_dims')
    nested = config.model.upper_hidden_dims
    if not isinstance(nested, (list, tuple)):
        raise ConfigError(
            f'config.model.upper_hidden_dims must be a tuple of width tuples, got {nested!r}.'
        )
    widths = tuple(
        _int_tuple(h, 'model.upper_hidden_dims', 'width tuples of positive ints') for h in nested
    )
    hierarchical = config.model.architecture == 'hierarchical'
    if not hierarchical:
        for field, value in (('upper_latent_dims', upper), ('upper_hidden_dims', widths)):
            if value:
                raise ConfigError(
                    f'config.model.{field}={value!r} only applies to '
                    f"architecture='hierarchical'; set --config.model.{field}=()."
                )
        return
    if not upper or not _positive_ints(upper):
        raise ConfigError(
            'config.model.upper_latent_dims must be positive ints, one per layer above z_1 '
            f"(at least one for architecture='hierarchical'), got {upper!r}."
        )
    if len(widths) != len(upper) or not all(h and _positive_ints(h) for h in widths):
        raise ConfigError(
            'config.model.upper_hidden_dims must hold one tuple of positive widths per entry of '
            f'config.model.upper_latent_dims ({len(upper)}), got {widths!r}.'
        )
    _aevb_with_monte_carlo_kl(config, "architecture='hierarchical'")


def _prior_fields(config: ml_collections.ConfigDict) -> None:
    """model.prior: 'vamp' needs one Gaussian layer, AEVB and the Monte Carlo KL."""
    _choice(config, 'model.prior', models.PRIORS)
    k = config.model.num_pseudo_inputs
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ConfigError(f'config.model.num_pseudo_inputs must be an int >= 1, got {k!r}.')
    if config.model.prior != 'vamp':
        return
    if config.model.architecture == 'hierarchical':
        raise ConfigError(
            "config.model.prior='vamp' is a prior on one latent layer; with "
            "architecture='hierarchical' set --config.model.prior=standard_normal."
        )
    _aevb_with_monte_carlo_kl(config, "model.prior='vamp'")


def _get(config: ml_collections.ConfigDict, field: str) -> Any:
    value = config
    for part in field.split('.'):
        value = value[part]
    return tuple(value) if isinstance(value, list) else value


def _stages(c):
    return c.optimizer.schedule == 'stages'


def _adam(c):
    return c.optimizer.name in ('adam', 'adamw')


def _mcem(c):
    return c.algorithm == 'mcem'


def _gaussian(c):
    return c.likelihood == 'gaussian'


# Fields that only some settings read, each with its value in configs/default.py and the
# settings that read it. Another value under a setting that does not read the field would
# be recorded in config.json and ignored, so ``validate`` refuses it
# (tests/test_config_fields.py checks these defaults against configs/default.py).
SETTING_FIELDS: tuple[tuple[str, Any, str, Callable[[ml_collections.ConfigDict], bool]], ...] = (
    ('optimizer.warmup_steps', 0, "optimizer.schedule='warmup_cosine'",
     lambda c: c.optimizer.schedule == 'warmup_cosine'),
    ('optimizer.num_stages', 8, "optimizer.schedule='stages'", _stages),
    ('optimizer.stage_steps', 1000, "optimizer.schedule='stages'", _stages),
    ('optimizer.stage_growth', 3, "optimizer.schedule='stages'", _stages),
    ('optimizer.stage_decay', 0.1, "optimizer.schedule='stages'", _stages),
    ('optimizer.b1', 0.9, "optimizer.name='adam' or 'adamw'", _adam),
    ('optimizer.b2', 0.999, "optimizer.name='adam' or 'adamw'", _adam),
    ('optimizer.eps', 1e-8, "optimizer.name='adam' or 'adamw'", _adam),
    ('optimizer.adagrad_initial_accumulator', 0.1, "optimizer.name='adagrad'",
     lambda c: c.optimizer.name == 'adagrad'),
    ('model.num_pseudo_inputs', 500, "model.prior='vamp'", lambda c: c.model.prior == 'vamp'),
    ('model.conv_channels', (32, 64), "model.architecture='conv'",
     lambda c: c.model.architecture == 'conv'),
    ('model.weight_init', 'lecun_normal', 'model.init_std=None',
     lambda c: c.model.init_std is None),
    ('model.decoder_bias', 'zero',
     "likelihood='bernoulli' with model.architecture='mlp' or 'hierarchical'",
     lambda c: c.likelihood == 'bernoulli' and c.model.architecture in ('mlp', 'hierarchical')),
    ('model.gaussian_mean', 'identity', "likelihood='gaussian'", _gaussian),
    ('model.min_log_var', None, "likelihood='gaussian'", _gaussian),
    # Data-parallel runs always gather batches on the host (docs/scale.md).
    ('data_placement', 'auto', 'data_parallel=False', lambda c: not c.data_parallel),
    ('device_data_max_mb', 1024, "data_placement='auto' and data_parallel=False",
     lambda c: c.data_placement == 'auto' and not c.data_parallel),
    # A run's final log p(x) is AIS from the prior only where no encoder is trained.
    ('eval_ais_steps', 100, "algorithm='mcem'", lambda c: not algorithms.of(c).trains_encoder),
    ('eval_ais_chains', 4, "algorithm='mcem'", lambda c: not algorithms.of(c).trains_encoder),
    ('mcem.num_leapfrog_steps', 10, "algorithm='mcem'", _mcem),
    ('mcem.num_transitions', 1, "algorithm='mcem'", _mcem),
    ('mcem.num_weight_updates', 5, "algorithm='mcem'", _mcem),
    ('mcem.target_acceptance', 0.9, "algorithm='mcem'", _mcem),
    ('mcem.step_size_adaptation', 'shared', "algorithm='mcem'", _mcem),
    ('mcem.initial_step_size', 0.05, "algorithm='mcem'", _mcem),
)  # fmt: skip


def _unread_fields(config: ml_collections.ConfigDict) -> None:
    """Refuses a field set away from its default under a setting that ignores it."""
    for field, default, readers, reads in SETTING_FIELDS:
        value = _get(config, field)
        if value != default and not reads(config):
            raise ConfigError(
                f'config.{field}={value!r} is read only with {readers}, which this config '
                f'does not use: it would be ignored. Set --config.{field}={default!r} or '
                'choose a setting that reads it.'
            )


def validate(config: ml_collections.ConfigDict) -> None:
    """Raises ConfigError for the first field that cannot work.

    Checks that need the data (batch size against the training set, likelihood
    against the value range) are in ``validate_against_data``.
    """
    _choice(config, 'algorithm', ALGORITHMS)
    _choice(config, 'likelihood', likelihoods.LIKELIHOODS)
    _choice(config, 'objective', objectives.OBJECTIVES)
    _choice(config, 'kl_estimator', objectives.KL_ESTIMATORS)
    _choice(config, 'binarization', BINARIZATIONS)
    _choice(config, 'data_placement', PLACEMENTS)
    _choice(config, 'optimizer.name', OPTIMIZERS)
    _choice(config, 'optimizer.schedule', SCHEDULES)
    _choice(config, 'model.architecture', models.ARCHITECTURES)
    _choice(config, 'model.activation', tuple(networks.ACTIVATIONS))
    _choice(config, 'model.gaussian_mean', networks.GAUSSIAN_MEANS)
    _choice(config, 'model.weight_init', networks.WEIGHT_INITS)
    _choice(config, 'model.decoder_bias', models.DECODER_BIASES)
    _choice(config, 'mcem.step_size_adaptation', mcem.STEP_SIZE_ADAPTATIONS)
    _choice(config, 'precision.train', PRECISIONS)
    _choice(config, 'precision.eval', PRECISIONS)
    _choice(config, 'nonfinite', NONFINITE)
    seed = config.seed
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ConfigError(f'config.seed must be an int >= 0, got {seed!r}.')
    for field in (
        'latent_dim',
        'num_samples',
        'batch_size',
        'num_steps',
        'steps_per_dispatch',
        'log_every_steps',
        'keep_checkpoints',
        'eval_batch_size',
        'eval_num_importance_samples',
        'eval_chunk_size',
        'checkpoint_every_steps',
        'optimizer.learning_rate',
        'device_data_max_mb',
        'eval_ais_steps',
        'eval_ais_chains',
        'mcem.num_leapfrog_steps',
        'mcem.num_transitions',
        'mcem.num_weight_updates',
        'mcem.initial_step_size',
    ):
        _positive(config, field)
    for field in (
        'beta',
        'eval_every_steps',
        'image_every_steps',
        'eval_max_examples',
        'optimizer.weight_decay',
        'optimizer.grad_clip_norm',
        'optimizer.warmup_steps',
        'optimizer.adagrad_initial_accumulator',
    ):
        _positive(config, field, allow_zero=True)
    if config.valid_size is not None:
        _positive(config, 'valid_size')
    if config.num_train_examples is not None:
        _positive(config, 'num_train_examples')
    if config.model.init_std is not None:
        _positive(config, 'model.init_std')
    floor = config.model.min_log_var
    if floor is not None and (
        isinstance(floor, bool) or not isinstance(floor, (int, float)) or not math.isfinite(floor)
    ):
        raise ConfigError(
            f'config.model.min_log_var must be None or a finite number, got {floor!r}.'
        )
    dims = _int_tuple(config.model.hidden_dims, 'model.hidden_dims')
    channels = _int_tuple(config.model.conv_channels, 'model.conv_channels')
    if config.model.architecture == 'conv' and not channels:
        raise ConfigError('config.model.conv_channels is empty; a conv model needs a layer.')
    if config.model.architecture == 'mlp' and not dims:
        raise ConfigError(
            'config.model.hidden_dims is empty; an MLP needs at least one hidden layer.'
        )
    _hierarchy_fields(config)
    _prior_fields(config)
    if config.objective == 'iwae' and config.beta != 1.0:
        raise ConfigError(
            'config.beta only weights the ELBO; set --config.beta=1 with objective=iwae.'
        )
    uses_objective = algorithms.of(config).uses_objective  # Else refused below, by name.
    if uses_objective and config.objective == 'iwae' and config.kl_estimator != 'monte_carlo':
        # The IWAE bound has no KL term: it is estimated from importance weights, i.e. by
        # Monte Carlo; 'analytic' would be recorded in config.json and silently ignored.
        raise ConfigError(
            f'config.kl_estimator={config.kl_estimator!r} does not apply to objective=iwae, '
            'whose bound is a Monte Carlo estimate from importance weights (no KL term); '
            'set --config.kl_estimator=monte_carlo.'
        )
    _optimizer_fields(config.optimizer)
    target = config.mcem.target_acceptance
    if isinstance(target, bool) or not isinstance(target, (int, float)) or not 0 < target < 1:
        raise ConfigError(f'config.mcem.target_acceptance must be in (0, 1), got {target!r}.')
    data_parallel = config.data_parallel
    if not isinstance(data_parallel, bool):
        raise ConfigError(f'config.data_parallel must be True or False, got {data_parallel!r}.')
    if data_parallel and algorithms.of(config).per_example_state:
        raise ConfigError(
            f'config.data_parallel=True does not apply to algorithm={config.algorithm} (its '
            'per-example state lives on one device); set --config.data_parallel=False.'
        )
    if not algorithms.of(config).uses_objective:
        # The baselines have objectives of their own; AEVB's settings would be ignored silently.
        for field, aevb_only in (
            ('objective', 'elbo'),
            ('num_samples', 1),
            ('beta', 1.0),
            ('kl_estimator', 'analytic'),
        ):
            if config[field] != aevb_only:
                raise ConfigError(
                    f'config.{field}={config[field]!r} only applies to algorithm=aevb; '
                    f'config.algorithm={config.algorithm!r} ignores it: '
                    f'set --config.{field}={aevb_only!r}.'
                )
    _unread_fields(config)


def validate_against_data(
    config: ml_collections.ConfigDict, num_train: int, data_min: float, data_max: float, source: str
) -> None:
    """Checks that need the loaded data; ``data_min``, ``data_max`` span every split read."""
    if config.batch_size > num_train:
        raise ConfigError(
            f'config.batch_size={config.batch_size} is larger than the training set '
            f'({num_train} examples from {source}); lower --config.batch_size.'
        )
    if config.likelihood == 'bernoulli' and (data_min < 0.0 or data_max > 1.0):
        raise ConfigError(
            f'config.likelihood=bernoulli needs data in [0, 1], but {source} spans '
            f'[{data_min:g}, {data_max:g}]; use --config.likelihood=gaussian or rescale the data.'
        )
    if (
        config.likelihood == 'gaussian'
        and config.model.gaussian_mean == 'sigmoid'
        and (data_min < 0.0 or data_max > 1.0)
    ):
        raise ConfigError(
            f'config.model.gaussian_mean=sigmoid keeps the decoder mean in (0, 1), but '
            f'{source} spans [{data_min:g}, {data_max:g}]; set '
            '--config.model.gaussian_mean=identity (any real data) or rescale the data.'
        )
    if config.binarization != 'none' and config.likelihood != 'bernoulli':
        raise ConfigError(
            f'config.binarization={config.binarization!r} makes binary data, which only fits '
            "likelihood='bernoulli'; set --config.binarization=none."
        )
