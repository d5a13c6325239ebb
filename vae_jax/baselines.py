"""The two baselines of Kingma & Welling (2013), Sec. 5: wake-sleep and Monte Carlo EM.

Both train the same decoder p_theta(x|z) (prior p(z) = N(0, I)) as AEVB; wake-sleep also
trains the encoder, as its recognition model q_phi(z|x), while MCEM uses no encoder. Like
:mod:`vae_jax.objectives`, every function is a pure function of a PRNG key, arrays and the
callables ``encode(x) -> (mean, log_var)`` ``[B, D]`` and ``decode(z) -> p(x|z)``
(``z`` ``[..., B, D]``); the caller (``train.make_train_step``) holds the parameters.

Wake-sleep (Hinton, Dayan, Frey & Neal 1995, "The wake-sleep algorithm for unsupervised
neural networks") alternates two objectives, which do not together bound log p(x):

* wake: z ~ q_phi(z|x) for the data x; maximise log p_theta(x|z) w.r.t. theta;
* sleep: a dream (z, x) ~ p(z) p_theta(x|z); maximise log q_phi(z|x) w.r.t. phi.

The dream x must look like the inputs the encoder is given in the wake phase and at
evaluation, or the sleep phase trains the recognition model on one kind of input and it is
used on another. With binary data (a binary dataset, or ``binarization='static'`` or
``'dynamic'``) and a Bernoulli decoder, the exact draw x ~ p_theta(x|z) is 0/1 like the
data (``dream='sample'``). On grey levels in [0, 1] with a Bernoulli decoder (the paper's
MNIST setting, ``binarization='none'``) a 0/1 draw is unlike any input the encoder sees, so
the dream is a relaxed Bernoulli draw (``dream='relaxed'``; Maddison et al. 2017 and Jang
et al. 2017, "binary Concrete"): x = sigmoid((logits + L) / tau), L ~ Logistic(0, 1),
tau = ``RELAXED_DREAM_TEMPERATURE``. It is grey-valued like the data, lies above 1/2 with
the Bernoulli probability sigmoid(logits), and tends to the 0/1 draw as tau -> 0. The
decoder mean E[x|z] looks grey too, but it is a deterministic function of z, so the
sleep phase would fit q to a point mass (the inverse of the mean map): measured on grey
MNIST (784-500-20, 3,000 steps, test ELBO / KL): 0/1 draws -142.0 / 13.4, means
-249.5 / 131.5 (KL exploding), relaxed tau = 0.25 -148.1 / 22.4, tau = 0.5 -146.9 / 30.2,
tau = 1 -158.1 / 53.5. A Gaussian decoder's data are continuous and its draws
mean + sd * noise look like them: ``'sample'``. :func:`dream_for` makes this choice;
``algorithms.wake_sleep_loss`` calls it with what it knows of the data.

:func:`wake_sleep_loss` sums both with stop-gradients placed so that one ``jax.grad`` gives
each parameter set its own phase's gradient (see there). The ELBO of the batch (analytic
KL) is reported alongside, so that learning curves compare with AEVB's (the paper's Fig. 2).

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

from vae_jax import distributions, hmc, likelihoods, objectives

STEP_SIZE_ADAPTATIONS = ('shared', 'per_example')
# What a sleep-phase dream x is, given its z ~ p(z): 'sample', an exact draw
# x ~ p_theta(x|z); 'relaxed', a relaxed Bernoulli draw in (0, 1) (module docstring).
DREAMS = ('sample', 'relaxed')
# tau of the relaxed dreams: the best of 0.25, 0.5 and 1 on grey MNIST (module docstring).
RELAXED_DREAM_TEMPERATURE = 0.5

# --------------------------------------------------------------------------- wake-sleep


def wake_term(
    key: jax.Array,
    x: jax.Array,
    mean: jax.Array,
    log_var: jax.Array,
    decode: objectives.Decode,
) -> jax.Array:
    """The wake phase: log p_theta(x|z) at z ~ q_phi(z|x), with no gradient through z.

    Args:
      key: PRNG key for z.
      x: ``[B, *event_shape]`` data.
      mean, log_var: ``[B, D]``, the recognition model's q_phi(z|x) for ``x``.
      decode: the generative model.

    Returns:
      ``[B]`` log-likelihoods; their gradient reaches theta only (z is a stop-gradient
      sample), as in Hinton et al. (1995).
    """
    z = jax.lax.stop_gradient(distributions.sample_diag_gaussian(key, mean, log_var))
    return decode(z).log_prob(x)


def dream_for(likelihood: str, *, grey_inputs: bool) -> str:
    """The sleep-phase dream (one of :data:`DREAMS`) that matches the encoder's inputs.

    Args:
      likelihood: the decoder's, ``'bernoulli'`` or ``'gaussian'``.
      grey_inputs: whether the encoder is fed grey levels (non-binary data with
        ``binarization='none'``) rather than 0/1 values, in the wake phase and at evaluation.

    Returns:
      ``'relaxed'`` for a Bernoulli decoder on grey inputs (a 0/1 draw would be unlike
      every input the encoder sees); ``'sample'`` otherwise (0/1 draws for binary inputs, and
      mean + sd * noise for a Gaussian decoder, whose data are continuous draws).
    """
    if likelihood not in likelihoods.LIKELIHOODS:
        raise ValueError(f'likelihood must be one of {likelihoods.LIKELIHOODS}, got {likelihood!r}')
    return 'relaxed' if likelihood == 'bernoulli' and grey_inputs else 'sample'


def dreams(
    key: jax.Array,
    decode: objectives.Decode,
    *,
    latent_dim: int,
    num_dreams: int,
    dream: str = 'sample',
) -> tuple[jax.Array, jax.Array]:
    """Dreams (z, x) of the generative model: z ~ p(z), x as ``dream`` says.

    Args:
      key: PRNG key, split as :func:`vae_jax.ais.simulate` splits it (z from the first
        half, x from the second), so both kinds of dream share their z and ``'sample'``
        dreams are ``simulate``'s.
      decode: the generative model.
      latent_dim, num_dreams: static sizes D and N.
      dream: ``'sample'``, x ~ p_theta(x|z) by :func:`vae_jax.ais.simulate` (0/1 for
        ``'bernoulli'``, mean + sd * noise for ``'gaussian'``); ``'relaxed'`` (Bernoulli
        only), x = sigmoid((logits + L) / tau) with L ~ Logistic(0, 1), in (0, 1).

    Returns:
      ``z`` ``[N, D]`` and ``x`` ``[N, *event_shape]``.
    """
    if dream not in DREAMS:
        raise ValueError(f'dream must be one of {DREAMS}, got {dream!r}')
    key_z, key_x = jax.random.split(key)
    z = jax.random.normal(key_z, (num_dreams, latent_dim), jnp.float32)
    p_x = decode(z)
    if dream == 'sample':
        return z, p_x.sample(key_x)
    if not isinstance(p_x, likelihoods.Bernoulli):
        raise ValueError(f"dream='relaxed' relaxes a Bernoulli decoder, got {type(p_x).__name__}")
    logits = p_x.logits
    noise = jax.random.logistic(key_x, logits.shape, logits.dtype)
    return z, jax.nn.sigmoid((logits + noise) / RELAXED_DREAM_TEMPERATURE)


def sleep_term(
    key: jax.Array,
    encode: objectives.Encode,
    decode: objectives.Decode,
    *,
    latent_dim: int,
    num_dreams: int,
    dream: str = 'sample',
) -> jax.Array:
    """The sleep phase: log q_phi(z|x) on dreams (z, x) ~ p(z) p_theta(x|z).

    The dreams (:func:`dreams`) are held constant (stop-gradient), so that the gradient
    reaches phi only.

    Args:
      latent_dim, num_dreams: static sizes D and the number of dreams.
      dream: what x is: ``'sample'`` (an exact draw from p_theta(x|z), the default) or
        ``'relaxed'`` (a relaxed Bernoulli draw, for grey-level inputs; see
        :func:`dream_for`).

    Returns:
      ``[num_dreams]`` log-densities log q_phi(z_d|x_d).
    """
    z, x = dreams(
        key,
        decode,
        latent_dim=latent_dim,
        num_dreams=num_dreams,
        dream=dream,
    )
    z, x = jax.lax.stop_gradient(z), jax.lax.stop_gradient(x)
    mean, log_var = encode(x)
    return distributions.diag_gaussian_log_prob(z, mean, log_var)


def wake_sleep_terms(
    key: jax.Array,
    x: jax.Array,
    encode: objectives.Encode,
    decode: objectives.Decode,
    *,
    dream: str = 'sample',
) -> dict[str, jax.Array]:
    """Per-example wake and sleep terms and the ELBO of the batch.

    ``key`` is split as ``key_wake, key_sleep = jax.random.split(key)``: the first draws
    the wake sample z ~ q(z|x), the second the B dreams (x of the kind ``dream`` names,
    :func:`sleep_term`).

    Returns:
      dict of ``[B]`` arrays: ``wake`` (log p(x|z), z ~ q), ``sleep`` (log q(z_d|x_d) on
      dreams), and, without gradient, ``reconstruction`` (= wake, the one-sample estimate
      of E_q log p(x|z)), ``kl`` (analytic KL(q(z|x) || p(z))), ``elbo`` (= reconstruction
      - kl, the bound of AEVB's estimator B) and ``objective`` (= elbo, for progress lines).
    """
    key_wake, key_sleep = jax.random.split(key)
    mean, log_var = encode(x)
    wake = wake_term(key_wake, x, mean, log_var, decode)
    sleep = sleep_term(
        key_sleep,
        encode,
        decode,
        latent_dim=mean.shape[-1],
        num_dreams=x.shape[0],
        dream=dream,
    )
    kl = jax.lax.stop_gradient(distributions.gaussian_kl_to_std_normal(mean, log_var))
    reconstruction = jax.lax.stop_gradient(wake)
    return dict(
        wake=wake,
        sleep=sleep,
        reconstruction=reconstruction,
        kl=kl,
        elbo=reconstruction - kl,
        objective=reconstruction - kl,
    )


def wake_sleep_loss(
    key: jax.Array,
    x: jax.Array,
    encode: objectives.Encode,
    decode: objectives.Decode,
    *,
    dream: str = 'sample',
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """-(mean wake + mean sleep), whose one gradient is both phases' updates at once.

    The wake term depends on theta through the decoder and on phi only through its
    sample z, which is a stop-gradient; the sleep term depends on phi through the encoder
    and on theta only through the dream x, also a stop-gradient. So the gradient of the sum
    w.r.t. the decoder's parameters is exactly the wake gradient and w.r.t. the encoder's
    exactly the sleep gradient (the other phase contributes exact zeros): one optimizer
    step on it is a simultaneous wake and sleep update, the two objectives never being
    mixed into one parameter's gradient. The sum itself is not a bound on anything.

    Args:
      key: PRNG key (split as in :func:`wake_sleep_terms`).
      x: ``[B, *event_shape]``.
      dream: the sleep phase's dreams, ``'sample'`` or ``'relaxed'`` (:func:`dream_for`).

    Returns:
      ``(loss, means)``: the scalar loss and the batch means of the terms of
      :func:`wake_sleep_terms` (``elbo`` and ``objective`` are the ELBO of the batch).
    """
    terms = wake_sleep_terms(key, x, encode, decode, dream=dream)
    means = {k: jnp.mean(v) for k, v in terms.items()}
    loss = -(means['wake'] + means['sleep'])
    return loss, jax.tree.map(jax.lax.stop_gradient, means)


# --------------------------------------------------------------------------- Monte Carlo EM


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
