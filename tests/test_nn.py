"""bp layers equal plain Flax networks under jax.grad; kp learns B = W."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from wtfree import metrics
from wtfree import nn as wnn


class MLP(nn.Module):
  rule: str = "bp"
  plain: bool = False

  @nn.compact
  def __call__(self, x):
    dense = nn.Dense if self.plain else lambda f, **kw: wnn.Dense(f, rule=self.rule, **kw)
    x = jnp.tanh(dense(16, name="hidden")(x))
    return dense(3, name="out")(x)


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
  """SGD with weight decay on W and B: W - B shrinks and B converges to W."""
  model = MLP(rule="kp")
  x = jax.random.normal(jax.random.key(0), (64, 5))
  y = jnp.argmax(x[:, :3] + 0.3 * x[:, 3:4], axis=-1)
  variables = model.init(jax.random.key(1), x)
  params = variables["params"]
  tx = optax.chain(optax.add_decayed_weights(0.05), optax.sgd(0.5))
  opt_state = tx.init(params)

  def angles(params):
    _, state = model.apply({"params": params}, x, mutable=["alignment"])
    return metrics.weight_angles(state["alignment"])

  @jax.jit
  def step(params, opt_state):
    grads = jax.grad(lambda p: _loss(model, {"params": p}, x, y))(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state

  start = angles(params)
  assert all(float(a) > 80 for a in start.values()), start
  for _ in range(300):
    params, opt_state = step(params, opt_state)
  end = angles(params)
  assert set(end) == {"hidden", "out"}
  assert all(float(a) < 1.0 for a in end.values()), end
