"""Direct feedback alignment (Nøkland 2016): the output error, sent to every layer.

Under ``dfa`` a layer sends nothing back through its own input (its input
error is zero). Instead it records a *tap*: its input x and the seed of a
fixed random map B. `connect` joins the taps to the network's output without
changing its value; in the backward pass it receives the output error e and
hands every tapped input the error ``B e`` (B of shape ``[n_out, size of one
example of x]``). The tap at layer l+1's input lies after layer l's
activation, BatchNorm and residual additions, so the ordinary local backward
of those turns ``B e`` into ``(B e) * phi'(a_l)`` at layer l's output, the
signal of Nøkland's equations; no signal crosses a weight on the way down.

B is never stored: it is drawn from its seed through a counter-hash key each
time it is needed, so it costs no memory, and it needs no knowledge of the
output size when the model is initialised.

Sequence models (a language model's output ``[batch, length, vocab]``, its
layers' inputs ``[batch, length, width]``) share position axes between the
output and the taps: there, by default, the error at each position reaches
the same position of each tapped input through one B ``[vocab, width]``
(Launay et al. 2020's per-token projection), rather than every position's
error reaching every position through one B the size of both sequences.
"""

from collections.abc import Mapping
import dataclasses
import functools
import math
from typing import ClassVar

from absl import logging
import flax
import jax
import jax.numpy as jnp
import numpy as np

from wtfree.backend import counter_prng
from wtfree.feedback.registry import Rule, get_rule, register

Array = jax.Array


@register
@dataclasses.dataclass(frozen=True)
class DirectFeedbackAlignment(Rule):
  """Every layer's input error is ``B e``: e the output error, B fixed and random.

  ``init`` draws B as ``init(key, (n_out, n_in), dtype)``; by default
  N(0, 1/n_in), so that ``B e`` over a layer's n_in inputs has about the norm
  of e, as the error at every layer would if the layers kept it.

  Attributes:
    share_positions: where the output ``[batch, *P, n_out]`` and a tapped
      input ``[batch, *P, n_in]`` have the same position axes P (sequence
      models), send each position's error to that position only, through
      one B ``[n_out, n_in]``. False, or where the axes differ (an image
      classifier's ``[batch, classes]`` output), B maps the whole flattened
      output error to the whole flattened input.
  """

  name = "dfa"
  state_names = ("seed",)
  broadcasts_error: ClassVar[bool] = True

  share_positions: bool = True

  def init_state(self, key, kernel, kernel_init):
    del kernel, kernel_init
    return {"seed": jax.random.key_data(key)}

  def feedback(self, w, state, key, kernel_init):
    raise TypeError(f"{self.name} has no feedback kernel of W's shape; its error comes from `connect`")

  def connect(self, outputs, channel, objective):
    """The outputs joined to the layers' taps: each tapped input's error is ``B e``."""
    del objective
    return connect(outputs, channel, self)

  def feedback_maps(self, channel, output_shape):
    return broadcast_maps(channel, output_shape, self)

  def broadcast_map(self, seed: Array, n_out: int, n_in: int, dtype=jnp.float32) -> Array:
    """The fixed ``[n_out, n_in]`` map B drawn from a layer's ``seed``."""
    key = counter_prng.fusable(jax.random.wrap_key_data(seed))
    if self.init is not None:
      return self.scale * self.init(key, (n_out, n_in), dtype)
    return (self.scale / math.sqrt(n_in)) * jax.random.normal(key, (n_out, n_in), dtype)

  def map_shape(self, output_shape, tap_shape) -> tuple[int, int, bool]:
    """``(n_out, n_in, per_position)`` of the map from an output to a tap (shapes with their batch axis)."""
    if self.share_positions and len(output_shape) > 2 and tuple(tap_shape[1:-1]) == tuple(output_shape[1:-1]):
      return output_shape[-1], tap_shape[-1], True
    return math.prod(output_shape[1:]), math.prod(tap_shape[1:]), False


def taps(collection: Mapping) -> dict[str, list[tuple[Array, Array]]]:
  """The taps in the step's channel (`step.STEP`): ``{layer: [(input, seed), ...]}``."""
  flat = flax.traverse_util.flatten_dict(flax.core.unfreeze(collection))
  return {"/".join(path[:-1]): list(value) for path, value in flat.items() if path[-1] == "taps"}


