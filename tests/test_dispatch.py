"""Runs of steps as one program: any length up to the longest is the same compile; the divergence check."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from wtfree import dispatch
from wtfree import steps


def _run(state, guard, batch):
  """A step whose state and metrics depend on its batch and on the steps before it."""
  total = state + jnp.sum(batch["image"]) * (1.0 + 0.1 * state)
  return total, guard, {"loss": total, "label": jnp.sum(batch["label"])}


def _data():
  images = jnp.asarray(np.random.default_rng(0).normal(size=(16, 3)), jnp.float32)
  labels = jnp.arange(16, dtype=jnp.int32)
  indices = np.random.default_rng(1).integers(0, 16, size=(6, 4)).astype(np.int32)
  return images, labels, indices


def test_a_short_run_steps_only_its_batches_and_writes_only_their_metrics():
  images, labels, indices = _data()
  scanned = jax.jit(dispatch.scan_steps(_run))
  state, _, metrics = scanned(jnp.float32(0.0), None, images, labels, jnp.asarray(indices), np.int32(4))
  expected = jnp.float32(0.0)
  for k in range(4):
    expected, _, step_metrics = _run(expected, None, {"image": images[indices[k]], "label": labels[indices[k]]})
    assert float(metrics["loss"][k]) == float(step_metrics["loss"])
    assert int(metrics["label"][k]) == int(step_metrics["label"])
  assert float(state) == float(expected)
  np.testing.assert_array_equal(np.asarray(metrics["loss"][4:]), 0.0)


def test_runs_of_every_length_share_one_compile():
  images, labels, indices = _data()
  scanned = steps.jit(dispatch.scan_steps(_run))
  for count in (6, 2, 5, 1):
    scanned(jnp.float32(0.0), None, images, labels, jnp.asarray(indices), np.int32(count))
  assert scanned._cache_size() == 1  # pylint: disable=protected-access


@pytest.mark.parametrize("total,every", [(1320, (100, 450, 450)), (20, (5, 7, 0)), (3, (10, 10, 10)), (9, (0,))])
def test_no_run_between_boundaries_is_longer_than_the_longest(total, every):
  longest = dispatch.longest_run(total, every)
  for start in range(total):
    assert 0 < dispatch.next_boundary(start, total, every) - start <= longest
  assert any(dispatch.next_boundary(s, total, every) - s == longest for s in range(total))


def test_a_program_compiled_to_run_once_computes_what_the_default_compile_does():
  # XLA refuses a compile option it does not know: this fails if the option's name changes.
  fn = lambda key: jax.random.normal(key, (64, 32)) @ jax.random.normal(key, (32, 8))
  once = steps.jit(fn, runs_once=True)(jax.random.key(0))
  np.testing.assert_allclose(np.asarray(once), np.asarray(steps.jit(fn)(jax.random.key(0))), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("bad", [np.inf, -np.inf, np.nan])
def test_the_gradient_check_passes_large_finite_gradients_and_finds_one_bad_entry(bad):
  check = steps.jit(steps._finite)
  gradient = np.full((4, 64, 64), 1e30, np.float32)
  gradient[1] *= -1.0
  assert bool(check(gradient))
  gradient[2, 3, 5] = bad
  assert not bool(check(gradient))


def test_one_by_one_steps_as_the_loop_does():
  images, labels, indices = _data()
  looped = jax.jit(dispatch.scan_steps(_run))(jnp.float32(0.0), None, images, labels, jnp.asarray(indices),
                                               np.int32(5))
  stepped = dispatch.one_by_one(_run)(jnp.float32(0.0), None, images, labels, jnp.asarray(indices), np.int32(5))
  np.testing.assert_allclose(stepped[0], looped[0], rtol=1e-6)
  np.testing.assert_allclose(stepped[2]["loss"], looped[2]["loss"][:5], rtol=1e-6)
  np.testing.assert_array_equal(stepped[2]["label"], looped[2]["label"][:5])


def test_a_model_with_convolutions_steps_one_by_one_on_the_cpu():
  from wtfree import models  # pylint: disable=g-import-not-at-top

  x = jnp.ones((2, 8, 8, 1))
  conv = models.get_model("lenet", num_classes=10, features=(4,), dense=())
  mlp = models.get_model("mlp", num_classes=10, widths=(8,))
  init = lambda model: (lambda: model.init({"params": jax.random.key(0)}, x, train=False))
  assert dispatch.loop_is_slow(init(conv)) == (jax.default_backend() == "cpu")
  assert not dispatch.loop_is_slow(init(mlp))


def test_a_conv_models_run_is_the_same_stepped_one_by_one_or_in_a_loop(tmp_path, monkeypatch):
  from configs import digits_mlp  # pylint: disable=g-import-not-at-top
  from wtfree import train  # pylint: disable=g-import-not-at-top

  def run(workdir):
    config = digits_mlp.get_config()
    config.model, config.flatten = "lenet", False
    config.model_options = {"features": (4,), "dense": (16,)}
    config.num_steps, config.log_every_steps, config.eval_every_steps = 8, 4, 8
    config.checkpoint_every_steps, config.tensorboard, config.angles = 8, False, False
    return jax.device_get(train.train_and_evaluate(config, str(workdir)))

  monkeypatch.setattr(dispatch, "loop_is_slow", lambda traced: False)
  looped = run(tmp_path / "loop")
  monkeypatch.setattr(dispatch, "loop_is_slow", lambda traced: True)
  stepped = run(tmp_path / "steps")
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), stepped.params, looped.params)
  assert int(stepped.step) == 8
