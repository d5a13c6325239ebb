"""Tests for vae_jax.wake_sleep, vae_jax.mcem and the loop's wake-sleep and MCEM algorithms.

Tiny models (``tiny_config`` of test_train.py: 784-32-4 MLPs on the embedded digits) and
the exact pPCA model of conftest.py; fixed keys throughout.
"""

import functools
import json
import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import assert_trees_equal, tiny_config

from vae_jax import (
    ais,
    checkpointing,
    configuration,
    distributions,
    evaluators,
    likelihoods,
    loop,
    mcem,
    objectives,
    train,
    wake_sleep,
)

EVENT = (28, 28)
NUM_TRAIN = 4000  # The embedded digits' training split.


def _model_and_params(config, seed=0):
    setup = train.build(config, EVENT, train.Streams(seed), NUM_TRAIN, binary_data=False)
    return setup.model, setup.tx, setup.state


def _coders(model, params):
    encode = functools.partial(model.apply, {'params': params}, method=model.encode)
    decode = functools.partial(model.apply, {'params': params}, method=model.decode)
    return encode, decode


def _metrics(workdir):
    return [json.loads(s) for s in (workdir / 'metrics.jsonl').read_text().splitlines()]


def _restored_state(workdir, config):
    _, _, state = _model_and_params(config, config.seed)
    return checkpointing.restore_from_workdir(str(workdir), state)


# --------------------------------------------------------------------------- wake-sleep


@pytest.mark.parametrize('likelihood', ['bernoulli', 'gaussian'])
def test_wake_sleep_gradient_is_wake_for_decoder_and_sleep_for_encoder(likelihood):
    config = tiny_config(algorithm='wake_sleep', likelihood=likelihood)
    model, _, state = _model_and_params(config)
    x = jax.random.bernoulli(jax.random.key(1), 0.3, (8, *EVENT)).astype(jnp.float32)
    key = jax.random.key(2)
    key_wake, key_sleep = jax.random.split(key)  # The split wake_sleep_terms documents.

    def total(params):
        encode, decode = _coders(model, params)
        return wake_sleep.wake_sleep_loss(key, x, encode, decode)[0]

    def wake(params):
        encode, decode = _coders(model, params)
        mean, log_var = encode(x)
        terms = wake_sleep.wake_term(key_wake, x, mean, log_var, decode)
        return -jnp.mean(terms)

    def sleep(params):
        encode, decode = _coders(model, params)
        terms = wake_sleep.sleep_term(key_sleep, encode, decode, latent_dim=4, num_dreams=8)
        return -jnp.mean(terms)

    g_total, g_wake, g_sleep = (jax.grad(f)(state.params) for f in (total, wake, sleep))
    assert_trees_equal(g_total['decoder'], g_wake['decoder'])
    assert_trees_equal(g_total['encoder'], g_sleep['encoder'])
    # Each phase reaches only its own network, and each does reach it.
    assert all(not np.any(leaf) for leaf in jax.tree.leaves(g_wake['encoder']))
    assert all(not np.any(leaf) for leaf in jax.tree.leaves(g_sleep['decoder']))
    assert float(jax.tree.reduce(lambda a, b: a + jnp.sum(b**2), g_wake['decoder'], 0.0)) > 0
    assert float(jax.tree.reduce(lambda a, b: a + jnp.sum(b**2), g_sleep['encoder'], 0.0)) > 0


def test_wake_sleep_reports_the_elbo_of_the_batch():
    config = tiny_config(algorithm='wake_sleep')
    model, _, state = _model_and_params(config)
    encode, decode = _coders(model, state.params)
    x = jax.random.bernoulli(jax.random.key(1), 0.3, (8, *EVENT)).astype(jnp.float32)
    terms = wake_sleep.wake_sleep_terms(jax.random.key(3), x, encode, decode)
    assert all(v.shape == (8,) for v in terms.values())
    np.testing.assert_allclose(terms['elbo'], terms['wake'] - terms['kl'], rtol=1e-6)
    np.testing.assert_array_equal(terms['objective'], terms['elbo'])
    assert np.all(np.asarray(terms['kl']) >= 0)


