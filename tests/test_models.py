"""Models: shapes, parameter counts, where the rule and mirror activations go, BN in mirror passes."""

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from wtfree import feedback
from wtfree import models
from wtfree import nn as wnn
from wtfree import settings
from wtfree.models import common

RULES = ("bp", "fa", "usf", "frsf", "brsf", "sc", "kp", "wm", "shallow")

# (name, model options, one example's shape): every model family on the input
# kinds it must take, kept tiny.
CASES = {
    "mlp": ("mlp", dict(widths=(16, 8), activation="tanh"), (8, 8, 1)),
    "mlp_bn": ("mlp", dict(widths=(16,), activation="sigmoid", batch_norm=True), (12,)),
    "lenet_mnist": ("lenet", dict(features=(4, 8), dense=(16, 8)), (28, 28, 1)),
    "lenet_cifar": ("lenet", dict(features=(4, 8), dense=(16,), batch_norm=True), (32, 32, 3)),
    "lenet_digits": ("lenet", dict(features=(4, 8), kernel_size=3, dense=(16,)), (8, 8, 1)),
    "lenet_mnist1d": ("lenet", dict(features=(4, 8), dense=(16,)), (40, 1)),
    "lenet_mnist1d_flat": ("lenet", dict(features=(4,), dense=()), (40,)),
    "resnet_tiny": ("resnet_tiny", {}, (8, 8, 3)),
    "resnet_tiny_relu_bn": ("resnet_tiny", dict(bn_before_relu=False), (8, 8, 3)),
    "resnet_tiny_bottleneck": ("resnet_tiny", dict(block="bottleneck", stem="imagenet", width=0.5), (16, 16, 3)),
}
KEYS = {"params": jax.random.key(0), "feedback": jax.random.key(1)}


def _model(case, rule="bp", **kw):
  name, options, shape = CASES[case]
  model = models.get_model(name, num_classes=5, rule=rule, **{**options, **kw})
  x = jax.random.normal(jax.random.key(2), (3, *shape))
  return model, x


def _init(model, x):
  # Jitted: one compile of the whole init instead of one per op.
  variables = jax.jit(lambda x: model.init(KEYS, x, train=False))(x)
  return {k: v for k, v in variables.items() if k in ("params", "batch_stats", "feedback")}


def _paths(tree, leaf):
  flat = flax.traverse_util.flatten_dict(flax.core.unfreeze(tree))
  return {"/".join(p[:-1]): v.shape for p, v in flat.items() if p[-1] == leaf}


def _loss(model, variables, x):
  logits, _ = model.apply(variables, x, train=True, rngs={"feedback": jax.random.key(3)}, mutable=["batch_stats"])
  return jnp.sum(jax.nn.log_softmax(logits)[:, 0])


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("rule", ("fa", "kp"))
def test_logits_have_shape_batch_by_classes(case, rule):
  model, x = _model(case, rule)
  logits = jax.jit(lambda v, x: model.apply(v, x, train=False))(_init(model, x), x)
  assert logits.shape == (3, 5) and logits.dtype == jnp.float32
  assert np.all(np.isfinite(logits))


@pytest.mark.parametrize("case", CASES)
def test_error_reaches_every_kernel(case):
  model, x = _model(case, "fa")
  variables = _init(model, x)
  grads = jax.jit(jax.grad(lambda p: _loss(model, {**variables, "params": p}, x)))(variables["params"])
  kernels = {p: g for p, g in flax.traverse_util.flatten_dict(grads).items() if p[-1] == "kernel"}
  assert kernels
  for path, g in kernels.items():
    assert np.all(np.isfinite(g)) and np.any(g != 0), f"{case}: no error reaches {path}"


@pytest.mark.parametrize("rule", RULES)
@pytest.mark.parametrize("case", ("mlp_bn", "resnet_tiny"))
def test_every_rule_builds(case, rule):
  model, x = _model(case, rule)
  logits = model.apply(_init(model, x), x, train=False, rngs={"feedback": jax.random.key(3)})
  assert logits.shape == (3, 5) and np.all(np.isfinite(logits))


@pytest.mark.parametrize(
    "name, num_classes, count",
    [
        # torchvision's counts: BN scale and bias are parameters, running
        # statistics are not (they sit in batch_stats here).
        ("resnet18", 1000, 11_689_512),
        ("resnet34", 1000, 21_797_672),
        ("resnet50", 1000, 25_557_032),
    ],
)
def test_imagenet_resnet_parameter_counts(name, num_classes, count):
  model = models.get_model(name, num_classes=num_classes)
  shapes = jax.eval_shape(
      lambda x: model.init(KEYS, x, train=False), jax.ShapeDtypeStruct((1, 224, 224, 3), jnp.float32)
  )
  assert "feedback" not in shapes
  assert sum(v.size for v in jax.tree.leaves(shapes["params"])) == count
  # No conv has a bias (BN follows each): besides BatchNorms only the head has one.
  biases = _paths(shapes["params"], "bias")
  assert {p for p in biases if "bn" not in p.rsplit("/", 1)[-1]} == {"head"}


