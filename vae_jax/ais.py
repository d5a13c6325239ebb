"""MCMC estimators of log p(x): AIS, bidirectional Monte Carlo and Kingma & Welling's App. D.

All functions are pure functions of a PRNG key, data ``x`` of shape ``[B, *event_shape]``
and a model seen through :class:`vae_jax.objectives.LatentModel` only: log p(z),
p(x|z), draws of p(z) (``sample_prior``) and, to start from the encoder, q(z|x) as a
distribution (``posterior``). Any latent structure works: the latents of one example
(a pytree, e.g. the hierarchical model's (z_1, z_2)) are flattened into one vector,
the HMC state (:class:`FlatLatents`). Every chain targets one example's posterior, so
the MCMC is vmapped over chains and examples and the model sees a batch of one example.

The Markov transitions are blackjax's HMC kernel (``blackjax.mcmc.hmc.build_kernel``)
with an identity mass matrix; its ``logdensity_fn`` is an argument of each call, so one
kernel serves every intermediate density of the annealing path.

References:
  Neal (2001), "Annealed Importance Sampling".
  Grosse, Ghahramani & Adams (2015), "Sandwiching the marginal likelihood using
  bidirectional Monte Carlo".
  Wu, Burda, Salakhutdinov & Grosse (2017), "On the Quantitative Analysis of
  Decoder-Based Generative Models" (sigmoid schedule, step-size adaptation, BDMC for VAEs).
  Kingma & Welling (2013), "Auto-Encoding Variational Bayes", Appendix D.
"""

from __future__ import annotations

import functools
import importlib
import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from vae_jax import objectives

if TYPE_CHECKING:
    import blackjax

SCHEDULES = ('sigmoid', 'linear')
# Where the annealing path starts (p0): the prior p(z), or the encoder's q(z|x).
STARTS = ('prior', 'encoder')

# Step-size adaptation constants of Wu et al.'s released code (hmc.py of their BDMC code):
# multiply by 1.02 when the smoothed acceptance is above target, else by 0.98, and clip.
_TARGET_ACCEPTANCE = 0.65
_STEP_INC, _STEP_DEC = 1.02, 0.98
_STEP_MIN, _STEP_MAX = 1e-4, 0.5
_ACCEPTANCE_SMOOTHING = 0.9
# The sigmoid schedule of Wu et al. spans sigmoid(-4) .. sigmoid(4) before rescaling.
_SIGMOID_RADIUS = 4.0


def blackjax_hmc():
    """``blackjax.mcmc.hmc``, imported on first use.

    Importing blackjax starts jax's backend, which must wait for
    ``jax.distributed.initialize`` in multi-host runs (vae_jax/parallel.py).
    """
    return importlib.import_module('blackjax.mcmc.hmc')


@functools.cache
def _hmc_kernel():
    """Velocity-Verlet HMC; built once, the target density is an argument of each call."""
    return blackjax_hmc().build_kernel()


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


class FlatLatents(NamedTuple):
    """One example's latents (a pytree) as one vector ``[D]``, the state of an HMC chain.

    ``flatten(z, lead)``: leaves ``[*lead, ...]`` -> ``[*lead, D]``; ``unflatten(v)``:
    ``[D]`` -> the pytree for a batch of one example (leaves ``[1, ...]``).
    """

    size: int
    flatten: Callable[[Any, int], jax.Array]
    unflatten: Callable[[jax.Array], Any]


def flat_latents(model: objectives.LatentModel, x: jax.Array) -> FlatLatents:
    """The layout of ``model``'s latents, read from the shapes of one posterior draw.

    Hand-written rather than ``jax.flatten_util.ravel_pytree``, which flattens one
    pytree, not a pytree whose leaves carry leading chain and batch axes.
    """
    shapes = jax.eval_shape(model.sample_posterior, jax.random.key(0), x[:1], None).z
    leaves, treedef = jax.tree.flatten(shapes)
    event_shapes = [leaf.shape[1:] for leaf in leaves]
    sizes = [math.prod(shape) for shape in event_shapes]

    def flatten(z, lead: int):
        parts = jax.tree.leaves(z)
        return jnp.concatenate([p.reshape(*p.shape[:lead], -1) for p in parts], axis=-1)

    def unflatten(v):
        parts, offset = [], 0
        for shape, size in zip(event_shapes, sizes, strict=True):
            parts.append(v[offset : offset + size].reshape(1, *shape))
            offset += size
        return jax.tree.unflatten(treedef, parts)

    return FlatLatents(sum(sizes), flatten, unflatten)


