"""Many train steps per host call, with the divergence check on the device.

The host reads nothing inside a run of steps: each step's metrics stay on the
device until the run ends at a log, eval or checkpoint boundary. The first
step whose loss or gradients are not finite is recorded on the device
(`Guard`), and the host stops the run at the boundary before anything is
saved, so a non-finite state never reaches a checkpoint.
In-memory data sets live on the device and a run of steps is one loop over
the batches' example indices, compiled once for runs of every length; or,
where XLA would run the step far slower inside a loop (convolutions on the
CPU, `loop_is_slow`), one call per step on the same gathered batches.
"""

import collections
from collections.abc import Iterator
import itertools
from typing import Any

import flax
import jax
import jax.numpy as jnp

Array = jax.Array


class Guard(flax.struct.PyTreeNode):
  """The state of the on-device divergence check.

  Attributes:
    ok: no step of the run has diverged yet.
    step: the first step whose loss or gradients were not finite (-1: none).
    loss: that step's loss.
    finite_grads: that step's per-leaf finiteness, which names the layers.
  """

  ok: Array
  step: Array
  loss: Array
  finite_grads: Any

  @classmethod
  def fresh(cls, params, ok=True) -> "Guard":
    """A guard for a state with ``params``: nothing diverged yet, or, with ``ok`` False, diverged before."""
    return cls(ok=jnp.asarray(ok, bool), step=-jnp.ones((), jnp.int32), loss=jnp.zeros((), jnp.float32),
               finite_grads=jax.tree.map(lambda _: jnp.ones((), bool), params))


def guarded(step_fn, *, skip_nonfinite: bool, keep_going: bool = False):
  """``(state, guard, batch, *args) -> (state, guard, metrics)``: ``step_fn`` that records the first divergence.

  Under ``skip_nonfinite`` a non-finite step is skipped (``step_fn`` itself
  keeps the state) and nothing is recorded. The state is not guarded step
  by step (a select over the whole state would cost as much as a small
  model's step): the host discards the run's state when the guard reports,
  or, under ``keep_going`` (a sweep, whose other cells go on), keeps the
  state it had before the run for each replica whose guard has reported
  (`keep_alive`), whose ``loss`` and ``top1`` read NaN from that step on.
  """

  def run(state, guard, batch, *args):
    new_state, metrics = step_fn(state, batch, *args)
    diverged = guard.ok & ~metrics["finite"] & (not skip_nonfinite)
    ok = guard.ok & ~diverged
    guard = Guard(
        ok=ok,
        step=jnp.where(diverged, (state.step + 1).astype(jnp.int32), guard.step),
        loss=jnp.where(diverged, metrics["loss"].astype(jnp.float32), guard.loss),
        finite_grads=jax.tree.map(lambda now, was: jnp.where(diverged, now, was),
                                  metrics["finite_grads"], guard.finite_grads),
    )
    metrics = {k: v for k, v in metrics.items() if k != "finite_grads"}
    if keep_going:
      metrics = {k: v if k == "finite" else jnp.where(ok, v, jnp.nan) for k, v in metrics.items()}
      metrics["finite"] = metrics["finite"] & ok
    return new_state, guard, metrics

  return run


def keep_alive(alive, new_state, old_state):
  """``new_state`` where ``alive``, else ``old_state`` (the step count always the new one's).

  Under ``keep_going`` the host calls it once per run of steps, not once per
  step, to hold a diverged replica at its state from before that run.
  """
  kept = jax.tree.map(lambda new, old: jnp.where(alive, new, old), new_state, old_state)
  return kept.replace(step=new_state.step)


