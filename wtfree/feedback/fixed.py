"""Rules whose B does not follow W: backprop, feedback alignment, shallow."""

import dataclasses

import jax.numpy as jnp

from wtfree.feedback.registry import Rule, register


@register
@dataclasses.dataclass(frozen=True)
class Backprop(Rule):
  """B = W: ordinary backpropagation, the baseline."""

  name = "bp"

  def feedback(self, w, state, key, kernel_init):
    return w


@register
@dataclasses.dataclass(frozen=True)
class FeedbackAlignment(Rule):
  """B fixed and random, drawn once at init (Lillicrap et al. 2016)."""

  name = "fa"
  state_names = ("kernel",)
  draws_from_kernel_init = True

  def init_state(self, key, kernel, kernel_init):
    return {"kernel": self.draw(key, kernel.shape, kernel.dtype, kernel_init)}

  def feedback(self, w, state, key, kernel_init):
    return state["kernel"]


@register
@dataclasses.dataclass(frozen=True)
class Shallow(Rule):
  """B = 0: no error reaches the layers below, only the output layer learns.

  The layers below take no update of any kind: no weight decay, no Batch
  Manhattan step, no momentum (`wtfree.learning.frozen_mask`).
  """

  name = "shallow"
  sends_error = False

  def feedback(self, w, state, key, kernel_init):
    return jnp.zeros_like(w)