def log_joint_fn(model: objectives.LatentModel, flat: FlatLatents) -> Callable:
    """(z ``[D]``, x_b ``[*event]``) -> log p(x_b|z) + log p(z), a scalar."""

    def log_joint(z, x_b):
        z = flat.unflatten(z)
        return model.decode(z).log_prob(x_b[None])[0] + model.log_prior(z)[0]

    return log_joint


class _Start(NamedTuple):
    """p0, the annealing path's start: per-example parameters (a pytree whose leaves lead
    with B, or None) and ``log_prob(z [D], params of one example)``, a scalar."""

    params: Any
    log_prob: Callable[[jax.Array, Any], jax.Array]


def _require_posterior(model: objectives.LatentModel) -> None:
    if model.posterior is None:
        raise ValueError(
            "start='encoder' needs log q(z|x) at any z (LatentModel.posterior), which this "
            "model has not (a hierarchical posterior); use start='prior'"
        )


def _start(model: objectives.LatentModel, x: jax.Array, start: str, flat: FlatLatents) -> _Start:
    """p0 = p(z) (``'prior'``) or q(z|x) (``'encoder'``)."""
    if start == 'prior':
        return _Start(None, lambda z, _: model.log_prior(flat.unflatten(z))[0])
    if start == 'encoder':
        _require_posterior(model)
        return _Start(model.posterior(x), lambda z, q: q.log_prob(flat.unflatten(z))[0])
    raise ValueError(f'start must be one of {STARTS}, got {start!r}')


def _start_draws(
    key: jax.Array,
    model: objectives.LatentModel,
    x: jax.Array,
    start: str,
    flat: FlatLatents,
    num_chains: int,
) -> jax.Array:
    """``[C, B, D]`` draws of p0 (:func:`_start`)."""
    batch = x.shape[0]
    if start == 'encoder':
        return flat.flatten(model.sample_posterior(key, x, num_chains).z, 2)
    if model.sample_prior is None:
        raise ValueError("start='prior' needs draws of p(z) (LatentModel.sample_prior)")
    z = flat.flatten(model.sample_prior(key, num_chains * batch), 1)
    return z.reshape(num_chains, batch, flat.size)


def adapt_hmc_step_size(
    step_size: jax.Array,
    avg_acceptance: jax.Array,
    acceptance: jax.Array,
    target_acceptance: float = _TARGET_ACCEPTANCE,
) -> tuple[jax.Array, jax.Array]:
    """Wu et al.'s multiplicative rule on a smoothed acceptance rate, per example ``[B]``.

    The smoothed rate is 0.9 * ``avg_acceptance`` + 0.1 * ``acceptance``; the step is
    multiplied by 1.02 when it is above ``target_acceptance`` (0.65 by default, as in Wu et
    al.'s code), else by 0.98, and clipped to [1e-4, 0.5].

    Returns:
      ``(step_size, avg_acceptance)``, each ``[B]``.
    """
    avg_acceptance = (
        _ACCEPTANCE_SMOOTHING * avg_acceptance + (1.0 - _ACCEPTANCE_SMOOTHING) * acceptance
    )
    factor = jnp.where(avg_acceptance > target_acceptance, _STEP_INC, _STEP_DEC)
    return jnp.clip(step_size * factor, _STEP_MIN, _STEP_MAX), avg_acceptance


