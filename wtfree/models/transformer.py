"""Attention models whose every Dense follows one feedback rule: a ViT and a causal LM.

Every weight that multiplies an activation is a wtfree `Dense`: the patch
embedding, each attention block's ``query``, ``key``, ``value`` and ``out``
projections, each MLP's ``mlp_in`` and ``mlp_out``, and the ``head``. What
has no weight of that kind is exact: LayerNorm, the softmax and the two
products of attention, residual additions, the token and position
embeddings (lookups and additions, whose gradients need no transport).

Blocks are pre-norm (``x + attn(LN(x))``, then ``x + mlp(LN(x))``) and named
``block{i}`` with submodules ``attention/{query,key,value,out}``, ``mlp_in``
and ``mlp_out``, so a layer's type is the last part of its name.
"""

from collections.abc import Callable
import functools
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from wtfree import feedback
from wtfree import nn as wnn
from wtfree.models import common

Array = jax.Array
_EMBED_INIT = nn.initializers.normal(stddev=0.02)


class SelfAttention(nn.Module):
  """Multi-head dot-product self-attention: four wtfree Dense projections around exact attention.

  Attributes:
    num_heads: heads; the model width must divide by it.
    causal: each position attends only to itself and earlier ones.
    dense: a `wtfree.nn.Dense` constructor carrying the rule and dtype.
  """

  num_heads: int
  causal: bool
  dense: Callable[..., nn.Module]

  @nn.compact
  def __call__(self, x: Array, *, between_steps: bool = False) -> Array:
    """``[batch, length, width] -> [batch, length, width]``."""
    batch, length, width = x.shape
    if width % self.num_heads:
      raise ValueError(f"width {width} does not divide into {self.num_heads} heads; pick a multiple of it")
    head = width // self.num_heads
    split = lambda y: y.reshape(batch, length, self.num_heads, head)
    q, k, v = (split(self.dense(width, name=n)(x, between_steps=between_steps)) for n in ("query", "key", "value"))
    logits = jnp.einsum("bqhd,bkhd->bhqk", q, k).astype(jnp.float32) / math.sqrt(head)
    if self.causal:
      allowed = jnp.tril(jnp.ones((length, length), bool))
      logits = jnp.where(allowed, logits, jnp.finfo(jnp.float32).min)
    weights = jax.nn.softmax(logits, axis=-1).astype(v.dtype)
    y = jnp.einsum("bhqk,bkhd->bqhd", weights, v).reshape(batch, length, width)
    return self.dense(width, name="out")(y, between_steps=between_steps)


class EncoderBlock(nn.Module):
  """``x + attn(LN(x))``, then ``x + mlp_out(act(mlp_in(LN(x))))``."""

  num_heads: int
  mlp_dim: int
  causal: bool
  activation: str
  dense: Callable[..., nn.Module]
  dtype: Any = None

  @nn.compact
  def __call__(self, x: Array, *, between_steps: bool = False) -> Array:
    act = common.activation(self.activation)
    y = nn.LayerNorm(dtype=self.dtype, name="ln_attention")(x)
    x = x + SelfAttention(self.num_heads, self.causal, self.dense, name="attention")(y, between_steps=between_steps)
    y = nn.LayerNorm(dtype=self.dtype, name="ln_mlp")(x)
    y = act(self.dense(self.mlp_dim, mirror_activation=act, name="mlp_in")(y, between_steps=between_steps))
    return x + self.dense(x.shape[-1], name="mlp_out")(y, between_steps=between_steps)


def _dense(rule, dtype) -> Callable[..., nn.Module]:
  return functools.partial(wnn.Dense, dtype=dtype, rule=rule, mirror_activation=common.identity)


