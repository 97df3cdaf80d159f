"""Shallow learning: B = 0, so only the output layer learns (Lillicrap et al. 2016's control)."""

import dataclasses

import jax
import jax.numpy as jnp

from wtfree.feedback import step
from wtfree.feedback.registry import Rule, register


@register
@dataclasses.dataclass(frozen=True)
class Shallow(Rule):
  """B = 0: no error reaches the layers below the output layer.

  The layers below take no update of any kind: no weight decay, no Batch
  Manhattan step, no momentum (`frozen`).
  """

  name = "shallow"

  def feedback(self, w, state, key, kernel_init):
    return jnp.zeros_like(w)

  def frozen(self, objective, params):
    """The parameter leaves whose gradient on the objective's batch is exactly zero: the layers below the output."""
    grads = jax.jit(lambda p: self.value_and_grad(objective, p)[1])(params)
    return step.zero_mask(grads)
