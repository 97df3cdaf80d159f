"""Kolen-Pollack (Akrout et al. 2019): B gets W's updates and a decay, and converges to W."""

import dataclasses

import jax.numpy as jnp

from wtfree.feedback.registry import Rule, register

# Where a loop names no weight decay, B - W keeps ALIGN_SHARE of its random
# start after ALIGN_STEPS steps, whatever the optimizer: aligned within the
# first few hundred steps of a typical run.
ALIGN_STEPS = 200
ALIGN_SHARE = 0.01
DEFAULT_DECAY = 1.0 - ALIGN_SHARE ** (1.0 / ALIGN_STEPS)


@register
@dataclasses.dataclass(frozen=True)
class KolenPollack(Rule):
  """B starts random, receives W's updates and a decay, and converges to W.

  Kolen-Pollack gives W and B the same update A(t) and the same decay
  lambda_t every step, so whatever A is, B - W only shrinks:

      B_t - W_t = c_t (B_0 - W_0),    c_t = prod_s (1 - lambda_s).

  B is kept in that form: the fixed offset ``B_0 - W_0`` and the factor c
  (``offset_scale``, a scalar starting at 1), both in ``feedback``, and
  formed as ``W + c * offset`` where the backward pass uses it. So B follows
  W's updates by construction, under any optimizer, at no cost of its own;
  `between_steps` applies the decay after each optimizer step
  (`wtfree.learning.Learner` runs it, in wtfree's loop and in a user's).

  kp owns its decay. lambda_t is:

  - ``decay``, where it is set;
  - otherwise, where the loop has weight decay, the rate at which that decay
    shrinks a weight with no gradient, ``lr_t * weight_decay / (1 -
    momentum)`` (Akrout et al.: 1e-4 under the learning-rate schedule);
  - otherwise `DEFAULT_DECAY` per step, which leaves `ALIGN_SHARE` of B's
    random start after `ALIGN_STEPS` steps.

  Attributes:
    decay: the per-step decay of B - W; None chooses as above.
  """

  name = "kp"
  state_names = ("offset", "offset_scale")
  learns_between_steps = True
  draws_from_kernel_init = True
  decay: float | None = None

  def __post_init__(self):
    if self.decay is not None and not 0.0 <= self.decay <= 1.0:
      raise ValueError(f"kp decay={self.decay} is not in [0, 1]: it is the fraction of B - W removed per step")

  def init_state(self, key, kernel, kernel_init):
    b = self.draw(key, kernel.shape, kernel.dtype, kernel_init)
    return {"offset": b - kernel, "offset_scale": jnp.ones((), kernel.dtype)}

  def feedback(self, w, state, key, kernel_init):
    return w + state["offset_scale"].astype(w.dtype) * state["offset"]

  def rate(self, weight_decay_rate):
    """The decay lambda of this step, given the loop's weight-decay rate (or None)."""
    if self.decay is not None:
      return self.decay
    return DEFAULT_DECAY if weight_decay_rate is None else weight_decay_rate

  def between_steps(self, ctx, w, state):
    keep = 1.0 - jnp.clip(self.rate(ctx.weight_decay_rate), 0.0, 1.0)
    # Several passes per step share one step's decay.
    keep = keep ** (1.0 / ctx.passes) if ctx.passes != 1 else keep
    scale = state["offset_scale"]
    return {**state, "offset_scale": (scale * keep).astype(scale.dtype)}

  def check_run(self, run):
    warnings = super().check_run(run)
    if self.decay is not None and run.optimizer.weight_decay:
      warnings.append(
          f"kp: decay={self.decay} is set, so B - W decays at that rate and not at the run's "
          "weight-decay rate; drop --config.rule_options.decay to follow the weight decay"
      )
    return warnings

  def report(self, w, state):
    return {"offset_scale": state["offset_scale"]}
