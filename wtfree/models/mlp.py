"""A multilayer perceptron: the nets of Lillicrap et al. 2016 and Liao et al. 2016."""

from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from wtfree import feedback
from wtfree import nn as wnn
from wtfree.models import common

Array = jax.Array


class MLP(nn.Module):
  """Dense layers ``widths`` with ``activation``, then a Dense to the logits.

  Each hidden layer is ``act(Dense(x))``, or ``act(BN(Dense(x)))`` with
  ``batch_norm``; a Dense followed by BatchNorm has no bias (BN removes it).
  Inputs are flattened to ``(batch, -1)``.

  Attributes:
    num_classes: output size.
    widths: hidden layer sizes; ``()`` is a single linear layer.
    activation: 'relu', 'tanh', 'sigmoid' or 'linear'.
    batch_norm: BatchNorm between each hidden Dense and its activation.
    batch_norm_group: examples each BatchNorm normalises over together (0: the
      whole batch; e.g. 64 for Akrout et al.'s 64 examples per worker).
    use_bias: biases on the layers no BatchNorm follows.
    kernel_init: initializer of every W; None keeps the layers' default
      (lecun normal). Random feedback is drawn with the same initializer
      unless the rule has its own ``init``.
    head_mirror_activation: the nonlinearity mirror passes put after the
      output layer (a name as ``activation``): 'linear' for logits, 'sigmoid'
      where the loss makes each output a logistic unit
      (``loss='sigmoid_binary_cross_entropy'``, as in Akrout et al.'s code).
    rule: the feedback rule of every layer (a name or `wtfree.feedback.Rule`).
    last_layer_bp: keep the output layer on backprop.
    dtype: computation dtype; None follows the inputs.
  """

  num_classes: int
  widths: Sequence[int] = (256,)
  activation: str = "relu"
  batch_norm: bool = False
  batch_norm_group: int = 0
  use_bias: bool = True
  kernel_init: Callable | None = None
  head_mirror_activation: str = "linear"
  rule: str | feedback.Rule = "bp"
  last_layer_bp: bool = False
  dtype: Any = None

  @nn.compact
  def __call__(self, x: Array, *, train: bool, between_steps: bool = False) -> Array:
    """Returns logits ``[batch, num_classes]`` for inputs ``[batch, ...]``."""
    act = common.activation(self.activation)
    init = {} if self.kernel_init is None else {"kernel_init": self.kernel_init}
    norm = common.batch_norm(train=train, between_steps=between_steps, dtype=self.dtype,
                             group=self.batch_norm_group)
    x = jnp.reshape(x, (x.shape[0], -1))
    for i, width in enumerate(self.widths):
      x = wnn.Dense(
          width,
          use_bias=self.use_bias and not self.batch_norm,
          dtype=self.dtype,
          rule=self.rule,
          mirror_activation=act,
          name=f"Dense_{i}",
          **init,
      )(x, between_steps=between_steps)
      if self.batch_norm:
        x = norm(name=f"BatchNorm_{i}")(x)
      x = act(x)
    x = wnn.Dense(
        self.num_classes,
        use_bias=self.use_bias,
        dtype=self.dtype,
        rule=common.output_rule(self.rule, self.last_layer_bp),
        mirror_activation=common.activation(self.head_mirror_activation),
        name="head",
        **init,
    )(x, between_steps=between_steps)
    return x.astype(jnp.float32)
