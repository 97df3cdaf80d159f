"""Feedback alignment with connections removed (Lillicrap et al. 2016, Fig. 2d).

Two fixed random masks per layer, drawn independently, each keeping an
entry with probability ``keep``: the forward pass uses ``mask * W`` (so the
removed entries of W get no gradient) and the backward pass
``feedback_mask * B0`` with B0 drawn like fa's. As in the paper, a forward
connection then has its reciprocal feedback connection with probability
``keep**2`` (25 % at the default 0.5). ``shared_mask=True`` uses one mask
for both, so a removed connection carries neither the forward signal nor
the feedback.
"""

import dataclasses

import jax

from wtfree.feedback.fixed import FeedbackAlignment
from wtfree.feedback.registry import register


@register
@dataclasses.dataclass(frozen=True)
class SparseFeedbackAlignment(FeedbackAlignment):
  """fa on a sparse connectivity: W and B each keep an entry w.p. ``keep``, by independent masks.

  Attributes:
    keep: the fraction of entries each mask keeps.
    shared_mask: one mask for W and B (the same connections removed from
      both) instead of two independent ones.
  """

  name = "fa_sparse"
  state_names = ("kernel", "mask", "feedback_mask")
  keep: float = 0.5
  shared_mask: bool = False

  def __post_init__(self):
    if not 0.0 < self.keep <= 1.0:
      raise ValueError(f"fa_sparse keep={self.keep} is not in (0, 1]: the fraction of connections kept")

  def init_state(self, key, kernel, kernel_init):
    def bernoulli(i):
      return jax.random.bernoulli(jax.random.fold_in(key, i), self.keep, kernel.shape).astype(kernel.dtype)

    mask = bernoulli(1)
    return {
        "kernel": self.draw(key, kernel.shape, kernel.dtype, kernel_init),
        "mask": mask,
        "feedback_mask": mask if self.shared_mask else bernoulli(2),
    }

  def forward(self, w, state):
    return w * state["mask"]

  def feedback(self, w, state, key, kernel_init):
    return state["kernel"] * state["feedback_mask"]
