"""Alignment metrics: weight angles and delta angles per layer, and accuracy.

Layers are named by their module path joined with '/', e.g. ``'Dense_0'`` or
``'stage1_block0/conv1'``.
"""

from collections.abc import Callable, Mapping

import flax
import jax
import jax.numpy as jnp

Array = jax.Array


def angle(a: Array, b: Array) -> Array:
  """Angle in degrees between ``vec(a)`` and ``vec(b)``; 90 if either is zero."""
  a = jnp.ravel(a).astype(jnp.float32)
  b = jnp.ravel(b).astype(jnp.float32)
  norm_a, norm_b = jnp.linalg.norm(a), jnp.linalg.norm(b)
  u = a / jnp.where(norm_a > 0, norm_a, 1.0)
  v = b / jnp.where(norm_b > 0, norm_b, 1.0)
  # arccos of the cosine loses small angles to rounding; this form does not.
  radians = 2.0 * jnp.arctan2(jnp.linalg.norm(u - v), jnp.linalg.norm(u + v))
  return jnp.where((norm_a > 0) & (norm_b > 0), jnp.degrees(radians), 90.0)


def _by_layer(tree: Mapping, leaf: str) -> dict[str, Array]:
  flat = flax.traverse_util.flatten_dict(flax.core.unfreeze(tree))
  return {"/".join(path[:-1]): value for path, value in flat.items() if path[-1] == leaf}


def weight_angles(alignment: Mapping) -> dict[str, Array]:
  """Angle between W and the B each layer used, per layer, in degrees.

  Args:
    alignment: the ``alignment`` collection of an apply made with
      ``mutable=['alignment']``: each wtfree layer's ``forward`` W and the
      ``feedback`` B it used (for frsf that is |M| * sign(W), not M).

  Returns:
    ``{layer: degrees}``, for the layers whose B has W's shape (not dfa's).
  """
  forward = _by_layer(alignment, "forward")
  used = _by_layer(alignment, "feedback")
  return {layer: angle(used[layer], w) for layer, w in forward.items() if layer in used}


def weight_ratios(alignment: Mapping, broadcast_maps: Mapping[str, Array] | None = None) -> dict[str, Array]:
  """``|B| / |W|`` per layer (Frobenius norms): the scale of the feedback path.

  Args:
    alignment: as for `weight_angles`.
    broadcast_maps: ``{layer: B}`` for dfa layers, whose B maps the output
      error to the layer's input (`wtfree.feedback.direct.broadcast_maps`).

  Returns:
    ``{layer: ratio}``; 0 where B is zero (shallow).
  """
  forward = _by_layer(alignment, "forward")
  used = {**_by_layer(alignment, "feedback"), **(broadcast_maps or {})}
  return {
      layer: jnp.linalg.norm(jnp.ravel(used[layer]).astype(jnp.float32))
      / jnp.maximum(jnp.linalg.norm(jnp.ravel(w).astype(jnp.float32)), 1e-30)
      for layer, w in forward.items()
      if layer in used
  }


def rule_reports(alignment: Mapping) -> dict[str, Array]:
  """The scalars each layer's rule reports (`wtfree.feedback.Rule.report`), ``{'name/layer': value}``."""
  flat = flax.traverse_util.flatten_dict(flax.core.unfreeze(alignment))
  return {
      f"{path[-1][len(REPORT):]}/{'/'.join(path[:-1])}": value
      for path, value in flat.items()
      if path[-1].startswith(REPORT)
  }


# Prefix of the names under which layers sow their rule's reports.
REPORT = "report_"


def error_signals(loss_of_perturbations: Callable[[Mapping], Array], perturbations: Mapping) -> dict[str, Array]:
  """The error signal dL/dy each layer receives at its output.

  Args:
    loss_of_perturbations: the loss as a function of the ``perturbations``
      collection (zeros added to every layer's output).
    perturbations: that collection, from an apply with
      ``mutable=['perturbations']`` on the same batch.

  Returns:
    ``{layer: dL/dy}``.
  """
  grads = jax.grad(loss_of_perturbations)(perturbations)
  return _by_layer(grads, "output")


def delta_angles(
    rule_loss: Callable[[Mapping], Array],
    bp_loss: Callable[[Mapping], Array],
    perturbations: Mapping,
) -> dict[str, Array]:
  """Angle between the error each layer receives under a rule and under backprop.

  Args:
    rule_loss: the loss of the model with its rule, as a function of the
      ``perturbations`` collection.
    bp_loss: the same loss, same variables and batch, with every layer on bp.
    perturbations: zeros of each layer's output shape.

  Returns:
    ``{layer: degrees}``; the output layer's is 0 by construction.
  """
  rule = error_signals(rule_loss, perturbations)
  bp = error_signals(bp_loss, perturbations)
  return {layer: angle(rule[layer], bp[layer]) for layer in rule}


def cross_entropy(logits: Array, labels: Array) -> Array:
  """Per-example softmax cross entropy with integer labels."""
  logp = jax.nn.log_softmax(logits.astype(jnp.float32))
  return -jnp.take_along_axis(logp, labels[..., None], axis=-1)[..., 0]


def topk_correct(logits: Array, labels: Array, k: int) -> Array:
  """1.0 where the label is among the ``k`` largest logits, per example."""
  k = min(k, logits.shape[-1])
  top = jax.lax.top_k(logits, k)[1]
  return jnp.any(top == labels[..., None], axis=-1).astype(jnp.float32)
