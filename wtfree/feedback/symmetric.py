"""Symmetric alignment (Kunin et al. 2020): B learns towards W through decay and self terms."""

import dataclasses

from wtfree.feedback import losses
from wtfree.feedback.registry import register


@register
@dataclasses.dataclass(frozen=True)
class SymmetricAlignment(losses.AlignmentLoss):
  """B's loss is ``alpha decay(W, B) + beta self(W, B)``.

  Its gradient is ``2 alpha B - beta W``, so B -> (beta / 2 alpha) W: W
  itself at the defaults. Not local: B's update reads W.

  Attributes:
    alpha: the decay coefficient (Neural-Alignment: 1e-3).
    beta: the self coefficient (Neural-Alignment: 2e-3).
  """

  name = "sa"
  alpha: float = 0.01
  beta: float = 0.02

  def feedback_loss(self, op, x, w, b):
    del op, x
    return self.alpha * losses.decay(w, b) + self.beta * losses.self_alignment(w, b)

  def check_run(self, run):
    warnings = super().check_run(run)
    opt = run.optimizer
    if opt.optimizer == "sgd" and not opt.batch_manhattan:
      rate = opt.base_learning_rate * 2 * self.alpha / (1.0 - opt.momentum)
      if rate > RATE_LIMIT:
        warnings.append(
            f"sa: B relaxes towards W at lr * 2 alpha / (1 - momentum) = {rate:.3g} per step, above "
            f"{RATE_LIMIT}, where training diverged under momentum (docs/rules.md); lower "
            "--config.rule_options.alpha and beta together"
        )
    return warnings


# Above this per-step relaxation rate of B, momentum SGD diverged on the embedded default.
RATE_LIMIT = 0.005
