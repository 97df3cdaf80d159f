"""Activation alignment (Kunin et al. 2020): B's projection of the input matches W's."""

import dataclasses

from wtfree.feedback import losses
from wtfree.feedback.registry import register


@register
@dataclasses.dataclass(frozen=True)
class ActivationAlignment(losses.AlignmentLoss):
  """B's loss is ``alpha sparse(f, b) + beta amp(f, b)`` on the layer's input.

  With ``f = x W`` and ``b = x B`` its gradient is ``(2 alpha x^T x B - beta
  x^T x W) / batch``, so B -> (beta / 2 alpha) W where the inputs span the
  layer's input space. Uses the layer's input and output only, but the
  output f is W's projection, so it is not local in the strict sense.

  Attributes:
    alpha: the sparse coefficient (Neural-Alignment: 1e-3).
    beta: the amp coefficient (Neural-Alignment: 2e-3).
  """

  name = "aa"
  alpha: float = 0.01
  beta: float = 0.02

  def feedback_loss(self, op, x, w, b):
    f, bx = losses.projections(op, x, w, b)
    return self.alpha * losses.sparse(f, bx) + self.beta * losses.amp(f, bx)
