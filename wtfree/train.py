"""The training loop: data, steps, checkpoints, logs and evaluation, from a config."""

from collections.abc import Callable, Sequence
import functools
import json
import time
from typing import Any, NamedTuple

from absl import logging
from etils import epath
import flax
import jax
import ml_collections
import numpy as np

from wtfree import actions as actions_lib
from wtfree import checkpoint
from wtfree import data
from wtfree import dispatch
from wtfree import lock
from wtfree import models
from wtfree import optim
from wtfree import preemption
from wtfree import replicas
from wtfree import settings
from wtfree import sharding
from wtfree import steppers
from wtfree import steps
from wtfree import summary as summary_lib
from wtfree import validate
from wtfree import writers

Array = jax.Array


def _nonfinite_layers(finite_grads) -> list[str]:
  flat = flax.traverse_util.flatten_dict(flax.core.unfreeze(finite_grads))
  layers = ["/".join(path[:-1]) for path, ok in flat.items() if not bool(np.all(ok))]
  return list(dict.fromkeys(layers))


def _divergence_message(run: settings.Run, guard: dispatch.Guard, last_good, workdir: str) -> str:
  """Names the step, the rule, the layers and, in a run of several seeds, the replicas that diverged."""
  ok = np.atleast_1d(np.asarray(guard.ok))
  bad = np.flatnonzero(~ok)
  steps, losses = np.atleast_1d(np.asarray(guard.step))[bad], np.atleast_1d(np.asarray(guard.loss))[bad]
  finite_grads = guard.finite_grads
  if ok.size > 1:
    finite_grads = jax.tree.map(lambda f: np.asarray(f)[bad], finite_grads)
  layers = _nonfinite_layers(finite_grads)
  where = f"; non-finite gradients in {', '.join(layers)}" if layers else ""
  first = int(np.argmin(steps))
  if ok.size > 1:
    seeds = run.replicas.seeds
    named = ", ".join(f"{i} (seed {seeds[i]}, step {int(t)})" for i, t in zip(bad, steps))
    what = f"at step {int(steps[first])} with rule {run.model.rule_name!r} in replica(s) {named} of {ok.size}"
  else:
    what = f"at step {int(steps[first])} with rule {run.model.rule_name!r}"
  kept = f"the last good checkpoint is step {last_good} in {workdir}" if last_good else "no checkpoint was saved yet"
  return (
      f"loss is {float(losses[first])} {what}{where}; {kept}. "
      "Lower the learning rate, add BatchNorm (--config.model_options.batch_norm=True), "
      "Batch Manhattan (--config.batch_manhattan=True), or skip such steps "
      "(--config.skip_nonfinite=True)."
  )


def _record_divergence(run: settings.Run, guard: dispatch.Guard, alive: np.ndarray, diverged: dict) -> bool:
  """Adds the replicas that diverged in this run of steps to ``diverged``; whether there were any."""
  newly = np.flatnonzero(np.atleast_1d(~np.asarray(guard.ok) & alive))
  for r in newly:
    loss = float(np.atleast_1d(guard.loss)[r])
    # JSON has no NaN or infinity: a non-finite loss is written as its name.
    diverged[str(r)] = {"step": int(np.atleast_1d(guard.step)[r]), "loss": loss if np.isfinite(loss) else str(loss)}
    logging.warning("replica %d (seed %d) diverged at step %d (loss %s) with rule %r; it goes back to its state "
                    "at the last boundary and the other replicas go on", r, run.replicas.seeds[r],
                    diverged[str(r)]["step"], diverged[str(r)]["loss"], run.model.rule_name)
  return bool(len(newly))


def _save_diverged(diverged: dict, workdir: str) -> None:
  if jax.process_index() == 0:
    (epath.Path(workdir) / "diverged.json").write_text(json.dumps(diverged, indent=1, sort_keys=True))


