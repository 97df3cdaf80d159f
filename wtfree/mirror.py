"""The weight-mirror phase of Akrout et al. 2019.

In a mirror pass every ``wm`` layer replaces its input by unit Gaussian noise
x (or unit-variance uniform noise, the rule's ``noise='uniform'``), computes
y = activation(op(x, W)) with the batch mean removed, and moves B towards the
covariance of x and y, which is proportional to W:

    B <- B + eta * mean(x y^T) - decay * B
"""

from collections.abc import Callable
import math

import jax
import jax.numpy as jnp
import numpy as np

from wtfree import feedback

Array = jax.Array


def noise(key: Array, shape, dtype=jnp.float32, kind: str = "gaussian") -> Array:
  """Zero-mean, unit-variance noise for a mirror pass, through a counter-hash key.

  'gaussian' is N(0, 1) (``jax.random.normal``); 'uniform' is
  U(-sqrt(3), sqrt(3)), which skips the inverse error function: on CPU that
  function is about 40 % of a Gaussian mirror pass on ResNet-20 (see
  docs/performance.md).
  """
  key = feedback.fusable(key)
  if kind == "gaussian":
    return jax.random.normal(key, shape, dtype)
  if kind == "uniform":
    return (jax.random.uniform(key, shape, jnp.float32, -1.0, 1.0) * math.sqrt(3.0)).astype(dtype)
  raise ValueError(f"mirror noise {kind!r} is not one of 'gaussian', 'uniform'")


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
  pairs = _pairs(op, noise.shape, y.shape, w)
  return b + eta * summed / pairs - decay * b


def _pairs(op, noise_shape, y_shape, w: Array) -> Array | float:
  """The number of input/output pairs each weight of ``w`` joins in ``op``.

  The batch for a dense layer; for a convolution fewer at the kernel's
  edges, where padding feeds zeros, so dividing by a single count would
  shrink B's border weights. Every example joins the same pairs, so one
  example's count times the batch is exact. The count depends on shapes
  only, so it is taken once while tracing: where it is the same for every
  weight (dense layers, VALID or 1x1 convolutions) the program gets a
  scalar; elsewhere it computes the count, at 1/batch the cost of the
  forward op, rather than carry a kernel-sized constant.
  """

  def per_example(w_):
    one = jnp.ones((1, *noise_shape[1:]), w_.dtype)
    _, count_vjp = jax.vjp(lambda v: op(one, v), w_)
    (count,) = count_vjp(jnp.ones((1, *y_shape[1:]), w_.dtype))
    return count

  batch = noise_shape[0]
  with jax.ensure_compile_time_eval():
    counts = np.asarray(per_example(jnp.zeros(w.shape, w.dtype)))
  if np.all(counts == counts.flat[0]):
    return max(float(counts.flat[0]) * batch, 1.0)
  return jnp.maximum(per_example(w) * batch, 1.0)


def make_mirror_fn(
    model,
    input_shape: tuple[int, ...],
    batch_size: int,
    passes: int = 1,
    input_sharding=None,
) -> Callable:
  """A function ``(variables, rng) -> variables`` running mirror passes.

  Every ``wm`` layer of ``model`` draws its own noise of its input's shape
  (``batch_size`` examples) and updates its B; W, the BatchNorm statistics and
  all other collections are left as they are.

  Args:
    model: a wtfree model whose ``__call__(x, *, train, mirror_pass)``
      threads ``mirror_pass`` to its layers.
    input_shape: one example's shape.
    batch_size: the mirror batch (global, across devices).
    passes: mirror passes per call, each with fresh noise.
    input_sharding: sharding of the placeholder input, e.g. the batch
      sharding of the train step, so that the noise is drawn sharded.

  Returns:
    The mirror function; pure, so it can run inside a jitted train step.
  """

  def one_pass(i, variables, rng):
    placeholder = jnp.zeros((batch_size, *input_shape), jnp.float32)
    if input_sharding is not None:
      placeholder = jax.lax.with_sharding_constraint(placeholder, input_sharding)
    _, updated = model.apply(
        variables,
        placeholder,
        train=False,
        mirror_pass=True,
        rngs={"mirror": jax.random.fold_in(rng, i)},
        mutable=["feedback"],
    )
    return {**variables, "feedback": updated["feedback"]}

  def mirror(variables, rng):
    if "feedback" not in variables:
      return variables
    # Unrolled: XLA:CPU runs convolutions inside a while loop many times slower.
    for i in range(passes):
      variables = one_pass(i, variables, rng)
    return variables

  return mirror
