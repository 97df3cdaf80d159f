"""Thin Flax layers whose backward pass follows a feedback rule.

`Dense` and `Conv` take flax's signatures plus ``rule`` (a name or a
`wtfree.feedback.Rule`) and ``mirror_activation``. W lives in ``params``; B,
or the fixed random state B is made from, lives in the ``feedback``
collection (kp keeps its learned B in ``params`` as ``feedback_kernel``).

Two extra collections are written only when the caller makes them mutable:
``alignment`` receives each layer's W and the B it used (for weight angles),
``perturbations`` holds a zero added to each layer's output (its gradient is
the error signal the layer receives, for delta angles).
"""

from collections.abc import Callable, Sequence
import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from wtfree import feedback
from wtfree import mirror

Array = jax.Array
default_kernel_init = nn.initializers.lecun_normal()


class _FeedbackLayer(nn.Module):
  """Shared machinery: the rule's state, the B of this step, mirror passes."""

  def _rule(self) -> feedback.Rule:
    return feedback.get_rule(self.rule)

  def _feedback_state(self, rule: feedback.Rule, shape) -> dict[str, Any]:
    drawn = {}

    def init(name):
      if not drawn:
        drawn.update(rule.init_state(self.make_rng("params"), shape, self.param_dtype, self.kernel_init))
      return drawn[name]

    return {n: self.variable(rule.collection, n, init, n) for n in rule.state_names}

  def _key(self, rule: feedback.Rule) -> Array | None:
    if not rule.needs_rng:
      return None
    if self.is_initializing() and not self.has_rng("feedback"):
      # No backward pass runs at init, so the draw is never used.
      return jax.random.key(0)
    if not self.has_rng("feedback"):
      raise ValueError(
          f"rule {rule.name!r} draws new feedback every step: pass "
          "rngs={'feedback': key} to apply, a key folded with the step"
      )
    return self.make_rng("feedback")

  def _apply(self, op: Callable[[Array, Array], Array], inputs: Array, kernel_shape, mirror_pass: bool):
    rule = self._rule()
    kernel = self.param("kernel", self.kernel_init, kernel_shape, self.param_dtype)
    state = self._feedback_state(rule, kernel_shape)
    values = {n: v.value for n, v in state.items()}
    b = rule.feedback(kernel, values, self._key(rule), self.kernel_init)
    self.sow("alignment", "forward", kernel, init_fn=lambda: None, reduce_fn=lambda _, x: x)
    self.sow("alignment", "feedback", b, init_fn=lambda: None, reduce_fn=lambda _, x: x)
    bias = None
    if self.use_bias:
      bias = self.param("bias", self.bias_init, (kernel_shape[-1],), self.param_dtype)
    inputs, kernel, b, bias = nn.dtypes.promote_dtype(inputs, kernel, b, bias, dtype=self.dtype)

    if mirror_pass:
      inputs = jax.random.normal(self.make_rng("mirror"), inputs.shape, inputs.dtype)
      if rule.mirrored and self.is_mutable_collection("feedback"):
        state["kernel"].value = mirror.mirrored_feedback(
            op, inputs, kernel, values["kernel"], self.mirror_activation, rule.eta, rule.decay
        ).astype(self.param_dtype)
      y = op(inputs, kernel)
    else:
      y = feedback.linear(op, inputs, kernel, b, rule.learns_feedback)
    if bias is not None:
      y = y + bias
    return self.perturb("output", y)


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
