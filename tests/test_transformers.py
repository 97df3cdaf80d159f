"""The attention models: backprop equals flax's own layers, and every rule learns on them."""

import math

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import lm_pydoc
from configs import vit_digits
from wtfree import feedback
from wtfree import models
from wtfree import steps
from wtfree.data import text
from wtfree.experiments import common

TOL = dict(rtol=2e-5, atol=2e-6)
SIZES = dict(width=16, num_layers=2, num_heads=2, mlp_dim=32)


class _FlaxBlock(nn.Module):
  """The same pre-norm block from flax's own layers (its attention module included)."""

  num_heads: int
  mlp_dim: int
  causal: bool

  @nn.compact
  def __call__(self, x):
    y = nn.LayerNorm(name="ln_attention")(x)
    mask = nn.make_causal_mask(jnp.ones(x.shape[:2])) if self.causal else None
    x = x + nn.MultiHeadDotProductAttention(self.num_heads, name="attention")(y, y, mask=mask, deterministic=True)
    y = nn.gelu(nn.Dense(self.mlp_dim, name="mlp_in")(nn.LayerNorm(name="ln_mlp")(x)))
    return x + nn.Dense(x.shape[-1], name="mlp_out")(y)


class _FlaxViT(nn.Module):
  patch: int

  @nn.compact
  def __call__(self, x):
    p = self.patch
    x = nn.Conv(SIZES["width"], (p, p), strides=p, padding="VALID", name="patch_embed")(x)
    x = x.reshape(x.shape[0], -1, x.shape[-1])
    x = x + self.param("position_embedding", nn.initializers.normal(0.02), (1, *x.shape[1:]))
    for i in range(SIZES["num_layers"]):
      x = _FlaxBlock(SIZES["num_heads"], SIZES["mlp_dim"], False, name=f"block{i}")(x)
    return nn.Dense(10, name="head")(jnp.mean(nn.LayerNorm(name="ln_final")(x), axis=1))


class _FlaxLM(nn.Module):
  vocab: int
  max_length: int

  @nn.compact
  def __call__(self, tokens):
    x = nn.Embed(self.vocab, SIZES["width"], name="token_embedding")(tokens)
    position = self.param("position_embedding", nn.initializers.normal(0.02), (1, self.max_length, SIZES["width"]))
    x = x + position[:, : tokens.shape[1]]
    for i in range(SIZES["num_layers"]):
      x = _FlaxBlock(SIZES["num_heads"], SIZES["mlp_dim"], True, name=f"block{i}")(x)
    return nn.Dense(self.vocab, name="head")(nn.LayerNorm(name="ln_final")(x))


def _to_flax(params, patch_shape=None):
  """wtfree's [in, out] kernels in the shapes of flax's attention (and patch conv) parameters."""
  heads, head = SIZES["num_heads"], SIZES["width"] // SIZES["num_heads"]
  flat = flax.traverse_util.flatten_dict(params)
  out = {}
  for path, value in flat.items():
    if "attention" in path and path[-2] in ("query", "key", "value"):
      value = value.reshape(value.shape[0], heads, head) if path[-1] == "kernel" else value.reshape(heads, head)
    elif "attention" in path and path[-2] == "out" and path[-1] == "kernel":
      value = value.reshape(heads, head, value.shape[-1])
    elif path[0] == "patch_embed" and path[-1] == "kernel":
      value = value.reshape(*patch_shape, value.shape[-1])
    out[path] = value
  return flax.traverse_util.unflatten_dict(out)


def _compare(model, reference, x, labels, task, patch_shape=None):
  variables = jax.jit(lambda x: model.init({"params": jax.random.key(0)}, x, train=False))(x)
  params = variables["params"]
  ref_params = _to_flax(params, patch_shape)
  assert jax.tree.structure(ref_params) == jax.tree.structure(
      jax.eval_shape(lambda: reference.init(jax.random.key(1), x))["params"])

  def loss(p):
    return jnp.mean(steps._loss(task, model.apply({"params": p}, x, train=True), labels))

  def ref_loss(p):
    return jnp.mean(steps._loss(task, reference.apply({"params": p}, x), labels))

  (value, grads), (ref_value, ref_grads) = jax.jit(lambda p, q: (
      jax.value_and_grad(loss)(p), jax.value_and_grad(ref_loss)(q)))(params, ref_params)
  np.testing.assert_allclose(value, ref_value, **TOL)
  outputs = jax.jit(lambda p, q: (model.apply({"params": p}, x, train=False), reference.apply({"params": q}, x)))
  np.testing.assert_allclose(*outputs(params, ref_params), **TOL)
  flat_grads = flax.traverse_util.flatten_dict(grads)
  flat_expected = flax.traverse_util.flatten_dict(ref_grads)
  assert flat_grads.keys() == flat_expected.keys()
  for path, g in flat_grads.items():
    np.testing.assert_allclose(g, flat_expected[path].reshape(g.shape), **TOL, err_msg="/".join(path))


