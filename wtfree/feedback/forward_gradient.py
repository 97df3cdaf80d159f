"""Forward gradient with activity perturbation (Baydin et al. 2022; Ren, Kornblith, Liao and Hinton 2023).

Each layer's output a_l is perturbed along a random direction u_l ~ N(0, I)
of its shape; one forward-mode pass (``jax.jvp``) gives each example's
exact directional derivative of its loss,

    d = sum_l <dL/da_l, u_l>,

and ``d u_l`` estimates dL/da_l without bias (E[u u^T] = I). Each layer
learns by its local rule from that estimate, ``dW_l = (d u_l) h_{l-1}^T``:
no backward pass through weights. The variance grows with the number of
perturbed units, which is why Ren et al. add local losses (not here).

Costs one forward-mode pass and one pass for the local rule (a forward pass
and the backward pass of the layers' local sums).
"""

import dataclasses
import functools

import jax
from jax.custom_derivatives import SymbolicZero
import jax.numpy as jnp

from wtfree.feedback import perturbation
from wtfree.feedback.registry import Rule, check_every_layer_local, register


@register
@dataclasses.dataclass(frozen=True)
class ForwardGradient(Rule):
  """Weight gradients from a forward-mode directional derivative along random activity perturbations.

  Attributes:
    directions: the number of directions drawn each step; their estimates
      are averaged, dividing the variance by that number (1: the papers'
      estimator; each more costs one forward-mode pass).
  """

  name = "fg"
  directions: int = 1

  def feedback(self, w, state, key, kernel_init):
    return jnp.zeros_like(w)  # The local rule's pass: nothing travels back through a layer.

  def check_run(self, run) -> list[str]:
    warnings = super().check_run(run)
    if int(self.directions) != self.directions or self.directions < 1:
      raise ValueError(f"rule 'fg' needs directions >= 1, a whole number; got {self.directions}")
    check_every_layer_local(self, run)
    return warnings

  def draw(self, key, zeros) -> dict:
    """Perturbation directions u_l ~ N(0, I), one per layer output."""
    leaves, tree = jax.tree.flatten(zeros)
    keys = jax.random.split(key, len(leaves))
    return tree.unflatten([jax.random.normal(k, z.shape, z.dtype) for k, z in zip(keys, leaves)])

  def value_and_grad(self, objective, params):
    forward, zeros = perturbation.layer_losses(objective, params, rule=_ForwardPass(directions=self.directions))

    def estimate(key):
      u = self.draw(key, zeros)
      clean, derivative = jax.jvp(lambda pert: forward(params, pert)[0], (zeros,), (u,))
      derivative = jax.lax.stop_gradient(derivative) / clean.shape[0]
      return clean, jax.tree.map(lambda ul: perturbation.per_example(derivative, ul) * ul, u)

    if self.directions == 1:
      clean, errors = estimate(objective.key)
    else:
      cleans, many = jax.vmap(estimate)(jax.random.split(objective.key, self.directions))
      clean, errors = cleans[0], jax.tree.map(lambda e: jnp.mean(e, axis=0), many)
    losses, _ = perturbation.layer_losses(objective, params)
    _, (aux, _) = losses(params, zeros)
    return jnp.mean(clean), perturbation.local_gradients(losses, params, zeros, errors), aux


@dataclasses.dataclass(frozen=True)
class _ForwardPass(ForwardGradient):
  """fg's layers in its forward-mode pass: the op with a forward-mode derivative, for ``jax.jvp``."""

  def linear(self, op, inputs, kernel, b, loss):
    del b, loss
    return _bilinear(op, inputs, kernel)


@functools.partial(jax.custom_jvp, nondiff_argnums=(0,))
def _bilinear(op, x, w):
  """``op(x, w)``, whose (reverse-mode only) lowering gets its forward-mode derivative here."""
  return op(x, w)


def _bilinear_jvp(op, primals, tangents):
  x, w = primals
  dx, dw = tangents
  y = op(x, w)
  dy = jnp.zeros_like(y)
  # The op is linear in each argument: d op(x, w) = op(dx, w) + op(x, dw), each term only where it is not zero.
  if not isinstance(dx, SymbolicZero):
    dy = dy + op(dx, w)
  if not isinstance(dw, SymbolicZero):
    dy = dy + op(x, dw)
  return y, dy


_bilinear.defjvp(_bilinear_jvp, symbolic_zeros=True)
