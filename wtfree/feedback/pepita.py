"""PEPITA (Dellaferrera and Kreiman 2022, "Error-driven input modulation").

No backward pass at all. Pass 1 is the plain forward pass, giving the output
error e (dL/dy_hat of each example: softmax minus one-hot for cross
entropy). Pass 2 runs the same network on the modulated input

    x' = x + F e,    F fixed random, n_in x n_out, small,

and with h_l, h'_l the layers' activations in the two passes, the updates
are (W <- W - lr dW)

    dW_l = (h_l - h'_l) h'_{l-1}^T    for hidden layers,
    dW_L = e h'_{L-1}^T               for the output layer.

Each layer's h is its output after the nonlinearity that follows it in the
model (the layer's ``mirror_activation``); the output layer is the one
whose output is the model's. As in the paper's code, F is uniform in
``±sqrt(6 / n_in)`` times ``scale``; it is drawn from a seed kept in the
first layer's state, so it is fixed for a run and differs between seeds.
"""

import dataclasses
import math

import flax
import jax
import jax.numpy as jnp

from wtfree.backend import counter_prng
from wtfree.feedback import step
from wtfree.feedback.registry import Rule, check_every_layer_local, register

Array = jax.Array


def _layers(channel) -> dict:
  """``{layer path: {'output', 'activated', 'seed'}}`` from the step's channel."""
  flat = flax.traverse_util.flatten_dict(flax.core.unfreeze(channel))
  layers: dict = {}
  for path, value in flat.items():
    layers.setdefault(path[:-1], {})[path[-1]] = value
  return layers


@register
@dataclasses.dataclass(frozen=True)
class Pepita(Rule):
  """Updates from the difference of two forward passes, the second on the error-modulated input.

  Attributes:
    scale: F's scale relative to ``sqrt(6 / n_in)`` (the paper's 0.05).
  """

  name = "pepita"
  state_names = ("seed",)
  scale: float = 0.05

  def init_state(self, key, kernel, kernel_init):
    del kernel, kernel_init
    return {"seed": jax.random.key_data(key)}

  def feedback(self, w, state, key, kernel_init):
    return jnp.zeros_like(w)  # Nothing travels back through a layer.

  def signals(self, output, activation, state):
    return {"output": output, "activated": activation(output), "seed": state["seed"]}

  def check_run(self, run) -> list[str]:
    warnings = super().check_run(run)
    check_every_layer_local(self, run)
    return warnings

  def projection(self, seed: Array, n_out: int, n_in: int, dtype=jnp.float32) -> Array:
    """F as ``[n_out, n_in]`` (so that ``x' = x + e F``), drawn from ``seed``."""
    bound = self.scale * math.sqrt(6.0 / n_in)
    key = counter_prng.fusable(jax.random.wrap_key_data(seed))
    return jax.random.uniform(key, (n_out, n_in), dtype, -bound, bound)

  def value_and_grad(self, objective, params):
    outputs, updated = objective.apply(params)
    first = _layers(updated[step.STEP])
    if not first:
      raise ValueError("rule 'pepita' found no layer under it in the model")
    losses = objective.loss(outputs)
    error = jax.grad(lambda o: jnp.sum(objective.loss(o)))(outputs)
    x = objective.inputs[0]
    if not jnp.issubdtype(x.dtype, jnp.floating):
      raise ValueError(f"rule 'pepita' adds F e to the model's input, which here is {x.dtype} (token ids, not "
                       "values to modulate): use another rule for this model")
    batch = x.shape[0]
    seed = first[min(first)]["seed"]
    f = self.projection(seed, math.prod(error.shape[1:]), math.prod(x.shape[1:]), x.dtype)
    modulated = x + (error.reshape(batch, -1) @ f).reshape(x.shape)
    last = [path for path, layer in first.items() if layer["output"] is outputs]
    if not last:
      last = [path for path, layer in first.items() if layer["output"].shape == outputs.shape]
    if len(last) != 1:
      raise ValueError("rule 'pepita' needs the model's output to be one of its layers' outputs (no activation "
                       "or other op after the last layer)")

    def second(p):
      """Pass 2: each layer's output (differentiated) and its activation (not)."""
      _, again = objective.apply(p, inputs=(modulated, *objective.inputs[1:]))
      layers = _layers(again[step.STEP])
      return {path: layer["output"] for path, layer in layers.items()}, {
          path: layer["activated"] for path, layer in layers.items()}

    # One pass 2, pulled back once: no layer sends an error back (B = 0), so
    # each W's gradient is its own delta times its pass-2 input.
    _, pullback, activated = jax.vjp(second, params, has_aux=True)
    deltas = {path: error if path == last[0] else layer["activated"] - activated[path]
              for path, layer in first.items()}
    (grads,) = pullback(jax.tree.map(lambda d: jax.lax.stop_gradient(d) / batch, deltas))
    return jnp.mean(losses), grads, (outputs, updated)