def test_wake_sleep_training_improves_the_elbo(tmp_path):
    config = tiny_config(
        algorithm='wake_sleep', num_steps=100, steps_per_dispatch=20, log_every_steps=20
    )
    results = train.train_and_evaluate(config, str(tmp_path))
    lines = _metrics(tmp_path)
    assert {'train_wake', 'train_sleep', 'train_elbo', 'valid_elbo'} <= set(lines[-2])
    # Measured: train ELBO -558 over steps 1-20, -373 over steps 81-100; valid -521 -> -350.
    assert lines[-2]['train_elbo'] > lines[0]['train_elbo'] + 100
    assert lines[-2]['train_sleep'] > lines[0]['train_sleep']
    assert results['algorithm'] == 'wake_sleep'
    assert results['test_elbo'] > -400
    assert results['test_log_likelihood'] >= results['test_elbo'] - 3 * results['test_elbo_stderr']


def _recording(encode, seen):
    """``encode`` that also appends each input it is given (eagerly or under jit) to seen."""

    def wrapped(x):
        jax.debug.callback(lambda v: seen.append(np.asarray(v)), x)
        return encode(x)

    return wrapped


def test_dream_choice_matches_the_inputs_the_encoder_sees():
    assert wake_sleep.dream_for('bernoulli', grey_inputs=True) == 'relaxed'
    assert wake_sleep.dream_for('bernoulli', grey_inputs=False) == 'sample'
    # Gaussian data are continuous draws: the dream is one too, whatever the inputs.
    assert wake_sleep.dream_for('gaussian', grey_inputs=True) == 'sample'
    assert wake_sleep.dream_for('gaussian', grey_inputs=False) == 'sample'
    with pytest.raises(ValueError, match='likelihood must be one of'):
        wake_sleep.dream_for('poisson', grey_inputs=True)


def test_sleep_term_dreams_relaxed_draws_for_grey_inputs_and_0_1_draws_for_binary():
    """The encoder's sleep-phase inputs: grey relaxed draws with 'relaxed', 0/1 with 'sample'.

    'relaxed' is sigmoid((logits + L) / tau), L ~ Logistic(0, 1), at the same z as 'sample';
    it exceeds 1/2 exactly when logits + L > 0, i.e. with probability sigmoid(logits), the
    Bernoulli's (checked on 20,000 dreams against the mean of sigmoid(logits)).
    """
    config = tiny_config(algorithm='wake_sleep')
    model, _, state = _model_and_params(config)
    encode, decode = _coders(model, state.params)
    key = jax.random.key(4)
    sizes = dict(latent_dim=4, num_dreams=8)
    seen = {'relaxed': [], 'sample': []}
    terms = {
        dream: wake_sleep.sleep_term(
            key, _recording(encode, seen[dream]), decode, dream=dream, **sizes
        )
        for dream in seen
    }
    jax.effects_barrier()
    (x_relaxed,), (x_sample,) = seen['relaxed'], seen['sample']

    # 'sample': ais.simulate's exact 0/1 draws, as before the dream option existed.
    z, x = ais.simulate(key, objectives.gaussian_latent_model(encode, decode, 4), num_examples=8)
    np.testing.assert_array_equal(x_sample, x)
    assert np.all((x_sample == 0) | (x_sample == 1))
    np.testing.assert_array_equal(
        terms['sample'], distributions.diag_gaussian_log_prob(z, *encode(x))
    )
    # 'relaxed': the same z, the binary Concrete draw, in [0, 1] (float32 rounds the
    # sigmoid of large arguments to 0 or 1), mostly strictly inside.
    key_z, key_x = jax.random.split(key)
    logits = decode(z).logits
    noise = jax.random.logistic(key_x, logits.shape)
    tau = wake_sleep.RELAXED_DREAM_TEMPERATURE
    np.testing.assert_allclose(x_relaxed, jax.nn.sigmoid((logits + noise) / tau), rtol=1e-6)
    assert np.all((x_relaxed >= 0) & (x_relaxed <= 1))
    assert np.mean((x_relaxed > 0) & (x_relaxed < 1)) > 0.9
    assert len(np.unique(x_relaxed)) > 100
    np.testing.assert_allclose(
        terms['relaxed'], distributions.diag_gaussian_log_prob(z, *encode(x_relaxed)), rtol=1e-6
    )
    many_z, many_x = wake_sleep.dreams(
        key, decode, latent_dim=4, num_dreams=20_000, dream='relaxed'
    )
    p = np.asarray(jax.nn.sigmoid(decode(many_z).logits))
    above = np.asarray(many_x > 0.5, np.float64)
    se = math.sqrt(np.mean(p * (1 - p)) / above.shape[0])  # per pixel, over 20,000 dreams
    assert np.max(np.abs(above.mean(0) - p.mean(0))) < 5 * se
    # The default is the draws, bit for bit.
    np.testing.assert_array_equal(
        wake_sleep.sleep_term(key, encode, decode, **sizes), terms['sample']
    )

    # A Gaussian decoder (here one with the same means and unit variance) has no relaxation.
    def gaussian_decode(z):
        loc = decode(z).logits
        return likelihoods.DiagonalGaussian(loc, jnp.zeros_like(loc), event_ndim=len(EVENT))

    with pytest.raises(ValueError, match='relaxes a Bernoulli'):
        wake_sleep.dreams(key, gaussian_decode, latent_dim=4, num_dreams=2, dream='relaxed')


