"""The optimizer of a run: ``config.optimizer`` as one optax chain, with its schedule."""

from __future__ import annotations

import jax
import ml_collections
import numpy as np
import optax

from vae_jax import algorithms, configuration


def stage_boundaries(num_stages: int, first_stage_steps: int, growth: int) -> np.ndarray:
    """Step at which each stage ends, ``[num_stages]``: stage i lasts first * growth**i steps."""
    lengths = first_stage_steps * np.asarray(growth, np.int64) ** np.arange(num_stages)
    return np.cumsum(lengths)


def stage_learning_rates(learning_rate: float, num_stages: int, decay: float) -> np.ndarray:
    """Learning rate of each stage, ``[num_stages]``: lr * decay**(i / (num_stages - 1)).

    Burda et al. (2016), Sec. 5: stage i = 0..7 at 1e-3 * 10**(-i/7), i.e. decay 0.1 over 8.
    """
    if num_stages == 1:
        return np.asarray([learning_rate], np.float64)
    return learning_rate * decay ** (np.arange(num_stages) / (num_stages - 1))


def stage_schedule(
    learning_rate: jax.Array | float,
    num_stages: int,
    first_stage_steps: int,
    growth: int,
    decay: float,
) -> optax.Schedule:
    """Piecewise-constant stages (:func:`stage_boundaries`, :func:`stage_learning_rates`).

    After the last stage the rate stays at the last stage's value. ``learning_rate`` may
    be traced (vectorised sweeps); the stages' ratios depend on ``decay`` alone.
    """
    ends = stage_boundaries(num_stages, first_stage_steps, growth)[:-1]
    ratios = stage_learning_rates(1.0, num_stages, decay)
    # optax's piecewise_constant_schedule multiplies scales cumulatively: pass ratios.
    scales = {int(end): float(ratios[i + 1] / ratios[i]) for i, end in enumerate(ends)}
    return optax.piecewise_constant_schedule(learning_rate, scales)


def updates_per_step(config: ml_collections.ConfigDict) -> int:
    """Optimizer updates per training step: MCEM makes several, schedules stay in steps."""
    return algorithms.of(config).updates_per_step(config)


def make_optimizer(
    config: ml_collections.ConfigDict,
    *,
    learning_rate: jax.Array | float | None = None,
    weight_decay: jax.Array | float | None = None,
    decay: bool | None = None,
) -> optax.GradientTransformation:
    """The optax chain for ``config.optimizer``: clip, weight decay, optimizer.

    ``learning_rate`` and ``weight_decay`` default to the config's; passing them lets
    them be traced (``vae_jax.vectorized`` stacks points that differ in them). ``decay``
    (default: ``weight_decay > 0``) decides whether the decay transform is in the chain
    at all, a structural choice that cannot depend on a traced value.
    """
    opt = config.optimizer
    if learning_rate is None:
        learning_rate = opt.learning_rate
    if weight_decay is None:
        weight_decay = opt.weight_decay
    if decay is None:
        decay = opt.weight_decay > 0
    per_step = updates_per_step(config)
    lr: optax.ScalarOrSchedule = learning_rate
    if opt.schedule == 'cosine':
        lr = optax.cosine_decay_schedule(learning_rate, config.num_steps * per_step)
    elif opt.schedule == 'warmup_cosine':
        lr = optax.warmup_cosine_decay_schedule(
            0.0,
            learning_rate,
            max(opt.warmup_steps * per_step, 1),
            config.num_steps * per_step,
        )
    elif opt.schedule == 'stages':
        lr = stage_schedule(
            learning_rate,
            opt.num_stages,
            opt.stage_steps * per_step,
            opt.stage_growth,
            opt.stage_decay,
        )
    parts = []
    if opt.grad_clip_norm > 0:
        parts.append(optax.clip_by_global_norm(opt.grad_clip_norm))
    if decay and opt.name != 'adamw':
        parts.append(optax.add_decayed_weights(weight_decay))
    adam_moments = {'b1': opt.b1, 'b2': opt.b2, 'eps': opt.eps}
    if opt.name == 'adam':
        parts.append(optax.adam(lr, **adam_moments))
    elif opt.name == 'adamw':
        parts.append(optax.adamw(lr, weight_decay=weight_decay, **adam_moments))
    elif opt.name == 'adagrad':
        parts.append(optax.adagrad(lr, initial_accumulator_value=opt.adagrad_initial_accumulator))
    elif opt.name == 'sgd':
        parts.append(optax.sgd(lr))
    elif opt.name == 'rmsprop':
        parts.append(optax.rmsprop(lr))
    else:
        raise configuration.ConfigError(f'unknown optimizer.name {opt.name!r}')
    return optax.chain(*parts)
