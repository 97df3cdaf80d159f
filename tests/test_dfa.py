"""Direct feedback alignment: the output error sent straight to every layer."""

import functools
import json
import logging
import pathlib
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import digits_mlp
from wtfree import data
from wtfree import feedback
from wtfree import learning
from wtfree import models
from wtfree import nn as wnn
from wtfree import optim
from wtfree import settings
from wtfree import sharding
from wtfree import steps

TOL = dict(rtol=1e-5, atol=1e-6)
ROOT = pathlib.Path(__file__).resolve().parents[1]


def _init(model, x):
  variables = model.init({"params": jax.random.key(1)}, x, train=False)
  return {k: variables[k] for k in ("params", "feedback")}


def test_hidden_gradients_are_the_broadcast_error_times_the_derivative():
  model = models.get_model("mlp", num_classes=10, widths=(32, 16), activation="tanh", rule="dfa")
  x = jax.random.normal(jax.random.key(0), (8, 20))
  labels = jnp.arange(8) % 10
  variables = _init(model, x)

  def loss(params):
    return learning.Learner(model, x, train=False).value_and_grad(
        functools.partial(steps._loss, "classification"), {**variables, "params": params}, x, targets=labels,
        key=jax.random.key(0), train=True)

  grads = loss(variables["params"])[1]

  p, seeds = variables["params"], variables["feedback"]
  a1 = x @ p["Dense_0"]["kernel"] + p["Dense_0"]["bias"]
  h1 = jnp.tanh(a1)
  a2 = h1 @ p["Dense_1"]["kernel"] + p["Dense_1"]["bias"]
  h2 = jnp.tanh(a2)
  logits = h2 @ p["head"]["kernel"] + p["head"]["bias"]
  e = (jax.nn.softmax(logits) - jax.nn.one_hot(labels, 10)) / 8
  # Each layer's B maps e to its input; the tap at the input of the layer
  # above layer l delivers layer l's error.
  rule = feedback.get_rule("dfa")
  b_to_h1 = rule.broadcast_map(seeds["Dense_1"]["seed"], 10, 32)
  b_to_h2 = rule.broadcast_map(seeds["head"]["seed"], 10, 16)
  delta2 = (e @ b_to_h2) * (1 - h2**2)
  delta1 = (e @ b_to_h1) * (1 - h1**2)
  np.testing.assert_allclose(grads["head"]["kernel"], h2.T @ e, **TOL)
  np.testing.assert_allclose(grads["Dense_1"]["kernel"], h1.T @ delta2, **TOL)
  np.testing.assert_allclose(grads["Dense_1"]["bias"], delta2.sum(0), **TOL)
  np.testing.assert_allclose(grads["Dense_0"]["kernel"], x.T @ delta1, **TOL)
  # B is random, fixed, and of variance 1/n_in.
  np.testing.assert_array_equal(b_to_h1, rule.broadcast_map(seeds["Dense_1"]["seed"], 10, 32))
  assert 0.8 < float(jnp.std(rule.broadcast_map(seeds["Dense_1"]["seed"], 10, 4096)) * 64) < 1.2
  assert abs(float(jnp.corrcoef(b_to_h1[:, :16].ravel(), b_to_h2.ravel())[0, 1])) < 0.3


def test_a_conv_layer_input_receives_b_e_in_its_own_shape():
  layer = wnn.Conv(4, (3, 3), strides=2, rule="dfa")
  x = jax.random.normal(jax.random.key(0), (2, 6, 6, 3))
  g = jax.random.normal(jax.random.key(1), (2, 4))
  variables = layer.init(jax.random.key(2), x)

  def f(x, kernel):
    y, taps = layer.apply({**variables, "params": {**variables["params"], "kernel": kernel}}, x, mutable=[feedback.STEP])
    out = feedback.connect(jnp.mean(y, axis=(1, 2)), taps[feedback.STEP])
    return jnp.sum(out * g)

  dx, dw = jax.grad(f, argnums=(0, 1))(x, variables["params"]["kernel"])
  b = feedback.get_rule("dfa").broadcast_map(variables["feedback"]["seed"], 4, 6 * 6 * 3)
  np.testing.assert_allclose(dx, (g @ b).reshape(x.shape), **TOL)
  # The layer's own weight gradient is backprop's.
  plain = lambda kernel: jnp.sum(jnp.mean(feedback.conv_op(x, kernel, strides=2), axis=(1, 2)) * g)
  np.testing.assert_allclose(dw, jax.grad(plain)(variables["params"]["kernel"]), **TOL)


def test_connect_without_taps_is_the_identity_and_refuses_other_rules():
  y = jnp.ones((2, 3))
  assert feedback.connect(y, {}) is y
  taps = {"layer": {"taps": ((jnp.ones((2, 5)), jnp.zeros((2,), jnp.uint32)),)}}
  try:
    feedback.connect(y, taps, "fa")
  except ValueError as error:
    assert "dfa" in str(error)
  else:
    raise AssertionError("connect accepted rule fa")


