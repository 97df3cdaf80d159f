"""Plain flax models, converted: bp is flax's gradient, other rules send errors through B."""

import flax
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
from wtfree import optim
from wtfree import sharding
from wtfree import steps

RNGS = {"params": jax.random.key(1), "feedback": jax.random.key(2)}


class MLP(nn.Module):
  """A plain flax MLP; ``train`` only so that `wtfree.train` can call it."""

  @nn.compact
  def __call__(self, x, train=False):
    del train
    h = jnp.tanh(nn.Dense(16, name="hidden")(x))
    return nn.Dense(3, name="out")(h)


class Block(nn.Module):
  """A pre-norm transformer block from flax's own modules, then a linear head."""

  d_model: int = 16
  heads: int = 2
  classes: int = 4

  @nn.compact
  def __call__(self, x):
    h = nn.Dense(self.d_model, name="embed")(x)
    h = h + nn.MultiHeadDotProductAttention(self.heads, name="attention")(nn.LayerNorm()(h))
    y = nn.gelu(nn.Dense(2 * self.d_model, name="mlp_in")(nn.LayerNorm()(h)))
    h = h + nn.Dense(self.d_model, name="mlp_out")(y)
    return nn.Dense(self.classes, name="head")(jnp.mean(h, axis=1))


def _assert_trees_close(a, b, **tol):
  assert jax.tree.structure(a) == jax.tree.structure(b)
  jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, **tol), a, b)


def _dtypes(tree):
  return jax.tree.map(lambda a: a.dtype, tree)


def _pairing_grads(model, variables, x, g):
  """Gradients of <model(x), g> w.r.t. params and the input."""

  def pairing(params, x):
    return jnp.sum(model.apply({**variables, "params": params}, x) * g)

  return jax.grad(pairing, argnums=(0, 1))(variables["params"], x)


def test_bp_mlp_has_flax_params_outputs_and_gradients():
  x = jax.random.normal(jax.random.key(0), (8, 5))
  plain, ours = MLP(), convert.convert(MLP(), "bp")
  variables = plain.init(RNGS, x)
  converted = ours.init(RNGS, x)
  _assert_trees_close(converted["params"], variables["params"], rtol=0, atol=0)
  assert "feedback" not in converted
  np.testing.assert_array_equal(ours.apply(variables, x), plain.apply(variables, x))
  g = jax.random.normal(jax.random.key(3), (8, 3))
  _assert_trees_close(_pairing_grads(ours, variables, x, g), _pairing_grads(plain, variables, x, g), rtol=1e-5, atol=1e-6)


