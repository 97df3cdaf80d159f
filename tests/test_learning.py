"""Every rule learns what its name says in a user's own loop, and says so where it cannot."""

import logging

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from configs import digits_mlp
from wtfree import convert
from wtfree import data
from wtfree import feedback
from wtfree import learning
from wtfree import metrics
from wtfree import models
from wtfree import optim
from wtfree import sharding
from wtfree import steps
from wtfree import train
from wtfree import nn as wnn
from wtfree import settings
from wtfree.feedback import kolen_pollack


class MLP(nn.Module):
  """A plain flax model, written with flax's own nn.Dense."""

  @nn.compact
  def __call__(self, x):
    x = nn.relu(nn.Dense(32)(x))
    x = nn.relu(nn.Dense(32)(x))
    return nn.Dense(4)(x)


def _task():
  x = jax.random.normal(jax.random.key(0), (256, 12))
  teacher = jax.random.normal(jax.random.key(1), (12, 4))
  return x, jnp.argmax(x @ teacher, axis=-1)


def _user_loop(model, learner, x, labels, steps, tx):
  """The loop of `wtfree.learning`'s docstring: optax as the user likes it, then learner.between_steps."""
  variables = learner.init({"params": jax.random.key(2), "feedback": jax.random.key(3)})

  def loss_fn(params, rest):
    return jnp.mean(metrics.cross_entropy(model.apply({"params": params, **rest}, x), labels))

  @jax.jit
  def step(variables, opt_state, key):
    params, rest = variables["params"], {k: v for k, v in variables.items() if k != "params"}
    loss, grads = jax.value_and_grad(loss_fn)(params, rest)
    updates, opt_state = tx.update(grads, opt_state, params)
    variables = learner.between_steps({"params": optax.apply_updates(params, updates), **rest}, key)
    return variables, opt_state, loss

  opt_state = tx.init(variables["params"])
  losses = []
  for i in range(steps):
    variables, opt_state, loss = step(variables, opt_state, jax.random.key(100 + i))
    losses.append(float(loss))
  _, collected = model.apply(variables, x, mutable=["alignment"])
  return losses, metrics.weight_angles(collected["alignment"])


@pytest.mark.parametrize("rule, steps", [("kp", 400), ("wm", 300)])
def test_converted_flax_model_aligns_under_adam_in_a_users_loop(rule, steps):
  x, labels = _task()
  model = convert.convert(MLP(), rule, mirror_activation=nn.relu)
  learner = learning.Learner(model, x, mirror_batch_size=1024)
  losses, angles = _user_loop(model, learner, x, labels, steps, optax.adam(3e-3))
  assert losses[-1] < 0.5 * losses[0], losses[::50]
  assert len(angles) == 3
  assert all(float(a) < 10.0 for a in angles.values()), angles


def test_without_a_learner_kp_stays_fixed_and_is_warned_about(caplog):
  x, _ = _task()
  model = convert.convert(MLP(), "kp")
  with caplog.at_level(logging.WARNING):
    variables = model.init({"params": jax.random.key(2)}, x)
  assert "learns B between optimizer steps" in caplog.text and "Learner" in caplog.text
  # kp's state is not among the params, so a plain optax loop never moves it: that loop trains fa.
  assert {path[-1] for path in flax.traverse_util.flatten_dict(variables["params"])} == {"kernel", "bias"}
  assert {path[-1] for path in flax.traverse_util.flatten_dict(variables["feedback"])} == {"offset", "offset_scale"}
  caplog.clear()
  with caplog.at_level(logging.WARNING):
    learning.Learner(model, x).init({"params": jax.random.key(2)})
  assert "learns B between" not in caplog.text


def test_learner_is_a_no_op_for_rules_that_do_not_learn_between_steps():
  x, _ = _task()
  for rule in ("fa", "sa"):
    learner = learning.Learner(convert.convert(MLP(), rule), x)
    variables = learner.init({"params": jax.random.key(2)})
    assert not learner.changes_between_steps
    assert learner.between_steps(variables, jax.random.key(0)) is variables


