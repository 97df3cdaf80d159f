"""The rule interface and the registry that picks a rule by name.

A rule is one file under `wtfree/feedback/`: its B, its state, how B learns,
its defaults and its checks are the hooks of `Rule` below, so nothing outside
this package needs to know a rule by its name.
"""

from collections.abc import Callable, Mapping
import copy
import dataclasses
import difflib
import types
import typing
from typing import Any, ClassVar

import jax
import jax.numpy as jnp

from wtfree.feedback import primitive

Array = jax.Array
Initializer = Callable[..., Array]
LinearOp = Callable[[Array, Array], Array]

_RULES: dict[str, type["Rule"]] = {}

# Config fields of the weight mirror (`Rule.takes`).
MIRROR_FIELDS = ("mirror_batch_size", "mirror_epochs", "mirror_passes")


@dataclasses.dataclass(frozen=True)
class StepContext:
  """What a layer hands its rule's `Rule.between_steps` update.

  Attributes:
    op: the layer's op, linear in its input and in its kernel.
    inputs: the layer's input in this pass (a placeholder; only its shape
      and dtype mean anything).
    noise: ``noise(kind, batches=1)`` draws zero-mean unit-variance noise
      ('gaussian' or 'uniform') of the input's shape with ``batches`` times
      its batch, split over the devices like the batch, fresh in every pass.
    activation: the nonlinearity that follows the layer in its model.
    bias: the bias the layer adds to ``op(inputs, kernel)``, or None where
      it has none (wm's reference-code update adds it to z).
    passes: how many between-steps passes run after each optimizer step.
    weight_decay_rate: the fraction by which the run's weight decay shrinks
      a weight that gets no gradient in this step (``lr_t * weight_decay /
      (1 - momentum)`` in wtfree's loop), or None where the loop has none or
      does not say. Both come from the step's
      `wtfree.feedback.step.BetweenSteps`.
  """

  op: LinearOp
  inputs: Array
  noise: Callable[..., Array]
  activation: Callable[[Array], Array]
  bias: Array | None = None
  passes: int = 1
  weight_decay_rate: Array | None = None