def _binary_npz(tmp_path):
    path = tmp_path / 'binary.npz'
    rng = np.random.default_rng(0)
    np.savez(path, train=rng.random((200, 16)) < 0.3, test=rng.random((40, 16)) < 0.3)
    return f'npz:{path}'


@pytest.mark.parametrize(
    'case, expected',
    [
        ('grey data, binarization=none', 'relaxed'),
        ('grey data, binarization=dynamic', 'sample'),
        ('grey data, binarization=static', 'sample'),
        ('binary data, binarization=none', 'sample'),
        ('grey data, gaussian decoder', 'sample'),
    ],
)
def test_training_dreams_follow_the_data(tmp_path, monkeypatch, case, expected):
    """Through train_and_evaluate: the encoder dreams what it is fed in the wake phase."""
    overrides = {
        'grey data, binarization=none': dict(binarization='none'),
        'grey data, binarization=dynamic': dict(binarization='dynamic'),
        'grey data, binarization=static': dict(binarization='static'),
        'binary data, binarization=none': dict(
            binarization='none', dataset=_binary_npz(tmp_path), batch_size=16, eval_batch_size=8
        ),
        'grey data, gaussian decoder': dict(binarization='none', likelihood='gaussian'),
    }[case]
    config = tiny_config(
        algorithm='wake_sleep',
        num_steps=2,
        steps_per_dispatch=2,
        log_every_steps=2,
        eval_every_steps=2,
        checkpoint_every_steps=2,
        eval_num_importance_samples=1,
        eval_chunk_size=1,
        **overrides,
    )
    dreams_of, seen = [], []
    original = wake_sleep.sleep_term

    def spy(key, encode, decode, **kw):
        dreams_of.append(kw.get('dream', 'sample'))
        return original(key, _recording(encode, seen), decode, **kw)

    monkeypatch.setattr(wake_sleep, 'sleep_term', spy)
    train.train_and_evaluate(config, str(tmp_path / 'run'))
    jax.effects_barrier()
    assert set(dreams_of) == {expected}
    assert len(seen) == 2  # One batch of dreams per step.
    x = np.concatenate(seen)
    binary = np.all((x == 0) | (x == 1))
    if config.likelihood == 'gaussian':
        assert not binary
    elif expected == 'relaxed':
        assert np.all((x >= 0) & (x <= 1)) and np.mean((x > 0) & (x < 1)) > 0.5
    else:
        assert binary