def test_connect_warns_when_the_maps_outgrow_backprop(caplog, monkeypatch):
  y = jnp.ones((2, 10))
  taps = {"a": {"taps": ((jnp.ones((2, 4, 4, 3)), jnp.zeros((2,), jnp.uint32)),)},
          "b": {"taps": ((jnp.ones((2, 20)), jnp.zeros((2,), jnp.uint32)),)}}
  assert feedback.direct.map_entries(taps, y.shape) == 10 * (48 + 20)
  for limit, warned in ((10 * 68, False), (10 * 68 - 1, True)):
    monkeypatch.setattr(feedback.direct, "LARGE_MAPS", limit)
    caplog.clear()
    with caplog.at_level(logging.WARNING):
      feedback.connect(y, taps)
    assert ("6.8e+02 entries" in caplog.text) == warned, caplog.text


def _state_and_batch(config, num_steps=0):
  mesh = sharding.make_mesh(jax.devices()[:1])
  run = settings.resolve(config)
  ds = data.get_dataset(run.data)
  model = models.create(run.model, ds.num_classes, ds.input_shape)
  tx = optim.make(run.optimizer, steps_per_epoch=ds.num_train // config.batch_size)
  state = steps.create_train_state(model, tx, ds.input_shape, config.seed, mesh)
  step = jax.jit(lambda s, b: steps.train_step(s, b, model=model, tx=tx, task=ds.task))
  batches = ds.train_batches()
  losses = []
  for _ in range(num_steps):
    state, metrics = step(state, sharding.global_batch(next(batches), mesh))
    losses.append(float(metrics["loss"]))
  return model, ds, state, sharding.global_batch(next(batches), mesh), losses


def test_delta_angles_start_near_90_and_every_layer_reports_a_weight_ratio():
  config = digits_mlp.get_config()
  config.rule = "dfa"
  model, ds, state, batch, _ = _state_and_batch(config)
  result = jax.device_get(steps.alignment_step(state, batch, model=model, task=ds.task))
  assert 75.0 < result["angle/delta/Dense_0"] < 105.0
  assert 60.0 < result["angle/delta/Dense_1"] < 120.0
  assert result["angle/delta/head"] < 1e-3  # the output layer's error is e itself
  assert not any(k.startswith("angle/weight/") for k in result)
  assert {"ratio/weight/Dense_0", "ratio/weight/Dense_1", "ratio/weight/head"} <= set(result)
  assert all(0.0 < result[k] < 10.0 for k in result if k.startswith("ratio/"))


@pytest.mark.parametrize("model", ["lenet", pytest.param("resnet_tiny", marks=pytest.mark.slow)])
def test_conv_nets_with_batch_norm_and_batch_manhattan_learn_under_dfa(model):
  config = digits_mlp.get_config()
  config.flatten = False
  config.model = model
  config.model_options = {"batch_norm": True} if model == "lenet" else {}
  config.rule = "dfa"
  config.batch_manhattan = True
  config.learning_rate = 0.01
  config.batch_size = 64
  model, _, state, _, losses = _state_and_batch(config, num_steps=40)
  assert np.mean(losses[-5:]) < 0.7 * np.mean(losses[:5]), losses
  assert all(np.isfinite(losses))


@pytest.mark.slow
def test_main_trains_digits_under_dfa(tmp_path):
  command = [sys.executable, "-m", "wtfree.main", "--config=configs/digits_mlp.py", f"--workdir={tmp_path}"]
  subprocess.run([*command, "--config.rule=dfa"], cwd=ROOT, check=True, capture_output=True)
  records = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
  final = [r for r in records if r["split"] == "eval"][-1]
  assert final["eval/top1"] >= 0.85, final



@pytest.mark.parametrize("share", [True, False])
def test_a_sequence_output_sends_each_positions_error_to_that_position(share):
  rule = feedback.get_rule("dfa", share_positions=share)
  x = jax.random.normal(jax.random.key(0), (3, 5, 4))  # [batch, length, width] at a tap
  seed = jax.random.key_data(jax.random.key(7))
  taps = {"layer": {"taps": ((x, seed),)}}
  target = jax.random.normal(jax.random.key(1), (3, 5, 6))
  loss = lambda x: jnp.sum(feedback.connect(jnp.tanh(target), {"layer": {"taps": ((x, seed),)}}, rule) * target)
  delivered = jax.grad(loss)(x)
  e = target  # d loss / d output
  if share:
    b = rule.broadcast_map(seed, 6, 4)
    expected = jnp.einsum("btv,vd->btd", e, b)
    assert feedback.direct.map_entries(taps, (3, 5, 6), rule) == 6 * 4
  else:
    b = rule.broadcast_map(seed, 30, 20)
    expected = (e.reshape(3, 30) @ b).reshape(3, 5, 4)
    assert feedback.direct.map_entries(taps, (3, 5, 6), rule) == 30 * 20
  np.testing.assert_allclose(delivered, expected, **TOL)
  # A tap without the output's positions (a pooled classifier's features) takes the flattened map.
  assert rule.map_shape((3, 10), (3, 5, 4)) == (10, 20, False)
