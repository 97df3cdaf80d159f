"""Thin Flax layers whose backward pass follows a feedback rule.

`Dense` and `Conv` take flax's signatures plus ``rule`` (a name or a
`wtfree.feedback.Rule`) and ``mirror_activation``. W lives in ``params``; B,
or the state B is made from, lives in the ``feedback`` collection (B of the
alignment losses, which the optimizer trains, in ``params``).

Three extra collections are written only when an apply makes them mutable
(never at init):
``alignment`` receives each layer's W and the B it used (for weight angles),
``perturbations`` holds a zero added to each layer's output (its gradient is
the error signal the layer receives, for delta angles), and ``dfa`` holds the
taps through which `wtfree.feedback.connect` sends the output error to each
layer under direct feedback alignment.
"""

from collections.abc import Callable, Sequence
import functools
from typing import Any

from absl import logging
import flax.linen as nn
import jax
import jax.extend.core as jex_core
import jax.numpy as jnp

from wtfree import feedback
from wtfree import learning
from wtfree import metrics

Array = jax.Array
default_kernel_init = nn.initializers.lecun_normal()


def _layer_name(module: nn.Module) -> str:
  return "/".join(module.scope.path) or type(module).__name__


def _ignores_key(kernel_init: Callable, shape, dtype) -> bool:
  """Whether ``kernel_init(key, shape, dtype)`` is the same for every key (zeros, ones, a constant).

  Found from the initializer's jaxpr, without drawing: no equation that
  leads to the output reads the key.
  """
  closed = jax.make_jaxpr(lambda key: nn.meta.unbox(kernel_init(key, shape, dtype)))(jax.random.key(0))
  needed = {v for v in closed.jaxpr.outvars if not isinstance(v, jex_core.Literal)}
  for eqn in reversed(closed.jaxpr.eqns):
    if needed & set(eqn.outvars):
      needed |= {v for v in eqn.invars if not isinstance(v, jex_core.Literal)}
  return closed.jaxpr.invars[0] not in needed


def _usable_init(module: nn.Module, rule: feedback.Rule, kernel_init: Callable) -> Callable:
  """``kernel_init``, or flax's default where it ignores its key (a zero-initialised head).

  A constant draw gives random-feedback rules a B with no information and
  kp a ``B_0 - W_0`` of zero (B = W: weight transport), so B is drawn from
  the default initializer instead, with a warning naming the layer.
  """
  if not rule.draws_from_kernel_init or rule.init is not None:
    return kernel_init

  def checked(key, shape, dtype=jnp.float32):
    if _ignores_key(kernel_init, shape, dtype):
      logging.warning(
          "layer %s: its kernel initializer draws the same array whatever the key (a constant), "
          "which would give rule %r no usable feedback; B is drawn from lecun_normal instead "
          "(pass the rule an init= to choose)",
          _layer_name(module), rule.name,
      )
      return default_kernel_init(key, shape, dtype)
    return kernel_init(key, shape, dtype)

  return checked


def _feedback_state(module: nn.Module, rule: feedback.Rule, kernel: Array, kernel_init) -> dict[str, Any]:
  drawn = {}

  def init(name):
    if not drawn:
      drawn.update(rule.init_state(module.make_rng("params"), kernel, kernel_init))
    return drawn[name]

  return {
      n: module.variable("params" if n in rule.param_names else rule.collection, n, init, n)
      for n in rule.state_names
  }


def _step_key(module: nn.Module, rule: feedback.Rule) -> Array | None:
  if not rule.needs_rng:
    return None
  if module.is_initializing() and not module.has_rng("feedback"):
    # No backward pass runs at init, so the draw is never used.
    return jax.random.key(0)
  if not module.has_rng("feedback"):
    raise ValueError(
        f"rule {rule.name!r} draws new feedback every step: pass "
        "rngs={'feedback': key} to apply, a key folded with the step"
    )
  return module.make_rng("feedback")


def _sow(module: nn.Module, name: str, value) -> None:
  # Only into an apply that asked for the collection, never into init's variables.
  if not module.is_initializing() and module.is_mutable_collection("alignment"):
    module.sow("alignment", name, value, init_fn=lambda: None, reduce_fn=lambda _, x: x)


