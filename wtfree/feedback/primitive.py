"""One custom_vjp primitive for every op that is linear in its input.

The forward pass is ``op(x, w)``. The backward pass keeps backprop's local
weight gradient and sends the error back through a feedback kernel ``b`` of
``w``'s shape instead of ``w`` itself:

    dx = vjp of op(., b) at g        dw = vjp of op(x, .) at g

``b``'s cotangent is zero, or, for rules whose B learns by the gradient of a
local loss (the alignment losses), the gradient in ``b`` of that loss, taken
on the layer's own input: ``db = d loss(op, x, w, b) / db``.
"""

from collections.abc import Callable, Sequence
import functools

import jax
from jax import lax
import jax.numpy as jnp

from wtfree.backend import conv_lowering
from wtfree.backend import dense_lowering

Array = jax.Array
LinearOp = Callable[[Array, Array], Array]


FeedbackLoss = Callable[[LinearOp, Array, Array, Array], Array]


def linear(op: LinearOp, x: Array, w: Array, b: Array, loss: FeedbackLoss | None = None) -> Array:
  """Applies ``op(x, w)`` and backpropagates the input error through ``b``.

  Args:
    op: a function linear in its first argument (and in its second), e.g.
      a matmul, a convolution or an einsum.
    x: the input.
    w: the forward kernel.
    b: the feedback kernel, same shape and dtype as ``w``.
    loss: ``loss(op, x, w, b)``, a local loss whose gradient in ``b`` is
      ``b``'s cotangent; None gives ``b`` a zero cotangent.

  Returns:
    ``op(x, w)``.
  """
  return _linear(op, loss, x, w, b)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1))
def _linear(op, loss, x, w, b):
  del loss, b
  return op(x, w)


def _linear_fwd(op, loss, x, w, b):
  # Only x and b are kept (op is linear in w, so dw needs no w), and w only
  # where B's loss needs it.
  return op(x, w), (x, b, None if loss is None else w)


def _linear_bwd(op, loss, residuals, g):
  x, b, w = residuals
  _, input_vjp = jax.vjp(lambda x_: op(x_, b), x)
  (dx,) = input_vjp(g)
  # The vjp of a linear map does not depend on where it is taken, so b
  # (w's shape and dtype) stands in for w.
  _, kernel_vjp = jax.vjp(lambda w_: op(x, w_), b)
  (dw,) = kernel_vjp(g)
  if loss is None:
    return dx, dw, jnp.zeros_like(b)
  db = jax.grad(lambda b_: loss(op, x, w, b_).astype(jnp.float32))(b)
  return dx, dw, db.astype(b.dtype)


_linear.defvjp(_linear_fwd, _linear_bwd)


def dense_op(x: Array, w: Array, *, precision=None) -> Array:
  """``x @ w`` contracting the last axis of ``x`` with the first of ``w``.

  Its input gradient reads ``w`` transposed in memory on the CPU, which is
  faster when the product is vmapped over replicas (`dense_lowering`).
  """
  return dense_lowering.matmul(x, w, precision)


def _tuple(value: int | Sequence[int], n: int) -> tuple[int, ...]:
  if isinstance(value, int):
    return (value,) * n
  value = tuple(value)
  if len(value) != n:
    raise ValueError(f"expected {n} spatial values, got {value}")
  return value


def conv_op(
    x: Array,
    w: Array,
    *,
    strides: int | Sequence[int] = 1,
    padding: str | Sequence[tuple[int, int]] = "SAME",
    input_dilation: int | Sequence[int] = 1,
    rhs_dilation: int | Sequence[int] = 1,
    feature_group_count: int = 1,
    precision=None,
) -> Array:
  """An N-d convolution in flax's layout: x ``N...C``, w ``...IO``.

  2-d convolutions without dilation or feature groups go through
  `conv_lowering.conv2d`, which picks a faster lowering per direction on the
  CPU; the rest, and every convolution on GPU and TPU, are XLA's own.
  """
  spatial = w.ndim - 2
  if isinstance(padding, str):
    if padding not in ("SAME", "VALID"):
      raise ValueError(f"padding {padding!r} is not one of 'SAME', 'VALID' or a sequence of pairs")
  elif isinstance(padding, int):
    padding = [(padding, padding)] * spatial
  else:
    padding = [(p, p) if isinstance(p, int) else tuple(p) for p in padding]
  strides = _tuple(strides, spatial)
  input_dilation = _tuple(input_dilation, spatial)
  rhs_dilation = _tuple(rhs_dilation, spatial)
  undilated = set(input_dilation) == set(rhs_dilation) == {1}
  padding_is_nonnegative = isinstance(padding, str) or min(min(p) for p in padding) >= 0
  if spatial == 2 and undilated and feature_group_count == 1 and padding_is_nonnegative:
    return conv_lowering.conv2d(x, w, strides=strides, padding=padding, precision=precision)
  dims = "".join("HWDXYZ"[i] for i in range(spatial))
  dimension_numbers = lax.conv_dimension_numbers(
      x.shape, w.shape, (f"N{dims}C", f"{dims}IO", f"N{dims}C")
  )
  return lax.conv_general_dilated(
      x,
      w,
      window_strides=strides,
      padding=padding,
      lhs_dilation=input_dilation,
      rhs_dilation=rhs_dilation,
      dimension_numbers=dimension_numbers,
      feature_group_count=feature_group_count,
      precision=precision,
  )
