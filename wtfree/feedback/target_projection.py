"""Direct random target projection (Frenkel, Lefebvre and Bol 2021, "Learning without feedback").

The output layer learns from the output error e as usual. Every hidden
layer's learning signal is a fixed random projection of the one-hot target
y* instead of the error:

    delta_l = (B_l y*) * f'(a_l),    dW_l = delta_l h_{l-1}^T,

with B_l fixed and random (its sign is arbitrary, as B_l has zero mean).
Only the label is needed, so each layer could update as soon as its own
forward pass is done: no weight transport and no update locking.

It reuses dfa's taps (`wtfree.feedback.direct`): each layer's input is
tapped and receives ``B signal``, where dfa's signal is e and drtp's is y*,
scaled as the mean loss scales e (by the number of loss terms).
"""

import dataclasses

from wtfree.feedback import direct
from wtfree.feedback.registry import register


@register
@dataclasses.dataclass(frozen=True)
class DirectRandomTargetProjection(direct.DirectFeedbackAlignment):
  """Every hidden layer learns from ``B y*``: the target, not the error, projected by a fixed random B."""

  name = "drtp"

  def check_run(self, run) -> list[str]:
    warnings = super().check_run(run)
    activation = run.model.options.get("activation")
    if activation not in (None, "tanh", "sigmoid"):
      warnings.append(
          f"rule 'drtp' pushes hidden layers along B y* at every step, which never shrinks as the net learns; with "
          f"the unbounded activation {activation!r} the hidden weights grow without bound: Frenkel et al. use "
          "bounded units (--config.model_options.activation=tanh)")
    return warnings

  def connect(self, outputs, channel, objective):
    """The outputs joined to the layers' taps, each receiving the projected target."""
    terms = outputs.size // outputs.shape[-1]
    return direct.connect(outputs, channel, self, signal=objective.one_hot_targets(outputs) / terms)