def _between_steps(module, rule, op, inputs, kernel, state, values, activation, bias=None) -> None:
  if not rule.learns_between_steps or not module.is_mutable_collection(rule.collection):
    return
  passes, weight_decay_rate = learning.step_settings()
  ctx = feedback.StepContext(
      op=op,
      inputs=inputs,
      noise=lambda kind: feedback.unit_noise(module.make_rng("mirror"), inputs.shape, inputs.dtype, kind),
      activation=activation,
      bias=bias,
      passes=passes,
      weight_decay_rate=weight_decay_rate,
  )
  for name, value in rule.between_steps(ctx, kernel, values).items():
    state[name].value = value


def rule_op(
    module: nn.Module,
    rule: str | feedback.Rule,
    op: Callable[[Array, Array], Array],
    inputs: Array,
    kernel: Array,
    *,
    kernel_init: Callable,
    dtype: Any = None,
    mirror_pass: bool = False,
    mirror_activation: Callable[[Array], Array] = lambda y: y,
    mirror_bias: Array | None = None,
) -> Array:
  """``op(inputs, kernel)`` inside ``module``, its backward pass following ``rule``.

  Call it from a compact method of ``module``: the rule's state is created in
  the module's ``feedback`` collection (the alignment losses' B in
  ``params``); in an apply that makes them mutable, W, the B used and the
  rule's report are sown into ``alignment`` and dfa layers sow their taps
  into ``dfa``. `Dense`, `Conv` and `wtfree.convert` are built on it.

  Args:
    module: the module whose variables hold W and B.
    rule: a rule name or `wtfree.feedback.Rule`.
    op: the layer's op, linear in its input and in its kernel.
    inputs: the input.
    kernel: W, a parameter of ``module``.
    kernel_init: W's initializer (random rules draw B with it by default).
    dtype: the computation dtype (None: promote inputs and kernel).
    mirror_pass: a between-steps pass (`wtfree.learning.Learner.update`):
      the rule updates its state (kp decays B - W, wm mirrors B from noise)
      and the output is ``op(inputs, kernel)`` with no feedback.
    mirror_activation: the nonlinearity after the layer, for mirror passes.
    mirror_bias: the bias the layer adds to ``op(inputs, kernel)``, for
      mirror passes (`wtfree.feedback.StepContext.bias`); None without one.

  Returns:
    ``op(inputs, kernel)`` in the promoted dtype.
  """
  rule = feedback.get_rule(rule)
  kernel_init = _usable_init(module, rule, kernel_init)
  state = _feedback_state(module, rule, kernel, kernel_init)
  values = {n: v.value for n, v in state.items()}
  if module.is_initializing():
    learning.note_rule(rule, _layer_name(module), module.scope.root)
  kernel = rule.forward(kernel, values)
  if mirror_pass:
    inputs, kernel = nn.dtypes.promote_dtype(inputs, kernel, dtype=dtype)
    _between_steps(module, rule, op, inputs, kernel, state, values, mirror_activation, mirror_bias)
    return op(inputs, kernel)
  _sow(module, "forward", kernel)
  for name, value in rule.report(kernel, values).items():
    _sow(module, f"{metrics.REPORT}{name}", value)
  if rule.broadcasts_error:
    inputs, kernel = nn.dtypes.promote_dtype(inputs, kernel, dtype=dtype)
    if module.is_mutable_collection(feedback.direct.TAPS):
      module.sow(feedback.direct.TAPS, "taps", (inputs, values["seed"]))
    # The input error is B e, which `feedback.connect` delivers to the tap.
    return op(jax.lax.stop_gradient(inputs), kernel)
  b = rule.feedback(kernel, values, _step_key(module, rule), kernel_init)
  if not rule.learns_by_gradient:
    b = jax.lax.stop_gradient(b)
  _sow(module, "feedback", b)
  inputs, kernel, b = nn.dtypes.promote_dtype(inputs, kernel, b, dtype=dtype)
  loss = rule.feedback_loss if rule.learns_by_gradient else None
  return feedback.linear(op, inputs, kernel, b, loss)


def perturb(module: nn.Module, y: Array) -> Array:
  """``y`` plus the layer's zero perturbation, when an apply (not init) asks for ``perturbations``."""
  if module.is_initializing():
    return y
  return module.perturb("output", y)