@dataclasses.dataclass(frozen=True)
class Rule:
  """How a layer's feedback kernel B is made, learned, defaulted and checked.

  A rule draws its state once at init (`init_state`) and derives the B used in
  each step from the forward kernel W, that state and, for rules that redraw
  every step, a step-dependent key (`feedback`). B learns in one of three
  ways, each a hook:

  - between optimizer steps (`learns_between_steps`, `between_steps`): kp
    shrinks B - W, wm mirrors B from noise;
  - by the gradient of a local loss (`learns_by_gradient`, `feedback_loss`):
    B is a parameter and the primitive hands it the gradient of that loss,
    so the run's optimizer trains it;
  - not at all (bp, fa, the sign-concordant rules, dfa, drtp, shallow; np,
    fg and pepita have no B).

  A rule may also own its part of the train step (`wtfree.feedback.step`):
  how the loss's gradients are formed (`value_and_grad`, `connect`) and
  which parameters take no update (`frozen`). The defaults backprop through
  each layer's B and update every parameter.

  A rule's fields are its options, their defaults the rule's defaults; a
  config sets only the ones it names.

  Attributes:
    init: draws random feedback (B itself, or the magnitudes M of the
      sign-concordant rules) as ``init(key, shape, dtype)``; None uses the
      layer's kernel initializer, so B is fan-in scaled like W.
    scale: multiplies the random draw.
  """

  name: ClassVar[str]
  # Names of the state entries drawn at init, stored in `collection`...
  state_names: ClassVar[tuple[str, ...]] = ()
  collection: ClassVar[str] = "feedback"
  # ...except these, stored in `params` for the optimizer to update.
  param_names: ClassVar[tuple[str, ...]] = ()
  # Whether `feedback` needs a fresh key every step.
  needs_rng: ClassVar[bool] = False
  # Whether B learns in mirror passes from noise (the mirror settings of a
  # config apply to it).
  mirrored: ClassVar[bool] = False
  # Whether `between_steps` updates the state after each optimizer step.
  learns_between_steps: ClassVar[bool] = False
  # Whether B is a parameter trained on the gradient of `feedback_loss`.
  learns_by_gradient: ClassVar[bool] = False
  # Whether `init_state` draws from the kernel initializer (random feedback),
  # so that a constant initializer would make B useless or equal to W.
  draws_from_kernel_init: ClassVar[bool] = False
  # Whether layers take their input error from the output error through
  # `direct.connect` instead of sending one back through B (dfa).
  broadcasts_error: ClassVar[bool] = False
  init: Initializer | None = None
  scale: float = 1.0

  def with_values(self, **values: Any) -> "Rule":
    """A copy of this rule whose numeric options are ``values``, which may be traced arrays.

    One replica's options in a sweep (`wtfree.grid`): the copy is built
    inside the traced step, so it is neither checked nor hashable; check
    each concrete value first by building the rule with it (`get_rule`).
    """
    unknown = sorted(set(values) - {f.name for f in dataclasses.fields(self)})
    if unknown:
      raise ValueError(f"rule {self.name!r} has no options {unknown}")
    rule = copy.copy(self)
    for name, value in values.items():
      object.__setattr__(rule, name, value)  # A frozen dataclass: its own __init__ would check the values.
    return rule

  def draw(self, key: Array, shape, dtype, kernel_init: Initializer) -> Array:
    """A random array of W's shape from the rule's initializer, times `scale`."""
    init = self.init if self.init is not None else kernel_init
    return self.scale * init(key, shape, dtype)

  def init_state(self, key: Array, kernel: Array, kernel_init: Initializer) -> dict[str, Array]:
    """Draws the rule's state at init, given W's initial value; empty for rules that keep none."""
    del key, kernel, kernel_init
    return {}

  def feedback(
      self,
      w: Array,
      state: Mapping[str, Array],
      key: Array | None,
      kernel_init: Initializer,
  ) -> Array:
    """The feedback kernel B used in this step, of W's shape.

    Args:
      w: the forward kernel.
      state: the entries named in `state_names`.
      key: a step-dependent key for rules with `needs_rng`, else None.
      kernel_init: the layer's kernel initializer, for rules that draw anew.
    """
    raise NotImplementedError

  def forward(self, w: Array, state: Mapping[str, Array]) -> Array:
    """The kernel the forward pass uses: W itself, or W with connections removed (``fa_sparse``)."""
    del state
    return w

  def between_steps(self, ctx: StepContext, w: Array, state: Mapping[str, Array]) -> dict[str, Array]:
    """The state after one between-steps pass (rules with `learns_between_steps`)."""
    del ctx, w
    return dict(state)

  def feedback_loss(self, op: LinearOp, x: Array, w: Array, b: Array) -> Array:
    """The local loss whose gradient in ``b`` B learns by (rules with `learns_by_gradient`)."""
    raise NotImplementedError(f"rule {self.name!r} does not learn B by a loss")

  def linear(self, op: LinearOp, inputs: Array, kernel: Array, b: Array, loss: Callable | None) -> Array:
    """The layer's ``op(inputs, kernel)``, whose input error goes back through ``b`` (the rule's primitive)."""
    return primitive.linear(op, inputs, kernel, b, loss)

  def signals(self, output: Array, activation: Callable[[Array], Array], state: Mapping[str, Array]) -> dict:
    """What a layer hands its rule's step (`wtfree.feedback.step.STEP`) from its output; nothing by default."""
    del output, activation, state
    return {}

  # The step (`wtfree.feedback.step`): the hooks of the rule that owns it.

  @classmethod
  def forms_gradients(cls) -> bool:
    """Whether the rule forms the step's gradients its own way (overrides `value_and_grad` or `connect`)."""
    return cls.value_and_grad is not Rule.value_and_grad or cls.connect is not Rule.connect

  @classmethod
  def owns_step(cls) -> bool:
    """Whether the rule overrides any hook of the step (`wtfree.feedback.step.owner`)."""
    return cls.forms_gradients() or cls.frozen is not Rule.frozen

  def value_and_grad(self, objective, params) -> tuple[Array, Any, tuple]:
    """``(mean loss, gradients, (outputs, updated collections))`` of one batch's `Objective`.

    The default backpropagates: each layer's input error goes back through
    its B.
    """
    def loss(p):
      outputs, updated = objective.apply(p)
      return objective.mean_loss(outputs), (outputs, updated)

    (value, aux), grads = jax.value_and_grad(loss, has_aux=True)(params)
    return value, grads, aux

  def connect(self, outputs, channel: Mapping, objective) -> Any:
    """The outputs, joined to what the layers put in the step's channel; as they are by default (dfa's taps)."""
    del channel, objective
    return outputs

  def feedback_maps(self, channel: Mapping, output_shape) -> dict[str, Array]:
    """B of each layer whose B does not have W's shape (dfa's maps from the output), for metrics; none by default."""
    del channel, output_shape
    return {}

  def frozen(self, objective, params) -> Any:
    """True at each parameter leaf that takes no update of any kind; None (the default) where all learn."""
    del objective, params
    return None

  def report(self, w: Array, state: Mapping[str, Array]) -> dict[str, Array]:
    """Scalars the rule reports per layer beside the angles, e.g. kp's shrink factor."""
    del w, state
    return {}

  def takes(self, field: str) -> bool:
    """Whether the run's config ``field`` applies to this rule (the mirror settings only to rules that mirror B)."""
    return self.mirrored or field not in MIRROR_FIELDS

  def check_run(self, run) -> list[str]:
    """Raises ValueError for settings of the run this rule cannot honour; returns warnings.

    ``run`` is the run's resolved config (`wtfree.settings.Run`). The
    default refuses mirror settings for rules that do not mirror.
    """
    loop = run.loop
    if not self.mirrored and (loop.mirror_epochs or loop.mirror_passes != 1):
      raise ValueError(
          f"mirror settings (mirror_epochs={loop.mirror_epochs}, "
          f"mirror_passes={loop.mirror_passes}) apply only to rules that mirror B, "
          f"not {self.name!r}: drop them or use --config.rule=wm"
      )
    return []