def test_cifar_resnets_have_three_stages_of_16_32_64():
  for name, blocks in (("resnet20", 3), ("resnet56", 9)):
    model = models.get_model(name, num_classes=10)
    shapes = jax.eval_shape(
        lambda x, m=model: m.init(KEYS, x, train=False), jax.ShapeDtypeStruct((1, 32, 32, 3), jnp.float32)
    )
    kernels = _paths(shapes["params"], "kernel")
    assert kernels["stem/conv"] == (3, 3, 3, 16)
    assert kernels[f"stage3_block{blocks - 1}/conv2"] == (3, 3, 64, 64)
    assert "stage4_block0/conv1" not in kernels
    assert 6 * blocks + 2 == sum(1 for p in kernels if "proj" not in p)


@pytest.mark.parametrize("case", ("mlp_bn", "lenet_cifar", "resnet_tiny_bottleneck"))
def test_fa_keeps_feedback_for_every_kernel_but_a_bp_last_layer(case):
  model, x = _model(case, "fa")
  variables = _init(model, x)
  kernels = _paths(variables["params"], "kernel")
  assert _paths(variables["feedback"], "kernel") == kernels
  assert "head" in kernels
  variables = _init(model.clone(last_layer_bp=True), x)
  assert _paths(variables["feedback"], "kernel") == {k: v for k, v in kernels.items() if k != "head"}


def test_kp_keeps_an_offset_beside_every_kernel():
  model, x = _model("resnet_tiny_bottleneck", "kp", last_layer_bp=True)
  variables = _init(model, x)
  kernels = _paths(variables["params"], "kernel")
  assert any("proj_conv" in k for k in kernels)  # shortcuts transport weights too
  hidden = {k: v for k, v in kernels.items() if k != "head"}
  assert _paths(variables["feedback"], "offset") == hidden
  assert _paths(variables["feedback"], "offset_scale") == {k: () for k in hidden}
  assert not _paths(variables["params"], "offset_scale")  # no optimizer touches kp's state


def test_alignment_losses_keep_b_as_a_parameter_beside_every_kernel():
  model, x = _model("resnet_tiny_bottleneck", "sa")
  variables = _init(model, x)
  assert _paths(variables["params"], "feedback_kernel") == _paths(variables["params"], "kernel")


@pytest.mark.parametrize("case", ("mlp_bn", "lenet_cifar", "resnet_tiny_bottleneck"))
def test_the_bp_clone_computes_the_same_forward_pass(case):
  model, x = _model(case, "fa")
  variables = _init(model, x)
  twin = model.clone(rule="bp")
  plain = {k: v for k, v in variables.items() if k != "feedback"}
  np.testing.assert_array_equal(model.apply(variables, x, train=False), twin.apply(plain, x, train=False))


def _layer_settings(model, x, variables):
  """Each wtfree layer's (rule, mirror activation), by module path."""
  seen = {}

  def record(next_fun, args, kwargs, context):
    if isinstance(context.module, (wnn.Dense, wnn.Conv)) and context.method_name == "__call__":
      module = context.module
      seen["/".join(module.path)] = (module.rule, module.mirror_activation)
    return next_fun(*args, **kwargs)

  with nn.intercept_methods(record):
    model.apply(variables, x, train=False)
  return seen


def test_mirror_activation_is_the_following_nonlinearity_and_identity_at_the_output():
  model, x = _model("mlp_bn", "wm", last_layer_bp=True)
  seen = _layer_settings(model, x, _init(model, x))
  assert seen["head"] == ("bp", common.identity)
  assert seen["Dense_0"] == (model.rule, nn.sigmoid)
  for case in ("resnet_tiny", "resnet_tiny_bottleneck"):
    model, x = _model(case, "wm")
    seen = _layer_settings(model, x, _init(model, x))
    assert seen.pop("head") == ("wm", common.identity)
    assert seen and all(s == ("wm", nn.relu) for s in seen.values()), seen


@pytest.mark.parametrize("train", (False, True))
@pytest.mark.parametrize("case", ("mlp_bn", "lenet_cifar", "resnet_tiny_bottleneck"))
def test_mirror_pass_moves_every_b_and_leaves_batch_stats_alone(case, train):
  model, x = _model(case, "wm")
  variables = _init(model, x)
  # One training step first, so that the running averages are not at init.
  _, stats = model.apply(variables, x, train=True, mutable=["batch_stats"])
  variables = {**variables, **stats}
  out, updated = model.apply(
      variables,
      x,
      train=train,
      between_steps=True,
      rngs={"mirror": jax.random.key(4)},
      mutable=["feedback", "batch_stats"],
  )
  assert out.shape == (3, 5)
  jax.tree.map(np.testing.assert_array_equal, updated["batch_stats"], variables["batch_stats"])
  # As `wtfree.mirror` calls it: BN needs no mutable batch_stats, even with train=True.
  _, only = model.apply(
      variables, x, train=train, between_steps=True, rngs={"mirror": jax.random.key(4)}, mutable=["feedback"]
  )
  assert set(only) == {"feedback"}
  old = flax.traverse_util.flatten_dict(variables["feedback"])
  new = flax.traverse_util.flatten_dict(updated["feedback"])
  assert old.keys() == new.keys() and all(np.any(new[k] != old[k]) for k in old)


