"""The optimizer chain: the stage schedule (Burda et al. 2016), Adam's fields, precision."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from helpers import tiny_config

from configs.paper.iwae import mnist as iwae_mnist
from vae_jax import configuration, evaluators, models, optimizers, train


def test_burda_schedule_rates_at_stage_boundaries():
    config = iwae_mnist.get_config('1,vae,1')
    epoch = iwae_mnist.STEPS_PER_EPOCH
    assert epoch == 2980 and config.num_steps == 3280 * epoch
    ends = np.cumsum([3**i for i in range(8)]) * epoch
    for i in range(8):
        rate = 1e-3 * 10 ** (-i / 7)
        first = 0 if i == 0 else int(ends[i - 1])
        last = int(ends[i]) - 1
        for step in (first, last):
            got = optimizers.stage_schedule(1e-3, 8, epoch, 3, 0.1)(step)
            np.testing.assert_allclose(float(got), rate, rtol=1e-6, err_msg=f'stage {i}')
    # After the last stage the rate stays at the last stage's.
    np.testing.assert_allclose(
        float(optimizers.stage_schedule(1e-3, 8, epoch, 3, 0.1)(config.num_steps + 10**6)),
        1e-4,
        rtol=1e-6,
    )


def test_stage_schedule_is_what_the_optimizer_applies():
    config = tiny_config(**{'optimizer.schedule': 'stages', 'optimizer.eps': 1e-12})
    config.optimizer.num_stages = 3
    config.optimizer.stage_steps = 2
    config.optimizer.stage_growth = 2
    config.optimizer.stage_decay = 0.25
    # Stages: steps 0-1 at lr, 2-5 at lr * 0.5, from 6 on at lr * 0.25.
    tx = optimizers.make_optimizer(config)
    params = {'w': jnp.zeros(())}
    state = tx.init(params)
    seen = []
    for _ in range(8):
        updates, state = tx.update({'w': jnp.ones(())}, state, params)
        seen.append(-float(updates['w']))
    lr = config.optimizer.learning_rate
    # Adam on a constant unit gradient moves by exactly lr each step (m_hat = v_hat = 1).
    np.testing.assert_allclose(seen, [lr] * 2 + [lr / 2] * 4 + [lr / 4] * 2, rtol=1e-4)


def test_adam_fields_reach_optax():
    """b1 and eps change the updates as optax.adam with those values does."""
    grads = [{'w': jnp.asarray(g)} for g in (1.0, -0.5, 2.0)]
    for b1, eps in ((0.9, 1e-8), (0.5, 1e-1)):
        config = tiny_config(**{'optimizer.b1': b1, 'optimizer.eps': eps})
        ours, ref = optimizers.make_optimizer(config), optax.adam(1e-3, b1=b1, eps=eps)
        params = {'w': jnp.zeros(())}
        s1, s2 = ours.init(params), ref.init(params)
        for g in grads:
            u1, s1 = ours.update(g, s1, params)
            u2, s2 = ref.update(g, s2, params)
            np.testing.assert_allclose(float(u1['w']), float(u2['w']), rtol=1e-6)
    a = optimizers.make_optimizer(tiny_config(**{'optimizer.eps': 1e-1}))
    b = optimizers.make_optimizer(tiny_config(**{'optimizer.eps': 1e-8}))
    ua, _ = a.update(grads[0], a.init({'w': jnp.zeros(())}))
    ub, _ = b.update(grads[0], b.init({'w': jnp.zeros(())}))
    assert abs(float(ua['w']) - float(ub['w'])) > 1e-5


@pytest.mark.parametrize(
    'field, value',
    [
        ('num_stages', 0),
        ('stage_steps', 0),
        ('stage_growth', 0),
        ('stage_decay', 0.0),
        ('stage_decay', 1.5),
        ('stage_decay', float('nan')),
        ('b1', 1.0),
        ('b2', -0.1),
        ('eps', 0.0),
        ('eps', float('inf')),
    ],
)
def test_bad_optimizer_fields_are_refused_by_name(field, value):
    config = tiny_config(**{f'optimizer.{field}': value})
    with pytest.raises(configuration.ConfigError, match=f'config.optimizer.{field}'):
        configuration.validate(config)


def test_bad_precision_is_refused_by_name():
    with pytest.raises(configuration.ConfigError, match='config.precision.eval'):
        configuration.validate(tiny_config(**{'precision.eval': 'highest'}))


def test_precision_reaches_the_compiled_step_and_evaluation():
    config = tiny_config(**{'precision.train': 'float32', 'precision.eval': 'default'})
    config.latent_dim = 2
    config.model.hidden_dims = (4,)
    model = train.make_model(config, (6,))
    params = models.init_params(model, jax.random.key(0), (6,), 2)
    x = jnp.ones((3, 6))
    elbo_fn = evaluators.make_elbo_fn(model, config.precision.eval)
    assert 'HIGHEST' not in elbo_fn.lower(params, x, jax.random.key(1)).as_text()
    config.precision.eval = 'float32'
    elbo_fn = evaluators.make_elbo_fn(model, config.precision.eval)
    assert 'precision = [HIGHEST, HIGHEST]' in elbo_fn.lower(params, x, jax.random.key(1)).as_text()
    tx = optimizers.make_optimizer(config)
    state = train.init_state(config, model, tx, (6,), train.Streams(0))
    step = train.make_train_step(model, tx, config, binary_data=True)
    text = jax.jit(step).lower(state, x, jax.random.key(2)).as_text()
    assert 'precision = [HIGHEST, HIGHEST]' in text
    config.precision.train = 'default'
    step = train.make_train_step(model, tx, config, binary_data=True)
    assert 'HIGHEST' not in jax.jit(step).lower(state, x, jax.random.key(2)).as_text()