def scan_steps(run, batch_sharding=None):
  """``(state, guard, images, labels, indices, count, *args) -> (state, guard, metrics)``: a run of steps, one program.

  ``indices`` is ``[K, b]`` (metrics ``[K]``) or, for a run of N replicas,
  ``[K, N, b]`` (metrics ``[K, N]``). Batch k is ``images[indices[k]]``,
  ``labels[indices[k]]``, gathered on the device from the whole training set.
  Only the first ``count`` batches are stepped, and only the first ``count``
  rows of the metrics are written: every run up to K steps long is the same
  compiled program, so runs of different lengths between the loop's
  boundaries do not compile again. ``args`` reach every step as they are.
  """

  # Jitted so that the metrics' shapes, taken before the loop, and the loop's
  # body share one trace of the step.
  step_on_rows = jax.jit(_on_rows(run, batch_sharding))

  def scanned(state, guard, images, labels, indices, count, *args):
    def body(k, carry):
      state, guard, metrics = carry
      state, guard, step_metrics = step_on_rows(state, guard, images, labels, indices[k], *args)
      metrics = jax.tree.map(lambda all_, one: all_.at[k].set(one), metrics, step_metrics)
      return state, guard, metrics

    shapes = jax.eval_shape(step_on_rows, state, guard, images, labels, indices[0], *args)[2]
    metrics = jax.tree.map(lambda m: jnp.zeros((indices.shape[0], *m.shape), m.dtype), shapes)
    return jax.lax.fori_loop(0, count, body, (state, guard, metrics))

  return scanned


def _on_rows(run, batch_sharding):
  """``run`` on the batch of ``rows``, gathered from the whole training set on the device."""

  def step_on_rows(state, guard, images, labels, rows, *args):
    batch = {"image": images[rows], "label": labels[rows]}
    if batch_sharding is not None:
      batch = jax.lax.with_sharding_constraint(batch, batch_sharding)
    return run(state, guard, batch, *args)

  return step_on_rows


def one_by_one(run, batch_sharding=None, jit=jax.jit):
  """`scan_steps`'s signature and results, each step one call of ``jit(step)``: for steps a loop slows down.

  The host dispatches the steps without waiting for them, and reads
  nothing back; only ``count`` is read (it is a host value here).
  """
  step_on_rows = jit(_on_rows(run, batch_sharding))

  def stepped(state, guard, images, labels, indices, count, *args):
    metrics = []
    for k in range(int(count)):
      state, guard, step_metrics = step_on_rows(state, guard, images, labels, indices[k], *args)
      metrics.append(step_metrics)
    return state, guard, _stacked(metrics)

  return stepped


@jax.jit
def _stacked(metrics: list) -> Any:
  # Compiled, not op by op: stacking replicas' metrics eagerly on a multi-device CPU mesh aborts XLA.
  return jax.tree.map(lambda *m: jnp.stack(m), *metrics)


def loop_is_slow(traced) -> bool:
  """Whether XLA would run these steps inside a loop far slower than one by one.

  On the CPU, XLA runs a convolution inside a while loop tens of times
  slower than the same convolution outside one (docs/performance.md), so
  the steps of a model with convolutions go one call each there.

  Args:
    traced: a function of no arguments that applies the model (its init,
      say); it is traced, not run.
  """
  if jax.default_backend() != "cpu":
    return False
  return "conv_general_dilated" in str(jax.make_jaxpr(traced)())


def longest_run(total: int, every: tuple[int, ...]) -> int:
  """The most steps between two boundaries of `next_boundary`: the run length `scan_steps` is compiled for."""
  return min([total] + [n for n in every if n > 0])


def next_boundary(step: int, total: int, every: tuple[int, ...]) -> int:
  """The first step after ``step`` that is a multiple of one of ``every`` (positive entries), or ``total``."""
  candidates = [total] + [(step // n + 1) * n for n in every if n > 0]
  return min(c for c in candidates if c > step)


def ahead(iterator: Iterator, size: int) -> Iterator:
  """``iterator``'s items, with the next ``size`` of them already taken.

  Taking an item starts its work (a ``jax.device_put`` does not wait for the
  copy), so the next batches travel to the device while a step runs.
  """
  queue = collections.deque(itertools.islice(iterator, size))
  while queue:
    yield queue.popleft()
    queue.extend(itertools.islice(iterator, 1))