# --------------------------------------------------------------------------- MCEM E-step


@pytest.mark.parametrize('adaptation', ['shared', 'per_example'])
def test_e_step_leaves_the_exact_ppca_posterior_invariant(ppca, adaptation):
    """1,000 chains per example started at exact posterior draws stay exactly distributed.

    Standard errors with 1,000 independent chains: mean 0.013-0.021, variance 4.5 % of
    it; the tolerances are about 5 of them. The chains must also move (no trivially
    invariant kernel).
    """
    copies = 1000
    x = jnp.asarray(np.repeat(ppca.x, copies, axis=0))  # [3000, 4]
    mean = np.repeat(ppca.post_mean, copies, axis=0)
    sd = np.sqrt(ppca.post_var)
    z0 = mean + sd * np.asarray(jax.random.normal(jax.random.key(0), mean.shape))
    chains = mcem.MCEMChains(
        jnp.asarray(z0, jnp.float32),
        jnp.full((x.shape[0],), 0.3, jnp.float32),
        jnp.full((x.shape[0],), 0.9, jnp.float32),
    )
    e_step = jax.jit(
        functools.partial(
            mcem.hmc_e_step,
            decode=ppca.decode,
            num_transitions=5,
            step_size_adaptation=adaptation,
        )
    )
    out, acceptance = e_step(jax.random.key(1), x, chains)
    z = np.asarray(out.z).reshape(3, copies, 2)
    np.testing.assert_allclose(z.mean(axis=1), ppca.post_mean, atol=0.08)
    np.testing.assert_allclose(z.var(axis=1), np.broadcast_to(ppca.post_var, (3, 2)), rtol=0.2)
    assert np.mean(np.abs(np.asarray(out.z) - z0)) > 0.1
    assert acceptance.shape == (x.shape[0],)
    assert np.all((np.asarray(acceptance) >= 0) & (np.asarray(acceptance) <= 1))
    assert 0.5 < float(jnp.mean(acceptance)) <= 1.0
    if adaptation == 'shared':
        assert np.unique(np.asarray(out.step_size)).size == 1


@pytest.mark.parametrize('adaptation', ['shared', 'per_example'])
def test_e_step_adapts_step_sizes_towards_the_target(ppca, adaptation):
    """Below the target acceptance the step shrinks; above it, it grows.

    The pPCA posterior is wide (sd 0.4-0.7): step 0.01 accepts ~100 %, step 0.5 (the
    largest allowed) ~95 %, so a 0.995 target shrinks it. From 0.01 every one of the 30
    transitions accepts > 0.9999 (measured, keys 2-4), above the 0.9 target whatever the
    smoothing, so each multiplies the step by exactly 1.02.
    """
    x = jnp.asarray(ppca.x)
    run = jax.jit(
        functools.partial(
            mcem.hmc_e_step,
            decode=ppca.decode,
            num_transitions=30,
            step_size_adaptation=adaptation,
        )
    )
    for start, target, grows in ((0.01, 0.9, True), (0.5, 0.995, False)):
        chains = mcem.MCEMChains(
            jnp.asarray(ppca.post_mean), jnp.full((3,), start), jnp.full((3,), target)
        )
        out, acceptance = run(jax.random.key(2), x, chains, target_acceptance=target)
        step = np.asarray(out.step_size)
        assert np.all(step > start * 1.3) if grows else np.all(step < start * 0.9), step
        if grows:
            np.testing.assert_allclose(step, start * 1.02**30, rtol=1e-5)
        assert np.all((np.asarray(acceptance) > 0) & (np.asarray(acceptance) <= 1))


