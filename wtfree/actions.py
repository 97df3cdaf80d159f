"""Periodic actions: what a run does every so many steps beside training, added without editing the loop.

    probe = actions.Periodic("probe", every_steps=100, fn=lambda step, state: {"head_norm": ...})
    train.train_and_evaluate(config, workdir, actions=[probe])

The loop stops at every multiple of each action's period (and at the last
step), calls ``fn(step, state)`` there after its own evaluation, and writes
the scalars it returns to metrics.jsonl and TensorBoard under the action's
name, as it writes ``train`` and ``eval``.

The loop's own work at its boundaries is actions of the same kind, in the
same list, run in order: `Log` (the train metrics and angles), `Evaluate`,
then the user's, then `Checkpoint` and `Preemption` (SIGTERM: save and stop).
"""

from collections.abc import Callable, Mapping
import dataclasses
import time
from typing import Any, ClassVar, Protocol
import warnings

from absl import logging
import jax
import numpy as np

from wtfree import preemption
from wtfree import replicas
from wtfree import sharding
from wtfree import summary as summary_lib


class Action(Protocol):
  """What the loop runs at its boundaries.

  Attributes:
    name: the split its returned metrics are logged under.
    every_steps: the period whose multiples are boundaries of the loop (0: it
      adds none, and looks at every boundary the others make).
    after_log: the log lines due so far are written first (it reads from the
      device or writes metrics, which then follow them in metrics.jsonl).
  """

  name: str
  every_steps: int
  after_log: bool

  def due(self, step: int, total_steps: int) -> bool:
    """Whether it runs after ``step``."""

  def run(self, step: int, state) -> Mapping[str, Any] | None:
    """Runs after ``step`` on the state after it; the metrics to log under ``name``, or None."""


@dataclasses.dataclass(frozen=True)
class Periodic:
  """An action the loop runs every ``every_steps`` steps and at the last one.

  Attributes:
    name: the split its metrics are logged under (e.g. ``'probe'``).
    every_steps: its period in steps.
    fn: ``fn(step, state) -> {metric: scalar}`` (or None to log nothing);
      ``state`` is the `wtfree.steps.TrainState` after ``step`` steps, with
      a leading replica axis in a run of several seeds.
  """

  name: str
  every_steps: int
  fn: Callable[[int, Any], Mapping[str, Any] | None]
  after_log: ClassVar[bool] = True

  def __post_init__(self):
    if self.every_steps < 1:
      raise ValueError(f"periodic action {self.name!r}: every_steps {self.every_steps} is not a positive step count")
    if self.name in ("train", "eval", "validation"):
      raise ValueError(f"periodic action {self.name!r}: the loop's own splits are train, eval and validation; "
                       "name it otherwise")

  def due(self, step: int, total_steps: int) -> bool:
    """Whether the action runs after ``step``."""
    return step % self.every_steps == 0 or step == total_steps

  def run(self, step: int, state) -> Mapping[str, Any] | None:
    """``fn(step, state)``."""
    return self.fn(step, state)


def _fmt(values: dict, skip: tuple[str, ...] = ()) -> str:
  return " ".join(f"{k}={v:.4g}" for k, v in values.items()
                  if not k.startswith(skip) and not isinstance(v, list))


class Log:
  """The train metrics of the steps since the last log, with the angles at the last batch.

  The host does not wait for the angles: a log line is written (`flush`) at
  the next action that reads from the device, after the next run of steps
  is dispatched, or at the end.

  Args:
    writer: a `writers.MetricWriter`.
    every_steps: the period.
    total_steps: the run's last step.
    start: the step the run starts at.
    examples_per_step: examples of all replicas in one step.
    num_seeds: replicas (1: none).
    skip_nonfinite: non-finite steps are skipped, and counted.
    align: ``(state, batch) -> angles`` on the device, or None for no angles.
  """

  name = "train"
  after_log = False

  def __init__(self, writer, *, every_steps: int, total_steps: int, start: int, examples_per_step: int,
               num_seeds: int, skip_nonfinite: bool, align):
    self.every_steps, self._total = every_steps, total_steps
    self._writer, self._examples, self._n, self._skip, self._align = (writer, examples_per_step, num_seeds,
                                                                      skip_nonfinite, align)
    self._history: dict[str, list] = {}
    self._skipped = 0
    self._last_batch = None
    self._tick, self._tick_step = time.time(), start
    self._pending = []  # Log lines whose angles are still on the device.

  def due(self, step: int, total_steps: int) -> bool:
    """Every ``every_steps`` and at the last step."""
    return step % self.every_steps == 0 or step == total_steps

  def record(self, step: int, end: int, metrics: dict, last_batch) -> None:
    """Keeps the metrics (on the host) of steps ``step .. end - 1`` and the getter of their last batch."""
    finite = np.asarray(metrics.pop("finite"), bool)
    if self._skip and not finite.all():
      self._skipped += int((~finite).sum())
      logging.warning("steps %d-%d: %d with non-finite loss or gradients skipped", step + 1, end, int((~finite).sum()))
    for k, v in metrics.items():
      self._history.setdefault(k, []).append(np.where(finite, np.asarray(v, np.float64), np.nan))
    self._last_batch = last_batch

  def run(self, step: int, state) -> None:
    """Queues the log line of ``step``, its angles dispatched now and read after the next steps are."""
    elapsed = time.time() - self._tick
    summary = {"train/examples_per_second": (step - self._tick_step) * self._examples / max(elapsed, 1e-9)}
    with warnings.catch_warnings():  # A window whose every step was skipped logs NaN.
      warnings.simplefilter("ignore", RuntimeWarning)
      means = {f"train/{k}": np.nanmean(np.concatenate(v), axis=0) for k, v in self._history.items()}
    summary.update(replicas.summarise(means, self._n))
    if self._skipped:
      summary["train/skipped_steps"] = self._skipped
    angles = None
    if self._last_batch is not None and self._align is not None:
      angles = self._align(state, self._last_batch())
    self._pending.append((step, summary, angles, (self._total - step) * elapsed / max(step - self._tick_step, 1)))
    self._history, self._tick, self._tick_step = {}, time.time(), step

  def angles_at_start(self, state, first_batch) -> None:
    """Logs the angles of the state before any step, at the first step's batch (``first_batch()``)."""
    if self._align is not None:
      self._pending.append((0, {}, self._align(state, first_batch()), 0.0))
      self.flush()

  def flush(self) -> None:
    """Writes the queued log lines."""
    for done, summary, angles, eta in self._pending:
      if angles is not None:
        summary.update(replicas.summarise(jax.device_get(angles), self._n))
      self._writer.write(done, "train", summary)
      logging.info("step %d/%d %s %s eta %.0fs", done, self._total,
                   _fmt(summary, skip=("angle/", "ratio/", "rule/")), summary_lib.angles_line(summary), eta)
    self._pending.clear()


