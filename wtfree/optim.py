"""The optimizer: one optax chain built from the config.

    decay -> [Batch Manhattan] -> momentum or Adam -> learning rate -> [biases' scale]

L2 weight decay is added to the gradient of every ``kernel`` (or of every
parameter, ``weight_decay_on='all'``, as torch's SGD does). Batch Manhattan
(Liao et al. 2016) replaces each gradient by its sign (`optax.scale_by_sign`),
so that plain SGD moves every weight by exactly lr. Rules whose B learns
between steps do so in `wtfree.learning.Learner`, not here; `weight_decay_rate`
tells them how fast this chain's decay shrinks a weight.
"""

from collections.abc import Callable
import math
from typing import Any

import jax
import jax.numpy as jnp
import optax


# Akrout et al. (and Goyal et al.) quote learning rates per 256 examples.
REFERENCE_BATCH = 256

# Liao et al.'s name for optax's sign transform.
batch_manhattan = optax.scale_by_sign


def _leaf_name(path) -> Any:
  last = path[-1]
  return getattr(last, "key", getattr(last, "name", None))


def decay_mask(params) -> Any:
  """True at every leaf named ``kernel`` (W; not biases, BatchNorm or a rule's B)."""
  return jax.tree_util.tree_map_with_path(lambda path, _: _leaf_name(path) == "kernel", params)


def bias_mask(params) -> Any:
  """True at every leaf named ``bias`` (Dense and Conv biases, BatchNorm's shifts)."""
  return jax.tree_util.tree_map_with_path(lambda path, _: _leaf_name(path) == "bias", params)


def _all_leaves(params) -> Any:
  return jax.tree.map(lambda _: True, params)


_DECAY_SETS: dict[str, Callable[[Any], Any]] = {"kernels": decay_mask, "all": _all_leaves}


def _given(value) -> bool:
  """Whether an optional setting is in the chain: set and not a plain 0 (a traced value, even 0, always is)."""
  return value is not None and not (isinstance(value, (int, float)) and value == 0)


_OPTIMIZERS = ("sgd", "adam")


def base_learning_rate(config, learning_rate=None):
  """``config.learning_rate`` (or ``learning_rate``), times ``config.batch_size / 256`` if ``scale_lr_by_batch``.

  The switch ``config.scale_lr_by_batch`` is False by default
  (`wtfree.defaults`): the rate is used as quoted. The ImageNet configs set
  it, as they quote rates per 256 examples (Akrout et al.: 0.1 per 256).
  ``learning_rate`` may be a traced per-replica value (a sweep's).
  """
  lr = float(config.learning_rate) if learning_rate is None else learning_rate
  if config.get("scale_lr_by_batch", False):
    lr *= config.batch_size / REFERENCE_BATCH
  return lr


def _constant(config, base: float, steps_per_epoch: float, start: int) -> optax.Schedule:
  del config, steps_per_epoch, start
  return optax.constant_schedule(base)


def _step(config, base: float, steps_per_epoch: float, start: int) -> optax.Schedule:
  # In global steps: a decay epoch inside the warm-up applies from its step on.
  del start
  scales: dict[int, float] = {}
  for epoch in config.get("decay_epochs", ()):
    at = math.ceil(epoch * steps_per_epoch)
    scales[at] = scales.get(at, 1.0) * config.get("decay_factor", 0.1)
  return optax.piecewise_constant_schedule(base, dict(sorted(scales.items())))


def _cosine(config, base: float, steps_per_epoch: float, start: int) -> optax.Schedule:
  end = config.num_epochs * steps_per_epoch
  if end <= start:
    raise ValueError(
        f"cosine schedule: num_epochs={config.num_epochs} leaves no epochs after "
        f"{config.get('mirror_epochs', 0)} mirror and {config.get('warmup_epochs', 0)} warm-up epochs; "
        "raise num_epochs"
    )
  cosine = optax.cosine_decay_schedule(base, decay_steps=end - start)
  return lambda step: cosine(jnp.maximum(jnp.asarray(step, jnp.float32) - start, 0.0))


_SCHEDULES: dict[str, Callable[[Any, float, float, int], optax.Schedule]] = {
    "constant": _constant,
    "step": _step,
    "cosine": _cosine,
}


def mirror_steps(config, steps_per_epoch: float) -> int:
  """Steps of the mirror-only epochs that open a weight-mirror run."""
  return int(config.get("mirror_epochs", 0) * steps_per_epoch)