def _save_config(run: settings.Run, workdir: str) -> None:
  if jax.process_index() == 0:
    path = epath.Path(workdir)
    path.mkdir(parents=True, exist_ok=True)
    text = run.config_json
    saved = path / "config.json"
    if not saved.exists() or saved.read_text() != text:  # A finished run resumed on a read-only disk writes nothing.
      saved.write_text(text)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, *, keep_going: bool = False,
                       actions: Sequence[actions_lib.Action] = ()) -> steps.TrainState:
  """Trains and evaluates the run ``config`` describes, resuming from ``workdir``.

  Writes ``workdir/metrics.jsonl``, TensorBoard events and orbax checkpoints;
  a run started again with the same workdir continues from its latest
  checkpoint and sees exactly the batches it would have seen. On SIGTERM it
  saves at the end of the current step (for an in-memory set, whose steps
  run as one scan between boundaries, at the end of that run of steps) and
  raises `preemption.Preempted`.

  With ``config.num_seeds = N > 1`` the run trains N replicas in one program
  (`wtfree.replicas`): replica s is the run of seed ``config.seed + s``, every
  metric is logged as the mean over replicas with ``<key>/std`` and
  ``<key>/seeds``, and checkpoints hold all of them. A config whose
  ``sweep`` sets replica fields (`wtfree.grid`: learning rate, weight decay,
  momentum) trains every cell times every seed as replicas of this one
  program, each replica with its cell's values.

  With a validation split (the set's own, or ``config.holdout`` of the
  training set) every evaluation also logs ``val/<metric>``.

  Args:
    config: the run's hyperparameters (see `wtfree.defaults`).
    workdir: where checkpoints and metrics go (local path or ``gs://``).
    keep_going: a replica whose loss or gradients stop being finite goes
      back to its state at the last log, eval or checkpoint boundary before
      it diverged and stays there, reported in ``workdir/diverged.json``,
      while the others go on (a sweep's cells), instead of stopping the run.
    actions: `wtfree.actions.Periodic` actions (or any `wtfree.actions.Action`)
      the loop runs at their periods, after its own log and evaluation and
      before its checkpoint, logging what they return.

  Returns:
    The final train state (with a leading replica axis when ``num_seeds > 1``).

  Raises:
    ValueError: for a config that cannot run, before anything is compiled.
    lock.WorkdirBusy: when another live run holds ``workdir``.
    steps.DivergenceError: on a non-finite loss or gradient (unless
      ``config.skip_nonfinite``); the last good checkpoint stays.
  """
  run = validate.check_config(config)
  validate.check_workdir(config, workdir)
  with lock.hold(workdir):
    return _train_and_evaluate(run, workdir, keep_going, tuple(actions))


