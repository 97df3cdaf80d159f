"""The one way to train a model under its rules, in any training loop: wtfree's own and a user's.

A `Learner` initialises the model, forms each step's gradients the way its
rules do (`Learner.value_and_grad`: backprop through B, dfa's projected
error, np's and fg's estimates, pepita's second pass, ...), says which
parameters take no update (`Learner.frozen`, shallow's lower layers), and
runs what the rules learn after each update (`Learner.between_steps`: kp's
decay of B - W, wm's mirror passes). With the optimizer of your choice::

    model = convert.convert(MyModel(), rule="kp")
    learner = learning.Learner(model, x)        # x: an example input batch
    variables = learner.init(key)
    params, rest = variables["params"], {k: v for k, v in variables.items() if k != "params"}
    opt_state = tx.init(params)

    @jax.jit
    def step(params, rest, opt_state, x, y, key):
      loss, grads, _ = learner.value_and_grad(per_example_loss, {"params": params, **rest}, x, targets=y, key=key)
      updates, opt_state = tx.update(grads, opt_state, params)
      params = optax.apply_updates(params, updates)
      variables = learner.between_steps({"params": params, **rest}, key)
      return variables["params"], {k: v for k, v in variables.items() if k != "params"}, opt_state

`wtfree.steps.train_step` is built the same way. A plain ``jax.grad`` of a
model whose rule forms its own step (dfa, drtp, np, fg, pepita) raises at
trace time, naming the rule and this call: it would train the output layer
alone. A model under a rule that learns between steps but initialised
without a `Learner` (``model.init``) logs a warning: nothing might then run
those passes, and B would stay as drawn.
"""

import copy
import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from wtfree import feedback

Array = jax.Array


