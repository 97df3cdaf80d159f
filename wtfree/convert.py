"""Any flax.linen model under a wtfree rule, by intercepting its linear layers.

    >>> model = convert.convert(MyFlaxModel(), rule="kp")
    >>> learner = learning.Learner(model, x)
    >>> variables = learner.init(key)        # MyFlaxModel's variables, plus the rule's state
    >>> y = model.apply(variables, x)        # the backward pass follows kp
    >>> variables = learner.between_steps(variables, key)   # after each optimizer step: B learns

Training loop: see `wtfree.learning`; it makes every rule learn what its
name says with any optax optimizer.

`convert` wraps an unmodified model in `Converted`, which runs it inside
``nn.intercept_methods``: every call of flax's own ``nn.Dense``, ``nn.Conv``
or ``nn.DenseGeneral`` is replaced by the same layer built on
`wtfree.feedback.rule_op`, so its input error flows back through the rule's B.
`intercept` is the same as a context manager, for code that applies the
model itself.

Design:

- Variables. The model is bound to the wrapper's own scope, as
  ``Module.bind`` binds a model to a root scope, so the variables have the
  model's tree and rng streams (a model made in another module's compact
  method and converted there keeps the scope it has). W and biases are
  created as flax creates them (names, shapes, initializers, rng order,
  ``param_dtype``, promotion to ``dtype``), so ``params`` equal the plain
  model's for the same key, a plain model's params load as they are and,
  under ``bp``, outputs and gradients are flax's. The rule's state is added
  as wtfree's layers add it: the ``feedback`` collection (the alignment
  losses' B as ``feedback_kernel`` next to ``kernel`` in ``params``) and,
  only in an apply that makes them mutable, ``alignment``,
  ``perturbations`` (a zero on each layer's output, bias included) and the
  dfa taps; ``init`` returns the model's own collections plus the rule's
  state.
- Conv inputs with several batch axes are flattened to one around the op,
  as flax does (a dfa tap then has the flattened batch, which
  `wtfree.feedback.connect` refuses unless it matches the output's).
- Matching. A call is converted when the method it runs is flax's own
  ``Dense.__call__``, ``Conv.__call__`` or ``DenseGeneral.__call__``, so
  subclasses that keep it are converted and ones that override it convert
  only what their override passes to it. Everything else (LayerNorm,
  Embed, Einsum, ConvLocal, ConvTranspose, attention's softmax) runs
  unchanged: its backward pass is exact backprop.
- Options the rules cannot honour raise ValueError naming them: custom
  ``dot_general``/``conv_general_dilated``/``promote_dtype``, a Conv
  ``mask``, Conv padding other than 'SAME', 'VALID' or explicit pairs,
  unbatched Conv inputs, DenseGeneral ``batch_dims``.
- One ``mirror_activation`` serves every layer in weight-mirror passes.
- Nested conversions: the innermost one's rule applies.
- dfa: as for wtfree's own models, the caller joins the outputs to the
  ``dfa`` taps with `wtfree.feedback.connect` (`wtfree.train` does).
"""

from collections.abc import Callable, Iterator, Sequence
import contextlib
import functools
import inspect
import math
from typing import Any, NamedTuple

import flax.linen as nn
import jax
from jax import lax
import jax.numpy as jnp

from wtfree import feedback

Array = jax.Array


def _identity(y: Array) -> Array:
  return y


class _Settings(NamedTuple):
  rule: str | feedback.Rule
  between_steps: "bool | feedback.BetweenSteps"
  mirror_activation: Callable[[Array], Array]


def dense_general_op(x: Array, w: Array, *, axis: Sequence[int], precision=None) -> Array:
  """``x`` contracted over ``axis`` with ``w``'s leading axes, as ``nn.DenseGeneral``.

  Args:
    x: inputs.
    w: kernel ``[*x.shape[axis], *features]``.
    axis: the contracted axes of ``x``, non-negative and sorted.
    precision: passed to ``lax.dot_general``.

  Returns:
    ``[*x's other axes, *features]``.
  """
  axis = tuple(axis)
  return lax.dot_general(x, w, ((axis, tuple(range(len(axis)))), ((), ())), precision=precision)