class _FeedbackLayer(nn.Module):
  """Shared machinery of `Dense` and `Conv`: W, bias, the rule's op, the perturbation."""

  def _apply(self, op: Callable[[Array, Array], Array], inputs: Array, kernel_shape, mirror_pass: bool):
    kernel = self.param("kernel", self.kernel_init, kernel_shape, self.param_dtype)
    # Read, not created, here: creating the bias before rule_op would change the keys W and B are drawn with.
    bias = self.get_variable("params", "bias") if mirror_pass and self.use_bias else None
    y = rule_op(
        self,
        self.rule,
        op,
        inputs,
        kernel,
        kernel_init=self.kernel_init,
        dtype=self.dtype,
        mirror_pass=mirror_pass,
        mirror_activation=self.mirror_activation,
        mirror_bias=bias,
    )
    if self.use_bias:
      bias = self.param("bias", self.bias_init, (kernel_shape[-1],), self.param_dtype)
      y = y + jnp.asarray(bias, y.dtype)
    return perturb(self, y)


class Dense(_FeedbackLayer):
  """``y = x W + bias``, with the input error sent back through the rule's B.

  Attributes:
    features: output size.
    use_bias, dtype, param_dtype, precision, kernel_init, bias_init: as in
      ``flax.linen.Dense``.
    rule: a rule name or `wtfree.feedback.Rule`.
    mirror_activation: the nonlinearity that follows this layer in the
      model, used by weight-mirror passes.
  """

  features: int
  use_bias: bool = True
  dtype: Any = None
  param_dtype: Any = jnp.float32
  precision: Any = None
  kernel_init: Callable = default_kernel_init
  bias_init: Callable = nn.initializers.zeros_init()
  rule: str | feedback.Rule = "bp"
  mirror_activation: Callable[[Array], Array] = lambda y: y

  @nn.compact
  def __call__(self, inputs: Array, *, mirror_pass: bool = False) -> Array:
    """Applies the layer; with ``mirror_pass`` it mirrors B from noise instead."""
    op = functools.partial(feedback.dense_op, precision=self.precision)
    return self._apply(op, inputs, (inputs.shape[-1], self.features), mirror_pass)


class Conv(_FeedbackLayer):
  """A convolution (``N...C`` inputs, ``...IO`` kernel) with rule feedback.

  Attributes:
    features, kernel_size, strides, padding, input_dilation,
    kernel_dilation, feature_group_count, use_bias, dtype, param_dtype,
    precision, kernel_init, bias_init: as in ``flax.linen.Conv``.
    rule: a rule name or `wtfree.feedback.Rule`.
    mirror_activation: the nonlinearity that follows this layer in the
      model, used by weight-mirror passes.
  """

  features: int
  kernel_size: Sequence[int]
  strides: int | Sequence[int] = 1
  padding: str | int | Sequence[tuple[int, int]] = "SAME"
  input_dilation: int | Sequence[int] = 1
  kernel_dilation: int | Sequence[int] = 1
  feature_group_count: int = 1
  use_bias: bool = True
  dtype: Any = None
  param_dtype: Any = jnp.float32
  precision: Any = None
  kernel_init: Callable = default_kernel_init
  bias_init: Callable = nn.initializers.zeros_init()
  rule: str | feedback.Rule = "bp"
  mirror_activation: Callable[[Array], Array] = lambda y: y

  @nn.compact
  def __call__(self, inputs: Array, *, mirror_pass: bool = False) -> Array:
    """Applies the layer; with ``mirror_pass`` it mirrors B from noise instead."""
    kernel_size = tuple(self.kernel_size)
    if inputs.ndim != len(kernel_size) + 2:
      raise ValueError(
          f"Conv with kernel_size {kernel_size} needs inputs of rank "
          f"{len(kernel_size) + 2} (batch, spatial..., channels), got shape {inputs.shape}"
      )
    in_features = inputs.shape[-1]
    if in_features % self.feature_group_count:
      raise ValueError(
          f"{in_features} input channels do not divide into "
          f"feature_group_count={self.feature_group_count} groups"
      )
    op = functools.partial(
        feedback.conv_op,
        strides=self.strides,
        padding=self.padding,
        input_dilation=self.input_dilation,
        rhs_dilation=self.kernel_dilation,
        feature_group_count=self.feature_group_count,
        precision=self.precision,
    )
    kernel_shape = (*kernel_size, in_features // self.feature_group_count, self.features)
    return self._apply(op, inputs, kernel_shape, mirror_pass)