def schedule(config, steps_per_epoch: float, hparams=None) -> optax.Schedule:
  """The learning rate at each global training step, joined from optax schedules.

  Zero for the first ``config.mirror_epochs`` epochs (weight-mirror-only
  epochs, default 0), then a linear warm-up from 0 over
  ``config.warmup_epochs`` epochs (default 0), then the body named by
  ``config.schedule``:

  - 'constant': the base rate.
  - 'step': multiplied by ``config.decay_factor`` (default 0.1) once step
    ``e * steps_per_epoch`` is reached, for each ``e`` in
    ``config.decay_epochs``; epochs count from the start of training,
    mirror epochs included (Akrout: warm-up 6, decay after 32, 62, 82).
  - 'cosine': from the base rate at the end of warm-up to 0 at
    ``config.num_epochs``.

  The base rate is `base_learning_rate`.

  Args:
    config: the run's config.
    steps_per_epoch: training steps per epoch.
    hparams: per-replica values that replace the config's (a sweep's
      ``learning_rate``), or None.

  Returns:
    A function ``global step -> learning rate``, mirror-only steps included.

  Raises:
    ValueError: for an unknown schedule name.
  """
  if config.schedule not in _SCHEDULES:
    raise ValueError(f"schedule {config.schedule!r} is not one of {', '.join(_SCHEDULES)}")
  mirror = mirror_steps(config, steps_per_epoch)
  warmup = config.get("warmup_epochs", 0) * steps_per_epoch
  hparams = dict(hparams or {})
  if "learning_rate" in hparams:
    # A traced base rate scales the schedule's shape, drawn at rate 1.
    base = base_learning_rate(config, hparams["learning_rate"])
    shape = _SCHEDULES[config.schedule](config, 1.0, steps_per_epoch, mirror + warmup)
    body = lambda step: base * shape(step)
  else:
    body = _SCHEDULES[config.schedule](config, base_learning_rate(config), steps_per_epoch, mirror + warmup)
  # 0 through the mirror-only steps, then a linear ramp to 1 over the warm-up.
  rise = optax.linear_schedule(0.0, 1.0, warmup) if warmup > 0 else optax.constant_schedule(1.0)
  ramp = optax.join_schedules([optax.constant_schedule(0.0), rise], [mirror])
  return lambda step: ramp(step) * body(step)


def weight_decay_rate(config, steps_per_epoch: float, hparams=None) -> optax.Schedule | None:
  """The fraction by which the chain's weight decay shrinks a weight with no gradient, per step.

  ``lr_t * weight_decay / (1 - momentum)`` (momentum 0 for Adam) at the
  global step, the rate SGD's L2 decay settles to; None without weight
  decay. Kolen-Pollack's B - W decays at this rate in wtfree's loop.
  ``hparams`` replaces config values per replica, as in `make`.
  """
  hparams = dict(hparams or {})
  weight_decay = hparams.get("weight_decay", config.get("weight_decay", 0.0))
  if "weight_decay" not in hparams and not weight_decay:
    return None
  lr = schedule(config, steps_per_epoch, hparams)
  momentum = hparams.get("momentum", config.get("momentum", 0.0)) if config.optimizer == "sgd" else 0.0
  per_lr = weight_decay / (1.0 - momentum)
  return lambda step: lr(step) * per_lr


def check_names(*, optimizer: str = "sgd", weight_decay_on: str = "kernels",
                bias_learning_rate_scale: float = 1.0) -> None:
  """Raises ValueError unless the optimizer and decay set exist and the bias scale is >= 0."""
  if optimizer not in _OPTIMIZERS:
    raise ValueError(f"optimizer {optimizer!r} is not one of {', '.join(_OPTIMIZERS)}")
  if not bias_learning_rate_scale >= 0:
    raise ValueError(f"bias_learning_rate_scale {bias_learning_rate_scale} is negative: use e.g. 1.0 (the kernels' "
                     "rate) or 1/128 (Akrout et al.'s reference code)")
  if weight_decay_on not in _DECAY_SETS:
    raise ValueError(f"weight_decay_on {weight_decay_on!r} is not one of {', '.join(_DECAY_SETS)}")


def check_config(config) -> None:
  """Raises ValueError unless the config's optimizer, schedule and decay set exist and the bias scale is >= 0."""
  if config.schedule not in _SCHEDULES:
    raise ValueError(f"schedule {config.schedule!r} is not one of {', '.join(_SCHEDULES)}")
  check_names(optimizer=config.optimizer, weight_decay_on=config.get("weight_decay_on", "kernels"),
              bias_learning_rate_scale=config.get("bias_learning_rate_scale", 1.0))


