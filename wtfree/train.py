"""The train state, the jitted train/eval/mirror steps, and the training loop."""

import functools
import math
import time
from typing import Any

from absl import logging
from etils import epath
import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from wtfree import checkpoint
from wtfree import data
from wtfree import dispatch
from wtfree import feedback
from wtfree import learning
from wtfree import metrics
from wtfree import models
from wtfree import optim
from wtfree import preemption
from wtfree import sharding
from wtfree import validate
from wtfree import writers

Array = jax.Array


class TrainState(flax.struct.PyTreeNode):
  """Everything a run needs to continue: a pure pytree, checkpointed whole.

  Attributes:
    step: steps taken (mirror-only steps included); also the data position.
    params: W per layer (and the alignment losses' B), BatchNorm scales and biases.
    feedback: the ``feedback`` collection (fixed random B, magnitudes, kp's
      offset, wm's B).
    batch_stats: BatchNorm running statistics.
    opt_state: the optax state.
    rng: raw key data; each step folds in its step number.
  """

  step: Array
  params: Any
  feedback: Any
  batch_stats: Any
  opt_state: Any
  rng: Array

  def variables(self) -> dict:
    """The model's variables, as ``Module.apply`` takes them."""
    return {"params": self.params, "feedback": self.feedback, "batch_stats": self.batch_stats}

  def key(self, stream: int) -> Array:
    """A key for this step and ``stream`` (0 feedback, 1 mirror, 2 dropout)."""
    key = jax.random.wrap_key_data(self.rng)
    return jax.random.fold_in(jax.random.fold_in(key, self.step), stream)


class DivergenceError(FloatingPointError):
  """Training produced a non-finite loss."""


def _loss(task: str, outputs: Array, labels: Array) -> Array:
  """Per-example loss: cross entropy, or half the squared error for regression."""
  if task == "regression":
    return 0.5 * jnp.sum(jnp.square(outputs - labels), axis=-1)
  return metrics.cross_entropy(outputs, labels)


def apply_for_loss(model, variables, x, *, rngs, mutable: list[str]) -> tuple[Array, dict]:
  """``model.apply`` in training mode, its output joined to any dfa taps.

  Under ``dfa`` the layers' taps are connected to the output
  (`feedback.connect`), so that the output error reaches every layer; for
  other rules the taps collection is empty and this is a plain apply.
  """
  outputs, updated = model.apply(
      variables, x, train=True, rngs=rngs, mutable=[*mutable, feedback.direct.TAPS]
  )
  taps = updated.pop(feedback.direct.TAPS, {})
  if taps:
    outputs = feedback.connect(outputs, taps, model.rule)
  return outputs, updated


def _batch_loss(model, variables, batch: dict, task: str, rngs) -> tuple[Array, tuple[Array, dict]]:
  """The mean training loss of ``batch``, with the outputs and the updated BatchNorm statistics."""
  outputs, updated = apply_for_loss(model, variables, batch["image"], rngs=rngs, mutable=["batch_stats"])
  return jnp.mean(_loss(task, outputs, batch["label"])), (outputs, updated)


def make_learner(model, input_shape, *, mirror_batch_size: int = 256, passes: int = 1, mesh=None) -> learning.Learner:
  """The `learning.Learner` of a wtfree model that takes ``[batch, *input_shape]`` float inputs."""
  example = jax.ShapeDtypeStruct((1, *input_shape), jnp.float32)
  input_sharding = None if mesh is None else sharding.batch_sharding(mesh)
  return learning.Learner(model, example, mirror_batch_size=mirror_batch_size, passes=passes,
                          input_sharding=input_sharding, train=False)


