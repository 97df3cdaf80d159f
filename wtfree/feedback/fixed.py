"""Rules whose B is W or fixed: backprop and feedback alignment."""

import dataclasses

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