def _name(module: nn.Module) -> str:
  # The scope's path, not module.path: it names the layer as its params do.
  return f"nn.{type(module).__name__} '{'/'.join(module.scope.path)}'"


def _refuse(module: nn.Module, options: dict[str, bool], way_out: str) -> None:
  for option, is_set in options.items():
    if is_set:
      value = getattr(module, option)
      shown = f"<array of shape {value.shape}>" if hasattr(value, "shape") else repr(value)
      raise ValueError(
          f"{_name(module)} sets {option}={shown}, which convert cannot run "
          f"under a feedback rule; {way_out}"
      )


def _refuse_custom_ops(module: nn.Module, op_fields: Sequence[str]) -> None:
  custom = {f: getattr(module, f) is not None for f in op_fields}
  custom["promote_dtype"] = module.promote_dtype is not nn.dtypes.promote_dtype
  _refuse(module, custom, "leave it at flax's default or keep this layer outside the converted model")


def _unboxed(init: Callable) -> Callable:
  # Partitioning metadata on W's initializer would otherwise box B's draw.
  return lambda *args: nn.meta.unbox(init(*args))


def _finish(module: nn.Module, settings: _Settings, op, inputs: Array, kernel: Array, bias, kernel_init) -> Array:
  """The rule's ``op(inputs, kernel)`` plus the bias, before the output perturbation."""
  y = feedback.rule_op(
      module,
      settings.rule,
      op,
      inputs,
      kernel,
      kernel_init=_unboxed(kernel_init),
      dtype=module.dtype,
      between_steps=settings.between_steps,
      mirror_activation=settings.mirror_activation,
  )
  if bias is not None:
    y = y + jnp.asarray(bias, y.dtype)
  return y


def _output(module: nn.Module, settings: _Settings, y: Array) -> Array:
  """The layer's output in its own shape, handed to the rule's step (`feedback.finish`)."""
  return feedback.finish(module, settings.rule, y, settings.mirror_activation)


def _tuple(value: int | Sequence[int]) -> tuple[int, ...]:
  return (value,) if isinstance(value, int) else tuple(value)


def _bias(module: nn.Module, shape, init=None):
  if not module.use_bias:
    return None
  return module.param("bias", init or module.bias_init, shape, module.param_dtype)


def _dense(module: nn.Dense, settings: _Settings, inputs: Array) -> Array:
  _refuse_custom_ops(module, ("dot_general", "dot_general_cls"))
  kernel = module.param("kernel", module.kernel_init, (jnp.shape(inputs)[-1], module.features), module.param_dtype)
  bias = _bias(module, (module.features,))
  op = functools.partial(feedback.dense_op, precision=module.precision)
  return _output(module, settings, _finish(module, settings, op, inputs, kernel, bias, module.kernel_init))


def _dense_general(module: nn.DenseGeneral, settings: _Settings, inputs: Array) -> Array:
  _refuse_custom_ops(module, ("dot_general", "dot_general_cls"))
  batched = {"batch_dims": bool(_tuple(module.batch_dims))}
  _refuse(module, batched, "map a DenseGeneral over the batch axes with nn.vmap instead")
  features = _tuple(module.features)
  axis = tuple(sorted(a % inputs.ndim for a in _tuple(module.axis)))
  in_shape = tuple(inputs.shape[a] for a in axis)

  def as_matrix(init, matrix_shape):
    # flax draws a DenseGeneral kernel as a matrix, so fan-in is the contracted size.
    def draw(key, shape, dtype=jnp.float32):
      value = init(key, matrix_shape, dtype)
      return nn.meta.replace_boxed(value, jnp.reshape(nn.meta.unbox(value), shape))

    return draw

  def op(x, w):
    # Features flattened into one axis, so a mirror pass centres each output
    # unit over the batch alone.
    y = dense_general_op(x, w, axis=axis, precision=module.precision)
    return jnp.reshape(y, (*y.shape[: y.ndim - len(features)], -1))

  kernel_init = as_matrix(module.kernel_init, (math.prod(in_shape), math.prod(features)))
  kernel = module.param("kernel", kernel_init, in_shape + features, module.param_dtype)
  bias = _bias(module, features, as_matrix(module.bias_init, (math.prod(features),)))
  flat_bias = None if bias is None else jnp.reshape(bias, (-1,))
  y = _finish(module, settings, op, inputs, kernel, flat_bias, kernel_init)
  return _output(module, settings, jnp.reshape(y, (*y.shape[:-1], *features)))


