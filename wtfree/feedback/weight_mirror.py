"""The weight mirror (Akrout et al. 2019): B learns from noise, between training steps.

In a mirror pass each layer's input is replaced by zero-mean unit-variance
noise x, its output is y = phi(z), z = op(x, W), with the batch mean removed,
and B moves towards the covariance of x and y. By Stein's lemma, for
Gaussian x, ``E[x y^T] = W * E[phi'(z)]`` column by column, so the
covariance divided by the batch's mean slope of each output unit estimates
W itself:

    C = mean(x y^T) / mean(phi'(z))          B <- (1 - decay) B + decay C

B's fixed point is W, with W's scale, for linear and ReLU layers alike,
whatever ``decay``. Akrout et al.'s ``B <- B + eta_B mean(x y^T) - lambda_WM
B`` has the fixed point ``(eta_B / lambda_WM) E[phi'] W`` (0.1 W behind a
ReLU with their 0.1 and 0.5): the same direction and speed as ``decay =
lambda_WM``, with the scale left to eta_B.

``decay`` trades two errors. B trails a moving W by about ``1 / decay``
passes of its motion (the lag), and each estimate's noise leaves an angle
(more for a larger ``decay``). The lag is the one that breaks training: it
feeds the layer's recent updates back into the errors sent below it with a
gain of the learning rate over ``decay``. So the rate comes from the lag
(`LAG_STEPS`) and the noise is held at `TARGET_DEGREES` by averaging more
noise per pass where one mirror batch is too few (`WeightMirror.plan`).

Their published fully connected code (Deep-Learning-without-Weight-Transport)
uses neither decay nor centring: ``B <- B + eta_B sum_batch x y^T`` with
``y = phi(z + bias)`` and uniform noise in +-0.05. ``mirror_lr`` selects that form.
"""

from collections.abc import Callable
import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np

from wtfree.backend import counter_prng
from wtfree.feedback.registry import Rule, register

Array = jax.Array

# B follows W with a time constant of at most this many optimizer steps
# (about the horizon of SGD momentum 0.9), whatever its noise.
LAG_STEPS = 10.0
# The angle each layer's estimate noise may leave in B; more noise batches
# per pass, up to MAX_DRAWS, keep it there at the rate the lag asks for.
TARGET_DEGREES = 8.0
MAX_DRAWS = 32
# The largest rate the automatic choice takes (Akrout et al.'s lambda_WM).
MAX_DECAY = 0.5

# A slope below this marks a unit that is dead for the whole mirror batch:
# its W column reaches nothing, so its covariance is left unscaled.
_DEAD = 1e-3


