"""bp layers equal plain Flax networks under jax.grad; kp learns B = W."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from wtfree import learning
from wtfree import metrics
from wtfree import nn as wnn
from wtfree import optim
from wtfree import settings


class MLP(nn.Module):
  rule: str = "bp"
  plain: bool = False

  @nn.compact
  def __call__(self, x, between_steps=False):
    if self.plain:
      return nn.Dense(3, name="out")(jnp.tanh(nn.Dense(16, name="hidden")(x)))
    x = jnp.tanh(wnn.Dense(16, rule=self.rule, name="hidden")(x, between_steps=between_steps))
    return wnn.Dense(3, rule=self.rule, name="out")(x, between_steps=between_steps)


class CNN(nn.Module):
  rule: str = "bp"
  plain: bool = False

  @nn.compact
  def __call__(self, x):
    conv = nn.Conv if self.plain else lambda *a, **kw: wnn.Conv(*a, rule=self.rule, **kw)
    dense = nn.Dense if self.plain else lambda f, **kw: wnn.Dense(f, rule=self.rule, **kw)
    x = conv(4, (3, 3), strides=2, use_bias=False, name="conv1")(x)
    x = nn.relu(nn.BatchNorm(use_running_average=False, name="bn1")(x))
    x = conv(8, (3, 3), padding="VALID", feature_group_count=2, use_bias=False, name="conv2")(x)
    x = nn.relu(nn.BatchNorm(use_running_average=False, name="bn2")(x))
    return dense(3, name="out")(x.mean(axis=(1, 2)))


def _loss(model, variables, x, y):
  logits, _ = model.apply(variables, x, mutable=["batch_stats"])
  return jnp.mean(metrics.cross_entropy(logits, y))


@pytest.mark.parametrize("net, shape", [(MLP, (8, 5)), (CNN, (4, 9, 9, 2))])
def test_bp_equals_jax_grad_of_plain_flax(net, shape):
  x = jax.random.normal(jax.random.key(0), shape)
  y = jnp.arange(shape[0]) % 3
  ours, plain = net(), net(plain=True)
  variables = plain.init(jax.random.key(1), x)
  grads_ours = jax.jit(jax.grad(lambda v: _loss(ours, v, x, y)))(variables)
  grads_plain = jax.jit(jax.grad(lambda v: _loss(plain, v, x, y)))(variables)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), grads_ours, grads_plain)


def test_kp_brings_every_weight_angle_below_one_degree():
  """SGD with weight decay; the learner shrinks B - W at the decay's rate and B converges to W."""
  model = MLP(rule="kp")
  x = jax.random.normal(jax.random.key(0), (64, 5))
  y = jnp.argmax(x[:, :3] + 0.3 * x[:, 3:4], axis=-1)
  learner = learning.Learner(model, x)
  variables = learner.init(jax.random.key(1))
  params = variables["params"]
  tx = optax.chain(optax.add_decayed_weights(0.05, mask=optim.decay_mask), optax.sgd(0.5))
  opt_state = tx.init(params)

  def angles(params):
    _, state = model.apply({**variables, "params": params, "feedback": variables["feedback"]}, x,
                           mutable=["alignment"])
    return metrics.weight_angles(state["alignment"])

  @jax.jit
  def step(variables, opt_state):
    params = variables["params"]
    grads = jax.grad(lambda p: _loss(model, {**variables, "params": p}, x, y))(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    variables = {**variables, "params": optax.apply_updates(params, updates)}
    return learner.between_steps(variables, jax.random.key(0), weight_decay_rate=0.5 * 0.05), opt_state

  start = angles(params)
  assert all(float(a) > 80 for a in start.values()), start
  for _ in range(300):
    variables, opt_state = step(variables, opt_state)
  end = angles(variables["params"])
  assert set(end) == {"hidden", "out"}
  assert all(float(a) < 1.0 for a in end.values()), end


def test_kp_follows_the_equations_with_an_explicit_b():
  """Under SGD with decay, W and B get the same update and the same decay, step by step.

  The reference keeps B as its own array and applies Kolen-Pollack as
  written, W <- W - lr (g + wd W), B <- B - lr (g + wd B), with the hidden
  layer's error sent back through B; wtfree keeps B as W + c * offset.
  """
  model = MLP(rule="kp")
  x = jax.random.normal(jax.random.key(0), (32, 5))
  y = jnp.arange(32) % 3
  learner = learning.Learner(model, x)
  variables = learner.init(jax.random.key(1))
  lr, wd = 0.3, 0.2
  config = ml_collections.ConfigDict(dict(
      optimizer="sgd", momentum=0.0, weight_decay=wd, batch_manhattan=False, learning_rate=lr,
      batch_size=32, scale_lr_by_batch=False, schedule="constant", warmup_epochs=0,
  ))
  run = settings.resolve(config)
  tx = optim.make(run.optimizer, steps_per_epoch=10)
  rate = optim.weight_decay_rate(run.optimizer, steps_per_epoch=10)

  def feedback_kernels(variables):
    _, state = model.apply(variables, x, mutable=["alignment"])
    return {name: layer["feedback"] for name, layer in state["alignment"].items()}

  ref = {name: dict(variables["params"][name]) for name in ("hidden", "out")}
  for name, b in feedback_kernels(variables).items():
    ref[name]["feedback"] = b

  def ref_grads(p):
    h = jnp.tanh(x @ p["hidden"]["kernel"] + p["hidden"]["bias"])
    logits = h @ p["out"]["kernel"] + p["out"]["bias"]
    e = (jax.nn.softmax(logits) - jax.nn.one_hot(y, 3)) / x.shape[0]
    da = (e @ p["out"]["feedback"].T) * (1 - h**2)
    return {"hidden": (x.T @ da, da.sum(0)), "out": (h.T @ e, e.sum(0))}

  params, opt_state = variables["params"], tx.init(variables["params"])
  for step in range(5):
    grads = jax.grad(lambda p: _loss(model, {**variables, "params": p}, x, y))(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    params = optax.apply_updates(params, updates)
    variables = learner.between_steps({**variables, "params": params}, jax.random.key(0), weight_decay_rate=rate(step))
    for name, (g_w, g_b) in ref_grads(ref).items():
      layer = ref[name]
      layer["kernel"], layer["feedback"] = (
          layer["kernel"] - lr * (g_w + wd * layer["kernel"]),
          layer["feedback"] - lr * (g_w + wd * layer["feedback"]),
      )
      layer["bias"] = layer["bias"] - lr * g_b
  used = feedback_kernels({**variables, "params": params})
  for name in ("hidden", "out"):
    for leaf in ("kernel", "bias"):
      np.testing.assert_allclose(params[name][leaf], ref[name][leaf], rtol=1e-5, atol=1e-6, err_msg=name)
    np.testing.assert_allclose(used[name], ref[name]["feedback"], rtol=1e-5, atol=1e-6, err_msg=name)
    assert not np.allclose(used[name], params[name]["kernel"], atol=1e-2)  # B has not collapsed onto W
