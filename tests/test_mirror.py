"""Weight mirrors bring B into line with W, at W's scale, from noise alone."""

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from wtfree import backend
from wtfree import feedback
from wtfree import hlo
from wtfree import learning
from wtfree import metrics
from wtfree import models
from wtfree import nn as wnn
from wtfree import sharding
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


def _context(noise, activation, bias=None):
  return feedback.StepContext(op=lambda x, w: x @ w, inputs=noise, noise=lambda kind, batches=1: noise,
                              activation=activation, bias=bias)


def test_mirror_lr_adds_the_reference_codes_sum_of_x_times_phi_of_z():
  rng = np.random.default_rng(0)
  noise = jnp.asarray(rng.uniform(-np.sqrt(3), np.sqrt(3), (128, 6)), jnp.float32)
  w = jnp.asarray(rng.normal(0, 0.3, (6, 4)), jnp.float32)
  b = jnp.asarray(rng.normal(0, 0.3, (6, 4)), jnp.float32)
  scale = 0.05 / np.sqrt(3.0)
  bias = jnp.asarray(rng.normal(0, 1.0, (4,)), jnp.float32)
  rule = weight_mirror.WeightMirror(noise="uniform", noise_scale=scale, mirror_lr=0.01)
  new = rule.between_steps(_context(noise, nn.sigmoid, bias), w, {"kernel": b})["kernel"]
  x = np.asarray(noise, np.float64) * scale  # Uniform in +-0.05, as 0.1 * (rand - 0.5).
  y = 1.0 / (1.0 + np.exp(-(x @ np.asarray(w, np.float64) + np.asarray(bias, np.float64))))
  np.testing.assert_allclose(new, np.asarray(b) + 0.01 * x.T @ y, rtol=1e-5, atol=1e-7)


def test_noise_scale_leaves_the_estimate_at_w_scale_and_mirror_lr_refuses_a_decay():
  rng = np.random.default_rng(1)
  noise = jnp.asarray(rng.normal(size=(64, 5)), jnp.float32)
  w = jnp.asarray(rng.normal(size=(5, 3)), jnp.float32)
  state = {"kernel": jnp.zeros_like(w)}
  unit = weight_mirror.WeightMirror(decay=1.0).between_steps(_context(noise, lambda z: z), w, state)["kernel"]
  small = weight_mirror.WeightMirror(decay=1.0, noise_scale=0.01).between_steps(
      _context(noise, lambda z: z), w, state)["kernel"]
  np.testing.assert_allclose(small, unit, rtol=1e-4, atol=1e-5)
  with pytest.raises(ValueError, match="mirror_lr=0.01 .* and decay=0.5 contradict"):
    weight_mirror.WeightMirror(mirror_lr=0.01, decay=0.5)
  with pytest.raises(ValueError, match="noise_scale=0.0 is not positive"):
    weight_mirror.WeightMirror(noise_scale=0.0)


def test_a_dense_layers_mirror_pass_hands_the_rule_its_bias():
  seen = []

  @dataclasses.dataclass(frozen=True)
  class Spy(weight_mirror.WeightMirror):
    def between_steps(self, ctx, w, state):
      seen.append(ctx.bias)
      return state

  layer = wnn.Dense(3, rule=Spy(), bias_init=nn.initializers.ones_init())
  model = OneLayer(layer)
  learner = learning.Learner(model, jnp.zeros((1, 4)), mirror_batch_size=8)
  variables = learner.init(jax.random.key(0))
  jax.eval_shape(learner.between_steps, variables, jax.random.key(1))
  assert seen and seen[-1].shape == (3,)


def test_a_pass_of_many_draws_sums_over_the_devices_once():
  mesh = sharding.make_mesh(jax.devices()[:8])
  model = models.get_model("mlp", num_classes=10, widths=(256,), rule="wm")
  x = jnp.zeros((1, 64))
  reduced = {}
  for batch in (512, 32):
    learner = learning.Learner(model, x, mirror_batch_size=batch, input_sharding=sharding.batch_sharding(mesh),
                               train=False)
    variables = learner.init(jax.random.key(0))
    text = jax.jit(learner.between_steps).lower(variables, jax.random.key(1)).compile().as_text()
    reduced[batch] = hlo.summary(hlo.collectives(text)).get("all-reduce", {}).get("elements", 0)
  rule = feedback.get_rule("wm")
  assert rule.plan((64, 256), (32, 256))[1] > 4 * rule.plan((64, 256), (512, 256))[1]  # Many draws against one.
  # The draws' covariances are summed on each device first: what crosses devices is what one draw sends.
  assert 0 < reduced[32] == reduced[512], reduced
