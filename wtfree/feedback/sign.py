"""Sign-concordant rules of Liao et al. 2016: B shares W's signs."""

import dataclasses

import jax
import jax.numpy as jnp

from wtfree.feedback import counter_prng
from wtfree.feedback.registry import Rule, register, rms


@register
@dataclasses.dataclass(frozen=True)
class UniformSignConcordant(Rule):
  """B = sign(W) * s (uSF, "sign-symmetry").

  s is ``scale`` times the root mean square of W when ``magnitude='rms'``
  (so that |B| = |W| for scale 1), or ``scale`` itself when
  ``magnitude='one'``.
  """

  name = "usf"
  magnitude: str = "rms"

  def __post_init__(self):
    if self.magnitude not in ("rms", "one"):
      raise ValueError(f"usf magnitude {self.magnitude!r} is not one of 'rms', 'one'")

  def feedback(self, w, state, key, kernel_init):
    s = rms(w) * self.scale if self.magnitude == "rms" else self.scale
    return jnp.sign(w) * s


@register
@dataclasses.dataclass(frozen=True)
class FixedRandomSignConcordant(Rule):
  """B = |M| * sign(W), M random and fixed (FRSF)."""

  name = "frsf"
  state_names = ("magnitude",)

  def init_state(self, key, kernel, kernel_init):
    return {"magnitude": jnp.abs(self.draw(key, kernel.shape, kernel.dtype, kernel_init))}

  def feedback(self, w, state, key, kernel_init):
    return state["magnitude"] * jnp.sign(w)


@register
@dataclasses.dataclass(frozen=True)
class BatchwiseRandomSignConcordant(Rule):
  """B = |M| * sign(W), M redrawn every batch from a step-dependent key (BRSF).

  The key comes from the ``'feedback'`` rng stream of ``Module.apply``, which
  the train step folds with the step number. M is drawn through a
  counter-hash key (`counter_prng.fusable`) so that the draw fuses into B
  instead of being written out as a kernel-sized array first.
  """

  name = "brsf"
  needs_rng = True

  def feedback(self, w, state, key, kernel_init):
    magnitude = self.draw(counter_prng.fusable(key), w.shape, w.dtype, kernel_init)
    return jnp.abs(magnitude) * jnp.sign(w)


@register
@dataclasses.dataclass(frozen=True)
class SignConcordance(Rule):
  """B = |M| * sign(W) * S with S = +1 with probability p, else -1; M, S fixed.

  p = 1 is FRSF with the same M; p = 0.5 gives random signs.
  """

  name = "sc"
  state_names = ("magnitude", "concordance")
  p: float = 1.0

  def __post_init__(self):
    if not 0.0 <= self.p <= 1.0:
      raise ValueError(f"sc probability p={self.p} is not in [0, 1]")

  def init_state(self, key, kernel, kernel_init):
    # M from the same key as frsf's, so that p = 1 reproduces frsf exactly.
    magnitude = jnp.abs(self.draw(key, kernel.shape, kernel.dtype, kernel_init))
    agree = jax.random.bernoulli(jax.random.fold_in(key, 1), self.p, kernel.shape)
    return {"magnitude": magnitude, "concordance": jnp.where(agree, 1, -1).astype(kernel.dtype)}

  def feedback(self, w, state, key, kernel_init):
    return state["magnitude"] * state["concordance"] * jnp.sign(w)
