"""How B learns, in any training loop: wtfree's own and a user's.

A rule's B learns in one of three ways (`wtfree.feedback.Rule`):

- by the gradient of a local loss (sa, aa, ia): B is a parameter, so any
  optax optimizer that updates the params trains it;
- between optimizer steps (kp's decay of B - W, wm's mirror passes): a
  `Learner` runs these passes after each update;
- not at all (bp, fa, usf, frsf, brsf, sc, dfa, shallow).

The one way to train any wtfree model or `wtfree.convert`-ed flax model,
with the optimizer of your choice::

    model = convert.convert(MyModel(), rule="kp")
    learner = learning.Learner(model, x)        # x: an example input batch
    variables = learner.init(key)
    params, rest = variables["params"], {k: v for k, v in variables.items() if k != "params"}
    opt_state = tx.init(params)

    @jax.jit
    def step(params, rest, opt_state, x, y, key):
      grads = jax.grad(lambda p: loss(model.apply({"params": p, **rest}, x), y))(params)
      updates, opt_state = tx.update(grads, opt_state, params)
      params = optax.apply_updates(params, updates)
      variables = learner.update({"params": params, **rest}, key)
      return variables["params"], {k: v for k, v in variables.items() if k != "params"}, opt_state

`wtfree.train.train_step` is built the same way, and compiled by
`wtfree.steps.jit`: ``jax.jit`` with `wtfree.feedback.compiler_options`,
which on the CPU selects the convolution kernels that wtfree's lowering of
conv layers assumes and YNNPACK's for dots (a step jitted without them is
correct, and slower). A model under a rule that
learns between steps but initialised without a `Learner` (``model.init``)
logs a warning: nothing would then run those passes, and B would stay as
drawn.
"""

from collections.abc import Iterator
import contextlib
import copy
import functools
import threading
from typing import Any

from absl import logging
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from wtfree import feedback

Array = jax.Array


class _Context(threading.local):

  def __init__(self):
    self.arranged = 0
    self.rules: set[feedback.Rule] | None = None
    # The root scope of the init last warned about: one warning per init, not per layer.
    self.warned_root = None
    self.passes = 1
    self.weight_decay_rate = None


_context = _Context()


@contextlib.contextmanager
def _arranging(rules: set | None = None) -> Iterator[None]:
  _context.arranged += 1
  previous, _context.rules = _context.rules, rules
  try:
    yield
  finally:
    _context.arranged -= 1
    _context.rules = previous


def initialising() -> contextlib.AbstractContextManager:
  """A block whose inits come from a loop that runs the rules' between-steps passes (no warning)."""
  return _arranging()


def note_rule(rule: feedback.Rule, layer: str, root) -> None:
  """Called by each layer at init: records the rule, or warns if nothing will let it learn.

  ``root`` is the init's root scope, so that a model warns once.
  """
  if _context.rules is not None:
    _context.rules.add(rule)
  if rule.learns_between_steps and not _context.arranged and root is not _context.warned_root:
    _context.warned_root = root
    logging.warning(
        "layer %s: rule %r learns B between optimizer steps, but this model was initialised "
        "without a wtfree.learning.Learner; unless your loop calls Learner.update after each "
        "step, B stays as drawn and %r trains as fixed random feedback. Initialise with "
        "Learner(model, x).init(key) and call learner.update(variables, key) after each update",
        layer, rule.name, rule.name,
    )


def step_settings() -> tuple[int, Array | None]:
  """``(passes, weight_decay_rate)`` of the between-steps pass being traced."""
  return _context.passes, _context.weight_decay_rate