def _train_and_evaluate(run: settings.Run, workdir: str, keep_going: bool, user_actions: tuple) -> steps.TrainState:
  """`train_and_evaluate`'s work, with the config read and checked and the workdir held."""
  began = time.time()
  parts = _parts(run)
  n, total_steps = parts.n, parts.total_steps
  tx = parts.make_tx({k: v[0] for k, v in parts.values.items()})
  state = steps.create_train_state(parts.model, tx, parts.ds.input_shape, run.seed, parts.mesh, parts.learner,
                                   replica_seeds=list(run.replicas.seeds), hparams=parts.values)
  ckpt = checkpoint.Checkpointer(
      workdir, keep=run.loop.keep_checkpoints, save_every_steps=run.loop.checkpoint_every_steps
  )
  resumed, state, diverged = _resume(ckpt, state, workdir)
  _save_config(run, workdir)
  writer = writers.MetricWriter(workdir, tensorboard=run.loop.tensorboard, cells=len(run.replicas.cells),
                                resumed_at=resumed)
  programs = _programs(run, parts, keep_going)
  start = int(np.ravel(state.step)[0])
  stop = preemption.StopOnSigterm()
  log = actions_lib.Log(writer, every_steps=run.loop.log_every_steps, total_steps=total_steps, start=start,
                        examples_per_step=run.data.batch_size * n, num_seeds=n, skip_nonfinite=programs.skip,
                        align=programs.align if run.loop.angles else None)
  evaluate = actions_lib.Evaluate(writer, every_steps=run.loop.eval_every_steps, eval_fn=programs.eval, ds=parts.ds,
                                  mesh=parts.mesh, num_seeds=n)
  meta = lambda step: {"data_position": step, "rule": run.model.rule_name, "num_seeds": n, "diverged": diverged}
  saves = actions_lib.Checkpoint(ckpt, every_steps=run.loop.checkpoint_every_steps, total_steps=total_steps,
                                 every_minutes=run.loop.checkpoint_every_minutes, meta=meta)
  # In this order at every boundary: the user's actions see the log and eval of their step written.
  actions = [log, evaluate, *user_actions, saves, actions_lib.Preemption(stop, saves, workdir)]
  every = tuple(action.every_steps for action in actions)
  mirror, trainer = _steppers(run, parts, programs, stop, start, dispatch.longest_run(total_steps, every))
  loop = _Loop(run, workdir, keep_going, parts, programs, ckpt, diverged, every, mirror, trainer, log)

  if start == 0 and run.loop.eval_at_start:
    log.angles_at_start(state, trainer.first_batch)
    evaluate.run(0, state)
  step = start
  with stop:
    try:
      while step < total_steps:
        state, step = _stretch(loop, state, step)
        for action in actions:
          if action.due(step, total_steps):
            if action.after_log:
              log.flush()
            results = action.run(step, state)
            if results:
              writer.write(step, action.name, results)
    except preemption.Preempted:
      log.flush()
      ckpt.wait()
      writer.close()
      raise
    except BaseException:
      # Saves still in flight finish (or fail) before the error leaves: the last good checkpoint stays whole.
      ckpt.wait()
      raise
  log.flush()
  ckpt.wait()
  ckpt.close()
  writer.close()
  if jax.process_index() == 0:
    for line in summary_lib.closing_lines(workdir, num_classes=parts.ds.num_classes, seconds=time.time() - began,
                                          steps_taken=total_steps - start, finished_before=start >= total_steps):
      logging.info("%s", line)
  return state


class _Parts(NamedTuple):
  """What a run is made of: its mesh, data, model, learner, optimizer and length."""

  n: int  # Replicas (1: a single run, without a replica axis).
  mesh: Any
  values: dict  # Each replica's swept values (`replicas.hparams`).
  hparams: Any  # The steps' argument of those values: one replica's, or all of them on the mesh.
  ds: Any
  views: list  # Each replica's view of the data.
  task: str
  model: Any
  learner: Any
  make_tx: Callable  # A replica's values -> its optimizer; the structure of its state is the same for all.
  steps_per_epoch: int
  total_steps: int
  mirror_steps: int


def _parts(run: settings.Run) -> _Parts:
  """The parts of the run ``run`` describes."""
  n = run.replicas.count
  mesh = sharding.make_mesh(replicas=run.replicas.groups)
  # A sweep's per-replica values: arguments of the step, not constants of its trace.
  values = run.replicas.hparams
  hparams = {k: v[0] for k, v in values.items()} if n == 1 else jax.device_put(values, sharding.replica_sharding(mesh))
  ds = data.get_dataset(run.data)
  # The steps' task: the set's, or the classification loss the config names.
  task = steps.task_with_loss(ds.task, run.model.loss)
  views = replicas.datasets(ds, run.replicas.seeds)
  model = models.create(run.model, ds.num_classes, ds.input_shape, ds.input_dtype)
  length = run.length(ds.num_train)
  learner = steps.make_learner(model, ds.input_shape, mirror_batch_size=run.loop.mirror_batch_size,
                               passes=run.loop.mirror_passes, mesh=mesh, input_dtype=ds.input_dtype)
  frozen = None
  if learner.may_freeze:
    first = ds.prepare(sharding.global_batch(next(ds.train_batches(start_step=0)), mesh))
    frozen = steps.frozen_params(model, learner, first, task, run.seed)
  make_tx = functools.partial(optim.make, run.optimizer, length.steps_per_epoch, frozen)
  return _Parts(n, mesh, values, hparams, ds, views, task, model, learner, make_tx, length.steps_per_epoch,
                length.total_steps, length.mirror_steps)


