"""Rules whose B is learned: Kolen-Pollack and weight mirrors (Akrout et al. 2019)."""

import dataclasses

from wtfree.feedback.registry import Rule, register


@register
@dataclasses.dataclass(frozen=True)
class KolenPollack(Rule):
  """B starts random and receives exactly W's gradient.

  B lives in ``params`` (as ``feedback_kernel``) so that the optimizer gives
  it W's update, momentum and weight decay included; W - B then shrinks with
  the decay and B converges to W.
  """

  name = "kp"
  state_names = ("feedback_kernel",)
  collection = "params"
  learns_feedback = True

  def init_state(self, key, shape, dtype, kernel_init):
    return {"feedback_kernel": self.draw(key, shape, dtype, kernel_init)}

  def feedback(self, w, state, key, kernel_init):
    return state["feedback_kernel"]


NOISES = ("gaussian", "uniform")


@register
@dataclasses.dataclass(frozen=True)
class WeightMirror(Rule):
  """B starts random and changes only in mirror phases (see `wtfree.mirror`).

  In a mirror pass the layer's input is unit Gaussian noise x, its output y
  (after the activation that follows it, batch mean removed), and

      B <- B + eta * mean(x y^T) - decay * B.

  Attributes:
    eta: the mirror learning rate eta_B.
    decay: the mirror weight decay lambda_WM.
    noise: 'gaussian' (Akrout et al.) or 'uniform' (zero mean, unit
      variance; about half the cost of a mirror pass on CPU). Behind a ReLU,
      uniform noise moves B's fixed point off W's direction by a relative
      amount of order 0.2 * w^2 per weight (its excess kurtosis, -1.2, times
      w^2 / 6): under 0.2 % for fan-ins above 100.
  """

  name = "wm"
  state_names = ("kernel",)
  mirrored = True
  eta: float = 0.1
  decay: float = 0.5
  noise: str = "gaussian"

  def __post_init__(self):
    if self.noise not in NOISES:
      raise ValueError(f"wm noise {self.noise!r} is not one of {', '.join(NOISES)}")

  def init_state(self, key, shape, dtype, kernel_init):
    return {"kernel": self.draw(key, shape, dtype, kernel_init)}

  def feedback(self, w, state, key, kernel_init):
    return state["kernel"]