def test_mcem_loss_is_the_mean_log_joint(ppca):
    z = jnp.asarray(ppca.post_mean)
    loss, means = mcem.mcem_loss(jnp.asarray(ppca.x), z, ppca.decode)
    terms = mcem.log_joint_terms(jnp.asarray(ppca.x), z, ppca.decode)
    np.testing.assert_allclose(-loss, np.mean(terms['log_px_z'] + terms['log_pz']), rtol=1e-6)
    np.testing.assert_allclose(means['log_joint'], means['reconstruction'] + means['log_prior'])


# --------------------------------------------------------------------------- MCEM training


def test_mcem_step_moves_only_the_batch_chains_and_compiles_once():
    config = tiny_config(algorithm='mcem')
    model, tx, state = _model_and_params(config)
    assert state.mcmc.z.shape == (NUM_TRAIN, 4)
    step = jax.jit(
        chex.assert_max_traces(train.make_train_step(model, tx, config, binary_data=False), n=1)
    )
    key = jax.random.key(0)
    x = jnp.asarray(jax.random.bernoulli(key, 0.3, (config.batch_size, *EVENT)), jnp.float32)
    z_before = np.asarray(state.mcmc.z)
    touched = np.zeros(NUM_TRAIN, bool)
    acceptances = []
    for i in range(3):
        idx = jnp.arange(i * 100, i * 100 + config.batch_size, dtype=jnp.int32)
        touched[np.asarray(idx)] = True
        state, metrics = step(state, x, key, idx)
        acceptances.append(float(metrics['acceptance_rate']))
    moved = np.any(np.asarray(state.mcmc.z) != z_before, axis=1)
    assert not np.any(moved & ~touched)
    assert moved[touched].mean() > 0.5  # Most proposals are accepted.
    assert int(state.step) == 3
    assert {'log_joint', 'acceptance_rate', 'step_size', 'grad_norm'} <= set(metrics)
    assert np.isfinite(float(metrics['log_joint']))
    # Three E-steps adapted the shared step size three times.
    np.testing.assert_allclose(
        np.unique(np.asarray(state.mcmc.step_size)), [config.mcem.initial_step_size], rtol=0.07
    )
    # Exactly: Wu et al.'s rule replayed from the batch acceptances (one transition per
    # E-step, so the metric is the mean acceptance the shared rule reads). The smoothed rate
    # starts at the target; x1.02 above it, x0.98 below. Any 3 steps give a factor in
    # {0.941, 0.980, 1.020, 1.061}: none is 1, so no adaptation cannot pass.
    assert config.mcem.num_transitions == 1 and config.mcem.step_size_adaptation == 'shared'
    step_size, smoothed = config.mcem.initial_step_size, config.mcem.target_acceptance
    for acceptance in acceptances:
        smoothed = 0.9 * smoothed + 0.1 * acceptance
        assert abs(smoothed - config.mcem.target_acceptance) > 1e-4  # An unambiguous side.
        step_size *= 1.02 if smoothed > config.mcem.target_acceptance else 0.98
    np.testing.assert_allclose(np.asarray(state.mcmc.step_size), step_size, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(state.mcmc.avg_acceptance), smoothed, rtol=1e-5)


def test_mcem_training_improves_log_joint_and_ais_likelihood(tmp_path):
    config = tiny_config(
        algorithm='mcem',
        num_steps=200,
        steps_per_dispatch=20,
        log_every_steps=20,
        eval_ais_steps=10,
        eval_ais_chains=1,
    )
    results = train.train_and_evaluate(config, str(tmp_path))
    lines = _metrics(tmp_path)
    assert not any('valid_elbo' in line for line in lines)
    # Measured: log p(x, z) at the E-step's samples -417 over steps 1-20, -223 over 181-200.
    assert lines[-2]['train_log_joint'] > lines[0]['train_log_joint'] + 100
    assert 0.0 < lines[-2]['train_acceptance_rate'] <= 1.0
    assert results['test_elbo'] is None and results['valid_elbo'] is None
    assert 'no ELBO' in results['test_elbo_note']
    assert results['test_log_likelihood_method'] == 'ais_from_prior'
    assert (tmp_path / 'samples.png').exists()

    # The same AIS estimator on the untrained decoder, on the same test images and keys.
    streams = train.Streams(config.seed)
    _, _, _, test = train.prepare_data(config, streams)
    model, _, state = _model_and_params(config)
    untrained = evaluators.map_batches(
        functools.partial(evaluators.make_ais_log_px(model, config), state.params),
        test,
        config.eval_batch_size,
        jax.random.fold_in(streams.eval, 2),
    )['value']
    # Measured: -555 untrained (its decoder predicts about 0.5 per pixel), -213 trained.
    assert results['test_log_likelihood'] > float(np.mean(untrained)) + 100


