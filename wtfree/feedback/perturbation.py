"""The layers' outputs as inputs of the loss: what np and fg perturb, and the local rule both learn by."""

from collections.abc import Callable

import flax
import jax
import jax.numpy as jnp

from wtfree.feedback.registry import Rule

Array = jax.Array


def layer_losses(objective, params, rule: Rule | None = None) -> tuple[Callable, dict]:
  """``(losses, zeros)`` for perturbing every layer's output of one batch.

  ``losses(params, perturbations)`` gives the per-example loss, the outputs
  with the updated collections, and each layer's output (in the tree of
  ``perturbations``) with the perturbation added, under ``rule`` in place of
  the model's own where given; ``zeros`` are perturbations of zero.
  """
  shapes = jax.eval_shape(lambda p: objective.apply(p, mutable=("perturbations",))[1]["perturbations"], params)
  zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)

  def losses(params, perturbations):
    outputs, updated = objective.apply(params, variables={"perturbations": perturbations}, rule=rule,
                                       mutable=("intermediates",), capture=True)
    captured = flax.traverse_util.flatten_dict(flax.core.unfreeze(updated.pop("intermediates")))
    layer_outputs = {}
    for path in flax.traverse_util.flatten_dict(flax.core.unfreeze(perturbations)):
      calls = captured.get((*path[:-1], "__call__"), ())
      if len(calls) != 1:
        raise ValueError(f"layer {'/'.join(path[:-1])} is called {len(calls)} times in one apply; a rule that "
                         "perturbs layer outputs needs each perturbed layer called once")
      layer_outputs[path] = calls[0]
    return objective.loss(outputs), ((outputs, updated), flax.traverse_util.unflatten_dict(layer_outputs))

  return losses, zeros


def local_gradients(losses: Callable, params, perturbations, errors) -> dict:
  """The gradients of each layer's parameters from its own output error alone: ``x_l^T e_l`` for W.

  The model's rule must send nothing back between layers (B = 0), so that
  the gradient of ``sum_l <e_l, y_l>`` reaches each layer's W and bias
  from its own ``e_l`` only. ``errors``: dL/dy per layer, summed over the
  batch's examples as the mean loss is (divided by the batch).
  """
  def local(params):
    _, (_, outputs) = losses(params, perturbations)
    return sum(jnp.sum(e * y) for e, y in zip(jax.tree.leaves(errors), jax.tree.leaves(outputs)))

  return jax.grad(local)(params)


def per_example(values: Array, like: Array) -> Array:
  """``values`` (one per example) shaped to multiply an array ``like`` of ``[batch, ...]``."""
  return values.reshape(values.shape + (1,) * (like.ndim - values.ndim))
