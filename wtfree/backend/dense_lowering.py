"""Dense products whose input gradient reads a transposed kernel from memory on XLA:CPU.

The input gradient of ``x @ w`` is ``g @ w.T``. JAX's own vjp writes it as a
dot that contracts ``w``'s last axis. XLA:CPU runs that as fast as ``x @ w``
for one kernel. When the product is batched over a replica axis
(``config.num_seeds``) it runs more slowly than the forward product
(docs/performance.md). `matmul` is ``x @ w`` with a vjp that, on the CPU,
first writes ``w.T`` to memory. An optimisation barrier stops XLA from folding
the transpose back into the dot, so the batched input gradient is a plain
product too. On GPU and TPU the transpose is left to XLA. The products are
those of JAX's vjp; only the order of a float sum can differ.
"""

import functools

import jax
from jax import lax

Array = jax.Array


def _dot(x: Array, w: Array, precision) -> Array:
  return lax.dot_general(x, w, (((x.ndim - 1,), (0,)), ((), ())), precision=precision)


def _transposed_in_memory(w: Array) -> Array:
  return lax.optimization_barrier(w.T)


def _transposed(w: Array) -> Array:
  return lax.platform_dependent(w, cpu=_transposed_in_memory, default=lambda w: w.T)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def matmul(x: Array, w: Array, precision=None) -> Array:
  """``x @ w`` contracting the last axis of ``x`` with the first of the 2-d ``w``.

  Differentiable in reverse mode only (a ``jax.custom_vjp``), as is every
  layer of the feedback primitive.
  """
  return _dot(x, w, precision)


def _matmul_fwd(x, w, precision):
  return _dot(x, w, precision), (x, w)


def _matmul_bwd(precision, residuals, g):
  x, w = residuals
  dx = _dot(g, _transposed(w), precision).astype(x.dtype)
  batch = tuple(range(x.ndim - 1))
  dw = lax.dot_general(x, g, ((batch, batch), ((), ())), precision=precision).astype(w.dtype)
  return dx, dw


matmul.defvjp(_matmul_fwd, _matmul_bwd)
