"""What a rule does in the train step, beyond its layers' backward pass.

Every train step, wtfree's own and a user's, goes through
`wtfree.learning.Learner`, which asks the model's rules, through hooks of
`Rule` with defaults that add nothing:

- how the loss's gradients are formed (`Rule.value_and_grad`, given an
  `Objective`): by default backprop through each layer's B; dfa and drtp
  join the layers to the output (`Rule.connect`), np and fg estimate the
  gradients from perturbations, pepita runs a second forward pass;
- which parameters take no update at all (`Rule.frozen`: shallow's lower
  layers);
- what each layer learns after the optimizer's update (`Rule.between_steps`:
  kp's decay, wm's mirror), run with this step's `BetweenSteps`.

One rule of a model owns the step (`owner`): the one that overrides a step
hook (shallow's head may be bp's: shallow still owns the step), or any of
them when none does.
"""

from collections.abc import Callable, Iterable
import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from wtfree.feedback.registry import Rule, get_rule

Array = jax.Array

# The collection through which layers hand their rule's step what it needs
# (dfa's taps, pepita's activations); mutable only in the Learner's applies.
STEP = "step"


@dataclasses.dataclass(frozen=True)
class BetweenSteps:
  """The settings of one step's between-steps learning, handed to every layer.

  Attributes:
    passes: between-steps passes after each optimizer step (wm mirrors
      once per pass; kp spreads one step's decay over them).
    weight_decay_rate: the fraction by which the loop's weight decay shrinks
      a weight that gets no gradient in this step (``lr_t * weight_decay /
      (1 - momentum)`` in wtfree's loop), or None where the loop has none.
    sharding: how the passes' batch is split over devices (the train
      step's batch sharding), for the noise each layer draws; None to let
      XLA place it (on one device, or copied to every device).
  """

  passes: int = 1
  weight_decay_rate: Array | float | None = None
  sharding: Any = None


@dataclasses.dataclass(frozen=True)
class Objective:
  """One batch's loss, as a rule's `Rule.value_and_grad` differentiates it.

  Attributes:
    run: ``run(params, variables, inputs, rule, mutable, capture)`` applies
      the model (its rule replaced by ``rule`` where not None) and returns
      ``(outputs, updated collections)``; the Learner builds it.
    loss: the per-example loss of the outputs (the targets bound).
    inputs: the model's inputs, a tuple.
    targets: the targets as the loop gave them (class labels, or arrays of
      the outputs' shape).
    key: a key for the rule's own noise in this step.
    owner: the rule that owns the step (`owner`), whose `Rule.connect`
      joins the outputs to the layers.
  """

  run: Callable[..., tuple[Any, dict]]
  loss: Callable[[Any], Array]
  inputs: tuple
  targets: Any
  key: Array
  owner: Rule

  def apply(self, params, *, variables: dict | None = None, inputs: tuple | None = None, rule: Rule | None = None,
            mutable: Iterable[str] = (), capture: bool = False) -> tuple[Any, dict]:
    """The model's outputs, joined to its layers by the owner's `Rule.connect`, and the updated collections.

    Args:
      params: the parameters to apply.
      variables: collections to add to the model's (e.g. perturbations).
      inputs: inputs in place of the batch's (pepita's modulated input).
      rule: the rule to run the model under in place of its own.
      mutable: collections to return beside the batch statistics.
      capture: also return each module's output in ``intermediates``.
    """
    outputs, updated = self.run(params, variables or {}, self.inputs if inputs is None else inputs, rule,
                                (*mutable, STEP), capture)
    channel = updated.pop(STEP, {})
    return self.owner.connect(outputs, channel, self), {**updated, STEP: channel}

  def mean_loss(self, outputs) -> Array:
    """The batch's mean loss."""
    return jnp.mean(self.loss(outputs))

  def one_hot_targets(self, outputs: Array) -> Array:
    """The targets as arrays of the outputs' shape: one-hot class labels, or as given."""
    targets = jnp.asarray(self.targets)
    if targets.shape == outputs.shape:
      return targets.astype(outputs.dtype)
    return jax.nn.one_hot(targets, outputs.shape[-1], dtype=outputs.dtype)


def owner(rules: Iterable[Rule]) -> Rule:
  """The rule whose step hooks a model with ``rules`` runs.

  Raises:
    ValueError: when two rules of the model each form the step their own way.
  """
  rules = sorted(set(rules), key=lambda r: r.name)
  own = sorted({r for r in rules if r.owns_step()}, key=lambda r: r.name)
  if len({type(r) for r in own}) > 1:
    raise ValueError(f"rules {[r.name for r in own]} each form the train step their own way; one model can "
                     "hold only one of them (with other layers under rules that backprop through B)")
  if own:
    return own[0]
  if rules:
    return rules[0]
  return get_rule("bp")  # A model with no rule's layers: plain backprop.


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def needs_learner(name: str, y: Array) -> Array:
  """``y``, whose backward pass refuses to run: a rule that owns its step, differentiated outside the Learner."""
  del name
  return y


def _needs_learner_fwd(name, y):
  del name
  return y, None


def _needs_learner_bwd(name, _, g):
  del g
  raise ValueError(
      f"rule {name!r} forms its gradients in its own step, which a plain jax.grad of the model skips (only the "
      "output layer would learn): take the gradients from wtfree.learning.Learner.value_and_grad(loss_fn, "
      "variables, x, targets=y, key=key) instead")


needs_learner.defvjp(_needs_learner_fwd, _needs_learner_bwd)


def zero_mask(grads) -> Any:
  """True at every leaf whose gradient is exactly zero in every entry (concrete gradients)."""
  return jax.tree.map(lambda g: bool(np.all(np.asarray(g) == 0)), jax.device_get(grads))


def changes_between_steps(rules: Iterable[Rule]) -> bool:
  """Whether any of ``rules`` learns between optimizer steps (so a between-steps pass does anything)."""
  return any(r.learns_between_steps for r in rules)


def freezes(rules: Iterable[Rule]) -> bool:
  """Whether the step's owner among ``rules`` may keep parameters from any update (`Rule.frozen`)."""
  return type(owner(rules)).frozen is not Rule.frozen
