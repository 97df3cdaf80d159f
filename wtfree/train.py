"""The training loop: data, steps, checkpoints, logs and evaluation, from a config."""

from collections.abc import Sequence
import functools
import itertools
import json
import time
import warnings

from absl import logging
from etils import epath
import flax
import jax
import jax.numpy as jnp
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
                       actions: Sequence[actions_lib.Periodic] = ()) -> steps.TrainState:
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
    actions: `wtfree.actions.Periodic` actions the loop runs at their
      periods, after its own evaluation, logging what they return.

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


def _train_and_evaluate(run: settings.Run, workdir: str, keep_going: bool, actions: tuple) -> steps.TrainState:
  """`train_and_evaluate`'s work, with the config read and checked and the workdir held."""
  began = time.time()
  n = run.replicas.count
  mesh = sharding.make_mesh(replicas=run.replicas.groups)
  # A sweep's per-replica values: arguments of the step, not constants of its trace.
  values = run.replicas.hparams
  hparams = {k: v[0] for k, v in values.items()} if n == 1 else jax.device_put(values, sharding.replica_sharding(mesh))
  ds = data.get_dataset(run.data)
  # The steps' task: the set's, or the classification loss config.loss names.
  task = steps.task_with_loss(ds.task, run.model.loss)
  views = replicas.datasets(ds, run.replicas.seeds)
  model = models.create(run.model, ds.num_classes, ds.input_shape, ds.input_dtype)
  length = run.length(ds.num_train)
  steps_per_epoch, total_steps = length.steps_per_epoch, length.total_steps
  learner = steps.make_learner(model, ds.input_shape, mirror_batch_size=run.loop.mirror_batch_size,
                         passes=run.loop.mirror_passes, mesh=mesh, input_dtype=ds.input_dtype)
  mirror_steps = length.mirror_steps
  frozen = None
  if learner.may_freeze:
    first = ds.prepare(sharding.global_batch(next(ds.train_batches(start_step=0)), mesh))
    frozen = steps.frozen_params(model, learner, first, task, run.seed)
  # The optimizer of each replica's values; the structure of its state is the same for all.
  make_tx = lambda hp: optim.make(run.optimizer, steps_per_epoch, frozen, hp)
  tx = make_tx({k: v[0] for k, v in values.items()})

  state = steps.create_train_state(model, tx, ds.input_shape, run.seed, mesh, learner,
                             replica_seeds=list(run.replicas.seeds), hparams=values)
  ckpt = checkpoint.Checkpointer(
      workdir, keep=run.loop.keep_checkpoints, save_every_steps=run.loop.checkpoint_every_steps
  )
  resumed, restored, meta = ckpt.restore_latest(checkpoint.abstract_like(state))
  diverged: dict[str, dict] = {}  # Replica -> the step and loss at which it stopped (keep_going).
  if resumed is not None:
    state = restored
    diverged = dict(meta.get("diverged", {}))
    logging.info("Resumed from the checkpoint at step %d in %s", resumed, workdir)
  _save_config(run, workdir)
  writer = writers.MetricWriter(workdir, tensorboard=run.loop.tensorboard,
                                cells=len(run.replicas.cells), resumed_at=resumed)

  skip = bool(run.loop.skip_nonfinite)

  def replica_step(state, batch, hp):
    replica_model, replica_learner = steps.specialise(model, learner, hp)
    return steps.train_step(state, batch, model=replica_model, tx=make_tx(hp), task=task, learner=replica_learner,
                      weight_decay_rate=optim.weight_decay_rate(run.optimizer, steps_per_epoch, hp),
                      skip_nonfinite=skip)

  guarded_step = replicas.per_replica(
      dispatch.guarded(replica_step, skip_nonfinite=skip, keep_going=keep_going), n)
  # Batches reach the device as read (uint8 pixels for TFDS sets) and are made ready there.
  step_fn = lambda state, guard, batch, hp: guarded_step(state, guard, ds.prepare(batch), hp)
  on_prepared = lambda fn: (lambda state, batch: fn(state, ds.prepare(batch)))
  batch_place = sharding.batch_sharding(mesh) if n == 1 else sharding.replica_batch_sharding(mesh)
  # Under keep_going the state from before a run of steps stays, for the replicas that diverge in it.
  donated = (1,) if keep_going else (0, 1)
  jit_train = steps.jit(step_fn, donate_argnums=donated)
  jit_keep = jax.jit(replicas.per_replica(dispatch.keep_alive, n))
  mirror = lambda state, hp: steps.between_steps_only(state, learner=steps.specialise(model, learner, hp)[1])
  jit_mirror = steps.jit(replicas.per_replica(mirror, n), donate_argnums=0)
  fresh_guard = jax.jit(replicas.per_replica(dispatch.Guard.fresh, n))
  # Which replicas have not diverged (one flag without a replica axis for a single run).
  alive = lambda: np.array([str(r) not in diverged for r in range(n)]).reshape((n,) if n > 1 else ())
  jit_eval = steps.jit(on_prepared(
      replicas.per_replica(functools.partial(steps.eval_step, model=model, task=task), n, (0, None))))

  def align(state, batch, hp):
    replica_model, replica_learner = steps.specialise(model, learner, hp)
    return steps.alignment_step(state, batch, model=replica_model, task=task, learner=replica_learner)

  jit_align = steps.jit(lambda state, batch, hp: replicas.per_replica(align, n)(state, ds.prepare(batch), hp))
  # In-memory sets on one host: on the device whole, and a run of steps is one loop on the device
  # (or, where a loop would slow the steps down, one call each).
  on_device = ds.arrays if jax.process_count() == 1 else None
  if on_device is not None:
    images, labels = (jax.device_put(a, sharding.replicated(mesh)) for a in on_device["train"])
    if dispatch.loop_is_slow(lambda: learner.init({"params": jax.random.key(0)})):
      jit_scan = dispatch.one_by_one(step_fn, batch_place, functools.partial(steps.jit, donate_argnums=donated))
    else:
      jit_scan = steps.jit(dispatch.scan_steps(step_fn, batch_place), donate_argnums=donated)

  def indices(step, steps):
    """``[steps, b]``, or ``[steps, N, b]`` for N replicas: the examples of each step's batches."""
    if n == 1:
      return ds.train_indices(step, steps)
    return np.stack([view.train_indices(step, steps) for view in views], axis=1)

  def gathered(rows):
    return {"image": on_device["train"][0][rows], "label": on_device["train"][1][rows]}

  def host_batch(iterators):
    if n == 1:
      return sharding.global_batch(next(iterators[0]), mesh)
    local = [next(it) for it in iterators]
    return sharding.global_batch({k: np.stack([b[k] for b in local]) for k in local[0]}, mesh, replicas=True)

  def evaluate(step):
    splits = [("test", "eval")] + ([("validation", "val")] if ds.has_validation else [])
    for split, prefix in splits:
      sums = None
      for local in ds.eval_batches(split):
        batch_sums = jax.device_get(jit_eval(state, sharding.global_batch(local, mesh)))
        sums = batch_sums if sums is None else jax.tree.map(np.add, sums, batch_sums)
      count = np.maximum(np.asarray(sums.pop("count"), np.float64), 1.0)
      results = replicas.summarise({f"{prefix}/{k}": np.asarray(v) / count for k, v in sums.items()}, n)
      writer.write(step, "eval" if split == "test" else split, results)
      logging.info("step %d %s %s", step, split, _fmt(results))

  def save(step, force=False):
    minutes = run.loop.checkpoint_every_minutes
    force = force or (minutes > 0 and time.time() - save.last > 60 * minutes)
    if not force and step % run.loop.checkpoint_every_steps:
      return  # Not a checkpoint step: spare orbax's own check, a few ms at every boundary.
    meta = {"data_position": step, "rule": run.model.rule_name, "num_seeds": n, "diverged": diverged}
    if ckpt.save(step, state, meta, force=force):
      save.last = time.time()

  def train_run(state, guard, step, end):
    """Steps ``step .. end - 1`` dispatched without reading anything back.

    Returns the state, the guard, the steps' metrics (``[steps]`` or
    ``[steps, N]`` on the device; for an in-memory set, ``[longest]`` with
    the steps' rows first), the number of steps taken and a getter of the
    last batch, for angles. A host-fed run stops early after the step
    during which SIGTERM came.
    """
    if on_device is not None:
      rows = indices(step, end - step)
      padded = np.zeros((longest, *rows.shape[1:]), rows.dtype)
      padded[:len(rows)] = rows
      state, guard, metrics = jit_scan(state, guard, images, labels, jnp.asarray(padded), np.int32(len(rows)),
                                       hparams)
      return state, guard, metrics, end - step, lambda: jax.device_put(gathered(rows[-1]), batch_place)
    runs = []
    for _ in range(step, end):
      batch = next(device_batches)
      state, guard, metrics = jit_train(state, guard, batch, hparams)
      runs.append(metrics)
      if stop.requested:  # SIGTERM: stop at this step, not at the next boundary.
        break
    return state, guard, jax.tree.map(lambda *m: jnp.stack(m), *runs), len(runs), lambda: batch

  save.last = time.time()
  start = int(np.ravel(state.step)[0])
  device_batches = None
  if on_device is None:
    iterators = [view.train_batches(start_step=max(start, mirror_steps)) for view in views]
    # The next batches are sent while the current step runs (device_put does not wait).
    device_batches = dispatch.ahead((host_batch(iterators) for _ in itertools.count()),
                                    max(1, int(run.data.prefetch)))
  history: dict[str, list] = {}
  skipped = 0
  last_batch = None
  # Several hosts agree on the step to stop at after every step (JAX's preemption service).
  every = (1,) if jax.process_count() > 1 else (
      run.loop.log_every_steps, run.loop.eval_every_steps, run.loop.checkpoint_every_steps,
      *(action.every_steps for action in actions))
  longest = dispatch.longest_run(total_steps, every)
  tick, tick_step = time.time(), start
  step = start
  pending = []  # A log line whose angles are still on the device: written while the next steps run.

  def flush():
    for done, summary, angles, eta in pending:
      if angles is not None:
        summary.update(replicas.summarise(jax.device_get(angles), n))
      writer.write(done, "train", summary)
      logging.info("step %d/%d %s %s eta %.0fs", done, total_steps,
                   _fmt(summary, skip=("angle/", "ratio/", "rule/")), summary_lib.angles_line(summary), eta)
    pending.clear()

  if start == 0 and run.loop.eval_at_start:
    if run.loop.angles:
      if on_device is not None:
        batch = jax.device_put(gathered(indices(0, 1)[0]), batch_place)
      else:
        batch = next(device_batches)
        device_batches = itertools.chain([batch], device_batches)
      pending.append((0, {}, jit_align(state, batch, hparams), 0.0))
      flush()
    evaluate(0)

  try:
    with preemption.StopOnSigterm() as stop:
      while step < total_steps:
        done = dispatch.next_boundary(step, total_steps, every)
        if step < mirror_steps:
          done = min(done, mirror_steps)
          for taken_step in range(step + 1, done + 1):
            state = jit_mirror(state, hparams)
            if stop.requested:
              break
          done = taken_step
          flush()
        else:
          before = state
          state, guard, metrics, taken_steps, last_batch = train_run(state, fresh_guard(state.params, alive()), step,
                                                                     done)
          done = step + taken_steps
          flush()
          guard, taken = jax.device_get((guard, metrics))
          taken = jax.tree.map(lambda m: m[:taken_steps], taken)
          if not np.all(guard.ok) and not keep_going:
            ckpt.wait()
            raise steps.DivergenceError(_divergence_message(run, guard, ckpt.latest_step(), workdir))
          if _record_divergence(run, guard, alive(), diverged):
            _save_diverged(diverged, workdir)
          if keep_going and diverged:
            state = jit_keep(alive(), state, before)
          finite = np.asarray(taken.pop("finite"), bool)
          if skip and not finite.all():
            skipped += int((~finite).sum())
            logging.warning("steps %d-%d: %d with non-finite loss or gradients skipped", step + 1, done,
                            int((~finite).sum()))
          for k, v in taken.items():
            history.setdefault(k, []).append(np.where(finite, np.asarray(v, np.float64), np.nan))
        step = done
        if done % run.loop.log_every_steps == 0 or done == total_steps:
          elapsed = time.time() - tick
          summary = {"train/examples_per_second": (done - tick_step) * run.data.batch_size * n / max(elapsed, 1e-9)}
          with warnings.catch_warnings():  # A window whose every step was skipped logs NaN.
            warnings.simplefilter("ignore", RuntimeWarning)
            means = {f"train/{k}": np.nanmean(np.concatenate(v), axis=0) for k, v in history.items()}
          summary.update(replicas.summarise(means, n))
          if skipped:
            summary["train/skipped_steps"] = skipped
          angles = None
          if last_batch is not None and run.loop.angles:
            angles = jit_align(state, last_batch(), hparams)  # Dispatched now, read after the next steps are.
          pending.append((done, summary, angles, (total_steps - done) * elapsed / max(done - tick_step, 1)))
          history, tick, tick_step = {}, time.time(), done
        if done % run.loop.eval_every_steps == 0 or done == total_steps:
          flush()
          evaluate(done)
        for action in actions:
          if action.due(done, total_steps):
            flush()
            results = action.fn(done, state)
            if results:
              writer.write(done, action.name, results)
        stopping = stop.should_stop(done)
        save(done, force=done == total_steps or stopping)
        if stopping:
          flush()
          ckpt.wait()
          writer.close()
          raise preemption.Preempted(
              f"stopped on SIGTERM after step {done}, checkpoint saved in {workdir}; "
              "run the same command again to resume"
          )
  except BaseException:
    # Saves still in flight finish (or fail) before the error leaves: the last good checkpoint stays whole.
    ckpt.wait()
    raise
  flush()
  ckpt.wait()
  ckpt.close()
  writer.close()
  if jax.process_index() == 0:
    for line in summary_lib.closing_lines(workdir, num_classes=ds.num_classes, seconds=time.time() - began,
                                          steps_taken=total_steps - start, finished_before=start >= total_steps):
      logging.info("%s", line)
  return state


def _fmt(values: dict, skip: tuple[str, ...] = ()) -> str:
  return " ".join(f"{k}={v:.4g}" for k, v in values.items()
                  if not k.startswith(skip) and not isinstance(v, list))
