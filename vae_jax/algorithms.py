"""The training algorithms as one table: AEVB and the baselines of Kingma & Welling, Sec. 5.

Each algorithm is an :class:`Algorithm`: how its state starts (``init``), how one
update runs (``make_update``: ``update(state, batch, key) -> (state, metrics)``, a
batch being a dict with ``'x'`` and, for the algorithms that need them, ``'idx'``, the
examples' indices in the training set) and what the rest of the code must know of it
(does it train the encoder; does it keep state per training example). The training
loop, evaluation and sweeps ask the table, never the algorithm's name:

* ``'aevb'``: Algorithm 1 (SGVB or IWAE objective, :mod:`vae_jax.objectives`);
* ``'wake_sleep'``: one gradient step on the wake and sleep terms (:mod:`vae_jax.wake_sleep`);
* ``'mcem'``: an HMC E-step on the minibatch's persistent posterior samples (one per
  training example), then decoder updates; it trains no encoder.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import flax
import jax
import jax.numpy as jnp
import ml_collections
import optax

from vae_jax import mcem, models, objectives, wake_sleep

Params = Any
Batch = dict[str, jax.Array]


@flax.struct.dataclass
class TrainState:
    """Everything that changes during training; saved in every checkpoint."""

    step: jax.Array
    params: Params
    opt_state: optax.OptState


@flax.struct.dataclass
class MCEMTrainState(TrainState):
    """algorithm='mcem': also each training example's chain (posterior sample z_n ``[N, D]``).

    A subclass, not an optional field: the other algorithms' checkpoints hold no chains.
    """

    mcmc: mcem.MCEMChains


Update = Callable[[TrainState, Batch, jax.Array], tuple[TrainState, dict[str, jax.Array]]]
Loss = Callable[[Params, jax.Array, jax.Array], tuple[jax.Array, dict[str, jax.Array]]]


class Algorithm(NamedTuple):
    """One row of the table.

    Attributes:
      init: ``(config, params, opt_state, key, num_train) -> state`` at step 0; ``key``
        is for the algorithm's own state (MCEM's chains), ``num_train`` the number of
        training examples (None where the algorithm keeps nothing per example).
      make_update: ``(model, tx, config, binary_data=...) -> update``.
      trains_encoder: False where q(z|x) is left untrained (MCEM): nothing computed
        through it (ELBO, IS, reconstructions) means anything.
      per_example_state: state per training example, so every batch needs ``'idx'``;
        such an algorithm is neither data-parallel nor vectorised.
      any_model: written against the model interface (``objectives.LatentModel``), so
        any model trains with it; the baselines are written for one Gaussian latent
        layer with the N(0, I) prior.
      uses_objective: reads ``config.objective``, ``num_samples``, ``beta`` and
        ``kl_estimator`` (an algorithm that does not refuses values it would ignore).
      updates_per_step: ``config ->`` optimizer updates per training step (learning-rate
        schedules count steps, the optimizer counts updates).
    """

    init: Callable[..., TrainState]
    make_update: Callable[..., Update]
    trains_encoder: bool = True
    per_example_state: bool = False
    any_model: bool = False
    uses_objective: bool = False
    updates_per_step: Callable[[ml_collections.ConfigDict], int] = lambda config: 1


def _init_plain(config, params, opt_state, key, num_train) -> TrainState:
    del config, key, num_train
    return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=opt_state)


def _init_mcem(config, params, opt_state, key, num_train) -> MCEMTrainState:
    """MCEM's chains start at prior draws from ``key``."""
    if num_train is None:
        raise ValueError('algorithm=mcem keeps one sample per training example: pass num_train')
    mcmc = mcem.init_mcem_chains(
        key,
        num_train,
        config.latent_dim,
        step_size=config.mcem.initial_step_size,
        target_acceptance=config.mcem.target_acceptance,
    )
    step = jnp.zeros((), jnp.int32)
    return MCEMTrainState(step=step, params=params, opt_state=opt_state, mcmc=mcmc)


def aevb_loss(model, config: ml_collections.ConfigDict, *, binary_data: bool) -> Loss:
    """loss(params, x, key) -> (mean negative objective, per-batch mean terms): the SGVB
    or IWAE objective of ``config`` (:func:`vae_jax.objectives.compute`)."""
    del binary_data  # The objective is the same on any data.

    def loss_fn(params, x, key):
        terms = objectives.compute(
            key,
            x,
            models.latent_model(model, params),
            objective=config.objective,
            num_samples=config.num_samples,
            kl_estimator=config.kl_estimator,
            beta=config.beta,
        )
        means = {k: jnp.mean(v) for k, v in terms.items()}
        return -means['objective'], means

    return loss_fn