class _Transformer(nn.Module):
  """The fields both models share, and their stack of blocks and head.

  Attributes:
    num_classes: output size (the vocabulary, for a language model).
    width: model width.
    num_layers: encoder blocks.
    num_heads: attention heads.
    mlp_dim: hidden size of each block's MLP.
    activation: the MLP's nonlinearity ('gelu', 'relu', ...).
    rule: the feedback rule of every Dense (a name or `wtfree.feedback.Rule`).
    last_layer_bp: keep the head on backprop.
    dtype: computation dtype; None follows the inputs. Logits are float32.
  """

  num_classes: int
  width: int = 64
  num_layers: int = 2
  num_heads: int = 4
  mlp_dim: int = 128
  activation: str = "gelu"
  rule: str | feedback.Rule = "bp"
  last_layer_bp: bool = False
  dtype: Any = None

  def blocks(self, x: Array, causal: bool, between_steps: bool) -> Array:
    dense = _dense(self.rule, self.dtype)
    for i in range(self.num_layers):
      x = EncoderBlock(self.num_heads, self.mlp_dim, causal, self.activation, dense, self.dtype,
                       name=f"block{i}")(x, between_steps=between_steps)
    return nn.LayerNorm(dtype=self.dtype, name="ln_final")(x)

  def head(self, x: Array, between_steps: bool) -> Array:
    rule = common.output_rule(self.rule, self.last_layer_bp)
    return _dense(rule, self.dtype)(self.num_classes, name="head")(x, between_steps=between_steps).astype(jnp.float32)


class ViT(_Transformer):
  """A Vision Transformer (Dosovitskiy et al. 2021): patches, encoder blocks, mean pool, head.

  Images ``[batch, h, w, c]`` are cut into ``patch x patch`` squares, each
  flattened and projected by the wtfree Dense ``patch_embed``; a learned
  position embedding is added; the blocks run without a mask; after a final
  LayerNorm the tokens' mean goes to the ``head``.

  Attributes:
    patch: side of the square patches; must divide the image's height and width.
    num_classes, width, num_layers, num_heads, mlp_dim, activation, rule,
      last_layer_bp, dtype: as for every transformer here (see ``_Transformer``).
  """

  patch: int = 4

  @nn.compact
  def __call__(self, x: Array, *, train: bool, between_steps: bool = False) -> Array:
    """Returns logits ``[batch, num_classes]`` for images ``[batch, h, w, c]``."""
    del train  # No dropout or BatchNorm.
    if x.ndim != 4:
      raise ValueError(f"ViT takes images [batch, height, width, channels], got shape {x.shape}; "
                       "set flatten=False")
    batch, h, w, c = x.shape
    p = self.patch
    if h % p or w % p:
      raise ValueError(f"ViT patch {p} does not divide images of {h}x{w}; pick a divisor of both")
    x = x.reshape(batch, h // p, p, w // p, p, c).transpose(0, 1, 3, 2, 4, 5).reshape(batch, -1, p * p * c)
    x = _dense(self.rule, self.dtype)(self.width, name="patch_embed")(x, between_steps=between_steps)
    position = self.param("position_embedding", _EMBED_INIT, (1, x.shape[1], self.width))
    x = x + position.astype(x.dtype)
    x = self.blocks(x, causal=False, between_steps=between_steps)
    return self.head(jnp.mean(x, axis=1), between_steps)


class CausalLM(_Transformer):
  """A decoder-only language model: token and position embeddings, causal blocks, head.

  Inputs are token ids in ``[0, num_classes)``.

  Attributes:
    max_length: longest sequence (size of the position embedding).
    mlp_dim: hidden size of each block's MLP (256 here).
    num_classes, width, num_layers, num_heads, activation, rule,
      last_layer_bp, dtype: as for `ViT`.
  """

  max_length: int = 256
  mlp_dim: int = 256

  @nn.compact
  def __call__(self, tokens: Array, *, train: bool, between_steps: bool = False) -> Array:
    """Returns next-token logits ``[batch, length, num_classes]`` for token ids ``[batch, length]``."""
    del train
    if tokens.ndim != 2:
      raise ValueError(f"CausalLM takes token ids [batch, length], got shape {tokens.shape}")
    length = tokens.shape[1]
    if length > self.max_length:
      raise ValueError(f"sequences of {length} tokens exceed max_length {self.max_length}; raise max_length")
    x = nn.Embed(self.num_classes, self.width, embedding_init=_EMBED_INIT, dtype=self.dtype,
                 name="token_embedding")(tokens.astype(jnp.int32))
    position = self.param("position_embedding", _EMBED_INIT, (1, self.max_length, self.width))
    x = x + position[:, :length].astype(x.dtype)
    x = self.blocks(x, causal=True, between_steps=between_steps)
    return self.head(x, between_steps)
