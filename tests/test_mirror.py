"""Weight mirrors bring B into line with W, at W's scale, from noise alone."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from wtfree import backend
from wtfree import feedback
from wtfree import learning
from wtfree import metrics
from wtfree import nn as wnn
from wtfree.feedback import weight_mirror


class OneLayer(nn.Module):
  layer: nn.Module

  @nn.compact
  def __call__(self, x, *, train=False, between_steps=False):
    return self.layer(x, between_steps=between_steps)


def _mirror(layer, input_shape, batch, passes):
  model = OneLayer(layer)
  learner = learning.Learner(model, jnp.zeros((1, *input_shape)), mirror_batch_size=batch, passes=10)
  variables = learner.init(jax.random.key(0))
  run = jax.jit(learner.between_steps)
  w = variables["params"]["layer"]["kernel"]
  b0 = variables["feedback"]["layer"]["kernel"]
  half = variables
  for i in range(passes // 10):
    half = run(half, jax.random.key(i))
  full = half
  for i in range(passes // 10):
    full = run(full, jax.random.key(1000 + i))
  np.testing.assert_array_equal(full["params"]["layer"]["kernel"], w)
  return w, b0, half["feedback"]["layer"]["kernel"], full["feedback"]["layer"]["kernel"]


def _ratio(b, w):
  return float(jnp.linalg.norm(b) / jnp.linalg.norm(w))


def test_dense_512x256_mirrors_below_five_degrees_at_w_scale():
  # A linear output: the estimate is mean(x y^T) itself, E = W.
  rule = feedback.get_rule("wm", decay=0.01)
  w, b0, b_half, b_full = _mirror(wnn.Dense(256, use_bias=False, rule=rule), (512,), 1024, 400)
  assert float(metrics.angle(b0, w)) > 80
  assert float(metrics.angle(b_full, w)) < 5.0
  assert 0.97 < _ratio(b_full, w) < 1.03, _ratio(b_full, w)
  assert abs(_ratio(b_full, w) - _ratio(b_half, w)) < 0.02


@pytest.mark.parametrize("noise", ["gaussian", "uniform"])
def test_conv_3x3x64x64_through_relu_mirrors_at_w_scale(noise):
  # Through a ReLU the covariance is W * E[phi'] = W / 2; dividing by the
  # batch's mean slope gives B -> W, not W / 2.
  rule = feedback.get_rule("wm", decay=0.05, noise=noise)
  layer = wnn.Conv(64, (3, 3), use_bias=False, rule=rule, mirror_activation=nn.relu)
  w, b0, b_half, b_full = _mirror(layer, (12, 12, 64), 48, 100)
  assert float(metrics.angle(b0, w)) > 80
  assert float(metrics.angle(b_full, w)) < 5.0
  assert 0.9 < _ratio(b_full, w) < 1.1, _ratio(b_full, w)
  assert abs(_ratio(b_full, w) - _ratio(b_half, w)) < 0.02


@pytest.mark.parametrize("activation", [lambda y: y, nn.relu], ids=["linear", "relu"])
@pytest.mark.parametrize("decay", [0.02, 0.5])
def test_fixed_point_has_w_scale_whatever_the_decay(activation, decay):
  # Akrout's decay 0.5 is noisy on a dense layer, but its B is still W-sized.
  rule = feedback.get_rule("wm", decay=decay)
  layer = wnn.Dense(64, use_bias=False, rule=rule, mirror_activation=activation)
  w, _, _, b_full = _mirror(layer, (64,), 2048, 200)
  assert 0.8 <= _ratio(b_full, w) <= 1.25, _ratio(b_full, w)
  assert float(metrics.angle(b_full, w)) < (8.0 if decay < 0.1 else 25.0)


def test_mirror_estimate_averages_to_w_behind_a_relu():
  w = jax.random.normal(jax.random.key(0), (32, 16)) / np.sqrt(32)
  op = feedback.dense_op
  estimates = jax.vmap(lambda k: weight_mirror.mirror_estimate(op, jax.random.normal(k, (4096, 32)), w, nn.relu))(
      jax.random.split(jax.random.key(1), 32))
  mean = jnp.mean(estimates, axis=0)
  assert float(jnp.linalg.norm(mean - w) / jnp.linalg.norm(w)) < 0.03


def test_mirror_noise_has_unit_moments_and_unknown_kinds_are_refused():
  for kind, kurtosis in (("gaussian", 0.0), ("uniform", -1.2)):
    x = np.asarray(backend.unit_noise(jax.random.key(0), (400, 500), kind=kind))
    assert abs(x.mean()) < 0.01 and abs(x.var() - 1.0) < 0.01, kind
    assert abs(((x - x.mean()) ** 4).mean() / x.var() ** 2 - 3.0 - kurtosis) < 0.05, kind
  with pytest.raises(ValueError, match="is not one of"):
    feedback.get_rule("wm", noise="laplace")
  with pytest.raises(ValueError, match="takes options .* not \\['eta'\\]"):
    feedback.get_rule("wm", eta=0.1)
