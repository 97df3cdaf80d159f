"""wm's B keeps up with a W that grows and turns; kp's fallback decay aligns B within a few hundred steps."""

import json
import os
import pathlib
import subprocess
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from wtfree import convert
from wtfree import feedback
from wtfree import learning
from wtfree import metrics
from wtfree.feedback import kolen_pollack

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _moving_w(step, w0, w1, growth, turn):
  """W at ``step``: ``growth ** step`` times W0 turned towards W1 (orthogonal, same norm) by ``turn`` per step."""
  angle = turn * step
  return growth**step * (jnp.cos(angle) * w0 + jnp.sin(angle) * w1)


def test_mirror_follows_a_dense_w_that_grows_and_turns():
  # The digits MLP's hidden layer and mirror batch. W grows 1 % and turns
  # 0.5 degrees a step, 7x and 100 degrees over the run: a B that trails by
  # more than a few tens of steps falls below 0.8 of W's norm and past 12 degrees.
  fan_in, units, batch = 256, 256, 256
  w0 = jax.random.normal(jax.random.key(0), (fan_in, units)) / np.sqrt(fan_in)
  w1 = jax.random.normal(jax.random.key(1), (fan_in, units)) / np.sqrt(fan_in)
  w1 = w1 - jnp.vdot(w1, w0) / jnp.vdot(w0, w0) * w0
  w1 = w1 * jnp.linalg.norm(w0) / jnp.linalg.norm(w1)
  rule = feedback.get_rule("wm")
  growth, turn = 1.01, np.radians(0.5)

  @jax.jit
  def mirror(step, b, key):
    keys = iter(jax.random.split(key, 64))
    ctx = feedback.StepContext(
        op=lambda x, w: x @ w,
        inputs=jnp.zeros((batch, fan_in)),
        noise=lambda kind, batches=1: jax.random.normal(next(keys), (batches * batch, fan_in)),
        activation=nn.relu,
    )
    w = _moving_w(step, w0, w1, growth, turn)
    return w, rule.between_steps(ctx, w, {"kernel": b})["kernel"]

  b = w0
  ratios, angles = [], []
  for step in range(1, 201):
    w, b = mirror(step, b, jax.random.key(100 + step))
    ratios.append(float(jnp.linalg.norm(b) / jnp.linalg.norm(w)))
    angles.append(float(metrics.angle(b, w)))
  assert float(metrics.angle(w, w0)) > 90
  assert 0.8 <= min(ratios) and max(ratios) <= 1.25, (min(ratios), max(ratios))
  assert max(angles) < 12.0, max(angles)


class MLP(nn.Module):
  """A plain flax model, written with flax's own nn.Dense."""

  @nn.compact
  def __call__(self, x):
    x = nn.relu(nn.Dense(32)(x))
    return nn.Dense(4)(x)


@pytest.mark.parametrize("steps, bound", [(150, 0.05), (200, 0.02)])
def test_kp_fallback_leaves_little_of_the_random_start_in_a_users_adam_loop(steps, bound):
  x = jax.random.normal(jax.random.key(0), (128, 12))
  labels = jnp.argmax(x @ jax.random.normal(jax.random.key(1), (12, 4)), axis=-1)
  model = convert.convert(MLP(), "kp")
  learner = learning.Learner(model, x)
  variables = learner.init({"params": jax.random.key(2), "feedback": jax.random.key(3)})
  tx = optax.adam(3e-3)

  def loss_fn(params, rest):
    return jnp.mean(metrics.cross_entropy(model.apply({"params": params, **rest}, x), labels))

  @jax.jit
  def step(variables, opt_state, key):
    params, rest = variables["params"], {k: v for k, v in variables.items() if k != "params"}
    grads = jax.grad(loss_fn)(params, rest)
    updates, opt_state = tx.update(grads, opt_state, params)
    variables = {"params": optax.apply_updates(params, updates), **rest}
    return learner.between_steps(variables, key, weight_decay_rate=None), opt_state

  def start_share(variables, first):
    # B - W = offset_scale * (B0 - W0): the share of B - W's random start that is left.
    shares = []
    for name, state in variables["feedback"].items():
      gap = state["offset_scale"] * state["offset"]
      shares.append(float(jnp.linalg.norm(gap) / jnp.linalg.norm(first["feedback"][name]["offset"])))
    return max(shares)

  first = variables
  opt_state = tx.init(variables["params"])
  for i in range(steps):
    variables, opt_state = step(variables, opt_state, jax.random.key(100 + i))
  assert not np.allclose(variables["params"]["Dense_0"]["kernel"], first["params"]["Dense_0"]["kernel"])
  assert start_share(variables, first) < bound
  np.testing.assert_allclose(start_share(variables, first), (1 - kolen_pollack.DEFAULT_DECAY) ** steps, rtol=1e-3)


def _mnist1d_run(rule, workdir):
  # The command, in its own process on one CPU device with XLA's
  # optimisations: the test session's eight unoptimised devices take many
  # times longer over 7,500 steps.
  command = [sys.executable, "-m", "wtfree.main", "--config=configs/mnist1d_mlp.py", f"--workdir={workdir}",
             f"--config.rule={rule}", "--config.batch_size=32"]
  env = {**os.environ, "XLA_FLAGS": ""}
  subprocess.run(command, cwd=ROOT, env=env, check=True, capture_output=True)
  return [json.loads(line) for line in open(workdir / "metrics.jsonl")]


@pytest.mark.slow
def test_wm_holds_alignment_to_the_end_on_mnist1d_at_batch_32(tmp_path):
  wm = _mnist1d_run("wm", tmp_path / "wm")
  bp = _mnist1d_run("bp", tmp_path / "bp")
  logged = [r for r in wm if r["split"] == "train"]
  assert logged[-1]["step"] == [r for r in bp if r["split"] == "train"][-1]["step"]
  for r in logged:
    ratios = {k: v for k, v in r.items() if k.startswith("ratio/weight/")}
    angles = {k: v for k, v in r.items() if k.startswith("angle/weight/")}
    assert len(ratios) == len(angles) == 3, r
    assert all(0.8 <= v <= 1.25 for v in ratios.values()), (r["step"], ratios)
    assert all(v < 12.0 for v in angles.values()), (r["step"], angles)
  final = lambda records: [r for r in records if r["split"] == "eval"][-1]["eval/top1"]
  assert final(bp) > 0.6
  assert final(wm) > final(bp) - 0.05, (final(wm), final(bp))