class Learner:
  """Initialises a model, forms its gradients and runs its rules' learning between optimizer steps.

  Args:
    model: a wtfree model or a `wtfree.convert.Converted` model; its call
      takes ``between_steps`` (wtfree's models and converted ones do).
    *example: example inputs of the model's call (arrays or shape-dtype
      structs; their leading axis is the batch).
    mirror_batch_size: the batch of noise each mirror pass draws.
    passes: between-steps passes after each optimizer step (wm mirrors once
      per pass; kp spreads one step's decay over them).
    input_sharding: a sharding for the placeholder inputs of those passes
      (e.g. the train step's batch sharding), so that noise is drawn sharded.
    **kwargs: keyword arguments of the model's call used in init and in
      the between-steps passes, e.g. ``train=False``.
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
    ``model``'s rules, whose options may be traced values, are never hashed;
    the step's owner is ``model``'s rule where it is of the owner's kind.
    """
    owner = self.owner
    learner = copy.copy(self)
    learner.model = model
    rule = getattr(model, "rule", None)
    if isinstance(rule, feedback.Rule) and type(rule) is type(owner):
      learner.__dict__["owner"] = rule
    return learner

  def _zeros(self, batch: int | None = None) -> tuple:
    shape = lambda s: s.shape if batch is None else (batch, *s.shape[1:])
    return jax.tree.map(lambda s: jnp.zeros(shape(s), s.dtype), self.example)

  def init(self, rngs) -> dict:
    """``model.init`` on zero inputs of the example's shapes: the model's collections plus the rules' state."""
    rngs = dict(rngs) if isinstance(rngs, dict) else {"params": rngs}
    rngs.setdefault(feedback.LEARNER_RNG, jax.random.key(0))
    return self.model.init(rngs, *self._zeros(), **self.kwargs)

  @functools.cached_property
  def rules(self) -> frozenset:
    """The rules of the model's layers (and of the model), read from its modules while its init is traced."""
    found: set = set()

    def collect(next_fun, args, kwargs, context):
      rule = getattr(context.module, "rule", None)
      if isinstance(rule, feedback.Rule) or (isinstance(rule, str) and rule in feedback.names()):
        found.add(feedback.get_rule(rule))
      return next_fun(*args, **kwargs)

    keys = {"params": jax.random.key(0), "feedback": jax.random.key(1), feedback.LEARNER_RNG: jax.random.key(2)}
    with nn.intercept_methods(collect):
      jax.eval_shape(lambda: self.model.init(keys, *self._zeros(), **self.kwargs))
    return frozenset(found)

  @functools.cached_property
  def owner(self) -> feedback.Rule:
    """The rule that forms the model's step (`wtfree.feedback.step.owner`)."""
    return feedback.step.owner(self.rules)

  def objective(self, loss_fn, variables: dict, *inputs, targets, key: Array, rngs: dict | None = None,
                mutable=("batch_stats",), **kwargs) -> feedback.Objective:
    """One batch's loss as the rule's step differentiates it (see `value_and_grad` for the arguments)."""
    rest = {k: v for k, v in variables.items() if k != "params"}
    if rngs is None:
      rngs = {"feedback": jax.random.fold_in(key, 1), "dropout": jax.random.fold_in(key, 2)}

    def run(params, extra, call_inputs, rule, extra_mutable, capture):
      model = self.model if rule is None else self.model.clone(rule=rule)
      return model.apply({**rest, **extra, "params": params}, *call_inputs, rngs=rngs,
                         mutable=[*mutable, *extra_mutable], capture_intermediates=capture, **kwargs)

    return feedback.Objective(run=run, loss=lambda outputs: loss_fn(outputs, targets), inputs=inputs,
                              targets=targets, key=key, owner=self.owner)

  def value_and_grad(self, loss_fn, variables: dict, *inputs, targets, key: Array, rngs: dict | None = None,
                     mutable=("batch_stats",), **kwargs) -> tuple[Array, Any, tuple[Any, dict]]:
    """The mean loss and the gradients of ``variables['params']`` as the model's rules form them.

    Pure and jit-able; call it in place of ``jax.value_and_grad`` in any loop.

    Args:
      loss_fn: ``loss_fn(outputs, targets)``, the per-example loss (rules
        that estimate gradients from perturbations need it per example).
      variables: the model's variables.
      *inputs: the model's inputs for this batch.
      targets: the batch's targets (class labels, or arrays of the
        outputs' shape).
      key: a key for this step (the rule's noise; and the model's
        ``feedback`` and ``dropout`` streams where ``rngs`` is None).
      rngs: the model's rng streams for this apply.
      mutable: collections the apply updates (returned with the outputs).
      **kwargs: keyword arguments of the model's call, e.g. ``train=True``.

    Returns:
      ``(loss, grads, (outputs, updated collections))``.
    """
    objective = self.objective(loss_fn, variables, *inputs, targets=targets, key=key, rngs=rngs, mutable=mutable,
                               **kwargs)
    loss, grads, (outputs, updated) = self.owner.value_and_grad(objective, variables["params"])
    updated = {k: v for k, v in updated.items() if k != feedback.STEP}
    return loss, grads, (outputs, updated)

  def frozen(self, loss_fn, variables: dict, *inputs, targets, key: Array, **kwargs) -> Any:
    """True at each parameter leaf the rules keep from any update (shallow's lower layers), or None.

    Concrete, from one batch (not jit-able); give it to `wtfree.optim.freeze`.
    """
    if not self.may_freeze:
      return None
    objective = self.objective(loss_fn, variables, *inputs, targets=targets, key=key, **kwargs)
    return self.owner.frozen(objective, variables["params"])

  @property
  def may_freeze(self) -> bool:
    """Whether the rules may keep some parameters from any update (then call `frozen`)."""
    return feedback.step.freezes(self.rules)

  @property
  def changes_between_steps(self) -> bool:
    """Whether any layer's rule learns between optimizer steps (so `between_steps` does anything)."""
    return feedback.step.changes_between_steps(self.rules)

  def between_steps(self, variables: dict, key: Array, *, weight_decay_rate: Array | float | None = None) -> dict:
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
    if "feedback" not in variables or not self.changes_between_steps:
      return variables
    placeholders = self._zeros(self.mirror_batch_size)
    if self.input_sharding is not None:
      placeholders = jax.tree.map(lambda p: jax.lax.with_sharding_constraint(p, self.input_sharding), placeholders)
    settings = feedback.BetweenSteps(passes=self.passes, weight_decay_rate=weight_decay_rate,
                                     sharding=self.input_sharding)
    # Unrolled: XLA:CPU runs convolutions inside a while loop many times slower.
    for i in range(self.passes):
      pass_key = jax.random.fold_in(key, i)
      _, updated = self.model.apply(
          variables,
          *placeholders,
          **self.kwargs,
          between_steps=settings,
          rngs={"mirror": pass_key, "feedback": jax.random.fold_in(pass_key, 1)},
          mutable=["feedback"],
      )
      variables = {**variables, "feedback": updated["feedback"]}
    return variables