def _bn_inputs(model, x, variables):
  seen = {}

  def record(next_fun, args, kwargs, context):
    if isinstance(context.module, nn.BatchNorm) and context.method_name == "__call__":
      seen["/".join(context.module.path)] = args[0]
    return next_fun(*args, **kwargs)

  with nn.intercept_methods(record):
    model.apply(variables, x, train=True, mutable=["batch_stats"])
  return seen


def test_bn_before_relu_switch():
  for before in (True, False):
    model, x = _model("resnet_tiny", bn_before_relu=before)
    seen = _bn_inputs(model, x, _init(model, x))
    # stem/bn and bn1 sit next to a ReLU; bn2 and proj_bn precede the addition.
    for path in ("stem/bn", "stage1_block0/bn1", "stage2_block0/bn1"):
      assert bool(jnp.all(seen[path] >= 0)) == (not before), path
    assert bool(jnp.any(seen["stage2_block0/bn2"] < 0))


def test_zero_init_residual_zeroes_each_blocks_last_bn_scale():
  model, x = _model("resnet_tiny_bottleneck", zero_init_residual=True)
  params = _init(model, x)["params"]
  assert np.all(params["stage1_block0"]["bn3"]["scale"] == 0)
  assert np.all(params["stage1_block0"]["bn1"]["scale"] == 1)
  assert np.all(params["stage2_block0"]["proj_bn"]["scale"] == 1)


def test_mlp_kernel_init_override():
  init = nn.initializers.uniform(0.02)
  model = models.get_model("mlp", num_classes=10, widths=(20,), activation="linear", kernel_init=init)
  params = model.init(KEYS, jnp.zeros((1, 30)), train=False)["params"]
  for layer in ("Dense_0", "head"):
    k = params[layer]["kernel"]
    assert float(jnp.min(k)) >= 0 and float(jnp.max(k)) < 0.02


def test_create_reads_the_config():
  config = ml_collections.ConfigDict(
      dict(
          model="mlp",
          rule="sc",
          rule_options={"p": 0.8},
          last_layer_bp=True,
          model_options={"widths": (7,), "activation": "tanh", "batch_norm": True},
      )
  )
  model = models.create(settings.resolve(config).model, num_classes=4, input_shape=(6,))
  assert model.rule == feedback.get_rule("sc", p=0.8)
  assert (model.widths, model.activation, model.batch_norm, model.last_layer_bp) == ((7,), "tanh", True, True)
  assert model.num_classes == 4
  plain = models.create(settings.resolve(ml_collections.ConfigDict(dict(model="resnet20", rule="fa"))).model, 10)
  assert (plain.rule, plain.last_layer_bp, plain.stage_sizes) == (feedback.get_rule("fa"), False, (3, 3, 3))


def test_create_takes_only_the_options_a_config_sets():
  from configs import default

  config = default.get_config()
  config.rule = "wm"
  assert models.create(settings.resolve(config).model, 3).rule == feedback.get_rule("wm")  # the rule's own defaults
  config.rule_options.decay = 0.3
  assert models.create(settings.resolve(config).model, 3).rule == feedback.get_rule("wm", decay=0.3)
  config.rule = "fa"
  with pytest.raises(ValueError, match=r"rule 'fa' takes options .* not \['decay'\] \(decay belong to kp, wm\)"):
    settings.resolve(config)
  with pytest.raises(ValueError, match="rule 'kpp' is not one of .*did you mean 'kp'"):
    settings.resolve(ml_collections.ConfigDict(dict(model="mlp", rule="kpp")))


def test_bad_names_and_shapes_name_the_way_out():
  with pytest.raises(ValueError, match="'resnet19' is not one of mlp, lenet, resnet18"):
    models.get_model("resnet19", num_classes=10)
  with pytest.raises(ValueError, match=r"takes fields .* not \['widht'\]"):
    models.get_model("mlp", num_classes=10, widht=(3,))
  with pytest.raises(ValueError, match="block 'basik' is not one of basic, bottleneck"):
    _init(*_model("resnet_tiny", block="basik"))
  with pytest.raises(ValueError, match="activation 'swish' is not one of relu, tanh, sigmoid, gelu"):
    _init(*_model("mlp", activation="swish"))
  config = ml_collections.ConfigDict(dict(model="resnet_tiny", rule="fa"))
  with pytest.raises(ValueError, match=r"cannot take inputs of shape \(40, 1\)"):
    models.create(settings.resolve(config).model, 10, input_shape=(40, 1))
