"""The weight-mirror phase of Akrout et al. 2019.

In a mirror pass every ``wm`` layer replaces its input by unit Gaussian noise
x, computes y = activation(op(x, W)) with the batch mean removed, and moves B
towards the covariance of x and y, which is proportional to W:

    B <- B + eta * mean(x y^T) - decay * B
"""

from collections.abc import Callable

import jax
import jax.numpy as jnp

Array = jax.Array


def mirrored_feedback(
    op: Callable[[Array, Array], Array],
    noise: Array,
    w: Array,
    b: Array,
    activation: Callable[[Array], Array],
    eta: float,
    decay: float,
) -> Array:
  """One weight-mirror update of the feedback kernel ``b``.

  Args:
    op: the layer's op, linear in each argument.
    noise: zero-mean unit-variance input ``[batch, ..., in]``.
    w: the forward kernel.
    b: the feedback kernel before the update.
    activation: the nonlinearity after the layer.
    eta: mirror learning rate.
    decay: mirror weight decay.

  Returns:
    ``b + eta * cov(x, y) - decay * b``, where for a convolution the
    covariance of a shared weight averages every input/output pair it joins.
  """
  y = activation(op(noise, w))
  y = y - jnp.mean(y, axis=tuple(range(y.ndim - 1)), keepdims=True)
  _, kernel_vjp = jax.vjp(lambda w_: op(noise, w_), w)
  (summed,) = kernel_vjp(y)
  # Each weight joins one input/output pair per example and output position.
  pairs = y.size // y.shape[-1]
  return b + eta * summed / pairs - decay * b
