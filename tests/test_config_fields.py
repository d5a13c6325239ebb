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


# Fields only some settings read (configuration.SETTING_FIELDS): a value each may take, a
# setting that reads it and one that does not (configs/default.py's is one of the two).
_VAMP = {'model.prior': 'vamp', 'kl_estimator': 'monte_carlo'}
_GAUSSIAN = {'likelihood': 'gaussian', 'binarization': 'none'}
_MCEM = {'algorithm': 'mcem'}
_SETTING_CASES = {
    'optimizer.warmup_steps': (10, {'optimizer.schedule': 'warmup_cosine'}, {}),
    'optimizer.num_stages': (4, {'optimizer.schedule': 'stages'}, {}),
    'optimizer.stage_steps': (10, {'optimizer.schedule': 'stages'}, {}),
    'optimizer.stage_growth': (2, {'optimizer.schedule': 'stages'}, {}),
    'optimizer.stage_decay': (0.5, {'optimizer.schedule': 'stages'}, {}),
    'optimizer.b1': (0.5, {'optimizer.name': 'adamw'}, {'optimizer.name': 'sgd'}),
    'optimizer.b2': (0.9, {}, {'optimizer.name': 'adagrad'}),
    'optimizer.eps': (1e-4, {}, {'optimizer.name': 'rmsprop'}),
    'optimizer.adagrad_initial_accumulator': (0.2, {'optimizer.name': 'adagrad'}, {}),
    'model.num_pseudo_inputs': (10, _VAMP, {}),
    'model.conv_channels': ((8,), {'model.architecture': 'conv'}, {}),
    'model.weight_init': ('glorot_uniform', {}, {'model.init_std': 0.1}),
    'model.decoder_bias': ('data_mean', {}, {'model.architecture': 'conv'}),
    'model.gaussian_mean': ('sigmoid', _GAUSSIAN, {}),
    'model.min_log_var': (-5.0, _GAUSSIAN, {}),
    'data_placement': ('host', {}, {'data_parallel': True}),
    'device_data_max_mb': (10, {}, {'data_parallel': True}),
    'eval_ais_steps': (5, _MCEM, {}),
    'eval_ais_chains': (2, _MCEM, {'algorithm': 'wake_sleep'}),
    'mcem.num_leapfrog_steps': (5, _MCEM, {}),
    'mcem.num_transitions': (2, _MCEM, {}),
    'mcem.num_weight_updates': (1, _MCEM, {}),
    'mcem.target_acceptance': (0.65, _MCEM, {}),
    'mcem.step_size_adaptation': ('per_example', _MCEM, {}),
    'mcem.initial_step_size': (0.1, _MCEM, {}),
}


def _config(**fields):
    config = default.get_config()
    config.update_from_flattened_dict(fields)
    return config


def test_setting_fields_have_the_defaults_of_configs_default():
    assert sorted(_SETTING_CASES) == sorted(f for f, *_ in configuration.SETTING_FIELDS)
    for field, value, _, _ in configuration.SETTING_FIELDS:
        assert dict(_leaves(default.get_config()))[field] == value, field


@pytest.mark.parametrize('field', sorted(_SETTING_CASES))
def test_a_field_the_setting_ignores_is_refused_and_one_it_reads_accepted(field):
    value, reading, ignoring = _SETTING_CASES[field]
    configuration.validate(_config(**reading, **{field: value}))
    configuration.validate(_config(**ignoring))  # The setting alone is fine.
    with pytest.raises(configuration.ConfigError, match=rf'config\.{field}=.* ignored'):
        configuration.validate(_config(**ignoring, **{field: value}))


@pytest.mark.parametrize(
    'touch, name',
    [
        (lambda c: c.modle, 'modle'),  # ml_collections: "'modle'"
        (lambda c: c['modle'], 'modle'),
        # With a did-you-mean that quotes another field, and escaped quotes.
        (lambda c: c.model.latent_dimz, 'latent_dimz'),
        (lambda c: setattr(c, 'modle', 1), 'modle'),  # 'Key "modle" does not exist ...'
        (lambda c: c.update_from_flattened_dict({'model.latent_dimz': 1}), 'latent_dimz'),
    ],
)
def test_absent_field_reads_the_name_out_of_each_of_ml_collections_messages(touch, name):
    config = default.get_config()
    config.lock()
    with pytest.raises((AttributeError, KeyError)) as e:
        touch(config)
    assert configuration.absent_field(e.value) == name