def create_train_state(model, tx, input_shape, seed: int, mesh, learner: learning.Learner | None = None) -> TrainState:
  """Initialises the state shape-first, replicated over ``mesh``, through ``learner.init``."""
  learner = learner or make_learner(model, input_shape)

  def init(rng):
    params_key, rng = jax.random.split(rng)
    variables = learner.init({"params": params_key})
    params = variables["params"]
    return TrainState(
        step=jnp.zeros((), jnp.int32),
        params=params,
        feedback=variables.get("feedback", {}),
        batch_stats=variables.get("batch_stats", {}),
        opt_state=tx.init(params),
        rng=jax.random.key_data(rng),
    )

  rng = jax.random.key(seed)
  abstract = jax.eval_shape(init, rng)
  shardings = jax.tree.map(lambda _: sharding.replicated(mesh), abstract)
  return jax.jit(init, out_shardings=shardings)(rng)


def frozen_params(model, learner: learning.Learner, batch: dict, task: str, seed: int):
  """`learning.frozen_mask` of the initial params on ``batch``, or None where every rule sends errors."""
  if not learner.zeroes_errors:
    return None
  params_key = jax.random.split(jax.random.key(seed))[0]

  @jax.jit
  def grads(batch):
    variables = learner.init({"params": params_key})

    rngs = {"feedback": jax.random.key(0), "dropout": jax.random.key(1)}
    loss = lambda params: _batch_loss(model, {**variables, "params": params}, batch, task, rngs)[0]
    return jax.grad(loss)(variables["params"])

  return learning.frozen_mask(grads(batch))


def _all_finite(tree) -> Array:
  return jnp.all(jnp.array([jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]))