def chain(
    learning_rate: float | optax.Schedule,
    *,
    optimizer: str = "sgd",
    momentum=None,
    nesterov: bool = False,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    weight_decay=None,
    weight_decay_on: str = "kernels",
    batch_manhattan: bool = False,
    bias_learning_rate_scale: float = 1.0,
    frozen=None,
) -> optax.GradientTransformation:
  """wtfree's optimizer as one optax chain, from optax-style arguments; no config needed.

  ``decay -> sign (if batch_manhattan) -> momentum/Adam -> -lr [-> bias scale]``.

  Args:
    learning_rate: a rate, or an optax schedule of the optimizer's update count.
    optimizer: 'sgd' (with ``momentum``, ``nesterov``) or 'adam' (``b1``,
      ``b2``, ``eps``).
    momentum: SGD's momentum; None or 0 for plain SGD. A traced value (a
      sweep's) keeps its trace in the chain even where it is 0.
    nesterov: Nesterov momentum.
    b1, b2, eps: Adam's moment decays and epsilon.
    weight_decay: L2 weight decay added to the gradients; None or 0 for
      none (a traced value, even 0, keeps the transform).
    weight_decay_on: 'kernels' (W only) or 'all' (every parameter, as
      torch's SGD decays).
    batch_manhattan: replace each gradient by its sign (Liao et al. 2016).
    bias_learning_rate_scale: the biases' rate as a multiple of the
      kernels' (Akrout et al.'s reference code steps its biases at 1/128).
    frozen: a mask of parameters that take no update of any kind
      (`wtfree.learning.Learner.frozen`), or None.

  Raises:
    ValueError: for an unknown optimizer or decay set, or a negative bias scale.
  """
  check_names(optimizer=optimizer, weight_decay_on=weight_decay_on, bias_learning_rate_scale=bias_learning_rate_scale)
  transforms = []
  if _given(weight_decay):
    transforms.append(optax.add_decayed_weights(weight_decay, mask=_DECAY_SETS[weight_decay_on]))
  if batch_manhattan:
    transforms.append(batch_manhattan())
  if optimizer == "adam":
    transforms.append(optax.scale_by_adam(b1=b1, b2=b2, eps=eps))
  elif _given(momentum):
    transforms.append(optax.trace(decay=momentum, nesterov=nesterov))
  transforms.append(optax.scale_by_learning_rate(learning_rate))
  if bias_learning_rate_scale != 1.0:
    transforms.append(optax.masked(optax.scale(bias_learning_rate_scale), bias_mask))
  tx = optax.chain(*transforms)
  return tx if frozen is None else freeze(tx, frozen)


def make(config, steps_per_epoch: float, frozen=None, hparams=None) -> optax.GradientTransformation:
  """The optimizer of a run, as one optax chain: `chain` with the config's settings.

  Reads ``config.optimizer``, ``momentum``, ``nesterov``, ``b1``, ``b2``,
  ``eps``, ``weight_decay``, ``weight_decay_on``, ``batch_manhattan``,
  ``bias_learning_rate_scale`` and the learning-rate fields read by
  `schedule`. The train loop does not call the optimizer in mirror-only
  steps, so its n-th update (counting from 0) is global step
  ``mirror_steps + n`` and takes `schedule`'s rate there.

  Args:
    config: the run's config.
    steps_per_epoch: training steps per epoch.
    frozen: a mask of parameters that take no update of any kind
      (`wtfree.learning.Learner.frozen`), or None.
    hparams: ``learning_rate``, ``weight_decay`` or ``momentum`` values that
      replace the config's, e.g. one replica's traced values in a sweep
      (`wtfree.grid`); a swept field keeps its transform in the chain even
      where its value is 0.

  Raises:
    ValueError: for an unknown optimizer, schedule or decay set.
  """
  check_config(config)
  hparams = dict(hparams or {})
  lr, offset = schedule(config, steps_per_epoch, hparams), mirror_steps(config, steps_per_epoch)
  return chain(
      lambda count: lr(count + offset),
      optimizer=config.optimizer,
      momentum=hparams.get("momentum", config.get("momentum", 0.0)),
      nesterov=bool(config.get("nesterov", False)),
      b1=config.get("b1", 0.9),
      b2=config.get("b2", 0.999),
      eps=config.get("eps", 1e-8),
      weight_decay=hparams.get("weight_decay", config.get("weight_decay", 0.0)),
      weight_decay_on=config.get("weight_decay_on", "kernels"),
      batch_manhattan=bool(config.get("batch_manhattan", False)),
      bias_learning_rate_scale=config.get("bias_learning_rate_scale", 1.0),
      frozen=frozen,
  )


def freeze(tx: optax.GradientTransformation, mask) -> optax.GradientTransformation:
  """``tx`` on the leaves where ``mask`` is False; no update at all where it is True."""
  if not any(jax.tree.leaves(mask)):
    return tx
  labels = jax.tree.map(lambda frozen: "frozen" if frozen else "trained", mask)
  return optax.multi_transform({"trained": tx, "frozen": optax.set_to_zero()}, labels)
