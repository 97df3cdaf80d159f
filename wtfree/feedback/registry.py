"""The rule interface and the registry that picks a rule by name."""

from collections.abc import Callable, Mapping
import dataclasses
from typing import Any, ClassVar

import jax
import jax.numpy as jnp

Array = jax.Array
Initializer = Callable[..., Array]

_RULES: dict[str, type["Rule"]] = {}


@dataclasses.dataclass(frozen=True)
class Rule:
  """How a layer's feedback kernel B is made.

  A rule draws its state once at init (`init_state`) and derives the B used in
  each step from the forward kernel W, that state and, for rules that redraw
  every step, a step-dependent key (`feedback`). B itself never receives a
  gradient: rules whose B learns change their state outside the backward
  pass (kp through the optimizer, wm in mirror passes).

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
  # Whether mirror passes update B (weight mirror).
  mirrored: ClassVar[bool] = False
  # Whether layers take their input error from the output error through
  # `direct.connect` instead of sending one back through B (dfa).
  broadcasts_error: ClassVar[bool] = False

  init: Initializer | None = None
  scale: float = 1.0

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


def register(cls: type[Rule]) -> type[Rule]:
  """Class decorator adding a rule to the registry under ``cls.name``."""
  _RULES[cls.name] = cls
  return cls


def names() -> tuple[str, ...]:
  """The names of all registered rules."""
  return tuple(_RULES)


def get_rule(rule: "str | Rule", **options: Any) -> Rule:
  """Returns the rule called ``rule``, built with ``options``.

  Args:
    rule: a registered name (``'bp'``, ``'fa'``, ``'kp'``, ...) or a Rule,
      which is returned as it is.
    **options: the rule's fields, e.g. ``p=0.8`` for ``'sc'``.

  Raises:
    ValueError: for an unknown name or an option the rule does not take.
  """
  if isinstance(rule, Rule):
    if options:
      return dataclasses.replace(rule, **options)
    return rule
  if rule not in _RULES:
    raise ValueError(f"rule {rule!r} is not one of {', '.join(_RULES)}")
  cls = _RULES[rule]
  fields = {f.name for f in dataclasses.fields(cls)}
  unknown = sorted(set(options) - fields)
  if unknown:
    raise ValueError(
        f"rule {rule!r} takes options {sorted(fields)}, not {unknown}"
    )
  return cls(**options)


def rms(w: Array) -> Array:
  """Root mean square of ``w``, held constant in the backward pass."""
  return jax.lax.stop_gradient(jnp.sqrt(jnp.mean(jnp.square(w))))