def train_step(
    state: TrainState,
    batch: dict,
    *,
    model,
    tx,
    task: str,
    learner: learning.Learner | None = None,
    weight_decay_rate: optax.Schedule | None = None,
    skip_nonfinite: bool = False,
) -> tuple[TrainState, dict]:
  """Forward, the rule's backward, the optimizer update, then the rule's between-steps learning.

  ``learner.update`` runs after the update (kp's decay of B - W at
  ``weight_decay_rate(step)``, wm's mirror passes), as in any user's loop.

  Returns the new state and metrics: ``loss``, ``top1`` (classification),
  ``finite`` (loss and every gradient finite) and ``finite_grads``, a tree of
  per-leaf flags that names the layers a divergence reached. With
  ``skip_nonfinite`` a step whose loss or gradients are not finite leaves the
  state as it was, but for the step count.
  """

  def loss_fn(params):
    rngs = {"feedback": state.key(0), "dropout": state.key(2)}
    return _batch_loss(model, {**state.variables(), "params": params}, batch, task, rngs)

  (loss, (outputs, updated)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  new_state = state.replace(
      step=state.step + 1,
      params=params,
      batch_stats=updated.get("batch_stats", state.batch_stats),
      opt_state=opt_state,
  )
  if learner is not None and learner.learns_between_steps:
    rate = None if weight_decay_rate is None else weight_decay_rate(state.step)
    learned = learner.update(new_state.variables(), state.key(1), weight_decay_rate=rate)
    new_state = new_state.replace(feedback=learned["feedback"])
  finite_grads = jax.tree.map(lambda g: jnp.all(jnp.isfinite(g)), grads)
  finite = jnp.isfinite(loss) & _all_finite(grads)
  if skip_nonfinite:
    kept = jax.tree.map(lambda new, old: jnp.where(finite, new, old), new_state, state)
    new_state = kept.replace(step=state.step + 1)
  step_metrics = {"loss": loss, "finite": finite, "finite_grads": finite_grads}
  if task == "classification":
    step_metrics["top1"] = jnp.mean(metrics.topk_correct(outputs, batch["label"], 1))
  return new_state, step_metrics


def mirror_only_step(state: TrainState, *, learner: learning.Learner) -> TrainState:
  """A step of the mirror-only warm-up: B learns in between-steps passes, nothing else changes."""
  learned = learner.update(state.variables(), state.key(1))
  return state.replace(step=state.step + 1, feedback=learned["feedback"])


def eval_step(state: TrainState, batch: dict, *, model, task: str) -> dict:
  """Sums of loss, top-1 and top-5 over the real (unmasked) examples."""
  outputs = model.apply(state.variables(), batch["image"], train=False, rngs={"feedback": state.key(0)})
  mask = batch["mask"]
  sums = {"loss": jnp.sum(_loss(task, outputs, batch["label"]) * mask), "count": jnp.sum(mask)}
  if task == "classification":
    for k in (1, 5):
      sums[f"top{k}"] = jnp.sum(metrics.topk_correct(outputs, batch["label"], k) * mask)
  return sums


def alignment_step(state: TrainState, batch: dict, *, model, task: str) -> dict:
  """Per-layer weight angles, ``|B|/|W|`` and delta angles on ``batch``.

  Angles are in degrees. dfa layers have no weight angle (their B maps the
  output error, not the layer's output, to the layer's input).
  """
  variables = state.variables()
  x, labels = batch["image"], batch["label"]
  rngs = {"feedback": state.key(0)}
  outputs, collected = model.apply(
      variables,
      x,
      train=True,
      rngs=rngs,
      mutable=["alignment", "perturbations", "batch_stats", feedback.direct.TAPS],
  )

  def loss_of(m):
    def loss(perturbations):
      outputs, _ = apply_for_loss(
          m, {**variables, "perturbations": perturbations}, x, rngs=rngs, mutable=["batch_stats"]
      )
      return jnp.mean(_loss(task, outputs, labels))

    return loss

  maps = {}
  if collected.get(feedback.direct.TAPS):
    n_out = math.prod(outputs.shape[1:])
    maps = feedback.direct.broadcast_maps(collected[feedback.direct.TAPS], n_out, model.rule)
  deltas = metrics.delta_angles(loss_of(model), loss_of(model.clone(rule="bp")), collected["perturbations"])
  weights = metrics.weight_angles(collected["alignment"])
  ratios = metrics.weight_ratios(collected["alignment"], maps)
  return {
      **{f"angle/weight/{k}": v for k, v in weights.items()},
      **{f"ratio/weight/{k}": v for k, v in ratios.items()},
      **{f"angle/delta/{k}": v for k, v in deltas.items()},
      **{f"rule/{k}": v for k, v in metrics.rule_reports(collected["alignment"]).items()},
  }


def _nonfinite_layers(finite_grads) -> list[str]:
  flat = flax.traverse_util.flatten_dict(flax.core.unfreeze(finite_grads))
  layers = ["/".join(path[:-1]) for path, ok in flat.items() if not bool(ok)]
  return list(dict.fromkeys(layers))


def _divergence_message(config, step: int, step_metrics: dict, last_good, workdir: str) -> str:
  layers = _nonfinite_layers(step_metrics["finite_grads"])
  where = f"; non-finite gradients in {', '.join(layers)}" if layers else ""
  kept = f"the last good checkpoint is step {last_good} in {workdir}" if last_good else "no checkpoint was saved yet"
  return (
      f"loss is {float(step_metrics['loss'])} at step {step} with rule {config.rule!r}{where}; {kept}. "
      "Lower the learning rate, add BatchNorm (--config.model_options.batch_norm=True), "
      "Batch Manhattan (--config.batch_manhattan=True), or skip such steps "
      "(--config.skip_nonfinite=True)."
  )


def _save_config(config, workdir: str) -> None:
  if jax.process_index() == 0:
    path = epath.Path(workdir)
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(config.to_json_best_effort(indent=2, sort_keys=True))


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> TrainState:
  """Trains and evaluates the run ``config`` describes, resuming from ``workdir``.

  Writes ``workdir/metrics.jsonl``, TensorBoard events and orbax checkpoints;
  a run started again with the same workdir continues from its latest
  checkpoint and sees exactly the batches it would have seen. On SIGTERM it
  saves at the end of the current step (for an in-memory set, whose steps
  run as one scan between boundaries, at the end of that run of steps) and
  raises `preemption.Preempted`.

  Args:
    config: the run's hyperparameters (see ``configs/default.py``).
    workdir: where checkpoints and metrics go (local path or ``gs://``).

  Returns:
    The final train state.

  Raises:
    ValueError: for a config that cannot run, before anything is compiled.
    DivergenceError: on a non-finite loss or gradient (unless
      ``config.skip_nonfinite``); the last good checkpoint stays.
  """
  validate.check_config(config)
  validate.check_workdir(config, workdir)
  mesh = sharding.make_mesh()
  ds = data.get_dataset(config)
  model = models.create(config, ds.num_classes, ds.input_shape)
  steps_per_epoch = max(1, ds.num_train // config.batch_size)
  total_steps = config.num_steps if config.get("num_steps", -1) > 0 else int(config.num_epochs * steps_per_epoch)
  learner = make_learner(model, ds.input_shape, mirror_batch_size=config.mirror_batch_size,
                         passes=config.mirror_passes, mesh=mesh)
  mirror_steps = optim.mirror_steps(config, steps_per_epoch)
  frozen = None
  if learner.zeroes_errors:
    frozen = frozen_params(model, learner, sharding.global_batch(next(ds.train_batches(start_step=0)), mesh),
                           ds.task, config.seed)
  tx = optim.make(config, steps_per_epoch, frozen)
  weight_decay_rate = optim.weight_decay_rate(config, steps_per_epoch)

  state = create_train_state(model, tx, ds.input_shape, config.seed, mesh, learner)
  ckpt = checkpoint.Checkpointer(
      workdir, keep=config.get("keep_checkpoints", 3), save_every_steps=config.checkpoint_every_steps
  )
  resumed, restored, _ = ckpt.restore_latest(checkpoint.abstract_like(state))
  if resumed is not None:
    state = restored
    logging.info("Resumed from the checkpoint at step %d in %s", resumed, workdir)
  _save_config(config, workdir)
  writer = writers.MetricWriter(workdir, tensorboard=config.get("tensorboard", True))

  skip = bool(config.get("skip_nonfinite", False))
  step_fn = dispatch.guarded(
      functools.partial(train_step, model=model, tx=tx, task=ds.task, learner=learner,
                        weight_decay_rate=weight_decay_rate, skip_nonfinite=skip),
      skip_nonfinite=skip,
  )
  jit_train = jax.jit(step_fn, donate_argnums=(0, 1))
  jit_mirror = jax.jit(functools.partial(mirror_only_step, learner=learner), donate_argnums=0)
  fresh_guard = jax.jit(dispatch.Guard.fresh)
  jit_eval = jax.jit(functools.partial(eval_step, model=model, task=ds.task))
  jit_align = jax.jit(functools.partial(alignment_step, model=model, task=ds.task))
  # In-memory sets on one host: on the device whole, and a run of steps is one scan.
  on_device = ds.arrays if jax.process_count() == 1 else None
  if on_device is not None:
    images, labels = (jax.device_put(a, sharding.replicated(mesh)) for a in on_device["train"])
    jit_scan = jax.jit(dispatch.scan_steps(step_fn, sharding.batch_sharding(mesh)), donate_argnums=(0, 1))

  def evaluate(step):
    sums = None
    for local in ds.eval_batches():
      batch_sums = jax.device_get(jit_eval(state, sharding.global_batch(local, mesh)))
      sums = batch_sums if sums is None else jax.tree.map(np.add, sums, batch_sums)
    count = max(float(sums.pop("count")), 1.0)
    results = {f"eval/{k}": float(v) / count for k, v in sums.items()}
    writer.write(step, "eval", results)
    logging.info("step %d eval %s", step, _fmt(results))

  def save(step, force=False):
    minutes = config.get("checkpoint_every_minutes", 0)
    force = force or (minutes > 0 and time.time() - save.last > 60 * minutes)
    if not force and step % config.checkpoint_every_steps:
      return  # Not a checkpoint step: spare orbax's own check, a few ms at every boundary.
    if ckpt.save(step, state, {"data_position": step, "rule": config.rule}, force=force):
      save.last = time.time()

  def train_run(state, guard, step, end):
    """Steps ``step .. end - 1`` dispatched without reading anything back; a getter of the last batch, for angles.

    A host-fed run stops early after the step during which SIGTERM came: ``len(runs)`` steps ran.
    """
    if on_device is not None:
      indices = ds.train_indices(step, end - step)
      state, guard, metrics = jit_scan(state, guard, images, labels, jnp.asarray(indices))
      last = lambda: sharding.global_batch(
          {"image": on_device["train"][0][indices[-1]], "label": on_device["train"][1][indices[-1]]}, mesh)
      return state, guard, [metrics], last
    runs = []
    for _ in range(step, end):
      batch = sharding.global_batch(next(batches), mesh)
      state, guard, metrics = jit_train(state, guard, batch)
      runs.append(metrics)
      if stop.requested:  # SIGTERM: stop at this step, not at the next boundary.
        break
    return state, guard, runs, lambda: batch

  save.last = time.time()
  start = int(state.step)
  batches = None if on_device is not None else ds.train_batches(start_step=max(start, mirror_steps))
  history: dict[str, list] = {}
  skipped = 0
  last_batch = None
  # Several hosts agree on the step to stop at after every step (JAX's preemption service).
  every = (1,) if jax.process_count() > 1 else (
      config.log_every_steps, config.eval_every_steps, config.checkpoint_every_steps)
  tick, tick_step = time.time(), start
  step = start
  pending = []  # A log line whose angles are still on the device: written while the next steps run.

  def flush():
    for done, summary, angles, eta in pending:
      if angles is not None:
        summary.update(jax.device_get(angles))
      writer.write(done, "train", summary)
      logging.info("step %d/%d %s eta %.0fs", done, total_steps, _fmt(summary, skip=("angle/", "ratio/")), eta)
    pending.clear()

  with preemption.StopOnSigterm() as stop:
    while step < total_steps:
      done = dispatch.next_boundary(step, total_steps, every)
      if step < mirror_steps:
        done = min(done, mirror_steps)
        for taken_step in range(step + 1, done + 1):
          state = jit_mirror(state)
          if stop.requested:
            break
        done = taken_step
        flush()
      else:
        state, guard, runs, last_batch = train_run(state, fresh_guard(state.params), step, done)
        done = step + (len(runs) if on_device is None else done - step)
        flush()
        guard, taken = jax.device_get(guard), dispatch.stack(runs)
        if not guard.ok:
          ckpt.wait()
          bad = {"loss": guard.loss, "finite_grads": guard.finite_grads}
          raise DivergenceError(_divergence_message(config, int(guard.step), bad, ckpt.latest_step(), workdir))
        finite = taken.pop("finite").astype(bool)
        if skip and not finite.all():
          skipped += int((~finite).sum())
          logging.warning("steps %d-%d: %d with non-finite loss or gradients skipped", step + 1, done,
                          int((~finite).sum()))
        for k, v in taken.items():
          history.setdefault(k, []).extend(v[finite].tolist())
      step = done
      if done % config.log_every_steps == 0 or done == total_steps:
        elapsed = time.time() - tick
        summary = {"train/examples_per_second": (done - tick_step) * config.batch_size / max(elapsed, 1e-9)}
        summary.update({f"train/{k}": float(np.mean(v)) for k, v in history.items() if v})
        if skipped:
          summary["train/skipped_steps"] = skipped
        angles = None
        if last_batch is not None and config.get("angles", True):
          angles = jit_align(state, last_batch())  # Dispatched now, read after the next steps are.
        pending.append((done, summary, angles, (total_steps - done) * elapsed / max(done - tick_step, 1)))
        history, tick, tick_step = {}, time.time(), done
      if done % config.eval_every_steps == 0 or done == total_steps:
        flush()
        evaluate(done)
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
  flush()
  ckpt.wait()
  ckpt.close()
  writer.close()
  return state


def _fmt(values: dict, skip: tuple[str, ...] = ()) -> str:
  return " ".join(f"{k}={v:.4g}" for k, v in values.items() if not k.startswith(skip))
