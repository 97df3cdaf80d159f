"""sa, aa and ia: one optimizer step moves B by minus its learning rate times its loss's gradient.

The gradients are written here in closed form, the conv ones through explicit
patches (im2col) and their transpose (col2im), independently of the library.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from wtfree import feedback
from wtfree import learning
from wtfree import nn as wnn

LR = 0.1
PAD = ((1, 1), (1, 1))
STRIDE = 2


class OneLayer(nn.Module):
  layer: nn.Module

  @nn.compact
  def __call__(self, x, between_steps=False):
    return self.layer(x)


def _patches(x, k):
  """``[N, H', W', k*k*C]`` patches of the padded input, in the HWIO kernel's (kh, kw, c) order."""
  x = np.pad(x, ((0, 0), *PAD, (0, 0)))
  n, h, w, c = x.shape
  out = (h - k) // STRIDE + 1
  taps = [x[:, i:i + STRIDE * out:STRIDE, j:j + STRIDE * out:STRIDE, :] for i in range(k) for j in range(k)]
  return np.stack(taps, axis=3).reshape(n, out, out, k * k * c)


def _unpatch(cols, image_shape, k):
  """The transpose of `_patches`: each patch added back to where it came from (col2im)."""
  n, h, w, c = image_shape
  padded = np.zeros((n, h + 2, w + 2, c))
  out = cols.shape[1]
  cols = cols.reshape(n, out, out, k, k, c)
  for i in range(k):
    for j in range(k):
      padded[:, i:i + STRIDE * out:STRIDE, j:j + STRIDE * out:STRIDE, :] += cols[:, :, :, i, j, :]
  return padded[:, 1:-1, 1:-1, :]


def _closed_form(rule, x, w, b, conv):
  """The gradient of the rule's loss in B, from the formulas of its docstring."""
  n = x.shape[0]
  if conv:
    k = w.shape[0]
    p = _patches(x, k).reshape(-1, w[..., 0].size)
    w2, b2 = w.reshape(-1, w.shape[-1]), b.reshape(-1, b.shape[-1])
  else:
    p, w2, b2 = x, w, b
  f, bx = p @ w2, p @ b2
  if rule.name == "sa":
    grad = 2 * rule.alpha * b2 - rule.beta * w2
  elif rule.name == "aa":
    grad = (2 * rule.alpha * p.T @ bx - rule.beta * p.T @ f) / n
  else:
    r_cols = f @ b2.T  # each output position sent back through B, per patch
    if conv:
      out = _patches(x, k).shape[1]
      r = _unpatch(r_cols.reshape(n, out, out, -1), x.shape, k)  # r = f B^T, an image like x
      r_patches = _patches(r, k).reshape(-1, w2.shape[0])
    else:
      r_patches = r_cols
    grad = (-rule.alpha * p.T @ f + 2 * rule.beta * r_patches.T @ f) / n + 2 * rule.gamma * b2
  return grad.reshape(b.shape)


@pytest.mark.parametrize("conv", [False, True], ids=["dense", "conv"])
@pytest.mark.parametrize("name", ["sa", "aa", "ia"])
def test_one_step_moves_b_by_its_loss_gradient(name, conv):
  rule = feedback.get_rule(name)
  if conv:
    layer = wnn.Conv(5, (3, 3), strides=STRIDE, padding=PAD, use_bias=False, rule=rule)
    x = jax.random.normal(jax.random.key(0), (4, 6, 6, 3))
  else:
    layer = wnn.Dense(5, use_bias=False, rule=rule)
    x = jax.random.normal(jax.random.key(0), (16, 7))
  model = OneLayer(layer)
  params = learning.Learner(model, x).init({"params": jax.random.key(1)})["params"]
  target = jax.random.normal(jax.random.key(2), model.apply({"params": params}, x).shape)
  tx = optax.sgd(LR)

  def task_loss(p):
    return jnp.sum(model.apply({"params": p}, x) * target)

  grads = jax.grad(task_loss)(params)
  updates, _ = tx.update(grads, tx.init(params), params)
  new = optax.apply_updates(params, updates)["layer"]
  old = params["layer"]
  want = -LR * _closed_form(rule, np.asarray(x, np.float64), np.asarray(old["kernel"], np.float64),
                            np.asarray(old["feedback_kernel"], np.float64), conv)
  np.testing.assert_allclose(new["feedback_kernel"] - old["feedback_kernel"], want, rtol=2e-4, atol=1e-6)
  # W gets the task's gradient only, sent back through B elsewhere: its own update is backprop's.
  w_grad = jax.grad(lambda w: task_loss({"layer": {**old, "kernel": w}}))(old["kernel"])
  np.testing.assert_allclose(grads["layer"]["kernel"], w_grad, rtol=1e-5, atol=1e-6)


def test_sa_brings_b_to_w():
  rule = feedback.get_rule("sa")
  w = jax.random.normal(jax.random.key(0), (6, 4))
  b = jax.random.normal(jax.random.key(1), (6, 4))
  step = lambda b, _: (b - 2.0 * jax.grad(lambda b_: rule.feedback_loss(None, None, w, b_))(b), None)
  b, _ = jax.jit(lambda b: jax.lax.scan(step, b, length=2000))(b)
  np.testing.assert_allclose(b, (rule.beta / (2 * rule.alpha)) * w, rtol=1e-3, atol=1e-4)