def wake_sleep_loss(model, config: ml_collections.ConfigDict, *, binary_data: bool) -> Loss:
    """loss(params, x, key) -> the wake + sleep loss, whose gradient is the wake gradient
    for the decoder and the sleep gradient for the encoder (:mod:`vae_jax.wake_sleep`).

    ``binary_data``: whether the training data are 0/1 as loaded (``data.Splits.binary``).
    With ``config.binarization='none'`` and grey-level data the encoder is fed grey
    levels, so the sleep phase dreams relaxed (grey) Bernoulli draws rather than 0/1
    draws (``wake_sleep.dream_for``). Required, so that no caller gets 0/1 dreams on grey
    data by forgetting it.
    """
    # The encoder sees 0/1 values when the data are binary or binarised (static or
    # dynamic); grey levels otherwise. The sleep phase's dreams must look the same.
    grey_inputs = config.binarization == 'none' and not binary_data
    dream = wake_sleep.dream_for(config.likelihood, grey_inputs=grey_inputs)

    def loss_fn(params, x, key):
        encode = functools.partial(model.apply, {'params': params}, method=model.encode)
        decode = functools.partial(model.apply, {'params': params}, method=model.decode)
        return wake_sleep.wake_sleep_loss(key, x, encode, decode, dream=dream)

    return loss_fn


def _gradient_update(make_loss: Callable[..., Loss]) -> Callable[..., Update]:
    """make_update for an algorithm that takes one optimizer step on a loss."""

    def make_update(model, tx, config, *, binary_data: bool) -> Update:
        loss_fn = make_loss(model, config, binary_data=binary_data)

        def update(state: TrainState, batch: Batch, key: jax.Array):
            grads, metrics = jax.grad(loss_fn, has_aux=True)(state.params, batch['x'], key)
            updates, opt_state = tx.update(grads, state.opt_state, state.params)
            params = optax.apply_updates(state.params, updates)
            metrics['grad_norm'] = optax.tree.norm(grads)
            new = state.replace(step=state.step + 1, params=params, opt_state=opt_state)
            return new, metrics

        return update

    return make_update


def _mcem_update(model, tx, config, *, binary_data: bool) -> Update:
    """update(state, batch, key) -> (state, metrics): one Monte Carlo EM iteration.

    E-step: ``mcem.hmc_e_step`` on the chains of the batch's examples
    ``batch['idx']``; M-step:
    ``config.mcem.num_weight_updates`` optimizer steps on ``mcem.mcem_loss`` at the
    acquired sample (decoder gradients only; the encoder's are zero). The metrics are
    those of the first M-step update, i.e. log p(x, z) at the new sample before the
    parameters move, plus the E-step's mean acceptance and step size.
    """
    del binary_data  # MCEM dreams nothing.
    mc = config.mcem

    def decoder(params):
        return functools.partial(model.apply, {'params': params}, method=model.decode)

    def loss_fn(params, x, z):
        return mcem.mcem_loss(x, z, decoder(params))

    def update(state: TrainState, batch: Batch, key: jax.Array):
        x, idx = batch['x'], batch.get('idx')
        if idx is None:
            raise ValueError("algorithm=mcem needs the batch's example indices: step(..., idx)")
        chains = mcem.gather_chains(state.mcmc, idx)
        chains, acceptance = mcem.hmc_e_step(
            key,
            x,
            chains,
            decoder(state.params),
            num_leapfrog_steps=mc.num_leapfrog_steps,
            num_transitions=mc.num_transitions,
            target_acceptance=mc.target_acceptance,
            step_size_adaptation=mc.step_size_adaptation,
        )

        def weight_update(carry, _):
            params, opt_state = carry
            grads, terms = jax.grad(loss_fn, has_aux=True)(params, x, chains.z)
            updates, opt_state = tx.update(grads, opt_state, params)
            terms['grad_norm'] = optax.tree.norm(grads)
            return (optax.apply_updates(params, updates), opt_state), terms

        (params, opt_state), terms = jax.lax.scan(
            weight_update, (state.params, state.opt_state), length=mc.num_weight_updates
        )
        metrics = {k: v[0] for k, v in terms.items()}  # The first update's: before the M-step.
        metrics['acceptance_rate'] = jnp.mean(acceptance)
        metrics['step_size'] = jnp.mean(chains.step_size)
        mcmc = mcem.scatter_chains(
            state.mcmc, idx, chains, step_size_adaptation=mc.step_size_adaptation
        )
        new = state.replace(step=state.step + 1, params=params, opt_state=opt_state, mcmc=mcmc)
        return new, metrics

    return update


ALGORITHMS = {
    'aevb': Algorithm(
        _init_plain, _gradient_update(aevb_loss), any_model=True, uses_objective=True
    ),
    'wake_sleep': Algorithm(_init_plain, _gradient_update(wake_sleep_loss)),
    'mcem': Algorithm(
        _init_mcem,
        _mcem_update,
        trains_encoder=False,
        per_example_state=True,
        updates_per_step=lambda config: config.mcem.num_weight_updates,
    ),
}


def of(config: ml_collections.ConfigDict) -> Algorithm:
    """The row of ``config.algorithm``."""
    return ALGORITHMS[config.algorithm]
