"""Annealed importance sampling and bidirectional Monte Carlo estimates of log p(x).

All functions are pure functions of a PRNG key, data ``x`` of shape ``[B, *event_shape]``
and a model seen through :class:`vae_jax.objectives.LatentModel` only: log p(z),
p(x|z), draws of p(z) (``sample_prior``) and, to start from the encoder, q(z|x) as a
distribution (``posterior``). Any latent structure works: one example's latents are
one flat vector, the state of its HMC chain (:mod:`vae_jax.hmc`, which holds the
kernel, the step-size adaptation and the flattening). Every chain targets one
example's posterior, so the MCMC is vmapped over chains and examples and the model
sees a batch of one example. Kingma & Welling's Appendix D estimator, also built on
HMC, is :mod:`vae_jax.appendix_d`.

References:
  Neal (2001), "Annealed Importance Sampling".
  Grosse, Ghahramani & Adams (2015), "Sandwiching the marginal likelihood using
  bidirectional Monte Carlo".
  Wu, Burda, Salakhutdinov & Grosse (2017), "On the Quantitative Analysis of
  Decoder-Based Generative Models" (sigmoid schedule, step-size adaptation, BDMC for VAEs).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from vae_jax import hmc, objectives

SCHEDULES = ('sigmoid', 'linear')
STARTS = hmc.STARTS  # p0: the prior p(z), or the encoder's q(z|x).
# The sigmoid schedule of Wu et al. spans sigmoid(-4) .. sigmoid(4) before rescaling.
_SIGMOID_RADIUS = 4.0


def annealing_schedule(num_annealing_steps: int, schedule: str = 'sigmoid') -> np.ndarray:
    """Inverse temperatures 0 = beta_0 < ... < beta_T = 1, ``[T + 1]`` (T static).

    ``'sigmoid'`` is Wu et al.'s (2017) schedule: sigmoid on an even grid over [-4, 4],
    rescaled to [0, 1], which spends more steps near beta = 0 and beta = 1 where the
    intermediate densities change fastest. ``'linear'`` is an even grid.
    """
    if num_annealing_steps < 1:
        raise ValueError(f'num_annealing_steps must be >= 1, got {num_annealing_steps}')
    if schedule == 'linear':
        return np.linspace(0.0, 1.0, num_annealing_steps + 1)
    if schedule == 'sigmoid':
        t = np.linspace(-_SIGMOID_RADIUS, _SIGMOID_RADIUS, num_annealing_steps + 1)
        s = 1.0 / (1.0 + np.exp(-t))
        return (s - s[0]) / (s[-1] - s[0])
    raise ValueError(f'schedule must be one of {SCHEDULES}, got {schedule!r}')


class _Start(NamedTuple):
    """p0, the annealing path's start: per-example parameters (a pytree whose leaves lead
    with B, or None) and ``log_prob(z [D], params of one example)``, a scalar."""

    params: Any
    log_prob: Callable[[jax.Array, Any], jax.Array]


def _start(
    model: objectives.LatentModel, x: jax.Array, start: str, flat: hmc.FlatLatents
) -> _Start:
    """p0 = p(z) (``'prior'``) or q(z|x) (``'encoder'``)."""
    if start == 'prior':
        return _Start(None, lambda z, _: model.log_prior(flat.unflatten(z))[0])
    if start == 'encoder':
        hmc.require_posterior(model)
        return _Start(model.posterior(x), lambda z, q: q.log_prob(flat.unflatten(z))[0])
    raise ValueError(f'start must be one of {STARTS}, got {start!r}')


def _anneal(
    key: jax.Array,
    x: jax.Array,
    z_init: jax.Array,
    p0: _Start,
    betas: np.ndarray,
    log_joint: Callable,
    *,
    step_sizes: jax.Array,
    num_leapfrog_steps: int,
    adapt_step_size: bool = False,
) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    """AIS along ``betas`` (increasing: forward; decreasing: reverse) from ``z_init``.

    The path is log f_beta(z) = log p0(z) + beta * g(z), g = log p(x, z) - log p0(z).
    Step t adds (beta_t - beta_{t-1}) * g(z_{t-1}) to the log-weight, then applies one HMC
    transition that leaves f_{beta_t} invariant (Neal 2001, Sec. 2).

    The weights are valid only if the kernel of each step is fixed in advance: a step size
    adapted from the chain's own earlier acceptances makes the kernel a function of the
    state's past, and the resulting mixture of invariant kernels is not invariant, so
    E[w] != Z_T / Z_0 in general (with Wu et al.'s gentle x1.02 / x0.98 rule the bias was
    below what 10^6 one-chain runs resolve on a 1-D linear-Gaussian model, but nothing
    bounds it in general). So ``adapt_step_size=True`` is a pilot
    run: it adapts, and its log-weights must be thrown away; only the step sizes it
    returns are used, frozen, by a run with fresh randomness (:func:`tune_step_sizes`).

    Args:
      z_init: ``[C, B, D]`` start states (draws from f_{beta_0}).
      p0: the path's start (:func:`_start`); ``log_joint``: :func:`log_joint_fn`'s.
      betas: ``[T + 1]`` static inverse temperatures.
      step_sizes: ``[T, B]``, the HMC step size of every transition and example; with
        ``adapt_step_size`` only ``step_sizes[0]`` is read (the initial size).

    Returns:
      log-weights ``[C, B]``, mean acceptance ``[B]``, final states ``[C, B, D]`` and the
      step sizes used ``[T, B]``.
    """
    num_chains, batch, _ = z_init.shape

    def chain_step(key, z, x_b, p0_b, beta_prev, beta, eps):
        def log_f(z, beta):
            log_p0 = p0.log_prob(z, p0_b)
            g = log_joint(z, x_b) - log_p0
            return log_p0 + beta * g, g

        # One value-and-grad gives both the weight increment g(z_{t-1}) and a fresh HMC
        # state for the new density: blackjax caches log f and its gradient in the state,
        # so a state carried over from f_{beta_{t-1}} would be stale.
        (log_f_z, g), grad = jax.value_and_grad(log_f, has_aux=True)(z, beta)
        state = hmc.blackjax_hmc().HMCState(z, log_f_z, grad)
        state, info = hmc.hmc_step(key, state, lambda z: log_f(z, beta)[0], eps, num_leapfrog_steps)
        return state.position, (beta - beta_prev) * g, info.acceptance_rate

    # Inner vmap: examples (own data, p0 and step size); outer: chains (shared per example).
    step_all = jax.vmap(
        jax.vmap(chain_step, in_axes=(0, 0, 0, 0, None, None, 0)),
        in_axes=(0, 0, None, None, None, None, None),
    )

    def body(carry, inputs):
        z, log_w, eps, avg_acc, acc_sum = carry
        step_key, beta_prev, beta, fixed_eps = inputs
        if not adapt_step_size:
            eps = fixed_eps
        keys = jax.random.split(step_key, (num_chains, batch))
        z, d_log_w, acc = step_all(keys, z, x, p0.params, beta_prev, beta, eps)
        acc = jnp.mean(acc, axis=0)
        used = eps
        if adapt_step_size:
            eps, avg_acc = hmc.adapt_hmc_step_size(eps, avg_acc, acc)
        return (z, log_w + d_log_w, eps, avg_acc, acc_sum + acc), used

    betas = jnp.asarray(betas, jnp.float32)
    num_steps = betas.shape[0] - 1
    step_sizes = jnp.broadcast_to(jnp.asarray(step_sizes, jnp.float32), (num_steps, batch))
    init = (
        z_init,
        jnp.zeros((num_chains, batch), jnp.float32),
        step_sizes[0],
        jnp.full((batch,), hmc.TARGET_ACCEPTANCE, jnp.float32),
        jnp.zeros((batch,), jnp.float32),
    )
    inputs = (jax.random.split(key, num_steps), betas[:-1], betas[1:], step_sizes)
    (z, log_w, _, _, acc_sum), used = jax.lax.scan(body, init, inputs)
    return log_w, acc_sum / num_steps, z, used


def tune_step_sizes(
    key: jax.Array,
    x: jax.Array,
    z_init: jax.Array,
    p0: _Start,
    betas: np.ndarray,
    log_joint: Callable,
    *,
    step_size: float,
    num_leapfrog_steps: int,
) -> jax.Array:
    """A pilot AIS run without weights: the adapted HMC step size of every step, ``[T, B]``.

    Forward along ``betas`` from ``z_init`` ``[C, B, D]`` (fresh draws of p0, not the
    weighted chains' starts), adapting each example's step size
    towards 65 % acceptance (:func:`adapt_hmc_step_size`) from its chains' acceptances;
    the pilot's weights are discarded. The weighted runs then use this schedule frozen:
    each of their transitions is a kernel fixed before they start, so their weights stay
    unbiased (Neal 2001 allows any schedule chosen independently of the weighted chains).
    """
    *_, used = _anneal(
        key,
        x,
        z_init,
        p0,
        betas,
        log_joint,
        step_sizes=jnp.full((x.shape[0],), step_size, jnp.float32),
        num_leapfrog_steps=num_leapfrog_steps,
        adapt_step_size=True,
    )
    return used


def reversed_step_sizes(step_sizes: jax.Array) -> jax.Array:
    """The forward schedule ``[T, B]`` for the reverse chain of BDMC, matched by target.

    Forward transition t targets f_{beta_{t+1}}; reverse transition j (from beta_{T-j} to
    beta_{T-1-j}) targets f_{beta_{T-1-j}}, tuned forward at t = T - 2 - j. The last
    reverse transition targets p0 itself, never a forward target: it takes the first size.
    """
    return jnp.concatenate([step_sizes[-2::-1], step_sizes[:1]], axis=0)


def _log_mean_exp(a: jax.Array, axis: int = 0) -> jax.Array:
    return jax.nn.logsumexp(a, axis=axis) - math.log(a.shape[axis])


def ais_log_likelihood(
    key: jax.Array,
    x: jax.Array,
    model: objectives.LatentModel,
    *,
    num_annealing_steps: int,
    num_chains: int,
    step_size: float = 0.05,
    num_leapfrog_steps: int = 10,
    start: str = 'prior',
    schedule: str = 'sigmoid',
    adapt_step_size: bool = True,
) -> dict[str, jax.Array]:
    """Annealed importance sampling estimate of log p(x) (Neal 2001; Wu et al. 2017).

    Geometric path f_t(z) = p0(z) [p(x|z) p(z) / p0(z)]^beta_t from p0 (``start``: the
    prior p(z), or the encoder's q(z|x)) to the unnormalised posterior p(x|z) p(z), with
    T = ``num_annealing_steps`` transitions on ``schedule`` (:func:`annealing_schedule`)
    and one HMC transition (``num_leapfrog_steps`` leapfrog steps) per intermediate
    density. Each chain's weight exp(log_weights) is an unbiased estimate of p(x), so
    ``log_px`` is a stochastic lower bound on log p(x) (Jensen); with T = 1 it is plain
    importance sampling from p0.

    ``step_size`` is the HMC step size; with ``adapt_step_size`` it is the initial size of a
    pilot run (:func:`tune_step_sizes`, ``num_chains`` unweighted chains, so about twice
    the cost) that adapts it per example towards 65 % acceptance as in Wu et al.'s code
    (x1.02 / x0.98 per step, clipped to [1e-4, 0.5]); the weighted chains then run with
    the pilot's schedule frozen, which keeps each weight unbiased. (Wu et al. adapt inside
    the weighted run, which biases E[w].)

    Args:
      key: PRNG key.
      x: ``[B, *event_shape]``.
      model: needs ``sample_prior`` for ``start='prior'``, ``posterior`` for ``'encoder'``.
      num_annealing_steps, num_chains, num_leapfrog_steps: static sizes.

    Returns:
      dict with ``log_px`` ``[B]`` (logmeanexp over chains), ``log_weights``
      ``[num_chains, B]``, ``acceptance_rate`` ``[B]`` (mean over steps and chains) and
      ``step_sizes`` ``[T, B]`` (the frozen schedule the weighted chains used).
    """
    betas = annealing_schedule(num_annealing_steps, schedule)
    key_init, key_anneal, key_pilot = jax.random.split(key, 3)
    flat = hmc.flat_latents(model, x)
    p0 = _start(model, x, start, flat)
    log_joint = hmc.log_joint_fn(model, flat)
    if adapt_step_size:
        key_pilot_init, key_pilot_anneal = jax.random.split(key_pilot)
        step_sizes = tune_step_sizes(
            key_pilot_anneal,
            x,
            hmc.start_draws(key_pilot_init, model, x, start, flat, num_chains),
            p0,
            betas,
            log_joint,
            step_size=step_size,
            num_leapfrog_steps=num_leapfrog_steps,
        )
    else:
        step_sizes = jnp.full((num_annealing_steps, x.shape[0]), step_size, jnp.float32)
    z0 = hmc.start_draws(key_init, model, x, start, flat, num_chains)
    log_w, acceptance, _, _ = _anneal(
        key_anneal,
        x,
        z0,
        p0,
        betas,
        log_joint,
        step_sizes=step_sizes,
        num_leapfrog_steps=num_leapfrog_steps,
    )
    return dict(
        log_px=_log_mean_exp(log_w),
        log_weights=log_w,
        acceptance_rate=acceptance,
        step_sizes=step_sizes,
    )


def simulate(
    key: jax.Array, model: objectives.LatentModel, *, num_examples: int
) -> tuple[objectives.Latents, jax.Array]:
    """Exact draws (z*, x) ~ p(z) p(x|z): ``z`` (leaves ``[N, ...]``), ``x`` ``[N, *event]``.

    Bernoulli data are binary draws (float32 0/1), Gaussian data mean + sd * noise. The
    pair makes z* an exact sample from p(z|x), which reverse AIS needs (Grosse et al. 2015).
    """
    if model.sample_prior is None:
        raise ValueError('simulating data needs draws of p(z) (LatentModel.sample_prior)')
    key_z, key_x = jax.random.split(key)
    z = model.sample_prior(key_z, num_examples)
    return z, model.decode(z).sample(key_x)


def bdmc(
    key: jax.Array,
    model: objectives.LatentModel,
    *,
    event_shape: tuple[int, ...],
    num_examples: int,
    num_annealing_steps: int,
    num_chains: int,
    step_size: float = 0.05,
    num_leapfrog_steps: int = 10,
    start: str = 'prior',
    schedule: str = 'sigmoid',
    adapt_step_size: bool = True,
) -> dict[str, jax.Array]:
    """Bidirectional Monte Carlo sandwich of log p(x) on simulated data.

    Grosse et al. (2015); Wu et al. (2017), Sec. 4. Draws (z*, x) ~ p(z) p(x|z)
    (:func:`simulate`), then

    * forward AIS from p0 to the posterior (:func:`ais_log_likelihood`): each weight is
      unbiased for p(x), so ``lower`` = logmeanexp(weights) <= log p(x) in expectation;
    * reverse AIS started at the exact posterior sample z* and annealed from beta = 1 to
      0 along the same schedule: each weight is unbiased for p0-normaliser / p(x) = 1/p(x),
      so ``upper`` = -logmeanexp(reverse weights) >= log p(x) in expectation.

    The true log p(x) lies between them in expectation; ``upper - lower`` bounds the
    error of forward AIS on data from the model.

    Args:
      event_shape: the shape of one x; checked against the decoder's output.
      num_examples, num_annealing_steps, num_chains: static sizes.
      start: p0 at both ends of the path, as in :func:`ais_log_likelihood`.

    Returns:
      dict with ``lower``, ``upper`` ``[N]``, ``x`` ``[N, *event_shape]``, ``z`` (the exact
      posterior samples, leaves ``[N, ...]``) and ``forward_acceptance``,
      ``reverse_acceptance`` ``[N]``.
    """
    key_sim, key_fwd, key_rev = jax.random.split(key, 3)
    z_star, x = simulate(key_sim, model, num_examples=num_examples)
    if x.shape[1:] != tuple(event_shape):
        raise ValueError(f'decoder gives events of shape {x.shape[1:]}, expected {event_shape}')
    forward = ais_log_likelihood(
        key_fwd,
        x,
        model,
        num_annealing_steps=num_annealing_steps,
        num_chains=num_chains,
        step_size=step_size,
        num_leapfrog_steps=num_leapfrog_steps,
        start=start,
        schedule=schedule,
        adapt_step_size=adapt_step_size,
    )
    flat = hmc.flat_latents(model, x)
    z_flat = flat.flatten(z_star, 1)
    z_init = jnp.broadcast_to(z_flat[None], (num_chains, *z_flat.shape))
    # The forward pilot's schedule, frozen: reverse weights stay unbiased for 1 / p(x).
    reverse_log_w, reverse_acceptance, _, _ = _anneal(
        key_rev,
        x,
        z_init,
        _start(model, x, start, flat),
        annealing_schedule(num_annealing_steps, schedule)[::-1],
        hmc.log_joint_fn(model, flat),
        step_sizes=reversed_step_sizes(forward['step_sizes']),
        num_leapfrog_steps=num_leapfrog_steps,
    )
    return dict(
        lower=forward['log_px'],
        upper=-_log_mean_exp(reverse_log_w),
        x=x,
        z=z_star,
        forward_acceptance=forward['acceptance_rate'],
        reverse_acceptance=reverse_acceptance,
    )
