"""Information alignment (Kunin et al. 2020): amp, null and decay terms, all local."""

import dataclasses

from wtfree.feedback import losses
from wtfree.feedback.registry import register


@register
@dataclasses.dataclass(frozen=True)
class InformationAlignment(losses.AlignmentLoss):
  """B's loss is ``alpha amp(f, b) + beta null(f B^T) + gamma decay(W, B)``.

  With ``f = x W``, ``b = x B`` and ``r = f B^T`` its gradient is
  ``(-alpha x^T f + 2 beta r^T f) / batch + 2 gamma B``: amp pulls B towards
  the input-output correlation, null keeps B from amplifying what it sends
  back, decay bounds it.

  Attributes:
    alpha: the amp coefficient (Neural-Alignment: 2e-3).
    beta: the null coefficient (Neural-Alignment: 1e-3).
    gamma: the decay coefficient (Neural-Alignment: 1e-3).
  """

  name = "ia"
  alpha: float = 0.02
  beta: float = 0.01
  gamma: float = 0.01

  def feedback_loss(self, op, x, w, b):
    f, bx = losses.projections(op, x, w, b)
    r = losses.reconstruction(op, x, f, b)
    return self.alpha * losses.amp(f, bx) + self.beta * losses.null(r) + self.gamma * losses.decay(w, b)

  def check_run(self, run):
    warnings = super().check_run(run)
    if run.model.options.get("batch_norm") is False:
      warnings.append(
          "ia: B settles in proportion to each layer's input covariance and its null term grows "
          "with the square of the outputs, so without BatchNorm it diverged on the digits MLP "
          "(docs/rules.md); use --config.model_options.batch_norm=True"
      )
    return warnings
