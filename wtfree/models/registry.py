"""Models by name: ``get_model('resnet50', num_classes=1000, rule='kp')``."""

from collections.abc import Mapping
import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from wtfree import feedback
from wtfree.models.lenet import LeNet
from wtfree.models.mlp import MLP
from wtfree.models.resnet import ResNet
from wtfree.models.transformer import CausalLM, ViT

_MODELS: dict[str, tuple[type[nn.Module], dict[str, Any]]] = {}


def register(name: str, cls: type[nn.Module], **defaults: Any) -> None:
  """Makes ``get_model(name, **kw)`` build ``cls(**defaults, **kw)``."""
  _MODELS[name] = (cls, defaults)


def names() -> tuple[str, ...]:
  """The names of all registered models."""
  return tuple(_MODELS)


def get_model(name: str, **kwargs: Any) -> nn.Module:
  """Builds the model called ``name``; ``kwargs`` override its defaults.

  Args:
    name: a registered name ('mlp', 'lenet', 'resnet18', 'resnet20', 'vit',
      'causal_lm', ...).
    **kwargs: fields of the model class, e.g. ``num_classes=10, rule='fa'``.

  Raises:
    ValueError: for an unknown name or a field the model does not have.
  """
  if name not in _MODELS:
    raise ValueError(f"model {name!r} is not one of {', '.join(_MODELS)}")
  cls, defaults = _MODELS[name]
  fields = {f.name for f in dataclasses.fields(cls)} - {"parent", "name"}
  unknown = sorted(set(kwargs) - fields)
  if unknown:
    raise ValueError(f"model {name!r} ({cls.__name__}) takes fields {sorted(fields)}, not {unknown}")
  return cls(**{**defaults, **kwargs})


def create(model, num_classes: int, input_shape: tuple[int, ...] | None = None, input_dtype=jnp.float32) -> nn.Module:
  """Builds the model a run's settings name.

  Reads ``model.name``, ``model.rule`` (the rule, built with its options),
  ``model.last_layer_bp`` and ``model.options`` (fields of the model, e.g.
  ``{'widths': (1000,), 'activation': 'sigmoid'}``).

  Args:
    model: the run's model settings, ``settings.resolve(config).model``
      (`wtfree.settings.Model`).
    num_classes: size of the output layer.
    input_shape: one example's shape, e.g. ``(224, 224, 3)``. When given, the
      model is traced on it (``jax.eval_shape``, no compute) so that a model
      that cannot take such inputs fails here, naming both.
    input_dtype: the inputs' dtype for that check (int32 for token ids).

  Returns:
    The linen module; apply it as ``model.apply(variables, x, train=...)``.
  """
  options: Mapping[str, Any] = dict(model.options)
  module = get_model(model.name, num_classes=num_classes, rule=model.rule, last_layer_bp=bool(model.last_layer_bp),
                     **options)
  if input_shape is not None:
    _check_input(module, model.name, tuple(input_shape), input_dtype)
  return module


def _check_input(model: nn.Module, name: str, input_shape: tuple[int, ...], input_dtype) -> None:
  x = jax.ShapeDtypeStruct((1, *input_shape), input_dtype)
  # A shape check, not a run: the learner's stream keeps the warning about how B learns away.
  keys = {"params": jax.random.key(0), "feedback": jax.random.key(1), feedback.LEARNER_RNG: jax.random.key(2)}
  try:
    jax.eval_shape(lambda x: model.init(keys, x, train=False), x)
  except (ValueError, TypeError) as e:
    raise ValueError(f"model {name!r} cannot take inputs of shape {input_shape}: {e}") from e


register("mlp", MLP)
register("lenet", LeNet)
register("resnet18", ResNet, stage_sizes=(2, 2, 2, 2), block="basic")
register("resnet34", ResNet, stage_sizes=(3, 4, 6, 3), block="basic")
register("resnet50", ResNet, stage_sizes=(3, 4, 6, 3), block="bottleneck")
register("resnet101", ResNet, stage_sizes=(3, 4, 23, 3), block="bottleneck")
register("resnet20", ResNet, stage_sizes=(3, 3, 3), block="basic", num_filters=16, stem="cifar")
register("resnet56", ResNet, stage_sizes=(9, 9, 9), block="basic", num_filters=16, stem="cifar")
register("vit", ViT)
register("causal_lm", CausalLM)
# For tests: runs on 8x8 inputs in milliseconds.
register("resnet_tiny", ResNet, stage_sizes=(1, 1), block="basic", num_filters=8, stem="cifar")
