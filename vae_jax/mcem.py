"""Monte Carlo EM, the second baseline of Kingma & Welling (2013), Sec. 5.

It trains the same decoder p_theta(x|z) (prior p(z) = N(0, I)) as AEVB and uses no
encoder. Like :mod:`vae_jax.objectives`, every function is a pure function of a PRNG key,
arrays and the callable ``decode(z) -> p(x|z)`` (``z`` ``[..., B, D]``); the caller
(``algorithms``' MCEM row) holds the parameters and the chains. The other baseline is
:mod:`vae_jax.wake_sleep`.

Monte Carlo EM, as the paper states it (Appendix E, "Monte Carlo EM"):

  "The Monte Carlo EM algorithm does not employ an encoder, instead it samples from the
  posterior of the latent variables using gradients of the posterior computed with
  grad_z log p_theta(z|x) = grad_z log p_theta(z) + grad_z log p_theta(x|z). The Monte Carlo
  EM procedure consists of 10 HMC leapfrog steps with an automatically tuned stepsize such
  that the acceptance rate was 90%, followed by 5 weight updates steps using the acquired
  sample. For all algorithms the parameters were updated using the Adagrad stepsizes (with
  accompanying annealing schedule)."

and Sec. 5 ("Marginal likelihood"): AEVB and wake-sleep "were compared to Monte Carlo EM
(MCEM) with a Hybrid Monte Carlo (HMC) [DKPR87] sampler", on MNIST with 3 latent variables
and 100 hidden units; "Monte Carlo EM is not an on-line algorithm, and (unlike AEVB and the
wake-sleep method) can't be applied efficiently for the full MNIST dataset" (Fig. 3).

Here one MCEM iteration on a minibatch is :func:`hmc_e_step` (HMC transitions of 10
leapfrog steps on p_theta(z|x), started from each example's persistent sample z_n, with
step sizes adapted towards 90 % acceptance) followed by 5 gradient steps on
:func:`mcem_loss`, the mean of log p_theta(x|z) + log p(z) at the acquired sample. The
paper does not say how its step size was tuned; we use the multiplicative rule of
:func:`vae_jax.hmc.adapt_hmc_step_size` with target 0.9, either on one step size shared
by all chains and adapted at every E-step from the batch's mean acceptance (``'shared'``),
or on each chain's own step size (``'per_example'``). A chain is visited once per epoch,
so per-example sizes move by at most 2 % per epoch and the acceptance is mostly what the
initial size gives: on the 4,000 embedded digits with minibatches of 32 (a 784-32-4
model), per-example sizes went from 0.050 to 0.056 in 1,000 steps with acceptance 0.95-0.98
over the first 600, whereas the shared size held it at 0.90 +- 0.01 from step 300 on.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from vae_jax import distributions, hmc, objectives

STEP_SIZE_ADAPTATIONS = ('shared', 'per_example')


class MCEMChains(NamedTuple):
    """The persistent state of MCEM's E-step: one HMC chain per training example.

    Attributes:
      z: ``[N, D]`` the current posterior sample of each training example.
      step_size: ``[N]`` each chain's HMC step size.
      avg_acceptance: ``[N]`` each chain's smoothed acceptance rate (for the adaptation).
    """

    z: jax.Array
    step_size: jax.Array
    avg_acceptance: jax.Array


def init_mcem_chains(
    key: jax.Array,
    num_examples: int,
    latent_dim: int,
    *,
    step_size: float,
    target_acceptance: float,
) -> MCEMChains:
    """Chains started at prior draws z_n ~ N(0, I), ``[N, D]``, all with ``step_size``."""
    return MCEMChains(
        z=jax.random.normal(key, (num_examples, latent_dim), jnp.float32),
        step_size=jnp.full((num_examples,), step_size, jnp.float32),
        avg_acceptance=jnp.full((num_examples,), target_acceptance, jnp.float32),
    )


def hmc_e_step(
    key: jax.Array,
    x: jax.Array,
    chains: MCEMChains,
    decode: objectives.Decode,
    *,
    num_leapfrog_steps: int = 10,
    num_transitions: int = 1,
    target_acceptance: float = 0.9,
    step_size_adaptation: str = 'shared',
) -> tuple[MCEMChains, jax.Array]:
    """MCEM's E-step: HMC on p_theta(z|x) ∝ p_theta(x|z) p(z) for each example of a batch.

    Each of ``num_transitions`` blackjax HMC transitions (:func:`vae_jax.hmc.hmc_step`:
    ``num_leapfrog_steps`` leapfrog steps, identity mass matrix, step size jittered by
    +-20 %) leaves p_theta(z|x) invariant; after each, the step size is adapted towards
    ``target_acceptance`` (:func:`vae_jax.hmc.adapt_hmc_step_size`): with
    ``step_size_adaptation='shared'`` one size for all chains (the batch's entries must be
    equal; all get the new value) from the batch's mean acceptance, with ``'per_example'``
    each chain's own from its own acceptance. The step of a transition depends only on
    earlier acceptances, so each transition is a fixed p_theta(z|x)-invariant kernel given
    the past; across EM iterations theta changes anyway, so the chains track a moving
    target, as in any MCEM with persistent chains.

    Args:
      key: PRNG key.
      x: ``[B, *event_shape]`` the batch.
      chains: the batch's chains (:class:`MCEMChains` with ``[B, D]`` / ``[B]`` arrays).
      decode: the generative model at the current theta (no gradient is taken here).
      num_leapfrog_steps, num_transitions: static sizes.
      step_size_adaptation: ``'shared'`` or ``'per_example'``.

    Returns:
      ``(chains, acceptance)``: the updated chains and the acceptance probability of each
      example ``[B]`` (mean over transitions).
    """

    def log_joint(z, x_b):  # log p(x_b|z) + log p(z) for one chain's z [D].
        return decode(z[None]).log_prob(x_b[None])[0] + distributions.std_normal_log_prob(z)

    def init_one(z, x_b):
        return hmc.blackjax_hmc().init(z, lambda z: log_joint(z, x_b))

    def step_one(key, state, x_b, eps):
        state, info = hmc.hmc_step(key, state, lambda z: log_joint(z, x_b), eps, num_leapfrog_steps)
        return state, info.acceptance_rate

    step_all = jax.vmap(step_one)  # over examples

    def body(carry, step_key):
        state, eps, avg = carry
        state, acc = step_all(jax.random.split(step_key, x.shape[0]), state, x, eps)
        if step_size_adaptation == 'shared':
            eps_0, avg_0 = hmc.adapt_hmc_step_size(eps[0], avg[0], jnp.mean(acc), target_acceptance)
            eps, avg = jnp.full_like(eps, eps_0), jnp.full_like(avg, avg_0)
        else:
            eps, avg = hmc.adapt_hmc_step_size(eps, avg, acc, target_acceptance)
        return (state, eps, avg), acc

    if step_size_adaptation not in STEP_SIZE_ADAPTATIONS:
        raise ValueError(
            f'step_size_adaptation must be one of {STEP_SIZE_ADAPTATIONS}, '
            f'got {step_size_adaptation!r}'
        )

    chains = jax.lax.stop_gradient(chains)
    state = jax.vmap(init_one)(chains.z, x)
    init = (state, chains.step_size, chains.avg_acceptance)
    (state, eps, avg), acc = jax.lax.scan(body, init, jax.random.split(key, num_transitions))
    return MCEMChains(state.position, eps, avg), jnp.mean(acc, axis=0)


def gather_chains(chains: MCEMChains, idx: jax.Array) -> MCEMChains:
    """The chains of examples ``idx`` ``[B]``: arrays ``[B, D]`` / ``[B]``."""
    return MCEMChains(*(jnp.take(a, idx, axis=0) for a in chains))


def scatter_chains(
    chains: MCEMChains, idx: jax.Array, batch: MCEMChains, *, step_size_adaptation: str
) -> MCEMChains:
    """``chains`` with the batch's updated chains written back at ``idx``.

    With ``'shared'`` adaptation every chain gets the batch's (common) new step size.
    """
    z = chains.z.at[idx].set(batch.z)
    if step_size_adaptation == 'shared':
        step_size = jnp.full_like(chains.step_size, batch.step_size[0])
        avg_acceptance = jnp.full_like(chains.avg_acceptance, batch.avg_acceptance[0])
    else:
        step_size = chains.step_size.at[idx].set(batch.step_size)
        avg_acceptance = chains.avg_acceptance.at[idx].set(batch.avg_acceptance)
    return MCEMChains(z, step_size, avg_acceptance)


def log_joint_terms(x: jax.Array, z: jax.Array, decode: objectives.Decode) -> dict[str, jax.Array]:
    """log p_theta(x|z), log p(z) and their sum log p_theta(x, z), each ``[B]``.

    Args:
      x: ``[B, *event_shape]``.
      z: ``[B, D]`` one latent per example.
    """
    log_px_z = decode(z).log_prob(x)
    log_pz = distributions.std_normal_log_prob(z)
    return dict(log_px_z=log_px_z, log_pz=log_pz, log_joint=log_px_z + log_pz)


def mcem_loss(
    x: jax.Array, z: jax.Array, decode: objectives.Decode
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """MCEM's M-step objective: -mean_b [log p_theta(x_b|z_b) + log p(z_b)].

    With z_b a (stop-gradient) posterior sample of example b, the mean is the one-sample
    Monte Carlo estimate of EM's Q(theta) = E_{p_theta_old(z|x)} log p_theta(x, z) on the
    batch; its gradient reaches the decoder's parameters only (log p(z) has none, and the
    encoder is not used).

    Returns:
      ``(loss, means)``, the batch means ``reconstruction`` (log p(x|z)), ``log_prior``
      (log p(z)), ``log_joint`` (their sum) and ``objective`` (= log_joint).
    """
    terms = log_joint_terms(x, jax.lax.stop_gradient(z), decode)
    means = dict(
        reconstruction=jnp.mean(terms['log_px_z']),
        log_prior=jnp.mean(terms['log_pz']),
        log_joint=jnp.mean(terms['log_joint']),
    )
    means['objective'] = means['log_joint']
    return -means['log_joint'], jax.tree.map(jax.lax.stop_gradient, means)
