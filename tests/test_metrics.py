"""Weight and delta angles per layer."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from wtfree import metrics
from wtfree import nn as wnn


class Net(nn.Module):
  rule: str = "bp"

  @nn.compact
  def __call__(self, x):
    x = jnp.tanh(wnn.Dense(256, rule=self.rule, name="h1")(x))
    x = jnp.tanh(wnn.Dense(256, rule=self.rule, name="h2")(x))
    return wnn.Dense(10, rule=self.rule, name="out")(x)


def _delta_angles(rule):
  model = Net(rule=rule)
  x = jax.random.normal(jax.random.key(0), (32, 20))
  y = jnp.arange(32) % 10
  variables = model.init({"params": jax.random.key(1)}, x)
  variables = {k: v for k, v in variables.items() if k in ("params", "feedback")}
  _, state = model.apply(variables, x, mutable=["perturbations"])

  def loss_of(m):
    return lambda pert: jnp.mean(metrics.cross_entropy(m.apply({**variables, "perturbations": pert}, x), y))

  return metrics.delta_angles(loss_of(model), loss_of(model.clone(rule="bp")), state["perturbations"])


def test_angle_of_known_vectors():
  np.testing.assert_allclose(metrics.angle(jnp.array([1.0, 0.0]), jnp.array([1.0, 1.0])), 45.0, rtol=1e-5)
  np.testing.assert_allclose(metrics.angle(jnp.array([1.0, 0.0]), jnp.array([-2.0, 0.0])), 180.0, rtol=1e-5)
  np.testing.assert_allclose(metrics.angle(jnp.zeros(3), jnp.ones(3)), 90.0)


def test_delta_angles_bp_zero_and_fa_large_below_the_output():
  bp = _delta_angles("bp")
  fa = _delta_angles("fa")
  assert set(bp) == {"h1", "h2", "out"}
  assert all(float(a) < 0.1 for a in bp.values()), bp
  assert float(fa["out"]) < 0.1
  assert float(fa["h2"]) > 70 and float(fa["h1"]) > 70, fa


def test_weight_angles_name_every_layer():
  model = Net(rule="fa")
  x = jnp.ones((2, 20))
  variables = model.init({"params": jax.random.key(1)}, x)
  _, state = model.apply({k: variables[k] for k in ("params", "feedback")}, x, mutable=["alignment"])
  angles = metrics.weight_angles(state["alignment"])
  assert set(angles) == {"h1", "h2", "out"}
  assert all(60 < float(a) < 120 for a in angles.values()), angles


def test_topk_and_cross_entropy():
  logits = jnp.array([[0.1, 0.5, 0.4], [2.0, 0.0, 1.0]])
  labels = jnp.array([2, 2])
  np.testing.assert_array_equal(metrics.topk_correct(logits, labels, 1), [0.0, 0.0])
  np.testing.assert_array_equal(metrics.topk_correct(logits, labels, 2), [1.0, 1.0])
  np.testing.assert_allclose(metrics.cross_entropy(logits, labels), -jax.nn.log_softmax(logits)[:, 2], rtol=1e-6)