def test_fa_sends_the_hidden_error_through_the_stored_feedback():
  x = jax.random.normal(jax.random.key(0), (8, 5))
  model = convert.convert(MLP(), "fa")
  variables = model.init(RNGS, x)
  variables = {k: variables[k] for k in ("params", "feedback")}
  assert jax.tree.map(jnp.shape, variables["feedback"]) == {"hidden": {"kernel": (5, 16)}, "out": {"kernel": (16, 3)}}
  _assert_trees_close(variables["params"], MLP().init(RNGS, x)["params"], rtol=0, atol=0)
  g = jax.random.normal(jax.random.key(3), (8, 3))
  grads, _ = _pairing_grads(model, variables, x, g)
  bp_grads, _ = _pairing_grads(MLP(), variables, x, g)
  p, b_out = variables["params"], variables["feedback"]["out"]["kernel"]
  h = jnp.tanh(x @ p["hidden"]["kernel"] + p["hidden"]["bias"])
  delta = (g @ b_out.T) * (1 - h**2)
  np.testing.assert_allclose(grads["out"]["kernel"], bp_grads["out"]["kernel"], rtol=1e-6)
  np.testing.assert_allclose(grads["hidden"]["kernel"], x.T @ delta, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(grads["hidden"]["bias"], delta.sum(0), rtol=1e-5, atol=1e-6)
  assert float(metrics.angle(grads["hidden"]["kernel"], bp_grads["hidden"]["kernel"])) > 30

  def with_context(params):
    with convert.intercept("fa"):
      return jnp.sum(MLP().apply({**variables, "params": params}, x) * g)

  _assert_trees_close(jax.grad(with_context)(variables["params"]), grads, rtol=1e-6, atol=1e-6)


LAYERS = [
    (nn.Conv(4, (3, 3), strides=2), (2, 9, 9, 2)),
    (nn.Conv(4, 3, padding="VALID", feature_group_count=2, kernel_dilation=2), (2, 9, 9, 2)),
    (nn.Conv(3, (3, 2), padding=((1, 0), (0, 1)), input_dilation=(2, 1), use_bias=False), (2, 7, 7, 2)),
    (nn.Conv(3, (3,), padding=1), (2, 3, 8, 2)),
    (nn.DenseGeneral((2, 3), axis=(1, -1)), (4, 3, 5, 6)),
    (nn.DenseGeneral(5, axis=-2), (4, 3, 6)),
]


@pytest.mark.parametrize("layer, shape", LAYERS, ids=[f"{type(l).__name__}{i}" for i, (l, _) in enumerate(LAYERS)])
def test_conv_and_dense_general_follow_bp_and_fa(layer, shape):
  fa = convert.convert(layer, "fa")

  @jax.jit
  def grads(x):
    variables = layer.init(RNGS, x)
    g = jax.random.normal(jax.random.key(3), layer.apply(variables, x).shape)
    b = fa.init(RNGS, x)["feedback"]["kernel"]
    return (
        _pairing_grads(layer, variables, x, g),
        _pairing_grads(convert.convert(layer, "bp"), variables, x, g),
        _pairing_grads(fa, {**variables, "feedback": {"kernel": b}}, x, g),
        _pairing_grads(layer, {"params": {**variables["params"], "kernel": b}}, x, g)[1],
    )

  x = jax.random.normal(jax.random.key(0), shape)
  (dparams, dx), (bp_dparams, bp_dx), (fa_dparams, fa_dx), through_b = grads(x)
  _assert_trees_close(bp_dparams, dparams, rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(bp_dx, dx, rtol=1e-6, atol=1e-6)
  _assert_trees_close(fa_dparams, dparams, rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(fa_dx, through_b, rtol=1e-5, atol=1e-5)
  assert float(metrics.angle(fa_dx, dx)) > 30


@pytest.mark.parametrize(
    "layer, shape",
    [
        (nn.Dense(4, dtype=jnp.bfloat16), (3, 5)),
        (nn.Conv(3, (3, 3), param_dtype=jnp.bfloat16), (2, 6, 6, 2)),
        (nn.DenseGeneral((2, 2), axis=(-2, -1), dtype=jnp.float32, param_dtype=jnp.bfloat16), (3, 4, 5)),
    ],
    ids=["Dense-dtype", "Conv-param_dtype", "DenseGeneral-both"],
)
def test_bp_keeps_flax_dtypes(layer, shape):
  x = jax.random.normal(jax.random.key(0), shape)
  converted = convert.convert(layer, "bp")
  variables = layer.init(RNGS, x)
  assert _dtypes(converted.init(RNGS, x)["params"]) == _dtypes(variables["params"])
  y, ours = layer.apply(variables, x), converted.apply(variables, x)
  assert ours.dtype == y.dtype
  np.testing.assert_array_equal(np.asarray(ours, np.float32), np.asarray(y, np.float32))
  g = jnp.ones(y.shape, y.dtype)
  _assert_trees_close(_pairing_grads(converted, variables, x, g), _pairing_grads(layer, variables, x, g), rtol=1e-6)


def _train(model, variables, x, labels, steps, tx, learner=None, weight_decay_rate=None):
  """The user's loop of `wtfree.learning`: gradient, optax update, then the learner's passes."""

  def loss_fn(params, rest):
    return jnp.mean(metrics.cross_entropy(model.apply({**rest, "params": params}, x), labels))

  @jax.jit
  def run(variables, opt_state):
    def step(carry, i):
      variables, opt_state = carry
      params, rest = variables["params"], {k: v for k, v in variables.items() if k != "params"}
      loss, grads = jax.value_and_grad(loss_fn)(params, rest)
      updates, opt_state = tx.update(grads, opt_state, params)
      variables = {**rest, "params": optax.apply_updates(params, updates)}
      if learner is not None:
        variables = learner.between_steps(variables, jax.random.fold_in(jax.random.key(7), i),
                                   weight_decay_rate=weight_decay_rate)
      return (variables, opt_state), loss

    return jax.lax.scan(step, (variables, opt_state), jnp.arange(steps))

  (variables, _), losses = run(variables, tx.init(variables["params"]))
  _, collected = model.apply(variables, x, mutable=["alignment"])
  return losses, metrics.weight_angles(collected["alignment"])


def _token_task():
  x = jax.random.normal(jax.random.key(0), (64, 8, 4))
  # The class is the feature with the largest sum over the sequence.
  return x, jnp.argmax(jnp.sum(x, axis=1), axis=-1)


@pytest.mark.slow
def test_kp_aligns_every_layer_of_a_flax_transformer_block():
  x, labels = _token_task()
  model = convert.convert(Block(), "kp")
  learner = learning.Learner(model, x)
  variables = learner.init(RNGS)
  plain = Block().init(RNGS, x)
  assert set(variables) == set(plain) | {"feedback"}  # no alignment or perturbation copies
  _assert_trees_close(variables["params"], plain["params"], rtol=0, atol=0)
  offset_scales = flax.traverse_util.flatten_dict(variables["feedback"])
  assert len([p for p in offset_scales if p[-1] == "offset_scale"]) == 8
  _, collected = model.apply(variables, x, mutable=["alignment"])
  assert all(float(a) > 80 for a in metrics.weight_angles(collected["alignment"]).values())
  tx = optax.chain(optax.add_decayed_weights(0.05, mask=optim.decay_mask), optax.sgd(0.05, momentum=0.9))
  losses, angles = _train(model, variables, x, labels, 200, tx, learner, weight_decay_rate=0.05 * 0.05 / (1 - 0.9))
  assert float(losses[-1]) < 0.5 * float(losses[0]), losses
  assert len(angles) == 8
  assert all(float(a) < 5.0 for a in angles.values()), angles


def test_fa_trains_a_flax_transformer_block():
  x, labels = _token_task()
  model = convert.convert(Block(), "fa")
  variables = model.init(RNGS, x)
  losses, angles = _train(model, variables, x, labels, 30, optax.sgd(0.05, momentum=0.9))
  assert float(losses[-1]) < 0.7 * float(losses[0]), losses
  assert all(float(a) > 45 for a in angles.values()), angles


@pytest.mark.parametrize(
    "layer, shape, option",
    [
        (nn.Conv(2, (3, 3), padding="CIRCULAR"), (1, 5, 5, 1), "padding='CIRCULAR'"),
        (nn.Conv(2, (3,), padding="CAUSAL"), (1, 5, 1), "padding='CAUSAL'"),
        (nn.Conv(2, (3, 3), mask=jnp.ones((3, 3, 1, 2))), (1, 5, 5, 1), "mask"),
        (nn.Conv(2, (3, 3)), (5, 5, 1), "unbatched"),
        (nn.Dense(2, dot_general=jax.lax.dot_general), (1, 3), "dot_general"),
        (nn.DenseGeneral(2, batch_dims=(0,)), (1, 3), "batch_dims"),
    ],
    ids=["circular", "causal", "mask", "unbatched", "dot_general", "batch_dims"],
)
def test_unsupported_options_are_named(layer, shape, option):
  with pytest.raises(ValueError, match=option.replace("(", r"\(")):
    convert.convert(layer, "fa").init(RNGS, jnp.ones(shape))


def test_weight_mirror_brings_a_dense_general_feedback_to_w():
  class Attend(nn.Module):
    @nn.compact
    def __call__(self, x, train=False):
      return nn.DenseGeneral((2, 3), axis=(1, -1))(x)

  rule = feedback.get_rule("wm", decay=0.05)
  model = convert.convert(Attend(), rule)
  learner = learning.Learner(model, jnp.zeros((1, 3, 5, 6)), mirror_batch_size=256, passes=10)
  variables = learner.init(RNGS)
  run = jax.jit(learner.between_steps)
  for i in range(20):
    variables = run(variables, jax.random.key(i))
  w = variables["params"]["DenseGeneral_0"]["kernel"]
  b = variables["feedback"]["DenseGeneral_0"]["kernel"]
  # A linear layer: B settles at W.
  assert float(metrics.angle(b, w)) < 5.0
  np.testing.assert_allclose(jnp.linalg.norm(b) / jnp.linalg.norm(w), 1.0, atol=0.05)


def test_a_submodule_held_as_a_field_gets_the_plain_params():
  class Holder(nn.Module):
    layer: nn.Module

    @nn.compact
    def __call__(self, x):
      return self.layer(x)

  x = jnp.ones((1, 4))
  plain = Holder(nn.Dense(3)).init(RNGS, x)["params"]
  _assert_trees_close(convert.convert(Holder(nn.Dense(3)), "fa").init(RNGS, x)["params"], plain, rtol=0, atol=0)


def test_an_inner_conversion_keeps_its_own_rule():
  class Outer(nn.Module):
    @nn.compact
    def __call__(self, x):
      return nn.Dense(2, name="fa_layer")(convert.convert(nn.Dense(3, name="bp_layer"), "bp")(x))

  variables = convert.convert(Outer(), "fa").init(RNGS, jnp.ones((1, 4)))
  assert set(variables["params"]) == {"fa_layer", "bp_layer"}
  assert set(variables["feedback"]) == {"fa_layer"}


@pytest.mark.parametrize("rule", ["fa", "wm", "dfa"])
def test_train_step_and_alignment_step_run_a_converted_model(rule):
  model = convert.convert(MLP(), rule, mirror_activation=jnp.tanh)
  tx = optax.sgd(0.1)
  mesh = sharding.make_mesh(jax.devices()[:1])
  learner = steps.make_learner(model, (5,), mirror_batch_size=32)
  state = steps.create_train_state(model, tx, (5,), 0, mesh, learner)
  assert jax.tree.structure(state.params) == jax.tree.structure(MLP().init(RNGS, jnp.ones((1, 5)))["params"])
  batch = {"image": jax.random.normal(jax.random.key(0), (16, 5)), "label": jnp.arange(16) % 3}
  new_state, step_metrics = jax.jit(
      lambda s, b: steps.train_step(s, b, model=model, tx=tx, task="classification", learner=learner)
  )(state, batch)
  assert bool(step_metrics["finite"])
  for layer in ("hidden", "out"):
    assert not np.allclose(new_state.params[layer]["kernel"], state.params[layer]["kernel"])
  before, after = jax.tree.leaves(state.feedback), jax.tree.leaves(new_state.feedback)
  changed = [not np.array_equal(a, b) for a, b in zip(before, after)]
  assert len(changed) == 2
  assert all(changed) if rule == "wm" else not any(changed)
  angles = jax.jit(lambda s, b: steps.alignment_step(s, b, model=model, task="classification"))(new_state, batch)
  assert float(angles["angle/delta/out"]) < 1e-3
  assert 10 < float(angles["angle/delta/hidden"]) < 170
  if rule != "dfa":
    assert 10 < float(angles["angle/weight/hidden"]) < 170
