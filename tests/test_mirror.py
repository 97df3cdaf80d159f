"""Weight mirrors bring B into line with W from noise alone."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from wtfree import feedback
from wtfree import metrics
from wtfree import mirror
from wtfree import nn as wnn


class OneLayer(nn.Module):
  layer: nn.Module

  @nn.compact
  def __call__(self, x, *, train=False, mirror_pass=False):
    return self.layer(x, mirror_pass=mirror_pass)


def _mirror_to_convergence(layer, input_shape, batch, passes):
  model = OneLayer(layer)
  variables = model.init(jax.random.key(0), jnp.zeros((1, *input_shape)))
  variables = {k: variables[k] for k in ("params", "feedback")}
  run = jax.jit(mirror.make_mirror_fn(model, input_shape, batch, passes=10))
  w = variables["params"]["layer"]["kernel"]
  b0 = variables["feedback"]["layer"]["kernel"]
  half = variables
  for i in range(passes // 10):
    half = run(half, jax.random.key(i))
  full = half
  for i in range(passes // 10):
    full = run(full, jax.random.key(1000 + i))
  b_half = half["feedback"]["layer"]["kernel"]
  b_full = full["feedback"]["layer"]["kernel"]
  np.testing.assert_array_equal(full["params"]["layer"]["kernel"], w)
  return w, b0, b_half, b_full


def test_dense_512x256_mirrors_below_five_degrees_and_stays_bounded():
  # A linear output: E[x y^T] = W exactly, so B settles at (eta / decay) W.
  rule = feedback.get_rule("wm", eta=0.002, decay=0.01)
  w, b0, b_half, b_full = _mirror_to_convergence(wnn.Dense(256, use_bias=False, rule=rule), (512,), 1024, 400)
  assert float(metrics.angle(b0, w)) > 80
  assert float(metrics.angle(b_full, w)) < 5.0
  ratio_half = float(jnp.linalg.norm(b_half) / jnp.linalg.norm(w))
  ratio_full = float(jnp.linalg.norm(b_full) / jnp.linalg.norm(w))
  assert abs(ratio_full - 0.2) < 0.02, ratio_full
  assert abs(ratio_full - ratio_half) < 0.02


@pytest.mark.parametrize("noise", ["gaussian", "uniform"])
def test_conv_3x3x64x64_mirrors_below_five_degrees_through_relu(noise):
  rule = feedback.get_rule("wm", eta=0.005, decay=0.05, noise=noise)
  layer = wnn.Conv(64, (3, 3), use_bias=False, rule=rule, mirror_activation=nn.relu)
  w, b0, b_half, b_full = _mirror_to_convergence(layer, (12, 12, 64), 48, 100)
  assert float(metrics.angle(b0, w)) > 80
  assert float(metrics.angle(b_full, w)) < 5.0
  # Through a ReLU the covariance is W / 2 (Stein's lemma), so B -> 0.05 W.
  ratio_half = float(jnp.linalg.norm(b_half) / jnp.linalg.norm(w))
  ratio_full = float(jnp.linalg.norm(b_full) / jnp.linalg.norm(w))
  assert abs(ratio_full - ratio_half) < 0.02 * ratio_full
  assert 0.045 < ratio_full < 0.055, ratio_full


def test_mirror_noise_has_unit_moments_and_unknown_kinds_are_refused():
  for kind, kurtosis in (("gaussian", 0.0), ("uniform", -1.2)):
    x = np.asarray(mirror.noise(jax.random.key(0), (400, 500), kind=kind))
    assert abs(x.mean()) < 0.01 and abs(x.var() - 1.0) < 0.01, kind
    assert abs(((x - x.mean()) ** 4).mean() / x.var() ** 2 - 3.0 - kurtosis) < 0.05, kind
  with pytest.raises(ValueError, match="is not one of"):
    feedback.get_rule("wm", noise="laplace")