def check_every_layer_local(rule: Rule, run) -> None:
  """Refuses what a rule that updates every layer from its own local signal cannot honour (np, fg, pepita).

  Such a rule updates the output layer too, so a backprop head contradicts
  it, and it gives gradients to the layers' W and bias only, so BatchNorm's
  parameters would never learn.
  """
  if run.model.last_layer_bp:
    raise ValueError(f"rule {rule.name!r} updates every layer by its own signal, the output layer included: "
                     "drop last_layer_bp")
  if run.model.options.get("batch_norm", False):
    raise ValueError(f"rule {rule.name!r} updates the layers' W and bias only; BatchNorm's parameters would never "
                     "learn: set --config.model_options.batch_norm=False")


def register(cls: type[Rule]) -> type[Rule]:
  """Class decorator adding a rule to the registry under ``cls.name``."""
  _RULES[cls.name] = cls
  return cls


def names() -> tuple[str, ...]:
  """The names of all registered rules."""
  return tuple(_RULES)


def options(rule: "str | Rule") -> dict[str, dataclasses.Field]:
  """The options (dataclass fields) a rule takes, by name."""
  cls = type(rule) if isinstance(rule, Rule) else _rule_class(rule)
  return {f.name: f for f in dataclasses.fields(cls)}


def all_options() -> dict[str, type]:
  """Every option of every registered rule, with its type where one type is shared.

  A config declares these (with no value) so that the command line can set
  any of them; `get_rule` then takes the ones the chosen rule has.
  """
  found: dict[str, Any] = {}
  for cls in _RULES.values():
    for f in dataclasses.fields(cls):
      kind = _plain_type(f.type)
      found[f.name] = kind if found.get(f.name, kind) == kind else None
  return found


def numeric_options() -> tuple[str, ...]:
  """The options of any rule that are plain numbers (``float``, or ``float | None``): a sweep traces them."""
  return tuple(name for name, kind in all_options().items() if kind is float)


def _plain_type(annotation) -> type | None:
  """``float`` for ``float`` and ``float | None``; None for callables and mixtures."""
  if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
    kinds = [a for a in typing.get_args(annotation) if a is not type(None)]
    return _plain_type(kinds[0]) if len(kinds) == 1 else None
  return annotation if annotation in (bool, int, float, str) else None


def _rule_class(name: str) -> type[Rule]:
  if name not in _RULES:
    close = difflib.get_close_matches(str(name), list(_RULES), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise ValueError(f"rule {name!r} is not one of {', '.join(_RULES)}{hint}")
  return _RULES[name]


def get_rule(rule: "str | Rule", **options_: Any) -> Rule:
  """Returns the rule called ``rule``, built with ``options_``.

  Options left out keep the rule's own defaults.

  Args:
    rule: a registered name (``'bp'``, ``'fa'``, ``'kp'``, ...) or a Rule,
      which is returned as it is (with ``options_`` replaced).
    **options_: the rule's fields, e.g. ``p=0.8`` for ``'sc'``.

  Raises:
    ValueError: for an unknown name or an option the rule does not take.
  """
  cls = type(rule) if isinstance(rule, Rule) else _rule_class(rule)
  fields = {f.name for f in dataclasses.fields(cls)}
  unknown = sorted(set(options_) - fields)
  if unknown:
    owners = sorted({n for n, c in _RULES.items() if set(unknown) & {f.name for f in dataclasses.fields(c)}})
    where = f" ({', '.join(unknown)} belong to {', '.join(owners)})" if owners else ""
    raise ValueError(
        f"rule {cls.name!r} takes options {sorted(fields)}, not {unknown}{where}: "
        f"drop them or pick the rule they belong to"
    )
  if isinstance(rule, Rule):
    return dataclasses.replace(rule, **options_) if options_ else rule
  return cls(**options_)


def rms(w: Array) -> Array:
  """Root mean square of ``w``, held constant in the backward pass."""
  return jax.lax.stop_gradient(jnp.sqrt(jnp.mean(jnp.square(w))))