class _Programs(NamedTuple):
  """The run's steps, compiled (all but `step`) and vmapped over its replicas."""

  step: Callable  # (state, guard, batch as read, hparams) -> (state, guard, metrics), not compiled.
  train: Callable  # `step`, compiled, donating `donated`.
  donated: tuple
  batch_sharding: Any
  keep: Callable  # `dispatch.keep_alive`.
  mirror: Callable  # (state, hparams) -> state: the steps before training.
  fresh_guard: Callable  # (params, alive) -> a `dispatch.Guard`.
  eval: Callable  # (state, batch) -> the batch's metric sums.
  align: Callable  # (state, batch) -> angles.
  skip: bool  # Non-finite steps are skipped.


def _programs(run: settings.Run, parts: _Parts, keep_going: bool) -> _Programs:
  """The steps of the run made of ``parts``."""
  n, ds, model, learner, task, hparams = parts.n, parts.ds, parts.model, parts.learner, parts.task, parts.hparams
  skip = bool(run.loop.skip_nonfinite)

  def replica_step(state, batch, hp):
    replica_model, replica_learner = steps.specialise(model, learner, hp)
    return steps.train_step(state, batch, model=replica_model, tx=parts.make_tx(hp), task=task,
                            learner=replica_learner,
                            weight_decay_rate=optim.weight_decay_rate(run.optimizer, parts.steps_per_epoch, hp),
                            skip_nonfinite=skip)

  def align(state, batch, hp):
    replica_model, replica_learner = steps.specialise(model, learner, hp)
    return steps.alignment_step(state, batch, model=replica_model, task=task, learner=replica_learner)

  guarded_step = replicas.per_replica(dispatch.guarded(replica_step, skip_nonfinite=skip, keep_going=keep_going), n)
  # Batches reach the device as read (uint8 pixels for TFDS sets) and are made ready there.
  step_fn = lambda state, guard, batch, hp: guarded_step(state, guard, ds.prepare(batch), hp)
  # Under keep_going the state from before a run of steps stays, for the replicas that diverge in it.
  donated = (1,) if keep_going else (0, 1)
  mirror = lambda state, hp: steps.between_steps_only(state, learner=steps.specialise(model, learner, hp)[1])
  eval_step = replicas.per_replica(functools.partial(steps.eval_step, model=model, task=task), n, (0, None))
  jit_align = steps.jit(lambda state, batch, hp: replicas.per_replica(align, n)(state, ds.prepare(batch), hp))
  return _Programs(
      step=step_fn,
      train=steps.jit(step_fn, donate_argnums=donated),
      donated=donated,
      batch_sharding=sharding.batch_sharding(parts.mesh) if n == 1 else sharding.replica_batch_sharding(parts.mesh),
      keep=jax.jit(replicas.per_replica(dispatch.keep_alive, n)),
      mirror=steps.jit(replicas.per_replica(mirror, n), donate_argnums=0),
      fresh_guard=jax.jit(replicas.per_replica(dispatch.Guard.fresh, n)),
      eval=steps.jit(lambda state, batch: eval_step(state, ds.prepare(batch))),
      align=lambda state, batch: jit_align(state, batch, hparams),
      skip=skip,
  )


