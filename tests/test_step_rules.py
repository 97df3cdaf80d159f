"""Rules that form their own step (drtp, pepita, fg; dfa and np): closed forms, and the one call every loop uses."""

import functools
import pathlib
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from wtfree import feedback
from wtfree import learning
from wtfree import models
from wtfree import steps

TOL = dict(rtol=1e-4, atol=1e-6)
ROOT = pathlib.Path(__file__).resolve().parents[1]
LOSS = functools.partial(steps._loss, "classification")


def _setup(rule, widths=(16,), batch=8, n_in=20):
  model = models.get_model("mlp", num_classes=10, widths=widths, activation="tanh", rule=rule)
  x = jax.random.normal(jax.random.key(0), (batch, n_in))
  labels = jnp.arange(batch) % 10
  learner = learning.Learner(model, x, train=False)
  variables = learner.init(jax.random.key(1))
  return model, learner, variables, x, labels


def _grads(learner, variables, x, labels, key=jax.random.key(5)):
  return learner.value_and_grad(LOSS, variables, x, targets=labels, key=key, train=True)[1]


def test_drtp_hidden_layers_learn_from_the_projected_target():
  _, learner, variables, x, labels = _setup("drtp", widths=(32, 16))
  grads = _grads(learner, variables, x, labels)
  p, seeds = variables["params"], variables["feedback"]
  h1 = jnp.tanh(x @ p["Dense_0"]["kernel"] + p["Dense_0"]["bias"])
  h2 = jnp.tanh(h1 @ p["Dense_1"]["kernel"] + p["Dense_1"]["bias"])
  logits = h2 @ p["head"]["kernel"] + p["head"]["bias"]
  e = (jax.nn.softmax(logits) - jax.nn.one_hot(labels, 10)) / 8
  target = jax.nn.one_hot(labels, 10) / 8
  rule = feedback.get_rule("drtp")
  delta2 = (target @ rule.broadcast_map(seeds["head"]["seed"], 10, 16)) * (1 - h2**2)
  delta1 = (target @ rule.broadcast_map(seeds["Dense_1"]["seed"], 10, 32)) * (1 - h1**2)
  np.testing.assert_allclose(grads["head"]["kernel"], h2.T @ e, **TOL)  # The output layer: the error, as usual.
  np.testing.assert_allclose(grads["Dense_1"]["kernel"], h1.T @ delta2, **TOL)
  np.testing.assert_allclose(grads["Dense_1"]["bias"], delta2.sum(0), **TOL)
  np.testing.assert_allclose(grads["Dense_0"]["kernel"], x.T @ delta1, **TOL)


def test_pepita_updates_are_the_two_passes_difference():
  _, learner, variables, x, labels = _setup("pepita")
  grads = _grads(learner, variables, x, labels)
  p = variables["params"]
  h1 = jnp.tanh(x @ p["Dense_0"]["kernel"] + p["Dense_0"]["bias"])
  e = jax.nn.softmax(h1 @ p["head"]["kernel"] + p["head"]["bias"]) - jax.nn.one_hot(labels, 10)
  f = feedback.get_rule("pepita").projection(variables["feedback"]["Dense_0"]["seed"], 10, 20)
  assert float(jnp.max(jnp.abs(f))) <= 0.05 * np.sqrt(6 / 20)
  modulated = x + e @ f
  h1_mod = jnp.tanh(modulated @ p["Dense_0"]["kernel"] + p["Dense_0"]["bias"])
  np.testing.assert_allclose(grads["Dense_0"]["kernel"], modulated.T @ (h1 - h1_mod) / 8, **TOL)
  np.testing.assert_allclose(grads["Dense_0"]["bias"], (h1 - h1_mod).sum(0) / 8, **TOL)
  np.testing.assert_allclose(grads["head"]["kernel"], h1_mod.T @ e / 8, **TOL)
  np.testing.assert_allclose(grads["head"]["bias"], e.sum(0) / 8, **TOL)


def _exact_errors(p, x, labels):
  """dL_i/da for the hidden layer and the logits of the tanh MLP, example by example."""
  a1 = x @ p["Dense_0"]["kernel"] + p["Dense_0"]["bias"]
  h1 = jnp.tanh(a1)
  g_out = jax.nn.softmax(h1 @ p["head"]["kernel"] + p["head"]["bias"]) - jax.nn.one_hot(labels, 10)
  return h1, (g_out @ p["head"]["kernel"].T) * (1 - h1**2), g_out


def test_forward_gradient_one_draw_is_the_directional_derivative_times_the_direction():
  _, learner, variables, x, labels = _setup("fg")
  key = jax.random.key(7)
  grads = _grads(learner, variables, x, labels, key)
  p = variables["params"]
  h1, g1, g_out = _exact_errors(p, x, labels)
  zeros = {"Dense_0": {"output": jnp.zeros((8, 16))}, "head": {"output": jnp.zeros((8, 10))}}
  u = feedback.get_rule("fg").draw(key, zeros)
  u1, u2 = u["Dense_0"]["output"], u["head"]["output"]
  d = jnp.sum(g1 * u1, -1, keepdims=True) + jnp.sum(g_out * u2, -1, keepdims=True)
  np.testing.assert_allclose(grads["Dense_0"]["kernel"], x.T @ (d * u1) / 8, **TOL)
  np.testing.assert_allclose(grads["head"]["kernel"], h1.T @ (d * u2) / 8, **TOL)
  np.testing.assert_allclose(grads["head"]["bias"], (d * u2).sum(0) / 8, **TOL)


