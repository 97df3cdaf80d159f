"""Rule 'np': weight gradients from output noise, and 'fa_sparse': fa on fixed sparse connectivities."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from wtfree import feedback
from wtfree import learning
from wtfree import models
from wtfree import sharding
from wtfree import steps


def _linear_net(rule, widths=(20,)):
  return models.get_model("mlp", num_classes=10, widths=widths, activation="linear", use_bias=False, rule=rule)


def _state(model, x):
  learner = learning.Learner(model, x, train=False)
  tx = optax.sgd(1.0)
  state = steps.create_train_state(model, tx, x.shape[1:], 0, sharding.make_mesh(jax.devices()[:1]), learner)
  return state, learner, tx


def test_node_perturbation_step_is_the_estimate_from_its_noise():
  sigma = 0.05
  x = jax.random.normal(jax.random.key(2), (16, 30))
  y = jax.random.normal(jax.random.key(3), (16, 10))
  model = _linear_net(feedback.get_rule("np", sigma=sigma))
  state, learner, tx = _state(model, x)
  new, _ = steps.train_step(state, {"image": x, "label": y}, model=model, tx=tx, task="regression", learner=learner)
  w1, w2 = state.params["Dense_0"]["kernel"], state.params["head"]["kernel"]
  # The noise the step drew: one key per layer output, in the perturbations' (sorted) order.
  k1, k2 = jax.random.split(state.key(3), 2)
  xi1, xi2 = sigma * jax.random.normal(k1, (16, 20)), sigma * jax.random.normal(k2, (16, 10))
  h = x @ w1
  clean = 0.5 * jnp.sum(jnp.square(h @ w2 - y), -1)
  noisy = 0.5 * jnp.sum(jnp.square((h + xi1) @ w2 + xi2 - y), -1)
  scale = (noisy - clean)[:, None] / sigma**2
  expected_g1, expected_g2 = x.T @ (scale * xi1) / 16, h.T @ (scale * xi2) / 16
  np.testing.assert_allclose(w1 - new.params["Dense_0"]["kernel"], expected_g1, rtol=2e-3, atol=1e-6)
  np.testing.assert_allclose(w2 - new.params["head"]["kernel"], expected_g2, rtol=2e-3, atol=1e-6)


def test_node_perturbation_estimates_the_gradient_on_average():
  x = jax.random.normal(jax.random.key(2), (32, 30))
  y = jax.random.normal(jax.random.key(3), (32, 10))
  model = _linear_net("np")
  state, learner, tx = _state(model, x)
  bp = model.clone(rule="bp")
  true = jax.grad(lambda p: jnp.mean(0.5 * jnp.sum(jnp.square(bp.apply({"params": p}, x, train=True) - y), -1)))(
      state.params)

  @jax.jit
  def estimate(rng):
    s = state.replace(rng=jax.random.key_data(rng))
    new, _ = steps.train_step(s, {"image": x, "label": y}, model=model, tx=tx, task="regression", learner=learner)
    return jax.tree.map(jnp.subtract, s.params, new.params)

  mean = jax.tree.map(lambda *g: jnp.mean(jnp.stack(g), 0), *[estimate(k) for k in jax.random.split(jax.random.key(4), 400)])
  for layer in ("Dense_0", "head"):
    a, b = np.ravel(mean[layer]["kernel"]), np.ravel(true[layer]["kernel"])
    cosine = a @ b / np.linalg.norm(a) / np.linalg.norm(b)
    assert cosine > 0.9, (layer, cosine)


@pytest.mark.parametrize("shared_mask", [False, True], ids=["independent", "shared"])
def test_sparse_fa_forward_uses_w_mask_and_the_backward_b_mask(shared_mask):
  x = jax.random.normal(jax.random.key(2), (8, 30))
  model = _linear_net(feedback.get_rule("fa_sparse", keep=0.5, shared_mask=shared_mask))
  state, _, _ = _state(model, x)
  fb = state.feedback
  m1, m2 = fb["Dense_0"]["mask"], fb["head"]["mask"]
  assert 0.4 < float(m1.mean()) < 0.6
  assert np.array_equal(m1, fb["Dense_0"]["feedback_mask"]) == shared_mask
  w1, w2 = state.params["Dense_0"]["kernel"], state.params["head"]["kernel"]
  # Forward: the net computes with W's mask * W.
  out = model.apply(state.variables(), x, train=False)
  np.testing.assert_allclose(out, x @ (w1 * m1) @ (w2 * m2), rtol=1e-5, atol=1e-5)
  # Backward: the error travels through B's mask * B; removed weights get no gradient.
  grads = jax.grad(lambda p, x: jnp.sum(model.apply({**state.variables(), "params": p}, x, train=False)),
                   argnums=(0, 1))(state.params, x)
  b1 = fb["Dense_0"]["kernel"] * fb["Dense_0"]["feedback_mask"]
  b2 = fb["head"]["kernel"] * fb["head"]["feedback_mask"]
  delta = np.ones((8, 10))
  np.testing.assert_allclose(grads[1], delta @ b2.T @ b1.T, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(grads[0]["Dense_0"]["kernel"], m1 * (x.T @ (delta @ b2.T)), rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(grads[0]["head"]["kernel"], m2 * ((x @ (w1 * m1)).T @ delta), rtol=1e-5, atol=1e-5)
  assert np.all(np.asarray(grads[0]["Dense_0"]["kernel"])[np.asarray(m1) == 0] == 0)


@pytest.mark.parametrize("keep", [0.5, 0.3])
def test_sparse_fa_masks_are_independent_so_a_connection_is_reciprocal_with_probability_keep_squared(keep):
  rule = feedback.get_rule("fa_sparse", keep=keep)
  kernel = jnp.zeros((1000, 1000))
  state = rule.init_state(jax.random.key(0), kernel, jax.nn.initializers.lecun_normal())
  w_mask, b_mask = np.asarray(state["mask"]), np.asarray(state["feedback_mask"])
  n, p = kernel.size, keep**2
  # Both kept: Bernoulli(keep**2) per entry when the masks are independent; keep when they are one.
  se = np.sqrt(p * (1 - p) / n)
  assert abs(np.mean(w_mask * b_mask) - p) < 4 * se, (np.mean(w_mask * b_mask), p, se)
  for mask in (w_mask, b_mask):
    assert abs(mask.mean() - keep) < 4 * np.sqrt(keep * (1 - keep) / n)

  shared = feedback.get_rule("fa_sparse", keep=keep, shared_mask=True)
  state = shared.init_state(jax.random.key(0), kernel, jax.nn.initializers.lecun_normal())
  np.testing.assert_array_equal(state["mask"], state["feedback_mask"])
  np.testing.assert_array_equal(state["mask"], w_mask)  # W's mask is the same draw either way.