class Evaluate:
  """The eval metrics on the test split, and on the validation split where there is one (``val/<metric>``).

  Args:
    writer: a `writers.MetricWriter`.
    every_steps: the period.
    eval_fn: ``(state, batch) -> {metric: sum, 'count': n}`` on the device.
    ds: the `wtfree.data` set.
    mesh: the device mesh.
    num_seeds: replicas (1: none).
  """

  name = "eval"
  after_log = True

  def __init__(self, writer, *, every_steps: int, eval_fn, ds, mesh, num_seeds: int):
    self.every_steps = every_steps
    self._writer, self._eval, self._ds, self._mesh, self._n = writer, eval_fn, ds, mesh, num_seeds

  def due(self, step: int, total_steps: int) -> bool:
    """Every ``every_steps`` and at the last step."""
    return step % self.every_steps == 0 or step == total_steps

  def run(self, step: int, state) -> None:
    """Evaluates ``state`` and writes the results under ``eval`` (and ``validation``)."""
    splits = [("test", "eval")] + ([("validation", "val")] if self._ds.has_validation else [])
    for split, prefix in splits:
      sums = None
      for local in self._ds.eval_batches(split):
        batch_sums = jax.device_get(self._eval(state, sharding.global_batch(local, self._mesh)))
        sums = batch_sums if sums is None else jax.tree.map(np.add, sums, batch_sums)
      count = np.maximum(np.asarray(sums.pop("count"), np.float64), 1.0)
      results = replicas.summarise({f"{prefix}/{k}": np.asarray(v) / count for k, v in sums.items()}, self._n)
      self._writer.write(step, "eval" if split == "test" else split, results)
      logging.info("step %d %s %s", step, split, _fmt(results))


class Checkpoint:
  """Saves the state every ``every_steps`` (orbax's period), every ``every_minutes`` and at the last step.

  Args:
    checkpointer: a `checkpoint.Checkpointer`.
    every_steps: the period in steps.
    every_minutes: the period in minutes (0: none).
    total_steps: the run's last step.
    meta: ``step -> dict``, the metadata saved with the state.
  """

  name = "checkpoint"
  after_log = False

  def __init__(self, checkpointer, *, every_steps: int, every_minutes: float, total_steps: int, meta):
    self.every_steps, self._minutes, self._total = every_steps, every_minutes, total_steps
    self._checkpointer, self._meta = checkpointer, meta
    self._last = time.time()
    self.saved = None  # The step of the last save.

  def _overdue(self) -> bool:
    return self._minutes > 0 and time.time() - self._last > 60 * self._minutes

  def due(self, step: int, total_steps: int) -> bool:
    """At multiples of ``every_steps``, at the last step and when the last save is ``every_minutes`` old."""
    return step % self.every_steps == 0 or step == total_steps or self._overdue()

  def run(self, step: int, state) -> None:
    """Saves ``state`` (forced at the last step and when overdue; else orbax's period decides)."""
    self.save(step, state, force=step == self._total or self._overdue())

  def save(self, step: int, state, *, force: bool) -> None:
    """Saves ``state`` at ``step``."""
    if self._checkpointer.save(step, state, self._meta(step), force=force):
      self._last = time.time()
      self.saved = step


class Preemption:
  """On SIGTERM, saves the state (unless saved at this step already) and stops with `preemption.Preempted`.

  One process looks at every boundary; several agree on the step to stop at
  after every step (JAX's preemption service), which makes every step a
  boundary.

  Args:
    stop: the `preemption.StopOnSigterm` the loop runs in.
    checkpoint: the loop's `Checkpoint`.
    workdir: named in the message.
  """

  name = "preemption"
  after_log = False

  def __init__(self, stop, checkpoint: Checkpoint, workdir: str):
    self.every_steps = 1 if jax.process_count() > 1 else 0
    self._stop, self._checkpoint, self._workdir = stop, checkpoint, workdir

  def due(self, step: int, total_steps: int) -> bool:
    """At every boundary."""
    return True

  def run(self, step: int, state) -> None:
    """Saves and raises `preemption.Preempted` where SIGTERM came (on any host)."""
    if not self._stop.should_stop(step):
      return
    if self._checkpoint.saved != step:
      self._checkpoint.save(step, state, force=True)
    raise preemption.Preempted(f"stopped on SIGTERM after step {step}, checkpoint saved in {self._workdir}; "
                               "run the same command again to resume")
