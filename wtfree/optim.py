"""The optimizer: one optax chain built from the run's resolved settings (`wtfree.settings.Optimizer`).

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

from wtfree import settings


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


def base_learning_rate(opt: settings.Optimizer, learning_rate=None):
  """``opt.learning_rate`` (or ``learning_rate``), times the batch's scale (``batch_size / 256``) if asked.

  The switch ``scale_lr_by_batch`` is False by default (`wtfree.defaults`):
  the rate is used as quoted. The ImageNet configs set it, as they quote
  rates per 256 examples (Akrout et al.: 0.1 per 256). ``learning_rate``
  may be a traced per-replica value (a sweep's).
  """
  if learning_rate is None:
    return opt.base_learning_rate
  return learning_rate * opt.lr_scale if opt.lr_scale != 1.0 else learning_rate


def _constant(opt, base: float, steps_per_epoch: float, start: int) -> optax.Schedule:
  del opt, steps_per_epoch, start
  return optax.constant_schedule(base)


def _step(opt, base: float, steps_per_epoch: float, start: int) -> optax.Schedule:
  # In global steps: a decay epoch inside the warm-up applies from its step on.
  del start
  scales: dict[int, float] = {}
  for epoch in opt.decay_epochs:
    at = math.ceil(epoch * steps_per_epoch)
    scales[at] = scales.get(at, 1.0) * opt.decay_factor
  return optax.piecewise_constant_schedule(base, dict(sorted(scales.items())))


def _cosine(opt, base: float, steps_per_epoch: float, start: int) -> optax.Schedule:
  end = opt.num_epochs * steps_per_epoch
  if end <= start:
    raise ValueError(
        f"cosine schedule: num_epochs={opt.num_epochs} leaves no epochs after "
        f"{opt.mirror_epochs} mirror and {opt.warmup_epochs} warm-up epochs; "
        "raise num_epochs"
    )
  cosine = optax.cosine_decay_schedule(base, decay_steps=end - start)
  return lambda step: cosine(jnp.maximum(jnp.asarray(step, jnp.float32) - start, 0.0))


_SCHEDULES: dict[str, Callable[[Any, float, float, int], optax.Schedule]] = {
    "constant": _constant,
    "step": _step,
    "cosine": _cosine,
}


def mirror_steps(opt: settings.Optimizer, steps_per_epoch: float) -> int:
  """Steps of the mirror-only epochs that open a weight-mirror run."""
  return int(opt.mirror_epochs * steps_per_epoch)


def schedule(opt: settings.Optimizer, steps_per_epoch: float, hparams=None) -> optax.Schedule:
  """The learning rate at each global training step, joined from optax schedules.

  Zero for the first ``opt.mirror_epochs`` epochs (weight-mirror-only
  epochs), then a linear warm-up from 0 over ``opt.warmup_epochs`` epochs,
  then the body named by ``opt.schedule``:

  - 'constant': the base rate.
  - 'step': multiplied by ``opt.decay_factor`` once step
    ``e * steps_per_epoch`` is reached, for each ``e`` in
    ``opt.decay_epochs``; epochs count from the start of training,
    mirror epochs included (Akrout: warm-up 6, decay after 32, 62, 82).
  - 'cosine': from the base rate at the end of warm-up to 0 at
    ``opt.num_epochs``.

  The base rate is `base_learning_rate`.

  Args:
    opt: the run's optimizer settings (`wtfree.settings.resolve`).
    steps_per_epoch: training steps per epoch.
    hparams: per-replica values that replace the settings' (a sweep's
      ``learning_rate``), or None.

  Returns:
    A function ``global step -> learning rate``, mirror-only steps included.

  Raises:
    ValueError: for an unknown schedule name.
  """
  if opt.schedule not in _SCHEDULES:
    raise ValueError(f"schedule {opt.schedule!r} is not one of {', '.join(_SCHEDULES)}")
  mirror = mirror_steps(opt, steps_per_epoch)
  warmup = opt.warmup_epochs * steps_per_epoch
  hparams = dict(hparams or {})
  if "learning_rate" in hparams:
    # A traced base rate scales the schedule's shape, drawn at rate 1.
    base = base_learning_rate(opt, hparams["learning_rate"])
    shape = _SCHEDULES[opt.schedule](opt, 1.0, steps_per_epoch, mirror + warmup)
    body = lambda step: base * shape(step)
  else:
    body = _SCHEDULES[opt.schedule](opt, base_learning_rate(opt), steps_per_epoch, mirror + warmup)
  # 0 through the mirror-only steps, then a linear ramp to 1 over the warm-up.
  rise = optax.linear_schedule(0.0, 1.0, warmup) if warmup > 0 else optax.constant_schedule(1.0)
  ramp = optax.join_schedules([optax.constant_schedule(0.0), rise], [mirror])
  return lambda step: ramp(step) * body(step)


def weight_decay_rate(opt: settings.Optimizer, steps_per_epoch: float, hparams=None) -> optax.Schedule | None:
  """The fraction by which the chain's weight decay shrinks a weight with no gradient, per step.

  ``lr_t * weight_decay / (1 - momentum)`` (momentum 0 for Adam) at the
  global step, the rate SGD's L2 decay settles to; None without weight
  decay. Kolen-Pollack's B - W decays at this rate in wtfree's loop.
  ``hparams`` replaces the settings' values per replica, as in `make`.
  """
  hparams = dict(hparams or {})
  weight_decay = hparams.get("weight_decay", opt.weight_decay)
  if "weight_decay" not in hparams and not weight_decay:
    return None
  lr = schedule(opt, steps_per_epoch, hparams)
  momentum = hparams.get("momentum", opt.momentum) if opt.optimizer == "sgd" else 0.0
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


def check(opt: settings.Optimizer) -> None:
  """Raises ValueError unless the optimizer, schedule and decay set exist and the bias scale is >= 0."""
  if opt.schedule not in _SCHEDULES:
    raise ValueError(f"schedule {opt.schedule!r} is not one of {', '.join(_SCHEDULES)}")
  check_names(optimizer=opt.optimizer, weight_decay_on=opt.weight_decay_on,
              bias_learning_rate_scale=opt.bias_learning_rate_scale)


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
  """wtfree's optimizer as one optax chain, from optax-style arguments; no settings needed.

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
    transforms.append(optax.scale_by_sign())  # Batch Manhattan (Liao et al.): the sign of each gradient.
  if optimizer == "adam":
    transforms.append(optax.scale_by_adam(b1=b1, b2=b2, eps=eps))
  elif _given(momentum):
    transforms.append(optax.trace(decay=momentum, nesterov=nesterov))
  transforms.append(optax.scale_by_learning_rate(learning_rate))
  if bias_learning_rate_scale != 1.0:
    transforms.append(optax.masked(optax.scale(bias_learning_rate_scale), bias_mask))
  tx = optax.chain(*transforms)
  return tx if frozen is None else freeze(tx, frozen)