def test_vit_under_bp_has_the_outputs_and_gradients_of_flax_layers():
  x = jax.random.normal(jax.random.key(2), (4, 8, 8, 1))
  model = models.get_model("vit", num_classes=10, patch=2, **SIZES)
  _compare(model, _FlaxViT(patch=2), x, jnp.arange(4) % 10, "classification", patch_shape=(2, 2, 1))


def test_causal_lm_under_bp_has_the_outputs_and_gradients_of_flax_layers():
  tokens = jax.random.randint(jax.random.key(3), (3, 12), 0, 20)
  model = models.get_model("causal_lm", num_classes=20, max_length=16, **SIZES)
  _compare(model, _FlaxLM(vocab=20, max_length=16), tokens[:, :-1], tokens[:, 1:], "language_model")


def test_causal_lm_outputs_do_not_see_later_tokens():
  tokens = jax.random.randint(jax.random.key(4), (2, 10), 0, 20)
  model = models.get_model("causal_lm", num_classes=20, max_length=16, rule="fa", **SIZES)
  variables = jax.jit(lambda t: model.init({"params": jax.random.key(0)}, t, train=False))(tokens)
  changed = tokens.at[:, 6:].set((tokens[:, 6:] + 1) % 20)
  apply = jax.jit(lambda t: model.apply(variables, t, train=False))
  before, after = apply(tokens), apply(changed)
  np.testing.assert_allclose(before[:, :6], after[:, :6], **TOL)
  assert not np.allclose(before[:, 6:], after[:, 6:])


def _quick_vit(rule: str):
  config = vit_digits.get_config()
  config.rule = rule
  config.model_options.num_layers = 1
  config.learning_rate = 3e-3
  config.num_steps = 300
  config.log_every_steps = config.eval_every_steps = config.checkpoint_every_steps = 300
  config.tensorboard = False
  return config


# Node perturbation estimates every gradient from one noisy loss difference per
# example; on the LM it needs five times the steps of the others to pass the unigram floor.
LM_STEPS = {"np": 2000}


def _quick_lm(rule: str):
  config = lm_pydoc.get_config()
  config.rule = rule
  config.context_length = 32
  config.model_options.max_length = 32
  config.model_options.num_layers = 1
  config.model_options.width = 32
  config.model_options.mlp_dim = 64
  config.learning_rate = 3e-3
  config.eval_batch_size = 1456
  config.num_steps = LM_STEPS.get(rule, 400)
  config.log_every_steps = config.eval_every_steps = config.checkpoint_every_steps = config.num_steps
  config.tensorboard = False
  return config


# Rules that do not train these models within the tests' few steps (docs/results.md, section 7, has the
# full runs): pepita's single modulated pass on a ViT, fg's one-direction estimate on the LM.
SLOWER = {"vit": {"pepita"}, "lm": {"fg"}}


@pytest.mark.slow
@pytest.mark.parametrize("rule", sorted(set(feedback.names()) - SLOWER["vit"]))
def test_every_rule_trains_the_vit_above_chance(rule):
  run = common.train(_quick_vit(rule))
  # Chance is 1/10; four standard errors above it on the 360 test digits.
  above_chance = 0.1 + 4 * math.sqrt(0.1 * 0.9 / 360)
  assert float(run.final("eval", "eval/top1")[0]) > above_chance


@pytest.mark.slow
@pytest.mark.parametrize("rule", sorted(set(feedback.names()) - SLOWER["lm"] - {"pepita"}))
def test_every_rule_trains_the_lm_below_the_unigram_entropy(rule):
  run = common.train(_quick_lm(rule))
  bits = float(run.final("eval", "eval/bits_per_token")[0])
  assert bits < text.unigram_bits(*text.pydoc_tokens()), bits
  assert math.isclose(bits, float(run.final("eval", "eval/loss")[0]) / math.log(2), rel_tol=1e-6)


@pytest.mark.slow
def test_vit_config_under_kp_logs_angles_for_every_attention_projection(tmp_path):
  from configs import vit_mnist5k  # pylint: disable=g-import-not-at-top

  config = vit_mnist5k.get_config()
  config.rule = "kp"
  config.num_steps = 125
  config.log_every_steps = config.eval_every_steps = config.checkpoint_every_steps = 125
  config.tensorboard = False
  run = common.train(config)
  last = run.records["train"][-1]
  # kp's B starts random (about 90 degrees from W) and comes to W as B - W decays.
  for block in range(config.model_options.num_layers):
    for projection in ("query", "key", "value", "out"):
      assert last[f"angle/weight/block{block}/attention/{projection}"] < 45, (block, projection)
      assert last[f"angle/delta/block{block}/attention/{projection}"] < 60, (block, projection)
  assert run.final("eval", "eval/top1")[0] > 0.3


def test_pepita_refuses_a_model_whose_input_is_token_ids():
  with pytest.raises(ValueError, match="rule 'pepita' adds F e to the model's input, which here is int32"):
    common.train(_quick_lm("pepita"))
