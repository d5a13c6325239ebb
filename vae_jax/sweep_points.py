"""The points of a sweep: build them, parse them from ``--sweep``, apply and name them,
and which of them can train together as one vectorised program (``groups``).

A point is a dict of dotted config fields to values, ``{'latent_dim': 2, 'seed': 0}``.
Shared by the sweep CLI (:mod:`vae_jax.sweep`) and vectorised training
(:mod:`vae_jax.vectorized`), which is why it is a module of its own.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Sequence
from typing import Any

import ml_collections

from vae_jax import algorithms, configuration

Point = dict[str, Any]

# Fields that may differ between the points of one vectorised sweep: each becomes a
# traced per-point value [P]; every other field must be equal across the points.
VECTORIZABLE_FIELDS = ('seed', 'optimizer.learning_rate', 'beta', 'optimizer.weight_decay')


def product(**fields: Sequence[Any]) -> list[Point]:
    """Every combination of the given values: ``product(seed=[0, 1], beta=[1.0, 2.0])``.

    Dotted fields are written with ``__``: ``product(optimizer__learning_rate=[...])``.
    """
    names = [k.replace('__', '.') for k in fields]
    return [dict(zip(names, values, strict=True)) for values in itertools.product(*fields.values())]


def _cast(config: ml_collections.ConfigDict, field: str, text: str) -> Any:
    """``text`` as the type of ``config.<field>``, so ``--sweep`` values are not all strings."""
    current = _get(config, field)
    if isinstance(current, bool):
        if text.lower() not in ('true', 'false'):
            raise configuration.ConfigError(f'--sweep: {field} takes true/false, got {text!r}.')
        return text.lower() == 'true'
    if isinstance(current, int):
        return int(text)
    if isinstance(current, float):
        return float(text)
    if isinstance(current, tuple):
        return tuple(int(v) for v in text.strip('()').split('x') if v)  # hidden_dims=400x400
    if current is None:  # A placeholder such as valid_size: number if it looks like one.
        try:
            return int(text)
        except ValueError:
            return float(text)
    return text


def parse_sweep(spec: str, config: ml_collections.ConfigDict) -> list[Point]:
    """``'latent_dim=2,5;seed=0,1'`` -> the product of the values, typed as in ``config``.

    A tuple value such as ``model.hidden_dims`` is written with ``x``: ``400x400``.
    """
    fields: dict[str, list[Any]] = {}
    for part in filter(None, (p.strip() for p in spec.split(';'))):
        if '=' not in part:
            raise configuration.ConfigError(f'--sweep: {part!r} is not field=value,value,...')
        field, values = part.split('=', 1)
        field = field.strip()
        _get(config, field)  # Unknown fields fail here, with their name.
        try:
            fields[field] = [_cast(config, field, v.strip()) for v in values.split(',')]
        except ValueError as e:  # int(''), float('abc'), ...
            raise configuration.ConfigError(
                f'--sweep: {part!r}: a value of {field} does not parse ({e}).'
            ) from None
    return [dict(zip(fields, vs, strict=True)) for vs in itertools.product(*fields.values())]


def _get(config: ml_collections.ConfigDict, field: str) -> Any:
    target = config
    *path, last = field.split('.')
    try:
        for p in path:
            target = target[p]
        return target[last]
    except (KeyError, AttributeError):
        raise configuration.ConfigError(f'sweep field {field!r} is not a config field.') from None


def apply(config: ml_collections.ConfigDict, point: Point) -> ml_collections.ConfigDict:
    """A copy of ``config`` with the point's overrides (dotted fields) set."""
    config = ml_collections.ConfigDict(config.to_dict())
    for field, value in point.items():
        _get(config, field)
        target = config
        *path, last = field.split('.')
        for p in path:
            target = target[p]
        target[last] = value
    return config


def point_name(point: Point) -> str:
    """The point's folder name: ``{'latent_dim': 2, 'seed': 0}`` -> ``latent_dim=2,seed=0``."""
    parts = []
    for field, value in point.items():
        text = 'x'.join(map(str, value)) if isinstance(value, tuple) else str(value)
        parts.append(f'{field}={text}')
    return re.sub(r'[^A-Za-z0-9_.,=+-]', '_', ','.join(parts)) or 'base'


def flat_fields(config: ml_collections.ConfigDict) -> dict[str, Any]:
    """``{dotted.field: value}`` for every leaf field of ``config``."""
    out = {}
    for key, value in config.items():
        if isinstance(value, ml_collections.ConfigDict):
            out.update({f'{key}.{k}': v for k, v in flat_fields(value).items()})
        else:
            out[key] = value
    return out


def check_vectorizable(configs: Sequence[ml_collections.ConfigDict]) -> None:
    """Raises ConfigError naming the first field outside ``VECTORIZABLE_FIELDS`` that differs."""
    first = flat_fields(configs[0])
    for c in configs[1:]:
        flat = flat_fields(c)
        for field in sorted(set(first) | set(flat)):
            if field in VECTORIZABLE_FIELDS:
                continue
            if first.get(field) != flat.get(field):
                raise configuration.ConfigError(
                    f'points differ in {field} ({first.get(field)!r} vs {flat.get(field)!r}), '
                    f'which changes the program; only {", ".join(VECTORIZABLE_FIELDS)} may '
                    'differ between the points of a vectorised sweep.'
                )
    if algorithms.of(configs[0]).per_example_state:
        raise configuration.ConfigError(
            f'algorithm={configs[0].algorithm} keeps state per training example and is not '
            'vectorised: train its points one by one (vae_jax.sweep).'
        )


def groups(configs: Sequence[ml_collections.ConfigDict]) -> list[list[int]]:
    """Indices of the points that can train together, in first-seen order.

    Points are grouped by every field outside ``VECTORIZABLE_FIELDS`` (so by shape:
    latent size, widths, ...) and by whether they use weight decay (a structural part of
    the optimizer state). MCEM points are never grouped.
    """
    out: dict[Any, list[int]] = {}
    for i, c in enumerate(configs):
        flat = flat_fields(c)
        key = tuple(sorted((k, repr(v)) for k, v in flat.items() if k not in VECTORIZABLE_FIELDS))
        key += (c.optimizer.weight_decay > 0,)
        if algorithms.of(c).per_example_state:
            key += (i,)
        out.setdefault(key, []).append(i)
    return list(out.values())