# Above this many entries in all layers' maps, `connect` warns: dense dfa then
# costs more than backprop (ResNet-50 on 224x224 with 1000 classes: 1.1e10).
LARGE_MAPS = 2 * 10**9


def map_entries(collection: Mapping, output_shape, rule: "Rule | str" = "dfa") -> int:
  """Entries of all of the layers' broadcast maps (n_out x n_in, summed), for outputs of ``output_shape`` (batch first)."""
  rule = get_rule(rule)
  output_shape = tuple(output_shape)
  shapes = [rule.map_shape(output_shape, x.shape)[:2] for layer_taps in taps(collection).values() for x, _ in layer_taps]
  return sum(n_out * n_in for n_out, n_in in shapes)


def connect(outputs: Array, collection: Mapping, rule: "Rule | str" = "dfa", signal: Array | None = None) -> Array:
  """Returns ``outputs`` unchanged, joined to the taps for the backward pass.

  Args:
    outputs: the network's output ``[batch, ...]``; its cotangent is e.
    collection: the step's channel of the same apply (`step.STEP`, made
      mutable).
    rule: the rule the layers were built with (its ``init`` and ``scale``
      draw B).
    signal: what B maps to the taps in place of e, of the outputs' shape
      (drtp's target); the outputs' own cotangent still reaches the layer
      that made them.

  Returns:
    ``outputs``; the gradient of anything computed from it reaches each
    tapped input as ``B e`` (``B signal``). With no taps this is the
    identity. Warns (when traced) if the maps together exceed `LARGE_MAPS`
    entries.
  """
  pairs = [pair for layer_taps in taps(collection).values() for pair in layer_taps]
  if not pairs:
    return outputs
  rule = get_rule(rule)
  if not rule.broadcasts_error:
    raise ValueError(f"connect needs the rule the tapped layers use (dfa, drtp), got {rule.name!r}")
  inputs = tuple(x for x, _ in pairs)
  seeds = tuple(seed for _, seed in pairs)
  shapes = tuple((x.shape, np.dtype(x.dtype)) for x in inputs)
  entries = map_entries(collection, outputs.shape, rule)
  if entries > LARGE_MAPS:
    logging.warning(
        "dfa: the broadcast maps of this model hold %.1e entries (outputs x tapped input sizes), "
        "more flops and memory than backprop; dfa suits models with few outputs", entries
    )
  signal = jnp.zeros((0,), outputs.dtype) if signal is None else jax.lax.stop_gradient(signal)
  return _broadcast(rule, shapes, outputs, inputs, seeds, signal)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1))
def _broadcast(rule, shapes, outputs, inputs, seeds, signal):
  del rule, shapes, inputs, seeds, signal
  return outputs


def _broadcast_fwd(rule, shapes, outputs, inputs, seeds, signal):
  del rule, shapes, inputs
  return outputs, (seeds, signal)


def _broadcast_bwd(rule, shapes, residuals, cotangent):
  seeds, signal = residuals
  e = cotangent if signal.size == 0 else signal.astype(cotangent.dtype)
  batch = e.shape[0]
  errors = []
  for (shape, dtype), seed in zip(shapes, seeds):
    if shape[0] != batch:
      raise ValueError(f"a dfa tap of shape {shape} does not share the output's batch of {batch}")
    n_out, n_in, per_position = rule.map_shape(e.shape, shape)
    b = rule.broadcast_map(seed, n_out, n_in, e.dtype)
    error = e @ b if per_position else e.reshape(batch, -1) @ b
    errors.append(error.reshape(shape).astype(dtype))
  no_seed_cotangent = tuple(np.zeros(s.shape, jax.dtypes.float0) for s in seeds)
  return cotangent, tuple(errors), no_seed_cotangent, jnp.zeros_like(signal)


_broadcast.defvjp(_broadcast_fwd, _broadcast_bwd)


def broadcast_maps(collection: Mapping, output_shape, rule: "Rule | str" = "dfa") -> dict[str, Array]:
  """Each tapped layer's B, ``{layer: [n_out, n_in]}``, for metrics (``output_shape`` with its batch axis)."""
  rule = get_rule(rule)
  maps = {}
  for layer, layer_taps in taps(collection).items():
    x, seed = layer_taps[0]
    n_out, n_in, _ = rule.map_shape(tuple(output_shape), x.shape)
    maps[layer] = rule.broadcast_map(seed, n_out, n_in)
  return maps
