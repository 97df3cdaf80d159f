"""The CPU's convolution lowerings compute XLA's convolution, for every rule."""

import functools

import flax.linen as nn
import jax
from jax import lax
import jax.numpy as jnp
import numpy as np
import pytest

from wtfree import backend
from wtfree import feedback
from wtfree import nn as wnn
from wtfree import optim
from wtfree import sharding
from wtfree import steps
from wtfree.backend import conv_lowering

# (image, channels in, out, window, strides, padding, feature groups,
#  the CPU plan's (output, input grad, kernel grad) lowerings as x/m).
CASES = [
    (9, 3, 4, 3, 1, "SAME", 1, "xxx"),
    (9, 3, 4, 3, 2, "SAME", 1, "xmx"),  # strided: the input gradient takes the matmul
    (9, 3, 4, 3, 1, "VALID", 1, "xxx"),
    (10, 3, 4, 3, 2, "VALID", 1, "xmx"),
    (9, 3, 4, 3, 2, ((2, 0), (1, 1)), 1, "xmx"),
    (8, 3, 4, 1, 1, "SAME", 1, "xxm"),  # 1x1: the kernel gradient is a plain matmul
    (8, 3, 4, 1, 2, "VALID", 1, "xmm"),
    (11, 3, 4, 7, 2, ((3, 3), (3, 3)), 1, "xmx"),
    (12, 2, 3, 7, 1, "SAME", 1, "xxx"),
    (2, 5, 4, 3, 1, "SAME", 1, "mmx"),  # window wider than the image
    (2, 5, 4, 3, 2, "SAME", 1, "mmm"),  # ...and a one-pixel output
    (1, 5, 4, 3, 1, "SAME", 1, "mmm"),  # only the centre tap reads the image
    (3, 5, 4, 3, 1, "VALID", 1, "xxm"),  # one pixel, every tap
    (1, 5, 4, 1, 1, "VALID", 1, "xxm"),
    (9, 4, 6, 3, 2, "SAME", 2, None),  # feature groups keep XLA's convolution
]


def _reference(x, w, strides, padding, groups):
  return lax.conv_general_dilated(
      x, w, (strides, strides), padding, dimension_numbers=("NHWC", "HWIO", "NHWC"),
      feature_group_count=groups, precision="highest",
  )


def _plan_letters(image, window, strides, padding):
  pads = lax.padtype_to_pads((image, image), (window, window), (strides, strides), padding) if isinstance(
      padding, str) else padding
  geometry = conv_lowering.Geometry((strides, strides), tuple(map(tuple, pads)), None, (image, image),
                                    (window, window))
  plan = conv_lowering.cpu_plan(geometry)
  return "".join(d[0] for d in (plan.output, plan.input_grad, plan.kernel_grad))