def test_kp_decay_prefers_its_own_option_then_the_loops_weight_decay():
  ctx = lambda rate: feedback.StepContext(op=None, inputs=None, noise=None, activation=None, weight_decay_rate=rate)
  state = {"offset": jnp.ones(3), "offset_scale": jnp.ones(())}
  kp = feedback.get_rule("kp")
  np.testing.assert_allclose(kp.between_steps(ctx(None), None, state)["offset_scale"], 1 - kolen_pollack.DEFAULT_DECAY)
  np.testing.assert_allclose(kp.between_steps(ctx(0.25), None, state)["offset_scale"], 0.75)
  own = feedback.get_rule("kp", decay=0.5)
  np.testing.assert_allclose(own.between_steps(ctx(0.25), None, state)["offset_scale"], 0.5)
  with pytest.raises(ValueError, match="kp decay=2.0 is not in"):
    feedback.get_rule("kp", decay=2.0)


def test_shallow_leaves_hidden_kernels_bit_identical(tmp_path):
  config = digits_mlp.get_config()
  config.rule = "shallow"
  config.num_steps = 50
  config.weight_decay = 1e-3
  config.batch_manhattan = True
  config.momentum = 0.9
  config.angles = False
  config.tensorboard = False
  final = train.train_and_evaluate(config, str(tmp_path))
  run = settings.resolve(config)
  ds = data.get_dataset(run.data)
  model = models.create(run.model, ds.num_classes, ds.input_shape)
  start = steps.create_train_state(model, optim.make(run.optimizer, 40), ds.input_shape, config.seed, sharding.make_mesh())
  for layer in ("Dense_0", "Dense_1"):
    for leaf in start.params[layer]:
      np.testing.assert_array_equal(final.params[layer][leaf], start.params[layer][leaf], err_msg=f"{layer}/{leaf}")
  assert not np.array_equal(final.params["head"]["kernel"], start.params["head"]["kernel"])


@pytest.mark.parametrize("rule", ["fa", "kp"])
def test_a_zero_kernel_initializer_gets_usable_feedback_and_a_warning(rule, caplog):
  class Net(nn.Module):
    @nn.compact
    def __call__(self, x, between_steps=False):
      h = wnn.Dense(8, rule=rule, name="hidden")(x, between_steps=between_steps)
      return wnn.Dense(3, rule=rule, kernel_init=nn.initializers.zeros, name="zero_head")(h, between_steps=between_steps)

  x = jnp.ones((2, 5))
  with caplog.at_level(logging.WARNING):
    variables = learning.Learner(Net(), x).init({"params": jax.random.key(0)})
  assert "layer zero_head" in caplog.text and "a constant" in caplog.text and "lecun_normal" in caplog.text
  _, collected = Net().apply(variables, x, mutable=["alignment"])
  b = collected["alignment"]["zero_head"]["feedback"]
  assert float(jnp.std(b)) > 0.1  # B drawn from lecun_normal: usable, and not W (= 0)
  assert not np.allclose(b, variables["params"]["zero_head"]["kernel"])


def test_rules_check_their_own_settings():
  config = digits_mlp.get_config()
  run = lambda: settings.resolve(config)  # The rules check the run's resolved values.
  assert feedback.get_rule("sa").check_run(run()) == []
  config.learning_rate = 0.5
  assert "lower --config.rule_options.alpha" in feedback.get_rule("sa").check_run(run())[0]
  config.weight_decay = 1e-4
  assert "not at the run's weight-decay rate" in feedback.get_rule("kp", decay=0.1).check_run(run())[0]
  assert feedback.get_rule("kp").check_run(run()) == []
  config.mirror_epochs = 1.0
  with pytest.raises(ValueError, match="apply only to rules that mirror B, not 'fa'"):
    feedback.get_rule("fa").check_run(run())
  assert feedback.get_rule("wm").check_run(run()) == []


def test_kp_reports_its_shrink_factor_beside_the_angles():
  config = digits_mlp.get_config()
  config.rule = "kp"
  run = settings.resolve(config)
  ds = data.get_dataset(run.data)
  model = models.create(run.model, ds.num_classes, ds.input_shape)
  mesh = sharding.make_mesh(jax.devices()[:1])
  learner = steps.make_learner(model, ds.input_shape)
  tx = optim.make(run.optimizer, 40)
  state = steps.create_train_state(model, tx, ds.input_shape, 0, mesh, learner)
  batch = sharding.global_batch(next(ds.train_batches()), mesh)
  state, _ = jax.jit(lambda s, b: steps.train_step(s, b, model=model, tx=tx, task=ds.task, learner=learner))(state, batch)
  reported = steps.alignment_step(state, batch, model=model, task=ds.task)
  for layer in ("Dense_0", "Dense_1", "head"):
    np.testing.assert_allclose(reported[f"rule/offset_scale/{layer}"], 1 - kolen_pollack.DEFAULT_DECAY, rtol=1e-6)