class Learner:
  """Initialises a model and runs its rules' learning between optimizer steps.

  Args:
    model: a wtfree model or a `wtfree.convert.Converted` model; its call
      takes ``mirror_pass`` (wtfree's models and converted ones do).
    *example: example inputs of the model's call (arrays or shape-dtype
      structs; their leading axis is the batch).
    mirror_batch_size: the batch of noise each mirror pass draws.
    passes: between-steps passes after each optimizer step (wm mirrors once
      per pass; kp spreads one step's decay over them).
    input_sharding: a sharding for the placeholder inputs of those passes
      (e.g. the train step's batch sharding), so that noise is drawn sharded.
    **kwargs: keyword arguments of the model's call used in init and in
      the passes, e.g. ``train=False``.
  """

  def __init__(self, model: nn.Module, *example, mirror_batch_size: int = 256, passes: int = 1,
               input_sharding=None, **kwargs):
    self.model = model
    self.example = jax.tree.map(lambda a: jax.ShapeDtypeStruct(np.shape(a), jnp.result_type(a)), example)
    self.mirror_batch_size = mirror_batch_size
    self.passes = passes
    self.input_sharding = input_sharding
    self.kwargs = kwargs

  def with_model(self, model: nn.Module) -> "Learner":
    """This learner for ``model``, a copy of its model with other option values (a sweep's replica).

    The copy keeps this learner's `rules`, found on its own model, so that
    ``model``'s rules, whose options may be traced values, are never hashed.
    """
    _ = self.rules
    learner = copy.copy(self)
    learner.model = model
    return learner

  def _zeros(self, batch: int | None = None) -> tuple:
    shape = lambda s: s.shape if batch is None else (batch, *s.shape[1:])
    return jax.tree.map(lambda s: jnp.zeros(shape(s), s.dtype), self.example)

  def init(self, rngs) -> dict:
    """``model.init`` on zero inputs of the example's shapes: the model's collections plus the rules' state."""
    with _arranging():
      return self.model.init(rngs, *self._zeros(), **self.kwargs)

  @functools.cached_property
  def rules(self) -> frozenset:
    """The rules of the model's layers, found by tracing its init."""
    found: set = set()
    keys = {"params": jax.random.key(0), "feedback": jax.random.key(1)}
    with _arranging(found):
      jax.eval_shape(lambda: self.model.init(keys, *self._zeros(), **self.kwargs))
    return frozenset(found)

  @property
  def learns_between_steps(self) -> bool:
    """Whether any layer's rule learns in between-steps passes (so `update` does anything)."""
    return any(r.learns_between_steps for r in self.rules)

  @property
  def gradient_estimator(self):
    """The rule that estimates the weight gradients by perturbation (``np``), or None for the backward pass."""
    found = [r for r in self.rules if r.estimates_gradients]
    if len(found) > 1 or (found and len(self.rules) > 1):
      raise ValueError(f"rule {found[0].name!r} estimates every layer's gradient; it cannot share a model "
                       f"with {sorted(r.name for r in self.rules if r is not found[0])}")
    return found[0] if found else None

  @property
  def zeroes_errors(self) -> bool:
    """Whether some layer's rule sends no error below it (then see `frozen_mask`)."""
    return any(not r.sends_error for r in self.rules)

  def update(self, variables: dict, key: Array, *, weight_decay_rate: Array | float | None = None) -> dict:
    """The variables after the rules' between-steps learning; call it after each optimizer update.

    Pure and jit-able. W, BatchNorm statistics and all collections but
    ``feedback`` are left as they are.

    Args:
      variables: the model's variables after the update.
      key: a key for this step (mirror noise).
      weight_decay_rate: the fraction by which the loop's weight decay
        shrinks a weight that gets no gradient in this step (kp decays B - W
        at that rate where it has no decay of its own); None for none.

    Returns:
      ``variables`` with the new ``feedback`` collection.
    """
    if "feedback" not in variables or not self.learns_between_steps:
      return variables
    placeholders = self._zeros(self.mirror_batch_size)
    if self.input_sharding is not None:
      placeholders = jax.tree.map(lambda p: jax.lax.with_sharding_constraint(p, self.input_sharding), placeholders)
    previous = (_context.passes, _context.weight_decay_rate)
    _context.passes, _context.weight_decay_rate = self.passes, weight_decay_rate
    try:
      # Unrolled: XLA:CPU runs convolutions inside a while loop many times slower.
      for i in range(self.passes):
        pass_key = jax.random.fold_in(key, i)
        _, updated = self.model.apply(
            variables,
            *placeholders,
            **self.kwargs,
            mirror_pass=True,
            rngs={"mirror": pass_key, "feedback": jax.random.fold_in(pass_key, 1)},
            mutable=["feedback"],
        )
        variables = {**variables, "feedback": updated["feedback"]}
    finally:
      _context.passes, _context.weight_decay_rate = previous
    return variables


def frozen_mask(grads) -> Any:
  """True at every leaf whose gradient is exactly zero in every entry.

  Under a rule that sends no error below a layer (shallow), the layers below
  get exactly zero gradients; this mask, taken from one gradient of the
  loss, names them, and `freeze` keeps every update (weight decay, Batch
  Manhattan, momentum) from them. Use it only where `Learner.zeroes_errors`.
  """
  return jax.tree.map(lambda g: bool(np.all(np.asarray(g) == 0)), jax.device_get(grads))


def freeze(tx: optax.GradientTransformation, mask) -> optax.GradientTransformation:
  """``tx`` on the leaves where ``mask`` is False; no update at all where it is True."""
  if not any(jax.tree.leaves(mask)):
    return tx
  labels = jax.tree.map(lambda frozen: "frozen" if frozen else "trained", mask)
  return optax.multi_transform({"trained": tx, "frozen": optax.set_to_zero()}, labels)