def _steppers(run: settings.Run, parts: _Parts, programs: _Programs, stop, start: int, longest: int):
  """The `steppers.Stepper` of the mirror-only steps and the one of the train steps, from ``start`` on."""
  mirror = steppers.MirrorOnly(programs.mirror, parts.hparams, stop)
  # In-memory sets on one host: on the device whole, and a run of steps is one loop on the device
  # (or, where a loop would slow the steps down, one call each).
  if parts.ds.arrays is not None and jax.process_count() == 1:
    slow = dispatch.loop_is_slow(lambda: parts.learner.init({"params": jax.random.key(0)}))
    return mirror, steppers.OnDevice(programs.step, parts.ds.arrays["train"], functools.partial(_indices, parts),
                                     parts.hparams, mesh=parts.mesh, batch_sharding=programs.batch_sharding,
                                     donate_argnums=programs.donated, longest=longest, slow_loop=slow)
  batches = steppers.host_batches(parts.views, max(start, parts.mirror_steps), parts.mesh,
                                  prefetch=int(run.data.prefetch))
  return mirror, steppers.HostFed(programs.train, batches, parts.hparams, stop)


def _indices(parts: _Parts, step: int, count: int) -> np.ndarray:
  """``[count, b]``, or ``[count, N, b]`` for N replicas: the examples of each step's batches."""
  if parts.n == 1:
    return parts.ds.train_indices(step, count)
  return np.stack([view.train_indices(step, count) for view in parts.views], axis=1)


def _resume(ckpt: checkpoint.Checkpointer, state, workdir: str):
  """``(step, state, diverged)`` of the latest checkpoint in ``workdir``, or ``(None, state, {})``."""
  resumed, restored, meta = ckpt.restore_latest(checkpoint.abstract_like(state))
  if resumed is None:
    return None, state, {}
  logging.info("Resumed from the checkpoint at step %d in %s", resumed, workdir)
  # Replica -> the step and loss at which it stopped (keep_going).
  return resumed, restored, dict(meta.get("diverged", {}))


class _Loop(NamedTuple):
  """What a stretch of steps needs beyond the state."""

  run: settings.Run
  workdir: str
  keep_going: bool
  parts: _Parts
  programs: _Programs
  ckpt: checkpoint.Checkpointer
  diverged: dict
  every: tuple  # The periods whose multiples are boundaries.
  mirror: steppers.Stepper
  trainer: steppers.Stepper
  log: actions_lib.Log


def _stretch(loop: _Loop, state, step: int):
  """Runs the steps from ``step`` to the next boundary: ``(state, the step reached)``."""
  end = dispatch.next_boundary(step, loop.parts.total_steps, loop.every)
  if step < loop.parts.mirror_steps:
    state, _, _, taken, _ = loop.mirror.run(state, None, step, min(end, loop.parts.mirror_steps))
    loop.log.flush()
    return state, step + taken
  alive = _alive(loop.diverged, loop.parts.n)
  before = state
  state, guard, metrics, taken, last_batch = loop.trainer.run(state, loop.programs.fresh_guard(state.params, alive),
                                                              step, end)
  loop.log.flush()
  guard, metrics = jax.device_get((guard, metrics))
  state = _check_divergence(loop, guard, alive, state, before)
  loop.log.record(step, step + taken, jax.tree.map(lambda m: m[:taken], metrics), last_batch)
  return state, step + taken


def _check_divergence(loop: _Loop, guard: dispatch.Guard, alive: np.ndarray, state, before):
  """Raises on a divergence; under keep_going, records it and returns diverged replicas to ``before``."""
  if not np.all(guard.ok) and not loop.keep_going:
    loop.ckpt.wait()
    raise steps.DivergenceError(_divergence_message(loop.run, guard, loop.ckpt.latest_step(), loop.workdir))
  if _record_divergence(loop.run, guard, alive, loop.diverged):
    _save_diverged(loop.diverged, loop.workdir)
  if loop.keep_going and loop.diverged:
    return loop.programs.keep(_alive(loop.diverged, loop.parts.n), state, before)
  return state


def _alive(diverged: dict, n: int) -> np.ndarray:
  """Which replicas have not diverged (one flag without a replica axis for a single run)."""
  return np.array([str(r) not in diverged for r in range(n)]).reshape((n,) if n > 1 else ())
