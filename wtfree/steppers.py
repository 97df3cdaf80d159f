"""Runs of train steps between two of the loop's boundaries, one interface for every way the data arrives.

A `Stepper` takes steps ``step .. end - 1`` from a state and a fresh
`dispatch.Guard`, dispatching them without reading anything back:

    state, guard, metrics, taken, last_batch = stepper.run(state, guard, step, end)

``metrics`` stay on the device (``[steps]``, or ``[steps, N]`` for N
replicas; `OnDevice` returns ``[longest]`` rows with the steps' first),
``taken`` is the number of steps it took (fewer than asked where SIGTERM
came during a host-fed run) and ``last_batch()`` puts the run's last batch
on the device, for the angles logged at the boundary.

`OnDevice`: an in-memory set on one host, on the device whole; a run of
steps is one loop there, or one call each where a loop would slow the step
down (`dispatch.loop_is_slow`). `HostFed`: batches read on the host and sent
ahead of the step that takes them (`dispatch.ahead`). `MirrorOnly`: the
weight-mirror phase before training, whose steps take no batch and return
no guard or metrics.
"""

import functools
import itertools
from typing import Any, Protocol

import jax
import jax.numpy as jnp
import numpy as np

from wtfree import dispatch
from wtfree import sharding
from wtfree import steps


class Stepper(Protocol):
  """A way to run the steps between two boundaries."""

  def run(self, state, guard, step: int, end: int) -> tuple[Any, Any, Any, int, Any]:
    """Steps ``step .. end - 1``: ``(state, guard, metrics, taken, last_batch)``."""


class OnDevice:
  """Steps over a training set that lives on the device whole, gathering each batch there.

  Args:
    step_fn: ``(state, guard, batch, hparams) -> (state, guard, metrics)``, not jitted.
    train: the training set's ``(images, labels)`` on the host.
    indices: ``(step, steps) -> rows``, ``[steps, b]`` (``[steps, N, b]`` for N replicas).
    hparams: the steps' last argument (a sweep's per-replica values).
    mesh: the device mesh.
    batch_sharding: where a step's batch lies.
    donate_argnums: of ``step_fn``'s compiled run.
    longest: the most steps between two boundaries; every run is compiled once, this long.
    slow_loop: whether to step one call each instead of in one loop.
  """

  def __init__(self, step_fn, train, indices, hparams, *, mesh, batch_sharding, donate_argnums, longest: int,
               slow_loop: bool):
    self._host = train
    self._device = tuple(jax.device_put(a, sharding.replicated(mesh)) for a in train)
    self._indices, self._hparams, self._longest, self._batch_sharding = indices, hparams, longest, batch_sharding
    if slow_loop:
      jit = functools.partial(steps.jit, donate_argnums=donate_argnums)
      self._steps = dispatch.one_by_one(step_fn, batch_sharding, jit)
    else:
      self._steps = steps.jit(dispatch.scan_steps(step_fn, batch_sharding), donate_argnums=donate_argnums)

  def run(self, state, guard, step: int, end: int):
    """Steps ``step .. end - 1`` as one program (see the module's docstring)."""
    rows = self._indices(step, end - step)
    padded = np.zeros((self._longest, *rows.shape[1:]), rows.dtype)
    padded[:len(rows)] = rows
    state, guard, metrics = self._steps(state, guard, *self._device, jnp.asarray(padded), np.int32(len(rows)),
                                        self._hparams)
    return state, guard, metrics, end - step, functools.partial(self.batch, rows[-1])

  def batch(self, rows):
    """The examples ``rows`` of the training set, on the device as a step's batch."""
    return jax.device_put({"image": self._host[0][rows], "label": self._host[1][rows]}, self._batch_sharding)

  def first_batch(self):
    """The first step's batch, on the device."""
    return self.batch(self._indices(0, 1)[0])


class HostFed:
  """Steps over batches read on the host, each sent to the device while the steps before it run.

  Args:
    step_fn: ``(state, guard, batch, hparams) -> (state, guard, metrics)``, jitted.
    batches: the batches on the device, in step order, from the run's first step.
    hparams: the steps' last argument.
    stop: a `preemption.StopOnSigterm`: a run ends after the step during which SIGTERM came.
  """

  def __init__(self, step_fn, batches, hparams, stop):
    self._step, self._batches, self._hparams, self._stop = step_fn, batches, hparams, stop

  def run(self, state, guard, step: int, end: int):
    """Steps ``step .. end - 1``, one call each (see the module's docstring)."""
    runs = []
    for _ in range(step, end):
      batch = next(self._batches)
      state, guard, metrics = self._step(state, guard, batch, self._hparams)
      runs.append(metrics)
      if self._stop.requested:  # SIGTERM: stop at this step, not at the next boundary.
        break
    return state, guard, jax.tree.map(lambda *m: jnp.stack(m), *runs), len(runs), lambda: batch

  def first_batch(self):
    """The next step's batch, which that step still takes."""
    batch = next(self._batches)
    self._batches = itertools.chain([batch], self._batches)
    return batch


def host_batches(views, start: int, mesh, *, prefetch: int):
  """The batches of each replica's view from ``start`` on, as global arrays sent ``prefetch`` steps ahead.

  One view: the batch itself; several: stacked on a leading replica axis.
  """
  iterators = [view.train_batches(start_step=start) for view in views]

  def read():
    if len(iterators) == 1:
      return sharding.global_batch(next(iterators[0]), mesh)
    local = [next(it) for it in iterators]
    return sharding.global_batch({k: np.stack([b[k] for b in local]) for k in local[0]}, mesh, replicas=True)

  # The next batches are sent while the current step runs (device_put does not wait).
  return dispatch.ahead((read() for _ in itertools.count()), max(1, prefetch))


class MirrorOnly:
  """The steps before training that only learn the feedback weights (a weight mirror's first epochs).

  Args:
    mirror_fn: ``(state, hparams) -> state``, jitted.
    hparams: its last argument.
    stop: a `preemption.StopOnSigterm`: a run ends after the step during which SIGTERM came.
  """

  def __init__(self, mirror_fn, hparams, stop):
    self._mirror, self._hparams, self._stop = mirror_fn, hparams, stop
    # XLA:CPU's simulated devices share one thread pool: mirror steps queued back to back can leave one
    # device's thread out of an all-reduce until its rendezvous times out and aborts the process.
    self._wait = jax.default_backend() == "cpu" and jax.device_count() > 1

  def run(self, state, guard, step: int, end: int):
    """Steps ``step .. end - 1``; ``guard`` comes back as it was, with no metrics and no batch."""
    taken = 0
    for _ in range(step, end):
      state = self._mirror(state, self._hparams)
      if self._wait:
        jax.block_until_ready(state)
      taken += 1
      if self._stop.requested:
        break
    return state, guard, None, taken, None
