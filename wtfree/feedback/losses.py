"""Alignment losses (Kunin et al. 2020): B learns by gradient descent on a local loss.

The loss of a layer is built from its own signals: its input x, the forward
projection ``f = op(x, W)`` and the same input through B, ``b = op(x, B)``.
The terms, as in Neural-Alignment's ``primitives.py`` (sums over units, means
over the batch, the leading axis):

    decay(W, B)  = ||W||^2 + ||B||^2
    self(W, B)   = -sum(W * B)
    amp(f, b)    = -mean_batch sum(f * b)
    sparse(f, b) = mean_batch sum(f^2) + mean_batch sum(b^2)
    null(r)      = mean_batch sum(r^2),  r = f B^T (f sent back through B)

A rule of this family (`AlignmentLoss`) keeps B as a parameter
(``feedback_kernel`` in ``params``) and `wtfree.feedback.linear` hands it the
gradient of its loss in B, so the run's optimizer trains it; W gets only
the task's gradient. Each rule is its own file: `symmetric`, `activation`,
`information`.

Coefficients: Neural-Alignment's defaults (1e-3 and 2e-3) are tuned for
ImageNet runs of ~10^5 SGD steps. wtfree's rules keep their ratios, which
set B's fixed point, and scale them by 10, so that B aligns within the ~10^3
steps of the embedded default. Larger ones made training fragile under
momentum (docs/rules.md, "Alignment losses").
"""

import dataclasses

import jax
import jax.numpy as jnp

from wtfree.feedback.registry import Rule

Array = jax.Array


def _batch_mean_sum(v: Array) -> Array:
  return jnp.sum(v.astype(jnp.float32)) / v.shape[0]


def decay(w: Array, b: Array) -> Array:
  """``||W||^2 + ||B||^2``."""
  return jnp.sum(jnp.square(w.astype(jnp.float32))) + jnp.sum(jnp.square(b.astype(jnp.float32)))


def self_alignment(w: Array, b: Array) -> Array:
  """``-sum(W * B)``."""
  return -jnp.sum(w.astype(jnp.float32) * b.astype(jnp.float32))


def amp(f: Array, b: Array) -> Array:
  """``-mean_batch sum(f * b)``."""
  return -_batch_mean_sum(f * b)


def sparse(f: Array, b: Array) -> Array:
  """``mean_batch sum(f^2) + mean_batch sum(b^2)``."""
  return _batch_mean_sum(jnp.square(f)) + _batch_mean_sum(jnp.square(b))


def null(r: Array) -> Array:
  """``mean_batch sum(r^2)``."""
  return _batch_mean_sum(jnp.square(r))


def projections(op, x: Array, w: Array, b: Array) -> tuple[Array, Array]:
  """``f = op(x, W)`` (held constant) and ``b = op(x, B)``."""
  return jax.lax.stop_gradient(op(x, w)), op(x, b)


def reconstruction(op, x: Array, f: Array, b: Array) -> Array:
  """``r = f B^T``: the output ``f`` sent back to the input through B."""
  _, input_vjp = jax.vjp(lambda x_: op(x_, b), x)
  return input_vjp(f)[0]


@dataclasses.dataclass(frozen=True)
class AlignmentLoss(Rule):
  """A rule whose B is a parameter trained on the gradient of `feedback_loss`."""

  state_names = ("feedback_kernel",)
  param_names = ("feedback_kernel",)
  learns_by_gradient = True
  draws_from_kernel_init = True

  def init_state(self, key, kernel, kernel_init):
    return {"feedback_kernel": self.draw(key, kernel.shape, kernel.dtype, kernel_init)}

  def feedback(self, w, state, key, kernel_init):
    return state["feedback_kernel"]

  def feedback_loss(self, op, x, w, b):
    raise NotImplementedError
