"""Feedback alignment with connections removed (Lillicrap et al. 2016, Fig. 2d).

One fixed random mask per layer keeps each connection with probability
``keep``; a removed connection carries neither the forward signal nor the
feedback: the forward pass uses ``mask * W`` (so the removed entries of W
get no gradient) and the backward pass ``mask * B0`` with B0 drawn like fa's.
"""

import dataclasses

import jax

from wtfree.feedback.fixed import FeedbackAlignment
from wtfree.feedback.registry import register


@register
@dataclasses.dataclass(frozen=True)
class SparseFeedbackAlignment(FeedbackAlignment):
  """fa on a sparse connectivity: W and B share one fixed mask, each entry kept w.p. ``keep``."""

  name = "fa_sparse"
  state_names = ("kernel", "mask")
  keep: float = 0.5

  def __post_init__(self):
    if not 0.0 < self.keep <= 1.0:
      raise ValueError(f"fa_sparse keep={self.keep} is not in (0, 1]: the fraction of connections kept")

  def init_state(self, key, kernel, kernel_init):
    mask = jax.random.bernoulli(jax.random.fold_in(key, 1), self.keep, kernel.shape).astype(kernel.dtype)
    return {"kernel": self.draw(key, kernel.shape, kernel.dtype, kernel_init), "mask": mask}

  def forward(self, w, state):
    return w * state["mask"]

  def feedback(self, w, state, key, kernel_init):
    return state["kernel"] * state["mask"]
