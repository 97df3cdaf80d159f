"""BatchNorm over groups of a batch: each ``group_size`` consecutive examples normalised on their own.

Akrout et al.'s 32 TPU workers each normalised their own 64 examples of the
global batch of 2048; ``nn.BatchNorm`` on a sharded global batch normalises
over all of it, an all-reduce per BatchNorm layer. With the global batch
split over the devices in order, groups of one device's examples normalise
on their device.
"""

from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

Array = jax.Array

# The name scope of the running averages' update, as compiled programs name its operations.
RUNNING_AVERAGES = "batch_norm_running_averages"


class GroupedBatchNorm(nn.Module):
  """``nn.BatchNorm`` whose training statistics are taken per group of ``group_size`` examples.

  Example g (in batch order) belongs to group ``g // group_size``; each
  group is normalised by its own mean and (biased) variance over the batch
  and spatial axes, as ``nn.BatchNorm`` would normalise that group alone.
  The running averages move towards the mean over groups of the groups'
  statistics (on a sharded batch, one small reduction of per-feature
  vectors that no output waits for), where ``batch_stats`` is mutable. Its
  variables are ``nn.BatchNorm``'s (``params``: scale, bias;
  ``batch_stats``: mean, var), and a group of the whole batch gives
  ``nn.BatchNorm``'s outputs and running averages.

  Attributes:
    group_size: examples per group; must divide the batch.
    use_running_average, momentum, epsilon, dtype, scale_init, bias_init:
      as in ``nn.BatchNorm``.
  """

  group_size: int
  use_running_average: bool = False
  momentum: float = 0.99
  epsilon: float = 1e-5
  dtype: Any = None
  scale_init: Callable[..., Array] = nn.initializers.ones_init()
  bias_init: Callable[..., Array] = nn.initializers.zeros_init()

  @nn.compact
  def __call__(self, x: Array) -> Array:
    features = x.shape[-1]
    mean_stat = self.variable("batch_stats", "mean", lambda: jnp.zeros((features,), jnp.float32))
    var_stat = self.variable("batch_stats", "var", lambda: jnp.ones((features,), jnp.float32))
    scale = self.param("scale", self.scale_init, (features,), jnp.float32)
    bias = self.param("bias", self.bias_init, (features,), jnp.float32)
    dtype = self.dtype or x.dtype
    if self.use_running_average:
      mean, var = mean_stat.value, var_stat.value
      y = (x.astype(jnp.float32) - mean) * jax.lax.rsqrt(var + self.epsilon)
    else:
      batch = x.shape[0]
      if batch % self.group_size:
        raise ValueError(f"BatchNorm groups of {self.group_size} examples do not divide a batch of {batch}: "
                         "use a batch that is a multiple of model_options.batch_norm_group")
      groups = x.astype(jnp.float32).reshape(batch // self.group_size, self.group_size, *x.shape[1:])
      axes = tuple(range(1, groups.ndim - 1))
      mean = jnp.mean(groups, axes, keepdims=True)
      # E[x^2] - E[x]^2, clipped at 0, as nn.BatchNorm computes it.
      var = jnp.maximum(jnp.mean(jnp.square(groups), axes, keepdims=True) - jnp.square(mean), 0.0)
      y = ((groups - mean) * jax.lax.rsqrt(var + self.epsilon)).reshape(x.shape)
      if not self.is_initializing() and self.is_mutable_collection("batch_stats"):
        shape = (-1, features)
        # Named, so that a compiled step's collectives tell this reduction from the statistics'.
        with jax.named_scope(RUNNING_AVERAGES):
          mean_stat.value = self.momentum * mean_stat.value + (1 - self.momentum) * mean.reshape(shape).mean(0)
          var_stat.value = self.momentum * var_stat.value + (1 - self.momentum) * var.reshape(shape).mean(0)
    return (y * scale + bias).astype(dtype)
