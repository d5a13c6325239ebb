"""Wake-sleep, the first baseline of Kingma & Welling (2013), Sec. 5.

It trains the same decoder p_theta(x|z) (prior p(z) = N(0, I)) as AEVB, and the encoder as
its recognition model q_phi(z|x). Like :mod:`vae_jax.objectives`, every function is a pure
function of a PRNG key, arrays and the callables ``encode(x) -> (mean, log_var)``
``[B, D]`` and ``decode(z) -> p(x|z)`` (``z`` ``[..., B, D]``); the caller
(``algorithms``' wake-sleep row) holds the parameters. The other baseline is
:mod:`vae_jax.mcem`.

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
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from vae_jax import distributions, likelihoods, objectives

# What a sleep-phase dream x is, given its z ~ p(z): 'sample', an exact draw
# x ~ p_theta(x|z); 'relaxed', a relaxed Bernoulli draw in (0, 1) (module docstring).
DREAMS = ('sample', 'relaxed')
# tau of the relaxed dreams: the best of 0.25, 0.5 and 1 on grey MNIST (module docstring).
RELAXED_DREAM_TEMPERATURE = 0.5


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
