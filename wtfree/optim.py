"""The optimizer: one optax chain built from the config.

    decay -> [batch Manhattan] -> momentum or Adam -> learning rate -> [kp decay]

L2 weight decay is added to the gradient of every ``kernel``, never to
BatchNorm parameters or biases. Batch Manhattan (Liao et al. 2016) replaces
each gradient by its sign, so that plain SGD moves every weight by exactly lr.
The last transform shrinks Kolen-Pollack's B - W (`kolen_pollack_decay`).
"""

from collections.abc import Callable
import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

DECAYED = ("kernel",)
# The factor c of kp's B = W + c * offset (`wtfree.feedback.learned`).
KP_SCALE = "offset_scale"
# Akrout et al. (and Goyal et al.) quote learning rates per 256 examples.
REFERENCE_BATCH = 256


class BatchManhattanState(NamedTuple):
  """Batch Manhattan keeps no state."""


def batch_manhattan() -> optax.GradientTransformation:
  """Replaces every gradient by its sign: ``g -> sign(g)``.

  Followed by ``optax.scale_by_learning_rate(lr)`` this is
  ``W <- W - lr * sign(dL/dW)`` (Liao et al. 2016); a momentum transform
  between the two gives their momentum variant. Zero gradients stay zero.
  """

  def init_fn(params):
    del params
    return BatchManhattanState()

  def update_fn(updates, state, params=None):
    del params
    return jax.tree.map(jnp.sign, updates), state

  return optax.GradientTransformation(init_fn, update_fn)


def _leaf_name(path) -> Any:
  last = path[-1]
  return getattr(last, "key", getattr(last, "name", None))


def decay_mask(params) -> Any:
  """True at every leaf named ``kernel``, else False."""
  return jax.tree_util.tree_map_with_path(lambda path, _: _leaf_name(path) in DECAYED, params)


def kolen_pollack_decay(rate: float | optax.Schedule) -> optax.GradientTransformation:
  """Shrinks every kp ``offset_scale`` c by the factor ``1 - rate(step)``.

  Under kp, B = W + c * (B_0 - W_0) (`wtfree.feedback.learned.KolenPollack`),
  so B follows W's updates by itself and this transform supplies the
  decay: B - W shrinks by ``1 - rate`` every step, the same factor whatever
  the chain before it did to W. Put it last in a chain (after the learning
  rate); it sets c's update to ``-rate * c`` and leaves all other updates.
  `make` adds it with ``rate = lr * weight_decay / (1 - momentum)``.

  Args:
    rate: the per-step decay lambda, a float or a function of the step
      (counted from 0 at the first update); clipped to [0, 1].
  """
  rate_fn = rate if callable(rate) else (lambda count: rate)

  def init_fn(params):
    del params
    return optax.ScaleByScheduleState(count=jnp.zeros([], jnp.int32))

  def update_fn(updates, state, params=None):
    if params is None:
      raise ValueError("kolen_pollack_decay needs the params: call update(updates, state, params)")
    shrink = jnp.clip(rate_fn(state.count), 0.0, 1.0)

    def one(path, update, param):
      if _leaf_name(path) != KP_SCALE:
        return update
      return (-shrink * param).astype(update.dtype)

    updates = jax.tree_util.tree_map_with_path(one, updates, params)
    return updates, optax.ScaleByScheduleState(count=optax.safe_increment(state.count))

  return optax.GradientTransformation(init_fn, update_fn)


def _sgd(config) -> optax.GradientTransformation:
  momentum = config.get("momentum", 0.0)
  if not momentum:
    return optax.identity()
  return optax.trace(decay=momentum, nesterov=bool(config.get("nesterov", False)))


def _adam(config) -> optax.GradientTransformation:
  return optax.scale_by_adam(
      b1=config.get("b1", 0.9), b2=config.get("b2", 0.999), eps=config.get("eps", 1e-8)
  )


_OPTIMIZERS: dict[str, Callable[[Any], optax.GradientTransformation]] = {"sgd": _sgd, "adam": _adam}


def base_learning_rate(config) -> float:
  """``config.learning_rate``, times ``config.batch_size / 256`` if ``scale_lr_by_batch``.

  The switch ``config.scale_lr_by_batch`` defaults to True: the ImageNet
  configs quote learning rates per 256 examples (Akrout et al.: 0.1 per 256).
  Small-data configs that quote the rate as used should set it False.
  """
  lr = float(config.learning_rate)
  if config.get("scale_lr_by_batch", True):
    lr *= config.batch_size / REFERENCE_BATCH
  return lr


def _constant(config, base: float, steps_per_epoch: float) -> optax.Schedule:
  del config, steps_per_epoch
  return lambda step: jnp.full((), base, jnp.float32)


def _step(config, base: float, steps_per_epoch: float) -> optax.Schedule:
  boundaries = jnp.asarray([e * steps_per_epoch for e in config.get("decay_epochs", ())], jnp.float32)
  factor = config.get("decay_factor", 0.1)

  def fn(step):
    passed = jnp.sum(jnp.asarray(step, jnp.float32) >= boundaries)
    return base * factor ** passed.astype(jnp.float32)

  return fn


