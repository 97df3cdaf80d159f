"""A layer's part of a rule: its state, its B, and what it hands the rule's step.

`rule_op` runs a layer's op under its rule and `finish` ends the layer's
output; `wtfree.nn`'s layers and `wtfree.convert` are built on the two.
W lives in ``params``; B, or the state B is made from, lives in the
``feedback`` collection (B of the alignment losses, which the optimizer
trains, in ``params``).

Collections written only when an apply makes them mutable (never at init):
``alignment`` receives each layer's W and the B it used (for weight angles),
``perturbations`` holds a zero added to each layer's output (its gradient is
the error signal the layer receives, for delta angles and the rules that
perturb), and `wtfree.feedback.step.STEP` what the layer hands its rule's
step (dfa's taps, pepita's activations).
"""

from collections.abc import Callable
import weakref
from typing import Any

from absl import logging
import flax.linen as nn
import jax
import jax.extend.core as jex_core
import jax.numpy as jnp

from wtfree import metrics
from wtfree.backend import counter_prng
from wtfree.feedback import registry
from wtfree.feedback import step

Array = jax.Array
default_kernel_init = nn.initializers.lecun_normal()

# The rng stream `wtfree.learning.Learner.init` adds: a model initialised
# without it is trained by a loop that may never run between-steps passes.
LEARNER_RNG = "learner"

# Models already warned about (their init's root scope): one warning per init, not per layer.
_warned = weakref.WeakSet()


def _layer_name(module: nn.Module) -> str:
  return "/".join(module.scope.path) or type(module).__name__


def _ignores_key(kernel_init: Callable, shape, dtype) -> bool:
  """Whether ``kernel_init(key, shape, dtype)`` is the same for every key (zeros, ones, a constant).

  Found from the initializer's jaxpr, without drawing: no equation that
  leads to the output reads the key.
  """
  closed = jax.make_jaxpr(lambda key: nn.meta.unbox(kernel_init(key, shape, dtype)))(jax.random.key(0))
  needed = {v for v in closed.jaxpr.outvars if not isinstance(v, jex_core.Literal)}
  for eqn in reversed(closed.jaxpr.eqns):
    if needed & set(eqn.outvars):
      needed |= {v for v in eqn.invars if not isinstance(v, jex_core.Literal)}
  return closed.jaxpr.invars[0] not in needed


def _usable_init(module: nn.Module, rule: registry.Rule, kernel_init: Callable) -> Callable:
  """``kernel_init``, or flax's default where it ignores its key (a zero-initialised head).

  A constant draw gives random-feedback rules a B with no information and
  kp a ``B_0 - W_0`` of zero (B = W: weight transport), so B is drawn from
  the default initializer instead, with a warning naming the layer.
  """
  if not rule.draws_from_kernel_init or rule.init is not None:
    return kernel_init

  def checked(key, shape, dtype=jnp.float32):
    if _ignores_key(kernel_init, shape, dtype):
      logging.warning(
          "layer %s: its kernel initializer draws the same array whatever the key (a constant), "
          "which would give rule %r no usable feedback; B is drawn from lecun_normal instead "
          "(pass the rule an init= to choose)",
          _layer_name(module), rule.name,
      )
      return default_kernel_init(key, shape, dtype)
    return kernel_init(key, shape, dtype)

  return checked


def _feedback_state(module: nn.Module, rule: registry.Rule, kernel: Array, kernel_init) -> dict[str, Any]:
  drawn = {}

  def init(name):
    if not drawn:
      drawn.update(rule.init_state(module.make_rng("params"), kernel, kernel_init))
    return drawn[name]

  return {
      n: module.variable("params" if n in rule.param_names else rule.collection, n, init, n)
      for n in rule.state_names
  }


def _step_key(module: nn.Module, rule: registry.Rule) -> Array | None:
  if not rule.needs_rng:
    return None
  if module.is_initializing() and not module.has_rng("feedback"):
    # No backward pass runs at init, so the draw is never used.
    return jax.random.key(0)
  if not module.has_rng("feedback"):
    raise ValueError(
        f"rule {rule.name!r} draws new feedback every step: pass "
        "rngs={'feedback': key} to apply, a key folded with the step"
    )
  return module.make_rng("feedback")


def _sow(module: nn.Module, name: str, value) -> None:
  # Only into an apply that asked for the collection, never into init's variables.
  if not module.is_initializing() and module.is_mutable_collection("alignment"):
    module.sow("alignment", name, value, init_fn=lambda: None, reduce_fn=lambda _, x: x)


def _warn_without_learner(module: nn.Module, rule: registry.Rule) -> None:
  root = module.scope.root
  if rule.learns_between_steps and not module.has_rng(LEARNER_RNG) and root not in _warned:
    _warned.add(root)
    logging.warning(
        "layer %s: rule %r learns B between optimizer steps, but this model was initialised "
        "without a wtfree.learning.Learner; unless your loop calls Learner.between_steps after each "
        "update, B stays as drawn and %r trains as fixed random feedback. Initialise with "
        "Learner(model, x).init(key) and call learner.between_steps(variables, key) after each update",
        _layer_name(module), rule.name, rule.name,
    )