def test_forward_gradient_averages_the_estimates_of_its_directions():
  _, learner, variables, x, labels = _setup(feedback.get_rule("fg", directions=3))
  _, single, _, _, _ = _setup("fg")
  key = jax.random.key(9)
  averaged = _grads(learner, variables, x, labels, key)
  each = [_grads(single, variables, x, labels, k) for k in jax.random.split(key, 3)]
  jax.tree.map(lambda a, *e: np.testing.assert_allclose(a, np.mean(e, axis=0), **TOL), averaged, *each)


def test_forward_gradient_is_unbiased():
  model, learner, variables, x, labels = _setup("fg", batch=4)
  draws = 4000
  many = jax.jit(jax.vmap(lambda key: _grads(learner, variables, x, labels, key)))(
      jax.random.split(jax.random.key(3), draws))
  bp = learning.Learner(model.clone(rule="bp"), x, train=False)
  exact = _grads(bp, variables, x, labels)
  for leaf_many, leaf_exact in zip(jax.tree.leaves(many), jax.tree.leaves(exact)):
    mean, sem = jnp.mean(leaf_many, 0), jnp.std(leaf_many, 0) / np.sqrt(draws)
    z = np.asarray((mean - leaf_exact) / jnp.maximum(sem, 1e-12))
    assert np.mean(np.abs(z) < 4) > 0.99, np.max(np.abs(z))
    assert np.all(np.abs(z) < 6)


@pytest.mark.parametrize("rule", ["dfa", "drtp", "np", "fg", "pepita"])
def test_a_plain_grad_of_a_rule_that_forms_its_own_step_names_the_call_to_use(rule):
  model, _, variables, x, labels = _setup(rule)
  loss = lambda params: jnp.mean(LOSS(model.apply({**variables, "params": params}, x, train=True), labels))
  with pytest.raises(ValueError, match=rf"rule '{rule}' forms its gradients in its own step.*"
                                       r"Learner\.value_and_grad"):
    jax.grad(loss)(variables["params"])


def _readme_loop(rule):
  """The README's "Any flax model" block, run as written under ``rule``: ``(namespace, hidden kernel change)``."""
  text = (ROOT / "README.md").read_text()
  (block,) = [b for b in re.findall(r"```python\n(.*?)```", text, flags=re.S) if "convert.convert(MyFlaxModel()" in b]
  assert 'rule="kp"' in block
  namespace = {}
  exec(compile(block.replace('rule="kp"', f'rule="{rule}"'), "README.md", "exec"), namespace)  # pylint: disable=exec-used
  start = namespace["learner"].init(namespace["jax"].random.key(0))["params"]
  # flax names the layers in the order they are made: Dense_0 is the output layer, Dense_1 the hidden one.
  moved = float(jnp.max(jnp.abs(namespace["variables"]["params"]["Dense_1"]["kernel"] - start["Dense_1"]["kernel"])))
  outputs = namespace["model"].apply(namespace["variables"], namespace["x"])
  loss = float(jnp.mean(namespace["loss_fn"](outputs, namespace["y"])))
  accuracy = float(jnp.mean(outputs.argmax(-1) == namespace["y"]))
  return loss, accuracy, moved


@pytest.fixture(scope="module")
def shallow_loop():
  return _readme_loop("shallow")


@pytest.mark.parametrize("rule", ["dfa", "drtp", "pepita", pytest.param("np", marks=pytest.mark.slow),
                                  pytest.param("fg", marks=pytest.mark.slow)])
def test_the_readme_loop_trains_hidden_layers_under_rules_that_form_their_own_step(rule, shallow_loop):
  loss, accuracy, moved = _readme_loop(rule)
  shallow_loss, shallow_accuracy, shallow_moved = shallow_loop
  assert shallow_moved == 0 and moved > 1e-3
  assert loss < 0.5 * shallow_loss and accuracy >= shallow_accuracy


def test_the_step_belongs_to_the_one_rule_that_overrides_a_step_hook():
  x = jnp.ones((2, 5))
  for rule in ("shallow", "dfa", "fa"):
    model = models.get_model("mlp", num_classes=10, widths=(8,), rule=rule, last_layer_bp=True)
    learner = learning.Learner(model, x, train=False)
    assert {r.name for r in learner.rules} == {rule, "bp"}
    # fa overrides no step hook: the default step, whichever rule holds it.
    assert learner.owner.name == rule if rule != "fa" else not learner.owner.owns_step()
  assert learning.Learner(models.get_model("mlp", num_classes=10, widths=(8,), rule="shallow", last_layer_bp=True),
                          x, train=False).may_freeze
  with pytest.raises(ValueError, match=r"rules \['dfa', 'np'\] each form the train step their own way"):
    feedback.step.owner({feedback.get_rule("np"), feedback.get_rule("dfa")})