def _cosine(config, base: float, steps_per_epoch: float) -> optax.Schedule:
  start = mirror_steps(config, steps_per_epoch) + config.get("warmup_epochs", 0) * steps_per_epoch
  end = config.num_epochs * steps_per_epoch
  if end <= start:
    raise ValueError(
        f"cosine schedule: num_epochs={config.num_epochs} leaves no epochs after "
        f"{config.get('mirror_epochs', 0)} mirror and {config.get('warmup_epochs', 0)} warm-up epochs; "
        "raise num_epochs"
    )

  def fn(step):
    done = jnp.clip((jnp.asarray(step, jnp.float32) - start) / (end - start), 0.0, 1.0)
    return base * 0.5 * (1.0 + jnp.cos(math.pi * done))

  return fn


_SCHEDULES: dict[str, Callable[[Any, float, float], optax.Schedule]] = {
    "constant": _constant,
    "step": _step,
    "cosine": _cosine,
}


def mirror_steps(config, steps_per_epoch: float) -> int:
  """Steps of the mirror-only epochs that open a weight-mirror run."""
  return int(config.get("mirror_epochs", 0) * steps_per_epoch)


def schedule(config, steps_per_epoch: float) -> optax.Schedule:
  """The learning rate at each global training step.

  Zero for the first ``config.mirror_epochs`` epochs (weight-mirror-only
  epochs, default 0), then a linear warm-up from 0 over
  ``config.warmup_epochs`` epochs (default 0), times the body named by
  ``config.schedule``:

  - 'constant': the base rate.
  - 'step': divided by ``config.decay_factor`` (default 10x) once step
    ``e * steps_per_epoch`` is reached, for each ``e`` in
    ``config.decay_epochs``; epochs count from the start of training,
    mirror epochs included (Akrout: warm-up 6, decay after 32, 62, 82).
  - 'cosine': from the base rate at the end of warm-up to 0 at
    ``config.num_epochs``.

  The base rate is `base_learning_rate`.

  Args:
    config: the run's config.
    steps_per_epoch: training steps per epoch.

  Returns:
    A function ``global step -> learning rate``, mirror-only steps included.

  Raises:
    ValueError: for an unknown schedule name.
  """
  if config.schedule not in _SCHEDULES:
    raise ValueError(f"schedule {config.schedule!r} is not one of {', '.join(_SCHEDULES)}")
  body = _SCHEDULES[config.schedule](config, base_learning_rate(config), steps_per_epoch)
  start = mirror_steps(config, steps_per_epoch)
  warmup = config.get("warmup_epochs", 0) * steps_per_epoch

  def fn(step):
    step = jnp.asarray(step, jnp.float32)
    if warmup > 0:
      ramp = jnp.clip((step - start) / warmup, 0.0, 1.0)
    else:
      ramp = (step >= start).astype(jnp.float32)
    return ramp * body(step)

  return fn


def check_names(config) -> None:
  """Raises ValueError unless the config's optimizer and schedule exist."""
  if config.optimizer not in _OPTIMIZERS:
    raise ValueError(f"optimizer {config.optimizer!r} is not one of {', '.join(_OPTIMIZERS)}")
  if config.schedule not in _SCHEDULES:
    raise ValueError(f"schedule {config.schedule!r} is not one of {', '.join(_SCHEDULES)}")


def make(config, steps_per_epoch: float) -> optax.GradientTransformation:
  """The optimizer of a run, as one optax chain.

  Reads ``config.optimizer`` ('sgd' with ``momentum`` and ``nesterov``, or
  'adam' with ``b1``, ``b2``, ``eps``), ``config.weight_decay`` (L2, added to
  the gradients of kernels), ``config.batch_manhattan`` and the learning-rate
  fields read by `schedule`. With weight decay, kp's B - W shrinks by
  ``lr * weight_decay / (1 - momentum)`` per step (momentum 0 for Adam): the
  rate at which SGD's decay shrinks a weight that gets no gradient.

  The train loop does not call the optimizer in mirror-only steps, so its
  n-th update (counting from 0) is global step ``mirror_steps + n`` and takes
  `schedule`'s rate there.

  Args:
    config: the run's config.
    steps_per_epoch: training steps per epoch.

  Returns:
    ``decay -> sign (if batch_manhattan) -> momentum/Adam -> -lr -> kp decay``.

  Raises:
    ValueError: for an unknown optimizer or schedule name.
  """
  check_names(config)
  chain = []
  if config.get("weight_decay", 0.0):
    chain.append(optax.add_decayed_weights(config.weight_decay, mask=decay_mask))
  if config.get("batch_manhattan", False):
    chain.append(batch_manhattan())
  chain.append(_OPTIMIZERS[config.optimizer](config))
  lr, offset = schedule(config, steps_per_epoch), mirror_steps(config, steps_per_epoch)
  chain.append(optax.scale_by_learning_rate(lambda count: lr(count + offset)))
  if config.get("weight_decay", 0.0):
    momentum = config.get("momentum", 0.0) if config.optimizer == "sgd" else 0.0
    per_lr = config.weight_decay / (1.0 - momentum)
    chain.append(kolen_pollack_decay(lambda count: lr(count + offset) * per_lr))
  return optax.chain(*chain)