def make(opt: settings.Optimizer, steps_per_epoch: float, frozen=None, hparams=None) -> optax.GradientTransformation:
  """The optimizer of a run, as one optax chain: `chain` with the run's settings.

  Reads ``opt.optimizer``, ``momentum``, ``nesterov``, ``b1``, ``b2``,
  ``eps``, ``weight_decay``, ``weight_decay_on``, ``batch_manhattan``,
  ``bias_learning_rate_scale`` and the learning-rate fields read by
  `schedule`. The train loop does not call the optimizer in mirror-only
  steps, so its n-th update (counting from 0) is global step
  ``mirror_steps + n`` and takes `schedule`'s rate there.

  Args:
    opt: the run's optimizer settings (``settings.resolve(config).optimizer``).
    steps_per_epoch: training steps per epoch.
    frozen: a mask of parameters that take no update of any kind
      (`wtfree.learning.Learner.frozen`), or None.
    hparams: ``learning_rate``, ``weight_decay`` or ``momentum`` values that
      replace the settings', e.g. one replica's traced values in a sweep
      (`wtfree.grid`); a swept field keeps its transform in the chain even
      where its value is 0.

  Raises:
    ValueError: for an unknown optimizer, schedule or decay set.
  """
  check(opt)
  hparams = dict(hparams or {})
  lr, offset = schedule(opt, steps_per_epoch, hparams), mirror_steps(opt, steps_per_epoch)
  return chain(
      lambda count: lr(count + offset),
      optimizer=opt.optimizer,
      momentum=hparams.get("momentum", opt.momentum),
      nesterov=bool(opt.nesterov),
      b1=opt.b1,
      b2=opt.b2,
      eps=opt.eps,
      weight_decay=hparams.get("weight_decay", opt.weight_decay),
      weight_decay_on=opt.weight_decay_on,
      batch_manhattan=bool(opt.batch_manhattan),
      bias_learning_rate_scale=opt.bias_learning_rate_scale,
      frozen=frozen,
  )


def freeze(tx: optax.GradientTransformation, mask) -> optax.GradientTransformation:
  """``tx`` on the leaves where ``mask`` is False; no update at all where it is True."""
  if not any(jax.tree.leaves(mask)):
    return tx
  labels = jax.tree.map(lambda frozen: "frozen" if frozen else "trained", mask)
  return optax.multi_transform({"trained": tx, "frozen": optax.set_to_zero()}, labels)
