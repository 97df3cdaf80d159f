"""Node perturbation (Williams 1992; Werfel et al. 2005): gradients from noise, no feedback path.

Every layer's output gets Gaussian noise ``sigma * xi_l`` at once; the change
of each example's loss, ``dL = L(noisy) - L(clean)``, gives the estimate
``dL/dy_l ~ dL * sigma * xi_l / sigma^2`` and each layer learns by its local
rule ``dW_l = x_l^T (dL/dy_l) / batch``. Nothing travels backwards between
layers (B = 0): the estimate alone reaches every layer, the output layer
included. Parameters of anything but those layers (BatchNorm's scales, plain
flax layers) get no gradient, so a config with BatchNorm is refused. Costs
the clean forward pass, the noisy one and the backward pass of the local sums.
"""

import dataclasses

import jax
import jax.numpy as jnp

from wtfree.feedback import perturbation
from wtfree.feedback.registry import Rule, check_every_layer_local, register


@register
@dataclasses.dataclass(frozen=True)
class NodePerturbation(Rule):
  """Weight gradients from one noisy forward pass beside the clean one (``sigma``: the noise's std)."""

  name = "np"
  sigma: float = 0.01

  def feedback(self, w, state, key, kernel_init):
    return jnp.zeros_like(w)

  def check_run(self, run) -> list[str]:
    warnings = super().check_run(run)
    check_every_layer_local(self, run)
    return warnings

  def value_and_grad(self, objective, params):
    losses, zeros = perturbation.layer_losses(objective, params)
    clean, (aux, _) = losses(params, zeros)
    leaves, tree = jax.tree.flatten(zeros)
    keys = jax.random.split(objective.key, len(leaves))
    noise = tree.unflatten([self.sigma * jax.random.normal(k, p.shape, p.dtype) for k, p in zip(keys, leaves)])
    noisy, _ = losses(params, noise)
    change = jax.lax.stop_gradient(noisy - clean) / clean.shape[0]
    # dL/dy for each example, of the layer output's shape.
    errors = jax.tree.map(lambda xi: perturbation.per_example(change, xi) * xi / self.sigma**2, noise)
    return jnp.mean(clean), perturbation.local_gradients(losses, params, zeros, errors), aux