@pytest.mark.parametrize("image, cin, cout, window, strides, padding, groups, plan", CASES)
def test_outputs_and_both_gradients_equal_xlas_convolution(image, cin, cout, window, strides, padding, groups,
                                                            plan):
  if plan is not None:
    assert _plan_letters(image, window, strides, padding) == plan
  rng = np.random.default_rng(0)
  x = rng.normal(size=(6, image, image, cin)).astype(np.float32)
  w = rng.normal(size=(window, window, cin // groups, cout)).astype(np.float32)
  ours = functools.partial(feedback.conv_op, strides=strides, padding=padding, feature_group_count=groups,
                           precision="highest")
  reference = functools.partial(_reference, strides=strides, padding=padding, groups=groups)
  g = rng.normal(size=jax.eval_shape(reference, x, w).shape).astype(np.float32)

  @jax.jit
  def both(x, w, g):
    def outputs_and_grads(conv):
      y, vjp = jax.vjp(conv, x, w)
      return (y, *vjp(g))
    return outputs_and_grads(ours), outputs_and_grads(reference)

  got, want = both(x, w, g)
  for name, a, b in zip(("output", "input gradient", "kernel gradient"), got, want):
    scale = float(jnp.max(jnp.abs(b)))
    np.testing.assert_allclose(a, b, atol=2e-5 * scale, rtol=0, err_msg=name)


class _ConvNet(nn.Module):
  """A strided 3x3 (the matmul's input gradient, XLA's output and kernel
  gradient), then a strided 3x3 over the 2x2 image that leaves (the matmul
  throughout: the window overhangs the image, the output is one pixel, and
  taps that read only padding are dropped)."""

  rule: str = "bp"

  @nn.compact
  def __call__(self, x, *, train: bool = True, between_steps: bool = False):
    conv = functools.partial(wnn.Conv, use_bias=False, rule=self.rule, mirror_activation=nn.relu)
    x = nn.relu(conv(4, (3, 3), strides=4, name="strided")(x, between_steps=between_steps))
    x = nn.relu(conv(6, (3, 3), strides=2, name="small_image")(x, between_steps=between_steps))
    return wnn.Dense(3, rule=self.rule, name="head")(x.mean(axis=(1, 2)), between_steps=between_steps)


def _one_step(rule: str):
  """The state before and after one train step of `_ConvNet` under ``rule``, and its metrics."""
  mesh = sharding.make_mesh(jax.devices()[:1])
  model = _ConvNet(rule)
  tx = optim.chain(0.5)
  learner = steps.make_learner(model, (8, 8, 2), mirror_batch_size=4, mesh=mesh)
  state = steps.create_train_state(model, tx, (8, 8, 2), 0, mesh, learner)
  batch = {"image": jax.random.normal(jax.random.key(3), (4, 8, 8, 2)), "label": jnp.arange(4) % 3}
  step = jax.jit(functools.partial(steps.train_step, model=model, tx=tx, task="classification", learner=learner))
  before = jax.device_get(state)
  return (before, *jax.device_get(step(state, sharding.global_batch(batch, mesh))))


def test_compiler_options_are_known_to_this_xla_on_the_cpu_and_none_elsewhere():
  # Empty on the CPU would mean XLA refused them: the CPU plan would then
  # run beside YNNPACK's convolutions, which it was not chosen for.
  assert backend.compiler_options("cpu") == conv_lowering._CPU_OPTIONS
  assert backend.compiler_options("gpu") == {} and backend.compiler_options("tpu") == {}


@pytest.mark.parametrize("shape", [(256, 256), (20, 256, 256)])
def test_the_options_compute_dots_with_a_constant_operand_right(shape):
  # YNNPACK's fused dots (LIBRARY_FUSION_TYPE_DOT) give NaN or garbage here on
  # jax 0.10's XLA:CPU: shallow's B = 0 is such an operand.
  g = jnp.ones((*shape[:-2], 32, 256))
  product = lambda value: lambda g: g @ lax.optimization_barrier(jnp.full(shape, value))
  for value in (0.0, 2.0):
    out = jax.jit(product(value), compiler_options=backend.compiler_options())(g)
    np.testing.assert_array_equal(out, np.full(out.shape, 256 * value, np.float32))


# The default run takes sa, whose B learns by a gradient taken through the
# convolution's input gradient; the rest run with -m slow.
_DEFAULT_RULES = ("sa",)


@pytest.mark.parametrize(
    "rule", [r if r in _DEFAULT_RULES else pytest.param(r, marks=pytest.mark.slow) for r in feedback.names()]
)
def test_every_rule_takes_the_step_it_takes_with_xlas_convolutions(rule, monkeypatch):
  before, ours, ours_metrics = _one_step(rule)
  monkeypatch.setattr(conv_lowering, "cpu_plan", lambda geometry: conv_lowering.Plan("xla", "xla", "xla"))
  _, xla, xla_metrics = _one_step(rule)
  for name, a, b in [("params", ours.params, xla.params), ("feedback", ours.feedback, xla.feedback),
                     ("metrics", ours_metrics, xla_metrics)]:
    assert jax.tree.structure(a) == jax.tree.structure(b), name
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-5, err_msg=name), a, b)
  # The step moved the first convolution's weights (shallow trains only the
  # head): equal steps are a finding, not two no-ops.
  moved = np.max(np.abs(ours.params["strided"]["kernel"] - before.params["strided"]["kernel"]))
  assert (moved > 1e-5) != (rule == "shallow")