def test_mcem_host_streaming_passes_the_batch_indices(tmp_path):
    config = tiny_config(
        algorithm='mcem',
        data_placement='host',
        num_steps=3,
        checkpoint_every_steps=3,
        eval_ais_steps=2,
        eval_ais_chains=1,
    )
    train.train_and_evaluate(config, str(tmp_path))
    _, _, initial = _model_and_params(config)
    state = _restored_state(tmp_path, config)
    idx = loop.batch_indices(config.seed, NUM_TRAIN, config.batch_size, 0, 3).ravel()
    moved = np.any(np.asarray(state.mcmc.z) != np.asarray(initial.mcmc.z), axis=1)
    touched = np.zeros(NUM_TRAIN, bool)
    touched[idx] = True
    assert not np.any(moved & ~touched)
    assert moved[touched].mean() > 0.5


# --------------------------------------------------------------------------- resume


@pytest.mark.parametrize('algorithm', ['wake_sleep', 'mcem'])
def test_resume_matches_uninterrupted_run(tmp_path, algorithm):
    def config(**kw):
        fast_ais = {'eval_ais_steps': 2, 'eval_ais_chains': 1} if algorithm == 'mcem' else {}
        return tiny_config(algorithm=algorithm, **fast_ais, **kw)

    train.train_and_evaluate(config(), str(tmp_path / 'full'))
    train.train_and_evaluate(config(num_steps=10), str(tmp_path / 'split'))
    results = train.train_and_evaluate(config(), str(tmp_path / 'split'))
    assert results['train_steps'] == 20
    full = _restored_state(tmp_path / 'full', config())
    split = _restored_state(tmp_path / 'split', config())
    # Parameters, optimizer state and (MCEM) every chain's sample and step size.
    assert_trees_equal(full, split)


# --------------------------------------------------------------------------- config


def test_bad_algorithm_fails_before_training(tmp_path):
    with pytest.raises(configuration.ConfigError, match="config.algorithm='vae' is not one of"):
        train.train_and_evaluate(tiny_config(algorithm='vae'), str(tmp_path))
    assert not (tmp_path / 'checkpoints').exists()


@pytest.mark.parametrize('field, value', [('objective', 'iwae'), ('num_samples', 5), ('beta', 0.5)])
def test_baselines_refuse_aevb_only_settings(tmp_path, field, value):
    config = tiny_config(algorithm='wake_sleep', **{field: value})
    with pytest.raises(configuration.ConfigError, match=f'config.{field}=.*only applies to'):
        train.train_and_evaluate(config, str(tmp_path))


def test_bad_mcem_settings_name_the_field():
    with pytest.raises(configuration.ConfigError, match='config.mcem.target_acceptance'):
        configuration.validate(tiny_config(**{'mcem.target_acceptance': 1.5}))
    with pytest.raises(configuration.ConfigError, match='config.mcem.step_size_adaptation'):
        configuration.validate(tiny_config(**{'mcem.step_size_adaptation': 'global'}))
    with pytest.raises(configuration.ConfigError, match='config.eval_ais_steps must be > 0'):
        configuration.validate(tiny_config(eval_ais_steps=0))
