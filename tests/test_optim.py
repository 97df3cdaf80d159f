"""The optimizer chain: Batch Manhattan, masked weight decay, order, schedules."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from wtfree import models
from wtfree import optim
from wtfree import settings


def _config(**kw):
  base = dict(
      optimizer="sgd",
      momentum=0.0,
      nesterov=False,
      weight_decay=0.0,
      batch_manhattan=False,
      learning_rate=0.1,
      batch_size=256,
      scale_lr_by_batch=False,
      schedule="constant",
      warmup_epochs=0,
  )
  return ml_collections.ConfigDict({**base, **kw})


def _opt(*args, **kw):
  return settings.resolve(_config(*args, **kw)).optimizer


def _sa_mlp():
  """Params and gradients of an sa MLP with BN: kernels, sa's B (``feedback_kernel``), biases, BN."""
  model = models.get_model("mlp", num_classes=3, widths=(8,), rule="sa", batch_norm=True)
  x = jax.random.normal(jax.random.key(0), (16, 5))
  y = jnp.arange(16) % 3
  variables = model.init(jax.random.key(1), x, train=False)
  params = variables["params"]

  def loss(p):
    logits, _ = model.apply({**variables, "params": p}, x, train=True, mutable=["batch_stats"])
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

  return params, jax.grad(loss)(params)


def _leaves(tree):
  return {jax.tree_util.keystr(p): v for p, v in jax.tree_util.tree_leaves_with_path(tree)}


def test_batch_manhattan_moves_every_weight_by_exactly_lr():
  params, grads = _sa_mlp()
  leaves = _leaves(grads)
  assert any("feedback_kernel" in k for k in leaves) and any("['scale']" in k for k in leaves)
  trained = dict(leaves)
  assert all(np.all(g != 0) for g in trained.values())
  tx = optim.make(_opt(batch_manhattan=True), steps_per_epoch=10)
  updates, _ = tx.update(grads, tx.init(params), params)
  for name, u in _leaves(updates).items():
    np.testing.assert_array_equal(u, -0.1 * np.sign(leaves[name]), err_msg=name)
  moved = jax.tree.map(lambda new, old: jnp.abs(new - old), optax.apply_updates(params, updates), params)
  for name, m in _leaves(moved).items():
    np.testing.assert_allclose(m, 0.1 if name in trained else 0.0, rtol=1e-5, err_msg=name)


def test_order_is_decay_then_sign_then_momentum_then_lr():
  params, grads = _sa_mlp()
  small = jax.tree.map(lambda g: 1e-6 * jnp.sign(g), grads)
  tx = optim.make(_opt(batch_manhattan=True, momentum=0.9, weight_decay=10.0), steps_per_epoch=10)
  state = tx.init(params)
  first, state = tx.update(small, state, params)
  second, _ = tx.update(small, state, params)
  for name, p in _leaves(params).items():
    decayed = name.endswith("['kernel']")
    # Decay before the sign: where it applies, the sign is W's, not g's.
    direction = np.sign(p) if decayed else np.sign(_leaves(small)[name])
    np.testing.assert_allclose(_leaves(first)[name], -0.1 * direction, rtol=1e-6, err_msg=name)
    # Momentum after the sign: the second step is lr * (1 + 0.9), not lr.
    np.testing.assert_allclose(_leaves(second)[name], -0.1 * 1.9 * direction, rtol=1e-6, err_msg=name)


@pytest.mark.parametrize("decay_on", ["kernels", "all"])
def test_weight_decay_reaches_kernels_or_all(decay_on):
  params, grads = _sa_mlp()
  zeros = jax.tree.map(jnp.zeros_like, grads)
  tx = optim.make(_opt(weight_decay=0.5, learning_rate=1.0, weight_decay_on=decay_on), steps_per_epoch=10)
  updates, _ = tx.update(zeros, tx.init(params), params)
  decayed = set()
  for name, u in _leaves(updates).items():
    p = _leaves(params)[name]
    if np.any(u != 0):
      decayed.add(name)
      np.testing.assert_allclose(u, -0.5 * p, rtol=1e-6, err_msg=name)
  if decay_on == "kernels":
    # W only: not biases, BatchNorm, or sa's B (its loss has its own decay term).
    assert decayed == {"['Dense_0']['kernel']", "['head']['kernel']"}
  else:
    assert decayed == {name for name, p in _leaves(params).items() if np.any(p != 0)}
  assert any("BatchNorm_0" in k for k in _leaves(params)) and "['head']['bias']" in _leaves(params)
  with pytest.raises(ValueError, match="weight_decay_on 'some' is not one of kernels, all"):
    optim.make(_opt(weight_decay=0.5, weight_decay_on="some"), steps_per_epoch=10)