def hmc_step(
    key: jax.Array,
    state: blackjax.mcmc.hmc.HMCState,
    logdensity_fn: Callable[[jax.Array], jax.Array],
    step_size: jax.Array,
    num_leapfrog_steps: int,
) -> tuple[blackjax.mcmc.hmc.HMCState, blackjax.mcmc.hmc.HMCInfo]:
    """One blackjax HMC transition for one chain (``z`` ``[D]``, identity mass matrix).

    The kernel takes ``logdensity_fn`` per call, so the same kernel can target a different
    density at every step; ``state`` must hold that density's value and gradient.

    A fixed trajectory length can be (nearly) periodic on a Gaussian-like posterior, so the
    chain barely moves (seen on the pPCA test model at step 0.5 x 10 leapfrog steps); a
    random +-20 % step size per transition breaks the resonance and, drawn independently
    of the state, keeps detailed balance (Neal 2011, "MCMC using Hamiltonian dynamics",
    Sec. 5.4.2.2).
    """
    key_jitter, key_kernel = jax.random.split(key)
    step_size = step_size * jax.random.uniform(key_jitter, (), jnp.float32, 0.8, 1.2)
    inverse_mass_matrix = jnp.ones(state.position.shape, state.position.dtype)
    return _hmc_kernel()(
        key_kernel, state, logdensity_fn, step_size, inverse_mass_matrix, num_leapfrog_steps
    )


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
        state = blackjax_hmc().HMCState(z, log_f_z, grad)
        state, info = hmc_step(key, state, lambda z: log_f(z, beta)[0], eps, num_leapfrog_steps)
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
            eps, avg_acc = adapt_hmc_step_size(eps, avg_acc, acc)
        return (z, log_w + d_log_w, eps, avg_acc, acc_sum + acc), used

    betas = jnp.asarray(betas, jnp.float32)
    num_steps = betas.shape[0] - 1
    step_sizes = jnp.broadcast_to(jnp.asarray(step_sizes, jnp.float32), (num_steps, batch))
    init = (
        z_init,
        jnp.zeros((num_chains, batch), jnp.float32),
        step_sizes[0],
        jnp.full((batch,), _TARGET_ACCEPTANCE, jnp.float32),
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
    flat = flat_latents(model, x)
    p0 = _start(model, x, start, flat)
    log_joint = log_joint_fn(model, flat)
    if adapt_step_size:
        key_pilot_init, key_pilot_anneal = jax.random.split(key_pilot)
        step_sizes = tune_step_sizes(
            key_pilot_anneal,
            x,
            _start_draws(key_pilot_init, model, x, start, flat, num_chains),
            p0,
            betas,
            log_joint,
            step_size=step_size,
            num_leapfrog_steps=num_leapfrog_steps,
        )
    else:
        step_sizes = jnp.full((num_annealing_steps, x.shape[0]), step_size, jnp.float32)
    z0 = _start_draws(key_init, model, x, start, flat, num_chains)
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
    flat = flat_latents(model, x)
    z_flat = flat.flatten(z_star, 1)
    z_init = jnp.broadcast_to(z_flat[None], (num_chains, *z_flat.shape))
    # The forward pilot's schedule, frozen: reverse weights stay unbiased for 1 / p(x).
    reverse_log_w, reverse_acceptance, _, _ = _anneal(
        key_rev,
        x,
        z_init,
        _start(model, x, start, flat),
        annealing_schedule(num_annealing_steps, schedule)[::-1],
        log_joint_fn(model, flat),
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


def _full_gaussian_log_prob(z: jax.Array, mean: jax.Array, chol: jax.Array) -> jax.Array:
    """log N(z; mean, L L^T) for z ``[S, D]``, mean ``[D]``, chol L ``[D, D]`` -> ``[S]``."""
    diff = z - mean[None]
    white = jax.scipy.linalg.solve_triangular(chol, diff.T, lower=True)  # [D, S]
    log_det = 2.0 * jnp.sum(jnp.log(jnp.diagonal(chol)))
    dim = z.shape[-1]
    return -0.5 * (dim * math.log(2.0 * math.pi) + log_det + jnp.sum(jnp.square(white), axis=0))


def hmc_marginal_likelihood(
    key: jax.Array,
    x: jax.Array,
    model: objectives.LatentModel,
    *,
    num_posterior_samples: int = 1000,
    num_burnin: int = 500,
    step_size: float = 0.05,
    num_leapfrog_steps: int = 10,
    start: str = 'prior',
) -> jax.Array:
    """Kingma & Welling (2013), Appendix D, "Marginal likelihood estimator" (their Fig. 3).

    Per example, one HMC chain (blackjax) on p(z|x) ∝ p(x|z) p(z):

    1. after ``num_burnin`` steps (during which the step size is adapted towards 65 %
       acceptance, then frozen so the kept chain is a fixed HMC kernel), keep
       L = ``num_posterior_samples`` states;
    2. fit a density q(z) to them: a full-covariance Gaussian (sample mean and covariance,
       plus 1e-6 I jitter). The paper leaves the estimator open; a Gaussian with the
       fitted covariance follows the posterior's correlations and scale, and in the small
       latent spaces where this estimator is usable (the paper's Fig. 3 uses D <= 3-ish)
       L >> D samples pin the D (D + 1) / 2 covariance entries down;
    3. continue the chain for L new states z_l and return

         log p(x) ~= -( logsumexp_l [log q(z_l) - log p(x|z_l) - log p(z_l)] - log L ),

       the log of (1/L sum_l q(z_l) / (p(x|z_l) p(z_l)))^-1.

    This is a harmonic-mean-type estimator (E_{p(z|x)}[q(z) / p(x, z)] = 1/p(x)): it is
    consistent but biased UPWARD: the mean of the ratios is unbiased for 1/p(x), so by
    Jensen minus its log is above log p(x) in expectation (an upper bound with exact
    posterior samples; the opposite direction to IS and AIS). Its variance is finite only
    if q has lighter tails than the posterior, which a fitted Gaussian guarantees only
    roughly and ever less so as D grows.
    Trust it in low dimensions only; prefer :func:`ais_log_likelihood` otherwise.

    Args:
      key: PRNG key.
      x: ``[B, *event_shape]``.
      model: any latent structure (the chain runs on the flattened latents, D in all).
      num_posterior_samples, num_burnin, num_leapfrog_steps: static sizes.
      start: ``'encoder'``: the chain starts at q(z|x)'s mean (``model.posterior``);
        ``'prior'``: at a draw of p(z).

    Returns:
      ``[B]`` estimates of log p(x).
    """
    batch = x.shape[0]
    key_init, key_burn, key_fit, key_est = jax.random.split(key, 4)
    flat = flat_latents(model, x)
    latent_dim = flat.size
    if start == 'encoder':
        _require_posterior(model)
        z0 = flat.flatten(model.posterior(x).mean(), 1)
    elif start == 'prior':
        z0 = _start_draws(key_init, model, x, start, flat, 1)[0]
    else:
        raise ValueError(f'start must be one of {STARTS}, got {start!r}')
    log_joint = log_joint_fn(model, flat)

    def chain_step(key, state, x_b, eps):
        return hmc_step(key, state, lambda z: log_joint(z, x_b), eps, num_leapfrog_steps)

    step_all = jax.vmap(chain_step)  # over examples
    init_all = jax.vmap(lambda z, x_b: blackjax_hmc().init(z, lambda z: log_joint(z, x_b)))

    def burn_body(carry, step_key):
        state, eps, avg_acc = carry
        state, info = step_all(jax.random.split(step_key, batch), state, x, eps)
        eps, avg_acc = adapt_hmc_step_size(eps, avg_acc, info.acceptance_rate)
        return (state, eps, avg_acc), None

    def sample_body(carry, step_key):
        state, eps = carry
        state, _ = step_all(jax.random.split(step_key, batch), state, x, eps)
        return (state, eps), state.position

    state = init_all(z0, x)
    eps = jnp.full((batch,), step_size, jnp.float32)
    avg_acc = jnp.full((batch,), _TARGET_ACCEPTANCE, jnp.float32)
    (state, eps, _), _ = jax.lax.scan(
        burn_body, (state, eps, avg_acc), jax.random.split(key_burn, num_burnin)
    )
    keys_fit = jax.random.split(key_fit, num_posterior_samples)
    (state, eps), z_fit = jax.lax.scan(sample_body, (state, eps), keys_fit)  # [L, B, D]
    keys_est = jax.random.split(key_est, num_posterior_samples)
    _, z_est = jax.lax.scan(sample_body, (state, eps), keys_est)  # [L, B, D]

    def per_example(z_fit_b, z_est_b, x_b):
        q_mean = jnp.mean(z_fit_b, axis=0)
        cov = jnp.cov(z_fit_b, rowvar=False).reshape(latent_dim, latent_dim)
        chol = jnp.linalg.cholesky(cov + 1e-6 * jnp.eye(latent_dim, dtype=cov.dtype))
        log_q = _full_gaussian_log_prob(z_est_b, q_mean, chol)
        log_p = jax.vmap(log_joint, in_axes=(0, None))(z_est_b, x_b)
        return -_log_mean_exp(log_q - log_p)

    return jax.vmap(per_example, in_axes=(1, 1, 0))(z_fit, z_est, x)
