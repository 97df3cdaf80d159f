"""Thin Flax layers whose backward pass follows a feedback rule.

`Dense` and `Conv` take flax's signatures plus ``rule`` (a name or a
`wtfree.feedback.Rule`) and ``mirror_activation``; the rule's part of each
layer (its state, its B, what it hands the rule's step) is
`wtfree.feedback.rule_op` and `wtfree.feedback.finish`.
"""

from collections.abc import Callable, Sequence
import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from wtfree import feedback

Array = jax.Array
default_kernel_init = nn.initializers.lecun_normal()


class _FeedbackLayer(nn.Module):
  """Shared machinery of `Dense` and `Conv`: W, bias, the rule's op, the perturbation."""

  def _apply(self, op: Callable[[Array, Array], Array], inputs: Array, kernel_shape, between_steps):
    kernel = self.param("kernel", self.kernel_init, kernel_shape, self.param_dtype)
    # Read, not created, here: creating the bias before rule_op would change the keys W and B are drawn with.
    bias = self.get_variable("params", "bias") if between_steps and self.use_bias else None
    y = feedback.rule_op(
        self,
        self.rule,
        op,
        inputs,
        kernel,
        kernel_init=self.kernel_init,
        dtype=self.dtype,
        between_steps=between_steps,
        mirror_activation=self.mirror_activation,
        mirror_bias=bias,
    )
    if self.use_bias:
      bias = self.param("bias", self.bias_init, (kernel_shape[-1],), self.param_dtype)
      y = y + jnp.asarray(bias, y.dtype)
    return feedback.finish(self, self.rule, y, self.mirror_activation)


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
  def __call__(self, inputs: Array, *, between_steps: "bool | feedback.BetweenSteps" = False) -> Array:
    """Applies the layer; with ``between_steps`` its rule learns between steps instead (`feedback.BetweenSteps`)."""
    op = functools.partial(feedback.dense_op, precision=self.precision)
    return self._apply(op, inputs, (inputs.shape[-1], self.features), between_steps)


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
  def __call__(self, inputs: Array, *, between_steps: "bool | feedback.BetweenSteps" = False) -> Array:
    """Applies the layer; with ``between_steps`` its rule learns between steps instead (`feedback.BetweenSteps`)."""
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
    return self._apply(op, inputs, kernel_shape, between_steps)
