"""Every config field, table-driven: a bad value of the field's own type is refused early,
with a message naming the field (what a `--config.x=...` typo or slip can produce)."""

import math

import ml_collections
import pytest

from configs import default
from vae_jax import configuration


def _leaves(config, prefix=''):
    for key, value in config.items():
        if isinstance(value, ml_collections.ConfigDict):
            yield from _leaves(value, f'{prefix}{key}.')
        else:
            yield f'{prefix}{key}', value


# Fields whose default is None (a placeholder) and the type they take.
_PLACEHOLDERS = {
    'valid_size': int,
    'num_train_examples': int,
    'model.init_std': float,
    'model.min_log_var': float,
}
# Negative values that mean something: a log-variance floor is any real number.
_NEGATIVE_OK = {'model.min_log_var'}
# Zero means "off" or is a legal value (documented in configs/default.py).
_ZERO_OK = {
    'seed',
    'beta',
    'eval_every_steps',
    'image_every_steps',
    'eval_max_examples',
    'optimizer.warmup_steps',
    'optimizer.weight_decay',
    'optimizer.grad_clip_norm',
    'optimizer.b1',
    'optimizer.b2',
    'optimizer.stage_decay',
    'optimizer.adagrad_initial_accumulator',
    'model.min_log_var',
    'device_data_max_mb',
}


def _cases():
    for field, value in _leaves(default.get_config()):
        kind = _PLACEHOLDERS.get(field, type(value))
        if kind in (int, float) and field not in _ZERO_OK:
            yield field, kind(0)
        if kind is float:
            yield from ((field, bad) for bad in (math.nan, math.inf, -math.inf))
            if field not in _NEGATIVE_OK:
                yield field, -1.0
        elif kind is int:
            yield from ((field, bad) for bad in (-1, math.nan))
        elif kind is tuple and field != 'model.upper_hidden_dims':
            yield from ((field, bad) for bad in ((-1,), (0,), ('a',), 5))
        elif kind is str:
            yield field, 'no-such-value'


_FREE_STRINGS = {'dataset', 'data_dir'}  # Checked when the data load, by DataError.
CASES = [(f, v) for f, v in _cases() if f not in _FREE_STRINGS]


def test_the_table_covers_every_field():
    checked = {f for f, _ in CASES} | _FREE_STRINGS | {'model.upper_hidden_dims'}
    bools = {f for f, v in _leaves(default.get_config()) if isinstance(v, bool)}
    assert checked | bools == {f for f, _ in _leaves(default.get_config())}


@pytest.mark.parametrize(('field', 'bad'), CASES, ids=[f'{f}={v!r}' for f, v in CASES])
def test_a_bad_value_is_refused_naming_its_field(field, bad):
    config = default.get_config()
    *path, last = field.split('.')
    target = config
    for p in path:
        target = target[p]
    with config.ignore_type():
        target[last] = bad
    with pytest.raises(configuration.ConfigError) as err:
        configuration.validate(config)
    assert f'config.{field}' in str(err.value), str(err.value)
