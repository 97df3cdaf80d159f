"""ResNets (He et al. 2016) for ImageNet and CIFAR, every conv a wtfree layer.

The ImageNet nets follow torchvision's layout (7x7 stride-2 stem, 3x3
max-pool, stride on the 3x3 conv of a bottleneck, 1x1 projection shortcuts)
and have its parameter counts. Convolutions carry no bias since BatchNorm
follows each; the output Dense has one.

Submodules are named ``stem``, ``stage{i}_block{j}`` (with ``conv1``,
``bn1``, ..., ``proj_conv``, ``proj_bn``) and ``head``.
"""

from collections.abc import Callable, Sequence
import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from wtfree import feedback
from wtfree import nn as wnn
from wtfree.models import common

Array = jax.Array
ModuleDef = Callable[..., nn.Module]


class _Unit(nn.Module):
  """Fields shared by stems and blocks, and the BN/ReLU order switch."""

  filters: int
  conv: ModuleDef
  norm: ModuleDef
  act: Callable[[Array], Array]
  bn_before_relu: bool

  def norm_act(self, x: Array, name: str) -> Array:
    """``act(BN(x))``, or ``BN(act(x))`` when BN goes after the ReLU."""
    if self.bn_before_relu:
      return self.act(self.norm(name=name)(x))
    return self.norm(name=name)(self.act(x))


class _Block(_Unit):
  """A residual block; the last BN before the addition may start at zero."""

  strides: int = 1
  zero_init_residual: bool = False

  def last_norm(self, x: Array, name: str) -> Array:
    # The branch's last conv has no ReLU of its own (the ReLU comes after the
    # addition), so it stays conv -> BN whatever bn_before_relu says.
    scale_init = nn.initializers.zeros_init() if self.zero_init_residual else nn.initializers.ones_init()
    return self.norm(scale_init=scale_init, name=name)(x)

  def shortcut(self, x: Array, y: Array, between_steps: bool) -> Array:
    if x.shape == y.shape:
      return x
    x = self.conv(y.shape[-1], (1, 1), strides=self.strides, name="proj_conv")(x, between_steps=between_steps)
    return self.norm(name="proj_bn")(x)


class BasicBlock(_Block):
  """Two 3x3 convolutions (ResNet-18/34, CIFAR ResNets)."""

  @nn.compact
  def __call__(self, x: Array, *, between_steps: bool = False) -> Array:
    """``act(shortcut(x) + BN(conv(norm_act(conv(x)))))``."""
    y = self.conv(self.filters, (3, 3), strides=self.strides, name="conv1")(x, between_steps=between_steps)
    y = self.norm_act(y, "bn1")
    y = self.conv(self.filters, (3, 3), name="conv2")(y, between_steps=between_steps)
    y = self.last_norm(y, "bn2")
    return self.act(self.shortcut(x, y, between_steps) + y)


class Bottleneck(_Block):
  """1x1 down, 3x3 (strided), 1x1 up to 4x ``filters`` (ResNet-50 and deeper)."""

  expansion: int = 4

  @nn.compact
  def __call__(self, x: Array, *, between_steps: bool = False) -> Array:
    """``act(shortcut(x) + BN(conv1x1(norm_act(conv3x3(norm_act(conv1x1(x)))))))``."""
    y = self.conv(self.filters, (1, 1), name="conv1")(x, between_steps=between_steps)
    y = self.norm_act(y, "bn1")
    y = self.conv(self.filters, (3, 3), strides=self.strides, name="conv2")(y, between_steps=between_steps)
    y = self.norm_act(y, "bn2")
    y = self.conv(self.filters * self.expansion, (1, 1), name="conv3")(y, between_steps=between_steps)
    y = self.last_norm(y, "bn3")
    return self.act(self.shortcut(x, y, between_steps) + y)


class ImageNetStem(_Unit):
  """7x7 stride-2 conv, BN, ReLU, 3x3 stride-2 max-pool: 224 px -> 56 px."""

  @nn.compact
  def __call__(self, x: Array, *, between_steps: bool = False) -> Array:
    """Applies the stem."""
    x = self.conv(self.filters, (7, 7), strides=2, padding=[(3, 3), (3, 3)], name="conv")(
        x, between_steps=between_steps
    )
    x = self.norm_act(x, "bn")
    return nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))


