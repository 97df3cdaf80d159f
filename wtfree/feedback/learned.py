"""Rules whose B is learned: Kolen-Pollack and weight mirrors (Akrout et al. 2019)."""

import dataclasses

import jax.numpy as jnp

from wtfree.feedback.registry import Rule, register


@register
@dataclasses.dataclass(frozen=True)
class KolenPollack(Rule):
  """B starts random, receives W's updates and the same decay, and converges to W.

  Kolen-Pollack gives W and B the same update A(t) and the same decay
  lambda_t every step, so whatever A is, B - W only shrinks:

      B_t - W_t = c_t (B_0 - W_0),    c_t = prod_s (1 - lambda_s).

  B is kept in that form: the fixed offset ``B_0 - W_0`` (``offset``, in
  ``feedback``) and the factor c (``offset_scale``, a scalar starting at 1,
  in ``params``), and formed as ``W + c * offset`` where the backward pass
  uses it. `wtfree.optim.make` shrinks c by lambda_t = lr_t * weight_decay /
  (1 - momentum) per step (momentum 0 for Adam), the rate at which SGD's
  decay shrinks a weight that gets no gradient; a hand-built optax chain
  needs `wtfree.optim.kolen_pollack_decay` for it. B thus costs no
  optimizer pass of its own.
  """

  name = "kp"
  state_names = ("offset", "offset_scale")
  param_names = ("offset_scale",)

  def init_state(self, key, kernel, kernel_init):
    b = self.draw(key, kernel.shape, kernel.dtype, kernel_init)
    return {"offset": b - kernel, "offset_scale": jnp.ones((), kernel.dtype)}

  def feedback(self, w, state, key, kernel_init):
    return w + state["offset_scale"].astype(w.dtype) * state["offset"]


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

  def init_state(self, key, kernel, kernel_init):
    return {"kernel": self.draw(key, kernel.shape, kernel.dtype, kernel_init)}

  def feedback(self, w, state, key, kernel_init):
    return state["kernel"]
