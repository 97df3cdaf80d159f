"""Sign-concordant rules of Liao et al. 2016: B shares W's signs."""

import dataclasses
import math

import jax
import jax.numpy as jnp

from wtfree.backend import counter_prng
from wtfree.feedback.registry import Rule, register, rms


@register
@dataclasses.dataclass(frozen=True)
class UniformSignConcordant(Rule):
  """B = sign(W) * s (uSF, "sign-symmetry").

  s is ``scale`` times:

  - ``magnitude='rms'``: the root mean square of W in this step, so that
    |B| = |W| for scale 1 (the default);
  - ``magnitude='init_std'``: a constant, the standard deviation of Glorot's
    initializer for W's shape, ``sqrt(2 / (fan_in + fan_out))`` (BioTorch's
    usf; fans count the receptive field, as torch does);
  - ``magnitude='one'``: 1, plain sign(W).
  """

  name = "usf"
  magnitude: str = "rms"

  def __post_init__(self):
    if self.magnitude not in MAGNITUDES:
      raise ValueError(f"usf magnitude {self.magnitude!r} is not one of {', '.join(MAGNITUDES)}")

  def feedback(self, w, state, key, kernel_init):
    if self.magnitude == "rms":
      s = rms(w)
    elif self.magnitude == "init_std":
      s = glorot_std(w.shape)
    else:
      s = 1.0
    return jnp.sign(w) * (s * self.scale)


MAGNITUDES = ("rms", "init_std", "one")


def glorot_std(shape) -> float:
  """``sqrt(2 / (fan_in + fan_out))`` for a kernel ``[*window, in, out]``."""
  receptive = math.prod(shape[:-2])
  return math.sqrt(2.0 / (receptive * (shape[-2] + shape[-1])))


# How the random magnitudes M are drawn: like W, or Liao et al.'s U[0, 1).
MAGNITUDE_DRAWS = ("kernel", "uniform")


@dataclasses.dataclass(frozen=True)
class _RandomMagnitudes(Rule):
  """A sign-concordant rule with random magnitudes M, drawn as ``magnitudes`` says.

  ``magnitudes='kernel'`` (the default): |M| with M drawn like W (the
  layer's kernel initializer, or the rule's ``init``), so |B| is at W's
  scale; ``'uniform'``: M ~ U[0, 1), as in Liao et al.'s slides, whatever
  W's scale. Either times ``scale``.
  """

  magnitudes: str = "kernel"

  def __post_init__(self):
    if self.magnitudes not in MAGNITUDE_DRAWS:
      raise ValueError(f"{self.name} magnitudes {self.magnitudes!r} is not one of {', '.join(MAGNITUDE_DRAWS)}")

  def magnitude(self, key, shape, dtype, kernel_init):
    """|M| of ``shape``, drawn from ``key``."""
    if self.magnitudes == "uniform":
      return self.scale * jax.random.uniform(key, shape, dtype)
    return jnp.abs(self.draw(key, shape, dtype, kernel_init))


@register
@dataclasses.dataclass(frozen=True)
class FixedRandomSignConcordant(_RandomMagnitudes):
  """B = |M| * sign(W), M random and fixed (FRSF)."""

  name = "frsf"
  state_names = ("magnitude",)
  draws_from_kernel_init = True

  def init_state(self, key, kernel, kernel_init):
    return {"magnitude": self.magnitude(key, kernel.shape, kernel.dtype, kernel_init)}

  def feedback(self, w, state, key, kernel_init):
    return state["magnitude"] * jnp.sign(w)


@register
@dataclasses.dataclass(frozen=True)
class BatchwiseRandomSignConcordant(_RandomMagnitudes):
  """B = |M| * sign(W), M redrawn every batch from a step-dependent key (BRSF).

  The key comes from the ``'feedback'`` rng stream of ``Module.apply``, which
  the train step folds with the step number. M is drawn through a
  counter-hash key (`counter_prng.fusable`) so that the draw fuses into B
  instead of being written out as a kernel-sized array first.
  """

  name = "brsf"
  needs_rng = True
  draws_from_kernel_init = True

  def feedback(self, w, state, key, kernel_init):
    return self.magnitude(counter_prng.fusable(key), w.shape, w.dtype, kernel_init) * jnp.sign(w)


@register
@dataclasses.dataclass(frozen=True)
class SignConcordance(_RandomMagnitudes):
  """B = |M| * sign(W) * S with S = +1 with probability p, else -1; M, S fixed.

  p = 1 is FRSF with the same M; p = 0.5 gives random signs.
  """

  name = "sc"
  state_names = ("magnitude", "concordance")
  draws_from_kernel_init = True
  p: float = 1.0

  def __post_init__(self):
    super().__post_init__()
    if not 0.0 <= self.p <= 1.0:
      raise ValueError(f"sc probability p={self.p} is not in [0, 1]")

  def init_state(self, key, kernel, kernel_init):
    # M from the same key as frsf's, so that p = 1 reproduces frsf exactly.
    magnitude = self.magnitude(key, kernel.shape, kernel.dtype, kernel_init)
    agree = jax.random.bernoulli(jax.random.fold_in(key, 1), self.p, kernel.shape)
    return {"magnitude": magnitude, "concordance": jnp.where(agree, 1, -1).astype(kernel.dtype)}

  def feedback(self, w, state, key, kernel_init):
    return state["magnitude"] * state["concordance"] * jnp.sign(w)