@register
@dataclasses.dataclass(frozen=True)
class WeightMirror(Rule):
  """B starts random and learns only in mirror passes (between training steps).

  Attributes:
    decay: the mirror rate: each pass moves B this fraction of the way to
      the pass's estimate of W. The estimate's noise leaves an angle of
      roughly ``atan(sqrt(2 fan_in / pairs * decay / (2 - decay)))`` behind a
      ReLU, ``pairs`` the input/output pairs each weight sees in a pass (the
      noise batch for a dense layer, times the output positions for a
      conv). None (the default) picks each layer's rate (`plan`): at least
      the one that lets B trail W by no more than `LAG_STEPS` steps, more
      where the noise allows (conv layers, which average over every
      position, up to `MAX_DECAY`). Either way the pass averages as many
      noise batches as hold that angle at `TARGET_DEGREES` (up to
      `MAX_DRAWS`; one where a sweep traces ``decay``).
    noise: 'gaussian' (Akrout et al.) or 'uniform' (zero mean, unit
      variance; about half the cost of a mirror pass on CPU). Behind a ReLU,
      uniform noise moves B's fixed point off W's direction by a relative
      amount of order 0.2 * w^2 per weight (its excess kurtosis, -1.2, times
      w^2 / 6): under 0.2 % for fan-ins above 100.
    noise_scale: the noise's standard deviation (1: unit variance). The
      estimate divides by its square, so B's fixed point stays W; a small
      scale probes the nonlinearity near its operating point.
    mirror_lr: None (the default) mirrors as above. A number selects Akrout
      et al.'s reference code instead: ``B <- B + mirror_lr * sum_batch x
      y^T``, ``y = phi(z + bias)`` neither centred nor divided by the slope,
      and no decay, so that B grows along W without bound (their 0.01, with
      'uniform' noise of scale ``0.05 / sqrt(3)``, i.e. in +-0.05).
  """

  name = "wm"
  state_names = ("kernel",)
  mirrored = True
  learns_between_steps = True
  draws_from_kernel_init = True
  decay: float | None = None
  noise: str = "gaussian"
  noise_scale: float = 1.0
  mirror_lr: float | None = None

  def __post_init__(self):
    if self.noise not in counter_prng.NOISES:
      raise ValueError(f"wm noise {self.noise!r} is not one of {', '.join(counter_prng.NOISES)}")
    if self.decay is not None and not 0.0 < self.decay <= 1.0:
      raise ValueError(f"wm decay={self.decay} is not in (0, 1]: it is the fraction of the way B moves per pass")
    if not self.noise_scale > 0.0:
      raise ValueError(f"wm noise_scale={self.noise_scale} is not positive: it is the noise's standard deviation")
    if self.mirror_lr is not None and self.decay is not None:
      raise ValueError(f"wm mirror_lr={self.mirror_lr} (the reference code's update, which has no decay) and "
                       f"decay={self.decay} contradict: set one")

  def plan(self, w_shape, output_shape, passes: int = 1) -> tuple[float, int]:
    """``(decay, draws)`` of a layer with kernel ``w_shape`` whose mirror pass outputs ``output_shape``.

    The rate per pass is ``decay`` where set; otherwise the larger of the
    lag's rate, ``1 - (1 - 1 / LAG_STEPS) ** (1 / passes)``, and the rate
    that one noise batch allows at `TARGET_DEGREES`. ``draws`` is the
    fewest noise batches per pass (drawn as one batch of ``draws`` times the
    mirror batch) whose estimate leaves at most that angle at this rate, at
    most `MAX_DRAWS`.

    Args:
      w_shape: the forward kernel's shape.
      output_shape: the op's output for one noise batch.
      passes: mirror passes after each optimizer step.
    """
    units = output_shape[-1]
    fan_in = math.prod(w_shape) / units
    pairs = math.prod(output_shape) / units
    tan2 = math.tan(math.radians(TARGET_DEGREES)) ** 2
    if self.decay is not None:
      decay = self.decay
    else:
      q = tan2 * pairs / (2.0 * fan_in)
      lag = 1.0 - (1.0 - 1.0 / LAG_STEPS) ** (1.0 / passes)
      decay = min(MAX_DECAY, max(lag, 2.0 * q / (1.0 + q)))
    if not isinstance(decay, int | float):
      return decay, 1  # A rate traced in a sweep: every replica runs one program, so the draws cannot follow it.
    needed = 2.0 * fan_in * decay / (2.0 - decay) / tan2
    # The small margin keeps float rounding from adding a draw.
    return decay, int(min(MAX_DRAWS, max(1, math.ceil(needed / pairs - 1e-9))))

  def init_state(self, key, kernel, kernel_init):
    return {"kernel": self.draw(key, kernel.shape, kernel.dtype, kernel_init)}

  def feedback(self, w, state, key, kernel_init):
    return state["kernel"]

  def between_steps(self, ctx, w, state):
    b = state["kernel"]
    scale = jnp.asarray(self.noise_scale, ctx.inputs.dtype)
    if self.mirror_lr is not None:
      noise = ctx.noise(self.noise) * scale
      z = ctx.op(noise, w)
      z = z if ctx.bias is None else z + jnp.asarray(ctx.bias, z.dtype)
      _, kernel_vjp = jax.vjp(lambda w_: ctx.op(noise, w_), w)
      (summed,) = kernel_vjp(ctx.activation(z))
      return {"kernel": (b + self.mirror_lr * summed).astype(b.dtype)}
    decay, draws = self.plan(w.shape, jax.eval_shape(ctx.op, ctx.inputs, w).shape, ctx.passes)
    # The draws as one batch, split over the devices like the batch: one product each way and one sum over
    # the devices, where an estimate per draw would sum over the devices once per draw.
    noise = ctx.noise(self.noise, draws) * scale
    estimate = mirror_estimate(ctx.op, noise, w, ctx.activation) / jnp.square(scale)
    return {"kernel": ((1.0 - decay) * b + decay * estimate).astype(b.dtype)}


def mirror_estimate(
    op: Callable[[Array, Array], Array], noise: Array, w: Array, activation: Callable[[Array], Array]
) -> Array:
  """One mirror batch's estimate of W: ``mean(x y^T) / mean(phi'(z))`` per output unit.

  Args:
    op: the layer's op, linear in each argument.
    noise: zero-mean unit-variance input ``[batch, ..., in]``.
    w: the forward kernel.
    activation: the nonlinearity after the layer.

  Returns:
    An array of W's shape whose expectation is W for Gaussian noise. For a
    convolution the covariance of a shared weight averages every
    input/output pair it joins.
  """
  z = op(noise, w)
  y, slope = jax.jvp(activation, (z,), (jnp.ones_like(z),))
  axes = tuple(range(y.ndim - 1))
  y = y - jnp.mean(y, axis=axes, keepdims=True)
  slope = jnp.mean(slope.astype(jnp.float32), axis=axes)
  slope = jnp.where(jnp.abs(slope) > _DEAD, slope, 1.0)
  _, kernel_vjp = jax.vjp(lambda w_: op(noise, w_), w)
  (summed,) = kernel_vjp(y)
  covariance = summed / _pairs(op, noise.shape, y.shape, w)
  return covariance / _per_unit(slope, w.shape).astype(covariance.dtype)


def _per_unit(slope: Array, kernel_shape) -> Array:
  # Output units are the kernel's trailing axes (several for DenseGeneral).
  for k in range(1, len(kernel_shape) + 1):
    if math.prod(kernel_shape[-k:]) == slope.size:
      return slope.reshape(kernel_shape[-k:])
  raise ValueError(f"{slope.size} output units do not match the trailing axes of a kernel {kernel_shape}")


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