def _conv(module: nn.Conv, settings: _Settings, inputs: Array) -> Array:
  _refuse_custom_ops(module, ("conv_general_dilated", "conv_general_dilated_cls"))
  _refuse(module, {"mask": module.mask is not None}, "multiply the kernel by the mask in a custom layer instead")
  kernel_size = _tuple(module.kernel_size)
  padding = nn.linear.canonicalize_padding(module.padding, len(kernel_size))
  if isinstance(padding, str) and padding not in ("SAME", "VALID"):
    raise ValueError(
        f"{_name(module)} sets padding={padding!r}, which convert cannot run under a feedback rule; "
        "use 'SAME', 'VALID' or explicit (low, high) pairs, padding the input yourself (jnp.pad) first"
    )
  batch_axes = inputs.ndim - len(kernel_size) - 1
  if batch_axes < 1:
    raise ValueError(
        f"{_name(module)} got unbatched inputs of shape {inputs.shape}; convert needs a leading batch "
        "axis (mirror noise and dfa errors are drawn per example): pass inputs[None]"
    )
  batch_shape = inputs.shape[:batch_axes]
  inputs = jnp.reshape(inputs, (-1, *inputs.shape[batch_axes:]))
  in_features = inputs.shape[-1]
  if in_features % module.feature_group_count:
    raise ValueError(
        f"{_name(module)}: {in_features} input channels do not divide into "
        f"feature_group_count={module.feature_group_count} groups"
    )
  kernel_shape = (*kernel_size, in_features // module.feature_group_count, module.features)
  kernel = module.param("kernel", module.kernel_init, kernel_shape, module.param_dtype)
  bias = _bias(module, (module.features,))

  def one_if_none(value):
    return 1 if value is None else value

  op = functools.partial(
      feedback.conv_op,
      strides=one_if_none(module.strides),
      padding=padding,
      input_dilation=one_if_none(module.input_dilation),
      rhs_dilation=one_if_none(module.kernel_dilation),
      feature_group_count=module.feature_group_count,
      precision=module.precision,
  )
  y = _finish(module, settings, op, inputs, kernel, bias, module.kernel_init)
  return _output(module, settings, jnp.reshape(y, (*batch_shape, *y.shape[1:])))


_HANDLERS = {
    inspect.unwrap(nn.Dense.__call__): _dense,
    inspect.unwrap(nn.DenseGeneral.__call__): _dense_general,
    inspect.unwrap(nn.Conv.__call__): _conv,
}


def _interceptor(settings: _Settings) -> Callable:
  """A flax method interceptor that runs Dense, Conv and DenseGeneral under ``settings``."""

  inner = [0]  # Calls of an inner `Converted` in progress: its own interceptor runs its layers.

  def intercepted(next_fun, args, kwargs, context):
    if isinstance(context.module, Converted):
      inner[0] += 1
      try:
        return next_fun(*args, **kwargs)
      finally:
        inner[0] -= 1
    if inner[0]:
      return next_fun(*args, **kwargs)
    handler = _HANDLERS.get(getattr(context.orig_method, "func", None))
    # ConvLocal runs Conv's __call__ but has a kernel per output position.
    if handler is None or not getattr(context.module, "shared_weights", True):
      return next_fun(*args, **kwargs)
    return handler(context.module, settings, *args, **kwargs)

  return intercepted


@contextlib.contextmanager
def intercept(
    rule: str | feedback.Rule,
    *,
    between_steps: "bool | feedback.BetweenSteps" = False,
    mirror_activation: Callable[[Array], Array] = _identity,
) -> Iterator[None]:
  """Within the block, flax's Dense, Conv and DenseGeneral follow ``rule``.

  Variables keep the tree of the modules called in the block (plus the
  rule's state), so ``model.init`` and ``model.apply`` of a plain model
  both go inside it. It acts while the apply is traced: put it inside a
  jitted or differentiated function, not around a call of one already
  compiled.

  Args:
    rule: a rule name or `wtfree.feedback.Rule`.
    between_steps: a between-steps pass (`feedback.BetweenSteps`): kp decays B - W, wm mirrors B from noise.
    mirror_activation: the nonlinearity assumed after every layer in
      mirror passes.

  Yields:
    Nothing; leaving the block restores flax's layers.
  """
  feedback.get_rule(rule)
  with nn.intercept_methods(_interceptor(_Settings(rule, between_steps, mirror_activation))):
    yield


class Converted(nn.Module):
  """``model`` with the backward pass of its Dense, Conv and DenseGeneral following ``rule``.

  Its variables are ``model``'s (same paths and names) plus the rule's
  state. ``__call__`` takes ``model``'s arguments plus ``between_steps``.

  Attributes:
    model: the flax.linen model to run: unbound, or bound where it was made
      (then its variables stay where flax puts them).
    rule: a rule name or `wtfree.feedback.Rule`.
    mirror_activation: the nonlinearity assumed after every layer in
      weight-mirror passes.
  """

  model: nn.Module
  rule: str | feedback.Rule = "fa"
  mirror_activation: Callable[[Array], Array] = _identity

  def __call__(self, *args, between_steps: "bool | feedback.BetweenSteps" = False, **kwargs) -> Any:
    """``model(*args, **kwargs)``; with ``between_steps`` every layer's rule learns between steps instead."""
    model = self.model
    if model.parent is self:
      # Bound afresh to this module's own scope, as `Module.bind` does: the
      # variables and rng streams are then the unconverted model's, also for
      # submodules it holds as fields (nn.share_scope leaves those drawing
      # from streams under the field's name).
      model = model.clone(parent=self.scope, _deep_clone=True)
    with intercept(self.rule, between_steps=between_steps, mirror_activation=self.mirror_activation):
      return model(*args, **kwargs)


def convert(
    model: nn.Module,
    rule: str | feedback.Rule = "fa",
    *,
    mirror_activation: Callable[[Array], Array] = _identity,
) -> Converted:
  """Wraps a plain flax.linen ``model`` so that it trains under ``rule``.

  Args:
    model: a flax.linen Module built from ``nn.Dense``, ``nn.Conv`` and
      ``nn.DenseGeneral`` (other modules run unchanged).
    rule: a rule name (``'fa'``, ``'kp'``, ...) or `wtfree.feedback.Rule`.
    mirror_activation: the nonlinearity assumed after every layer in
      weight-mirror passes.

  Returns:
    A `Converted` module; ``convert(m, r).init(key, x)['params']`` equals
    ``m.init(key, x)['params']`` (plus the alignment losses' B). Train it
    through `wtfree.learning.Learner` so that kp and wm learn.

  Raises:
    TypeError: if ``model`` is not a flax.linen Module.
    ValueError: for an unknown rule.
  """
  if not isinstance(model, nn.Module):
    raise TypeError(f"convert needs a flax.linen Module, got {type(model).__name__}")
  feedback.get_rule(rule)
  return Converted(model, rule=rule, mirror_activation=mirror_activation)