def _between_steps(module, rule, op, inputs, kernel, state, values, activation, bias, settings) -> None:
  if not rule.learns_between_steps or not module.is_mutable_collection(rule.collection):
    return
  settings = settings if isinstance(settings, step.BetweenSteps) else step.BetweenSteps()

  def noise(kind, batches=1):
    shape = (batches * inputs.shape[0], *inputs.shape[1:])
    drawn = counter_prng.unit_noise(module.make_rng("mirror"), shape, inputs.dtype, kind)
    # Split like the batch: unconstrained, every device would draw and mirror the whole of it.
    return drawn if settings.sharding is None else jax.lax.with_sharding_constraint(drawn, settings.sharding)

  ctx = registry.StepContext(
      op=op,
      inputs=inputs,
      noise=noise,
      activation=activation,
      bias=bias,
      passes=settings.passes,
      weight_decay_rate=settings.weight_decay_rate,
  )
  for name, value in rule.between_steps(ctx, kernel, values).items():
    state[name].value = value


def rule_op(
    module: nn.Module,
    rule: "str | registry.Rule",
    op: Callable[[Array, Array], Array],
    inputs: Array,
    kernel: Array,
    *,
    kernel_init: Callable,
    dtype: Any = None,
    between_steps: "bool | step.BetweenSteps" = False,
    mirror_activation: Callable[[Array], Array] = lambda y: y,
    mirror_bias: Array | None = None,
) -> Array:
  """``op(inputs, kernel)`` inside ``module``, its backward pass following ``rule``.

  Call it from a compact method of ``module``: the rule's state is created in
  the module's ``feedback`` collection (the alignment losses' B in
  ``params``); in an apply that makes them mutable, W, the B used and the
  rule's report are sown into ``alignment``, and dfa's layers sow their taps
  into the step's channel.

  Args:
    module: the module whose variables hold W and B.
    rule: a rule name or `wtfree.feedback.Rule`.
    op: the layer's op, linear in its input and in its kernel.
    inputs: the input.
    kernel: W, a parameter of ``module``.
    kernel_init: W's initializer (random rules draw B with it by default).
    dtype: the computation dtype (None: promote inputs and kernel).
    between_steps: a between-steps pass (`wtfree.learning.Learner.between_steps`
      hands a `wtfree.feedback.step.BetweenSteps`): the rule updates its
      state (kp decays B - W, wm mirrors B from noise) and the output is
      ``op(inputs, kernel)`` with no feedback.
    mirror_activation: the nonlinearity after the layer, for mirror passes.
    mirror_bias: the bias the layer adds to ``op(inputs, kernel)``, for
      mirror passes (`wtfree.feedback.StepContext.bias`); None without one.

  Returns:
    ``op(inputs, kernel)`` in the promoted dtype.
  """
  rule = registry.get_rule(rule)
  kernel_init = _usable_init(module, rule, kernel_init)
  state = _feedback_state(module, rule, kernel, kernel_init)
  values = {n: v.value for n, v in state.items()}
  if module.is_initializing():
    _warn_without_learner(module, rule)
  kernel = rule.forward(kernel, values)
  if between_steps:
    inputs, kernel = nn.dtypes.promote_dtype(inputs, kernel, dtype=dtype)
    _between_steps(module, rule, op, inputs, kernel, state, values, mirror_activation, mirror_bias, between_steps)
    return op(inputs, kernel)
  _sow(module, "forward", kernel)
  for name, value in rule.report(kernel, values).items():
    _sow(module, f"{metrics.REPORT}{name}", value)
  if rule.broadcasts_error:
    inputs, kernel = nn.dtypes.promote_dtype(inputs, kernel, dtype=dtype)
    if module.is_mutable_collection(step.STEP) and not module.is_initializing():
      module.sow(step.STEP, "taps", (inputs, values["seed"]))
    # The input error is B e, which the rule's `connect` delivers to the tap.
    return op(jax.lax.stop_gradient(inputs), kernel)
  b = rule.feedback(kernel, values, _step_key(module, rule), kernel_init)
  if not rule.learns_by_gradient:
    b = jax.lax.stop_gradient(b)
  _sow(module, "feedback", b)
  inputs, kernel, b = nn.dtypes.promote_dtype(inputs, kernel, b, dtype=dtype)
  loss = rule.feedback_loss if rule.learns_by_gradient else None
  return rule.linear(op, inputs, kernel, b, loss)


def finish(module: nn.Module, rule: "str | registry.Rule", y: Array,
           activation: Callable[[Array], Array] = lambda y: y) -> Array:
  """A layer's output ``y`` (its bias added), handed to the rule's step and perturbed where an apply asks.

  Under a rule that owns its step, an apply outside the Learner (a plain
  ``jax.grad`` of the model) gets an output whose backward pass raises,
  naming the rule and the call to use instead.
  """
  if module.is_initializing():
    return y
  rule = registry.get_rule(rule)
  if module.is_mutable_collection(step.STEP):
    state = {n: module.get_variable(rule.collection, n) for n in rule.state_names}
    for name, value in rule.signals(y, activation, state).items():
      module.sow(step.STEP, name, value, init_fn=lambda: None, reduce_fn=lambda _, x: x)
  elif rule.forms_gradients():
    y = step.needs_learner(rule.name, y)
  return module.perturb("output", y)
