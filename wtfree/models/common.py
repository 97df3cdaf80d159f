"""Pieces every model shares: activations by name, BatchNorm, the output rule."""

from collections.abc import Callable
import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from wtfree import feedback
from wtfree.models import batch_norm as batch_norm_lib

Array = jax.Array


def identity(x: Array) -> Array:
  """``f(x) = x``: the mirror activation of layers no nonlinearity follows."""
  return x


_ACTIVATIONS: dict[str, Callable[[Array], Array]] = {
    "relu": nn.relu,
    "tanh": jnp.tanh,
    "sigmoid": nn.sigmoid,
    "gelu": nn.gelu,
    "linear": identity,
}


def activation(name: str) -> Callable[[Array], Array]:
  """The nonlinearity called ``name`` ('relu', 'tanh', 'sigmoid', 'gelu', 'linear').

  Raises:
    ValueError: for an unknown name.
  """
  if name not in _ACTIVATIONS:
    raise ValueError(f"activation {name!r} is not one of {', '.join(_ACTIVATIONS)}")
  return _ACTIVATIONS[name]


def batch_norm(*, train: bool, between_steps: bool, dtype: Any = None, group: int = 0) -> Callable[..., nn.Module]:
  """A BatchNorm constructor: momentum 0.9, epsilon 1e-5.

  Mirror passes feed noise through the network, so they normalise with the
  running averages and leave them untouched, whatever ``train`` says.
  ``group`` > 0 normalises each ``group`` consecutive examples of a batch
  on their own (`batch_norm.GroupedBatchNorm`); 0 normalises over the whole
  batch.
  """
  if group < 0:
    raise ValueError(f"batch_norm_group {group} is negative: 0 normalises over the whole batch, "
                     "n > 0 over each n examples")
  return functools.partial(
      batch_norm_lib.GroupedBatchNorm if group else nn.BatchNorm,
      **({"group_size": group} if group else {}),
      use_running_average=not train or bool(between_steps),
      momentum=0.9,
      epsilon=1e-5,
      dtype=dtype,
  )


def output_rule(rule: "str | feedback.Rule", last_layer_bp: bool) -> "str | feedback.Rule":
  """The rule of a model's output layer: ``'bp'`` if ``last_layer_bp``, else ``rule``."""
  return "bp" if last_layer_bp else rule