class CifarStem(_Unit):
  """3x3 stride-1 conv, BN, ReLU: keeps small images' resolution."""

  @nn.compact
  def __call__(self, x: Array, *, between_steps: bool = False) -> Array:
    """Applies the stem."""
    x = self.conv(self.filters, (3, 3), name="conv")(x, between_steps=between_steps)
    return self.norm_act(x, "bn")


_BLOCKS: dict[str, type[_Block]] = {"basic": BasicBlock, "bottleneck": Bottleneck}
_STEMS: dict[str, type[_Unit]] = {"imagenet": ImageNetStem, "cifar": CifarStem}


def _pick(kind: str, name: str, table: dict) -> Any:
  if name not in table:
    raise ValueError(f"ResNet {kind} {name!r} is not one of {', '.join(table)}")
  return table[name]


class ResNet(nn.Module):
  """A ResNet: stem, stages of residual blocks, global average pool, Dense.

  Stage ``i`` has ``stage_sizes[i]`` blocks of ``num_filters * width * 2**i``
  channels (times 4 at a bottleneck's output); every stage but the first
  halves the resolution in its first block.

  Attributes:
    num_classes: output size.
    stage_sizes: blocks per stage, e.g. ``(2, 2, 2, 2)`` for ResNet-18.
    block: 'basic' or 'bottleneck'.
    num_filters: channels of the stem and the first stage (64 ImageNet, 16
      CIFAR), before ``width``.
    width: channel multiplier.
    stem: 'imagenet' (7x7 stride 2 + max-pool) or 'cifar' (3x3 stride 1).
    bn_before_relu: conv -> BN -> ReLU (True, as Akrout et al. ran
      sign-symmetry) or conv -> ReLU -> BN (False, Xiao et al. 2018's order).
    batch_norm_group: examples each BatchNorm normalises over together (0:
      the whole batch; 64 for Akrout et al.'s 64 examples per worker).
    zero_init_residual: start each block's last BN scale at zero, so every
      block begins as the identity. Off by default: a zero scale also zeroes
      the error reaching the block's convs, which leaves their delta angles
      undefined until the scale moves.
    rule: the feedback rule of every conv and Dense (a name or
      `wtfree.feedback.Rule`); projection shortcuts included.
    last_layer_bp: keep the output Dense on backprop.
    dtype: computation dtype, e.g. ``jnp.bfloat16``; None follows the
      inputs. Logits are returned in float32.
  """

  num_classes: int
  stage_sizes: Sequence[int] = (2, 2, 2, 2)
  block: str = "basic"
  num_filters: int = 64
  width: float = 1.0
  stem: str = "imagenet"
  bn_before_relu: bool = True
  batch_norm_group: int = 0
  zero_init_residual: bool = False
  rule: str | feedback.Rule = "bp"
  last_layer_bp: bool = False
  dtype: Any = None

  @nn.compact
  def __call__(self, x: Array, *, train: bool, between_steps: bool = False) -> Array:
    """Returns logits ``[batch, num_classes]`` for images ``[batch, h, w, c]``."""
    if x.ndim != 4:
      raise ValueError(f"ResNet takes images [batch, height, width, channels], got shape {x.shape}")
    block_cls = _pick("block", self.block, _BLOCKS)
    stem_cls = _pick("stem", self.stem, _STEMS)
    filters = max(1, round(self.num_filters * self.width))
    shared = dict(
        conv=functools.partial(
            wnn.Conv, use_bias=False, dtype=self.dtype, rule=self.rule, mirror_activation=nn.relu
        ),
        norm=common.batch_norm(train=train, between_steps=between_steps, dtype=self.dtype,
                               group=self.batch_norm_group),
        act=nn.relu,
        bn_before_relu=self.bn_before_relu,
    )
    x = stem_cls(filters, name="stem", **shared)(x, between_steps=between_steps)
    for i, blocks in enumerate(self.stage_sizes):
      for j in range(blocks):
        x = block_cls(
            filters * 2**i,
            strides=2 if i > 0 and j == 0 else 1,
            zero_init_residual=self.zero_init_residual,
            name=f"stage{i + 1}_block{j}",
            **shared,
        )(x, between_steps=between_steps)
    x = jnp.mean(x, axis=(1, 2))
    x = wnn.Dense(
        self.num_classes,
        dtype=self.dtype,
        rule=common.output_rule(self.rule, self.last_layer_bp),
        mirror_activation=common.identity,
        name="head",
    )(x, between_steps=between_steps)
    return x.astype(jnp.float32)
