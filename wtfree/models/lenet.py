"""A LeNet-style convolutional net for small images and 1-D signals."""

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from wtfree import feedback
from wtfree import nn as wnn
from wtfree.models import common

Array = jax.Array


class LeNet(nn.Module):
  """Conv-pool blocks, then Dense layers, then a Dense to the logits.

  Each block is ``maxpool(act(Conv(x)))`` (``maxpool(act(BN(Conv(x))))``
  with ``batch_norm``), SAME padding, 2x2 pooling with stride 2. The
  convolutions have as many spatial dimensions as the input: ``[batch, h,
  w, c]`` images get 2-D ones, ``[batch, length, c]`` signals (mnist1d) 1-D
  ones; ``[batch, length]`` is read as one-channel signals. The defaults are
  LeNet-5's sizes: 28x28x1, 32x32x3, 8x8x1 digits and length-40 signals all
  fit.

  Attributes:
    num_classes: output size.
    features: channels of each convolution.
    kernel_size: the convolutions' window along every spatial axis.
    dense: sizes of the hidden Dense layers after the convolutions.
    activation: 'relu', 'tanh', 'sigmoid' or 'linear'.
    batch_norm: BatchNorm between each hidden layer and its activation.
    batch_norm_group: examples each BatchNorm normalises over together (0: the
      whole batch; e.g. 64 for Akrout et al.'s 64 examples per worker).
    use_bias: biases on the layers no BatchNorm follows.
    rule: the feedback rule of every layer (a name or `wtfree.feedback.Rule`).
    last_layer_bp: keep the output layer on backprop.
    dtype: computation dtype; None follows the inputs.
  """

  num_classes: int
  features: Sequence[int] = (6, 16)
  kernel_size: int = 5
  dense: Sequence[int] = (120, 84)
  activation: str = "relu"
  batch_norm: bool = False
  batch_norm_group: int = 0
  use_bias: bool = True
  rule: str | feedback.Rule = "bp"
  last_layer_bp: bool = False
  dtype: Any = None

  @nn.compact
  def __call__(self, x: Array, *, train: bool, between_steps: bool = False) -> Array:
    """Returns logits ``[batch, num_classes]``."""
    act = common.activation(self.activation)
    norm = common.batch_norm(train=train, between_steps=between_steps, dtype=self.dtype,
                             group=self.batch_norm_group)
    bias = self.use_bias and not self.batch_norm
    if x.ndim == 2:
      x = x[..., None]
    if x.ndim not in (3, 4):
      raise ValueError(
          f"LeNet takes [batch, length(, channels)] or [batch, height, width, channels] inputs, "
          f"got shape {x.shape}; use 'mlp' for other shapes"
      )
    window = (2,) * (x.ndim - 2)
    for i, features in enumerate(self.features):
      x = wnn.Conv(
          features,
          (self.kernel_size,) * len(window),
          use_bias=bias,
          dtype=self.dtype,
          rule=self.rule,
          mirror_activation=act,
          name=f"Conv_{i}",
      )(x, between_steps=between_steps)
      if self.batch_norm:
        x = norm(name=f"BatchNorm_conv{i}")(x)
      x = nn.max_pool(act(x), window, strides=window, padding="SAME")
    x = jnp.reshape(x, (x.shape[0], -1))
    for i, width in enumerate(self.dense):
      x = wnn.Dense(
          width, use_bias=bias, dtype=self.dtype, rule=self.rule, mirror_activation=act, name=f"Dense_{i}"
      )(x, between_steps=between_steps)
      if self.batch_norm:
        x = norm(name=f"BatchNorm_dense{i}")(x)
      x = act(x)
    x = wnn.Dense(
        self.num_classes,
        use_bias=self.use_bias,
        dtype=self.dtype,
        rule=common.output_rule(self.rule, self.last_layer_bp),
        mirror_activation=common.identity,
        name="head",
    )(x, between_steps=between_steps)
    return x.astype(jnp.float32)