@pytest.mark.parametrize(
    "options, per_lr",
    [
        (dict(momentum=0.9, nesterov=True), 0.2 / (1 - 0.9)),
        (dict(batch_manhattan=True), 0.2),
        (dict(optimizer="adam"), 0.2),
    ],
)
def test_weight_decay_rate_is_lr_times_decay_over_one_minus_momentum(options, per_lr):
  config = _opt(weight_decay=0.2, schedule="step", warmup_epochs=1, **options)
  lr = optim.schedule(config, steps_per_epoch=2)
  rate = optim.weight_decay_rate(config, steps_per_epoch=2)
  for step in range(4):
    np.testing.assert_allclose(float(rate(step)), float(lr(step)) * per_lr, rtol=1e-6)
  assert optim.weight_decay_rate(_opt(), steps_per_epoch=2) is None


def _assert_same_updates(ours, reference, params, grads, steps=3):
  s1, s2 = ours.init(params), reference.init(params)
  for i in range(steps):
    g = jax.tree.map(lambda x: x * (i + 1.0), grads)
    u1, s1 = ours.update(g, s1, params)
    u2, s2 = reference.update(g, s2, params)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-9), u1, u2)


def test_sgd_matches_optax_sgd_with_masked_decay():
  params, grads = _sa_mlp()
  config = _opt(momentum=0.9, nesterov=True, weight_decay=1e-4)
  ours = optim.make(config, steps_per_epoch=10)
  reference = optax.chain(
      optax.add_decayed_weights(1e-4, mask=optim.decay_mask),
      optax.sgd(0.1, momentum=0.9, nesterov=True),
  )
  _assert_same_updates(ours, reference, params, grads)


def test_the_chain_is_built_from_optax_style_arguments_without_a_config():
  params, grads = _sa_mlp()
  ours = optim.chain(0.1, momentum=0.9, nesterov=True, weight_decay=1e-4)
  reference = optax.chain(optax.add_decayed_weights(1e-4, mask=optim.decay_mask),
                          optax.sgd(0.1, momentum=0.9, nesterov=True))
  _assert_same_updates(ours, reference, params, grads)
  # The config's chain is this one with the config's values.
  from_config = optim.make(_opt(momentum=0.9, nesterov=True, weight_decay=1e-4), steps_per_epoch=10)
  u3, _ = from_config.update(grads, from_config.init(params), params)
  u4, _ = ours.update(grads, ours.init(params), params)
  jax.tree.map(np.testing.assert_array_equal, u3, u4)
  with pytest.raises(ValueError, match="optimizer 'lamb' is not one of sgd, adam"):
    optim.chain(0.1, optimizer="lamb")


def test_adam_first_step_has_size_lr():
  params, grads = _sa_mlp()
  tx = optim.make(_opt(optimizer="adam", learning_rate=1e-3), steps_per_epoch=10)
  updates, _ = tx.update(grads, tx.init(params), params)
  for name, u in _leaves(updates).items():
    np.testing.assert_allclose(np.abs(u), 1e-3, rtol=1e-3, err_msg=name)


def test_step_schedule_akrout():
  # Akrout et al.: 0.1 per 256, global batch 2048, warm-up 6 epochs, /10 after 32, 62, 82.
  config = _opt(
      learning_rate=0.1,
      batch_size=2048,
      scale_lr_by_batch=True,
      schedule="step",
      warmup_epochs=6,
      decay_epochs=(32, 62, 82),
  )
  lr = optim.schedule(config, steps_per_epoch=10)
  expected = {0: 0.0, 15: 0.2, 30: 0.4, 59: 0.8 * 59 / 60, 60: 0.8, 319: 0.8, 320: 0.08, 619: 0.08, 620: 0.008, 820: 0.0008, 2000: 0.0008}
  for step, value in expected.items():
    np.testing.assert_allclose(float(lr(step)), value, rtol=1e-6, err_msg=f"step {step}")


