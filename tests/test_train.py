"""The sharded train step, resuming, and the training loop end to end."""

import json
import os
import signal

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import digits_mlp
from wtfree import actions
from wtfree import data
from wtfree import dispatch
from wtfree import feedback
from wtfree import models
from wtfree import optim
from wtfree import preemption
from wtfree import settings
from wtfree import sharding
from wtfree import steppers
from wtfree import steps
from wtfree import train
from wtfree import validate


def _config(**overrides):
  config = digits_mlp.get_config()
  config.model_options.widths = (32,)
  config.batch_size = 32
  config.eval_batch_size = 360
  config.log_every_steps = 5
  config.eval_every_steps = 10
  config.checkpoint_every_steps = 5
  config.mirror_batch_size = 64
  config.tensorboard = False
  for key, value in overrides.items():
    config[key] = value
  return config


def _leaves_equal(a, b, **tol):
  jax.tree.map(lambda x, y: np.testing.assert_allclose(np.asarray(x), np.asarray(y), **tol), a, b)


def _run_steps(config, devices, num_steps):
  """``num_steps`` train steps on a mesh of ``devices``, blocking on each."""
  mesh = sharding.make_mesh(devices)
  run = settings.resolve(config)
  ds = data.get_dataset(run.data)
  model = models.create(run.model, ds.num_classes, ds.input_shape)
  tx = optim.make(run.optimizer, steps_per_epoch=ds.num_train // config.batch_size)
  learner = steps.make_learner(model, ds.input_shape, mirror_batch_size=config.mirror_batch_size, mesh=mesh)
  state = steps.create_train_state(model, tx, ds.input_shape, config.seed, mesh, learner)
  step = jax.jit(lambda s, b: steps.train_step(s, b, model=model, tx=tx, task=ds.task, learner=learner))
  batches = ds.train_batches()
  for _ in range(num_steps):
    state, _ = step(state, sharding.global_batch(next(batches), mesh))
    jax.block_until_ready(state)
  return jax.device_get(state)


@pytest.mark.parametrize("rule", ["bp", "fa", "kp", "dfa", "wm"])
def test_one_device_and_eight_give_the_same_parameters(rule):
  config = _config(rule=rule)
  one = _run_steps(config, jax.devices()[:1], 20)
  eight = _run_steps(config, jax.devices()[:8], 20)
  _leaves_equal(one.params, eight.params, rtol=2e-4, atol=2e-5)
  _leaves_equal(one.feedback, eight.feedback, rtol=2e-4, atol=2e-5)


@pytest.mark.parametrize("rule", [pytest.param("bp", marks=pytest.mark.slow), pytest.param("brsf", marks=pytest.mark.slow), "wm"])
def test_resumed_run_equals_uninterrupted(rule, tmp_path):
  extra = {"mirror_epochs": 0.2} if feedback.get_rule(rule).takes("mirror_epochs") else {}  # 0.2 epoch = 8 mirror-only steps
  extra.update(angles=False, eval_every_steps=1000)
  config = _config(rule=rule, num_steps=20, **extra)
  straight = train.train_and_evaluate(config, str(tmp_path / "straight"))
  train.train_and_evaluate(_config(rule=rule, num_steps=10, **extra), str(tmp_path / "resumed"))
  resumed = train.train_and_evaluate(config, str(tmp_path / "resumed"))
  assert int(resumed.step) == int(straight.step) == 20
  for field in ("params", "feedback", "batch_stats", "opt_state", "rng"):
    _leaves_equal(getattr(resumed, field), getattr(straight, field), rtol=0, atol=0)


def test_train_and_evaluate_logs_metrics_and_angles(tmp_path):
  config = _config(rule="fa", num_steps=20)
  config.tensorboard = True
  state = train.train_and_evaluate(config, str(tmp_path))
  assert int(state.step) == 20
  records = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
  train_records = [r for r in records if r["split"] == "train"]
  eval_records = [r for r in records if r["split"] == "eval"]
  assert [r["step"] for r in train_records] == [5, 10, 15, 20]
  assert [r["step"] for r in eval_records] == [10, 20]
  last = train_records[-1]
  assert np.isfinite(last["train/loss"])
  for layer in ("Dense_0", "head"):
    assert {f"angle/weight/{layer}", f"angle/delta/{layer}", f"ratio/weight/{layer}"} <= set(last)
  assert last["angle/delta/head"] < 1e-3  # the output layer's error is the same under any rule
  assert all(0.0 <= v <= 180.0 for k, v in last.items() if k.startswith("angle/"))
  assert 0.0 <= eval_records[-1]["eval/top1"] <= 1.0
  assert os.listdir(tmp_path / "tensorboard")
  assert os.path.isdir(tmp_path / "checkpoints")


def test_diverging_run_stops_with_step_and_rule(tmp_path):
  config = _config(rule="fa", num_steps=40, learning_rate=1e30, checkpoint_every_steps=1)
  with pytest.raises(steps.DivergenceError, match=r"at step \d+ with rule 'fa'"):
    train.train_and_evaluate(config, str(tmp_path))


def test_sigmoid_binary_cross_entropy_is_the_sum_over_classes_of_each_units_bce():
  logits = jnp.array([[2.0, -1.0, 0.5], [-3.0, 0.0, 4.0]])
  labels = jnp.array([0, 2])
  task = steps.task_with_loss("classification", "sigmoid_binary_cross_entropy")
  p = 1.0 / (1.0 + np.exp(-np.asarray(logits, np.float64)))
  y = np.eye(3)[np.asarray(labels)]
  by_hand = -(y * np.log(p) + (1 - y) * np.log(1 - p)).sum(-1)
  np.testing.assert_allclose(steps._loss(task, logits, labels), by_hand, rtol=1e-6)  # pylint: disable=protected-access
  # The batch mean's gradient at the logits is Akrout et al.'s delta, (sigmoid(z) - onehot), over the batch.
  grad = jax.grad(lambda z: jnp.mean(steps._loss(task, z, labels)))(logits)  # pylint: disable=protected-access
  np.testing.assert_allclose(grad, (p - y) / 2, rtol=1e-5)
  # Accuracy still counts the largest logit.
  np.testing.assert_array_equal(steps._correct(task, logits, labels, 1), [1.0, 1.0])  # pylint: disable=protected-access


def test_loss_names_are_checked():
  assert steps.task_with_loss("classification", None) == "classification"
  assert steps.task_with_loss("regression", "softmax_cross_entropy") == "regression"
  with pytest.raises(ValueError, match="loss 'hinge' is not one of softmax_cross_entropy, sigmoid_binary"):
    steps.task_with_loss("classification", "hinge")
  with pytest.raises(ValueError, match="is for classification, not a regression task"):
    steps.task_with_loss("regression", "sigmoid_binary_cross_entropy")
  with pytest.raises(ValueError, match="loss 'hinge' is not one of"):
    validate.check_config(_config(loss="hinge"))


def test_a_periodic_action_added_from_outside_runs_at_its_period_and_is_logged(tmp_path):
  def head_norm(step, state):
    return {"head_norm": float(jnp.linalg.norm(state.params["head"]["kernel"])), "at": step}

  probe = actions.Periodic("probe", every_steps=7, fn=head_norm)
  state = train.train_and_evaluate(_config(num_steps=20), str(tmp_path), actions=[probe])
  lines = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
  probes = [line for line in lines if line["split"] == "probe"]
  assert [line["step"] for line in probes] == [7, 14, 20] and all(p["at"] == p["step"] for p in probes)
  assert probes[-1]["head_norm"] == pytest.approx(float(jnp.linalg.norm(state.params["head"]["kernel"])))
  with pytest.raises(ValueError, match="every_steps 0 is not a positive step count"):
    actions.Periodic("probe", every_steps=0, fn=head_norm)


def test_a_stretch_of_steps_is_the_same_on_the_device_and_fed_from_the_host():
  config = _config(rule="fa", num_steps=12)
  run = settings.resolve(config)
  parts = train._parts(run)
  programs = train._programs(run, parts, keep_going=False)

  def stretch(stepper):
    state = steps.create_train_state(parts.model, parts.make_tx({}), parts.ds.input_shape, config.seed, parts.mesh,
                                     parts.learner)
    state, guard, metrics, taken, last_batch = stepper.run(state, dispatch.Guard.fresh(state.params), 0, 7)
    return jax.device_get((state, guard, jax.tree.map(lambda m: m[:taken], metrics), last_batch()))

  class Never:
    requested = False

  on_device = steppers.OnDevice(programs.step, parts.ds.arrays["train"], parts.ds.train_indices, parts.hparams,
                                mesh=parts.mesh, batch_sharding=programs.batch_sharding,
                                donate_argnums=programs.donated, longest=10, slow_loop=False)
  host_fed = steppers.HostFed(programs.train, steppers.host_batches(parts.views, 0, parts.mesh, prefetch=2),
                              parts.hparams, Never())
  (state, guard, metrics, batch), (fed_state, fed_guard, fed_metrics, fed_batch) = stretch(on_device), stretch(host_fed)
  assert int(state.step) == int(fed_state.step) == 7 and bool(guard.ok) and bool(fed_guard.ok)
  _leaves_equal(batch, fed_batch, rtol=0, atol=0)
  _leaves_equal(metrics, fed_metrics, rtol=1e-5, atol=1e-6)
  _leaves_equal(state.params, fed_state.params, rtol=1e-5, atol=1e-6)


def test_sigterm_saves_the_step_it_came_at_and_the_run_started_again_ends_as_one_run_would(tmp_path):
  def sigterm(step, state):
    del state
    if step == 10:
      os.kill(os.getpid(), signal.SIGTERM)

  config = _config(num_steps=20, checkpoint_every_steps=1000, angles=False)
  straight = train.train_and_evaluate(config, str(tmp_path / "straight"))
  with pytest.raises(preemption.Preempted, match="after step 10, checkpoint saved"):
    train.train_and_evaluate(config, str(tmp_path / "stopped"), actions=[actions.Periodic("kill", 5, sigterm)])
  assert sorted(os.listdir(tmp_path / "stopped" / "checkpoints")) == ["10"]
  resumed = train.train_and_evaluate(config, str(tmp_path / "stopped"))
  for field in ("params", "opt_state", "rng"):
    _leaves_equal(getattr(resumed, field), getattr(straight, field), rtol=0, atol=0)