def test_step_schedule_after_mirror_epochs():
  # Weight mirror: 2 mirror-only epochs at lr 0, warm-up over epochs 3-8.
  config = _opt(schedule="step", warmup_epochs=6, mirror_epochs=2, decay_epochs=(32,))
  lr = optim.schedule(config, steps_per_epoch=10)
  expected = {0: 0.0, 19: 0.0, 20: 0.0, 50: 0.05, 80: 0.1, 319: 0.1, 320: 0.01}
  for step, value in expected.items():
    np.testing.assert_allclose(float(lr(step)), value, rtol=1e-6, atol=1e-12, err_msg=f"step {step}")


def test_cosine_and_constant_schedules():
  lr = optim.schedule(_opt(schedule="cosine", warmup_epochs=2, num_epochs=10), steps_per_epoch=5)
  for step, value in {0: 0.0, 5: 0.05, 10: 0.1, 30: 0.05, 50: 0.0, 70: 0.0}.items():
    np.testing.assert_allclose(float(lr(step)), value, rtol=1e-6, atol=1e-9, err_msg=f"step {step}")
  lr = optim.schedule(_opt(batch_size=64, scale_lr_by_batch=True), steps_per_epoch=5)
  np.testing.assert_allclose([float(lr(s)) for s in (0, 1000)], 0.025, rtol=1e-6)


def test_make_follows_the_schedule():
  tx = optim.make(_opt(schedule="step", warmup_epochs=1), steps_per_epoch=2)
  params = {"kernel": jnp.ones(3)}
  state = tx.init(params)
  sizes = []
  for _ in range(4):
    updates, state = tx.update({"kernel": jnp.ones(3)}, state, params)
    sizes.append(float(-updates["kernel"][0]))
  np.testing.assert_allclose(sizes, [0.0, 0.05, 0.1, 0.1], rtol=1e-6)


def test_optimizer_updates_start_after_the_mirror_only_steps():
  # The train loop skips the optimizer in mirror-only steps: its first update is global step 4.
  tx = optim.make(_opt(schedule="step", warmup_epochs=1, mirror_epochs=2), steps_per_epoch=2)
  params = {"kernel": jnp.ones(3)}
  state = tx.init(params)
  sizes = []
  for _ in range(4):
    updates, state = tx.update({"kernel": jnp.ones(3)}, state, params)
    sizes.append(float(-updates["kernel"][0]))
  np.testing.assert_allclose(sizes, [0.0, 0.05, 0.1, 0.1], rtol=1e-6)


def test_unknown_names_list_the_known_ones():
  with pytest.raises(ValueError, match="optimizer 'lamb' is not one of sgd, adam"):
    optim.make(_opt(optimizer="lamb"), steps_per_epoch=1)
  with pytest.raises(ValueError, match="schedule 'linear' is not one of constant, step, cosine"):
    optim.schedule(_opt(schedule="linear"), steps_per_epoch=1)
  with pytest.raises(ValueError, match="raise num_epochs"):
    optim.schedule(_opt(schedule="cosine", warmup_epochs=5, num_epochs=5), steps_per_epoch=1)


def test_bias_learning_rate_scale_changes_bias_updates_by_exactly_that_factor():
  params, grads = _sa_mlp()
  plain = optim.make(_opt(), steps_per_epoch=10)
  scaled = optim.make(_opt(bias_learning_rate_scale=1.0 / 128), steps_per_epoch=10)
  u_plain = _leaves(plain.update(grads, plain.init(params), params)[0])
  u_scaled = _leaves(scaled.update(grads, scaled.init(params), params)[0])
  biases = [k for k in u_plain if k.endswith("['bias']")]
  assert biases and any("kernel" in k for k in u_plain)
  for k, v in u_plain.items():
    expected = v / 128 if k in biases else v
    np.testing.assert_array_equal(u_scaled[k], expected, err_msg=k)
  with pytest.raises(ValueError, match="bias_learning_rate_scale -1.0 is negative"):
    optim.make(_opt(bias_learning_rate_scale=-1.0), steps_per_epoch=10)
