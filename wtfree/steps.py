"""The train state, its builder, and the jitted train, eval, between-steps and alignment steps.

Everything a training loop compiles, and nothing about data, checkpoints or
logs: `wtfree.train`'s loop, the benchmarks and a user's own loop all take
their steps from here.
"""

import functools
import math
from typing import Any

import flax
import jax
import jax.numpy as jnp
import optax

from wtfree import backend
from wtfree import feedback
from wtfree import learning
from wtfree import metrics
from wtfree import replicas
from wtfree import sharding

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
    """A key for this step and ``stream`` (`FEEDBACK`, `BETWEEN_STEPS`, `DROPOUT` or `RULE`)."""
    key = jax.random.wrap_key_data(self.rng)
    return jax.random.fold_in(jax.random.fold_in(key, self.step), stream)


# The key streams of a step (`TrainState.key`).
FEEDBACK = 0  # Feedback drawn anew every step.
BETWEEN_STEPS = 1  # Mirror noise of the between-steps passes.
DROPOUT = 2
RULE = 3  # The rule's own noise in forming the gradients (np's, fg's perturbations).


class DivergenceError(FloatingPointError):
  """Training produced a non-finite loss."""


def sigmoid_binary_cross_entropy(logits: Array, labels: Array) -> Array:
  """Per-example ``sum_k BCE(sigmoid(z_k), onehot_k)``: every output a logistic unit with its own target.

  Summed over the classes and, by the step, averaged over the batch, as
  Akrout et al.'s reference code does; the gradient at the logits is
  ``sigmoid(z) - onehot``.
  """
  targets = jax.nn.one_hot(labels, logits.shape[-1], dtype=jnp.float32)
  return jnp.sum(optax.sigmoid_binary_cross_entropy(logits.astype(jnp.float32), targets), axis=-1)


# Per-example classification losses by ``config.loss``; the first is the default.
LOSSES = {
    "softmax_cross_entropy": metrics.cross_entropy,
    "sigmoid_binary_cross_entropy": sigmoid_binary_cross_entropy,
}


def task_with_loss(task: str, loss: str | None) -> str:
  """The ``task`` the steps take: a data set's task, or for classification the name of its loss in `LOSSES`.

  Raises:
    ValueError: for a loss not in `LOSSES`, or one other than the default for a task that is not classification.
  """
  default = next(iter(LOSSES))
  loss = loss or default
  if loss not in LOSSES:
    raise ValueError(f"loss {loss!r} is not one of {', '.join(LOSSES)}")
  if loss == default:
    return task
  if task != "classification":
    raise ValueError(f"loss {loss!r} is for classification, not a {task} task: drop --config.loss")
  return loss


def _loss(task: str, outputs: Array, labels: Array) -> Array:
  """Per-example loss: cross entropy (a sequence's mean over positions), half the squared error, or `LOSSES`[task]."""
  if task == "regression":
    return 0.5 * jnp.sum(jnp.square(outputs - labels), axis=-1)
  if task == "language_model":
    return jnp.mean(metrics.cross_entropy(outputs, labels), axis=-1)
  return LOSSES.get(task, metrics.cross_entropy)(outputs, labels)


def _correct(task: str, outputs: Array, labels: Array, k: int) -> Array:
  """Per-example top-k accuracy (a sequence's fraction of positions)."""
  correct = metrics.topk_correct(outputs, labels, k)
  return jnp.mean(correct, axis=-1) if task == "language_model" else correct


# Most of a CPU compile is LLVM optimising the code, which pays back only over
# many runs; a program that runs once (initialisation) is compiled without it.
_RUNS_ONCE_CPU_OPTIONS = {"xla_backend_optimization_level": 0}


def jit(fn, *, runs_once: bool = False, **kwargs):
  """`jax.jit` of ``fn`` with `backend.compiler_options`: convolutions compiled as the CPU plan assumes.

  Args:
    fn: the function to compile.
    runs_once: on the CPU, compile without LLVM's optimisations, for a
      program run once, whose compile would take longer than its run.
    **kwargs: passed to `jax.jit`.
  """
  options = backend.compiler_options()
  if runs_once and jax.default_backend() == "cpu":
    options = {**options, **_RUNS_ONCE_CPU_OPTIONS}
  return jax.jit(fn, compiler_options=options, **kwargs)


def make_learner(model, input_shape, *, mirror_batch_size: int = 256, passes: int = 1, mesh=None,
                 input_dtype=jnp.float32) -> learning.Learner:
  """The `learning.Learner` of a wtfree model that takes ``[batch, *input_shape]`` inputs of ``input_dtype``."""
  example = jax.ShapeDtypeStruct((1, *input_shape), input_dtype)
  input_sharding = None if mesh is None else sharding.batch_sharding(mesh)
  return learning.Learner(model, example, mirror_batch_size=mirror_batch_size, passes=passes,
                          input_sharding=input_sharding, train=False)


RULE_OPTION = "rule_options."


def specialise(model, learner: learning.Learner, hparams) -> tuple[Any, learning.Learner]:
  """The model and learner with the rule options in ``hparams`` (``{'rule_options.p': value}``) set.

  A sweep's replica takes its rule's numeric options as traced values
  (`wtfree.grid`); other entries of ``hparams`` are the optimizer's. Without
  rule options, ``(model, learner)`` as they are.
  """
  values = {k[len(RULE_OPTION):]: v for k, v in (hparams or {}).items() if k.startswith(RULE_OPTION)}
  if not values:
    return model, learner
  model = model.clone(rule=feedback.get_rule(model.rule).with_values(**values))
  return model, learner.with_model(model)


def create_train_state(model, tx, input_shape, seed: int, mesh, learner: learning.Learner | None = None,
                       num_seeds: int = 1, replica_seeds=None, hparams=None, shapes_only: bool = False) -> TrainState:
  """Initialises the state shape-first on ``mesh``, through ``learner.init``.

  With ``num_seeds > 1`` every leaf has a leading replica axis: replica s is
  the state a single-seed run of ``seed + s`` starts from, and the replicas
  are split over the mesh's replica axis (`wtfree.replicas`).
  ``replica_seeds`` (a sequence of seeds, one per replica, e.g. a sweep's
  `wtfree.replicas.seeds`) replaces ``seed + s``, and ``hparams``
  (`wtfree.replicas.hparams`: values per replica) gives each replica its
  rule's options at init (`specialise`). With ``shapes_only`` nothing is
  allocated: the state's ``jax.ShapeDtypeStruct`` leaves, with the shardings
  it would have, to compile a step against (``jit(...).lower(state, ...)``).
  """
  learner = learner or make_learner(model, input_shape)

  def init(rng, hp):
    params_key, rng = jax.random.split(rng)
    variables = specialise(model, learner, hp)[1].init({"params": params_key})
    params = variables["params"]
    return TrainState(
        step=jnp.zeros((), jnp.int32),
        params=params,
        feedback=variables.get("feedback", {}),
        batch_stats=variables.get("batch_stats", {}),
        opt_state=tx.init(params),
        rng=jax.random.key_data(rng),
    )

  if replica_seeds is not None:
    num_seeds = len(replica_seeds)
  hparams = {k: jnp.asarray(v, jnp.float32) for k, v in (hparams or {}).items()}
  if num_seeds == 1:
    rng, place = jax.random.key(seed if replica_seeds is None else replica_seeds[0]), sharding.replicated(mesh)
    hparams = {k: v.reshape(()) for k, v in hparams.items()}
  else:
    seeds = seed + jnp.arange(num_seeds) if replica_seeds is None else jnp.asarray(replica_seeds)
    rng, place = jax.vmap(jax.random.key)(seeds), sharding.replica_sharding(mesh)
    init = replicas.per_replica(init, num_seeds)
  abstract = jax.eval_shape(init, rng, hparams)
  if shapes_only:
    return jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=place), abstract)
  return jit(init, runs_once=True, out_shardings=jax.tree.map(lambda _: place, abstract))(rng, hparams)


def frozen_params(model, learner: learning.Learner, batch: dict, task: str, seed: int):
  """The parameters the rules keep from any update (`learning.Learner.frozen`) on ``batch``, or None."""
  params_key = jax.random.split(jax.random.key(seed))[0]
  variables = jit(learner.init, runs_once=True)({"params": params_key})
  return learner.frozen(functools.partial(_loss, task), variables, batch["image"], targets=batch["label"],
                        key=jax.random.key(0), train=True)


def _finite(x: Array) -> Array:
  """Whether the sum of ``x`` is finite: false for any infinite or NaN entry.

  Finite entries whose sum overflows (float32 gradients near 1e34 and above)
  also count as diverged, as the update they make would.
  """
  # One sum, which XLA:CPU gives to YNNPACK as a single pass; all(isfinite(x))
  # is an elementwise pass and a reduction of its booleans, a large share of
  # a step batched over replicas (docs/performance.md).
  return jnp.isfinite(jnp.sum(x))


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
  """One step: the rules' gradients, the optimizer's update, then the rules' between-steps learning.

  The gradients come from `learning.Learner.value_and_grad` and, after the
  update, the rules learn in `learning.Learner.between_steps` (kp's decay of
  B - W at ``weight_decay_rate(step)``, wm's mirror passes), as in any
  user's loop.

  Returns the new state and metrics: ``loss``, ``top1`` (classification and
  language models), ``finite`` (loss and every gradient finite, by
  `_finite`) and ``finite_grads``, a tree of per-leaf flags that names the
  layers a divergence reached. With ``skip_nonfinite`` a step whose loss or
  gradients are not finite leaves the state as it was, but for the step
  count.
  """
  x = batch["image"]
  learner = learner or make_learner(model, x.shape[1:], input_dtype=x.dtype)
  rngs = {"feedback": state.key(FEEDBACK), "dropout": state.key(DROPOUT)}
  loss, grads, (outputs, updated) = learner.value_and_grad(
      functools.partial(_loss, task), state.variables(), x, targets=batch["label"], key=state.key(RULE), rngs=rngs,
      train=True)
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  new_state = state.replace(
      step=state.step + 1,
      params=params,
      batch_stats=updated.get("batch_stats", state.batch_stats),
      opt_state=opt_state,
  )
  rate = None if weight_decay_rate is None else weight_decay_rate(state.step)
  learned = learner.between_steps(new_state.variables(), state.key(BETWEEN_STEPS), weight_decay_rate=rate)
  new_state = new_state.replace(feedback=learned["feedback"])
  finite_grads = jax.tree.map(_finite, grads)
  finite = jnp.isfinite(loss) & jnp.all(jnp.array(jax.tree.leaves(finite_grads)))
  if skip_nonfinite:
    kept = jax.tree.map(lambda new, old: jnp.where(finite, new, old), new_state, state)
    new_state = kept.replace(step=state.step + 1)
  step_metrics = {"loss": loss, "finite": finite, "finite_grads": finite_grads}
  if task != "regression":
    step_metrics["top1"] = jnp.mean(_correct(task, outputs, batch["label"], 1))
  return new_state, step_metrics


def between_steps_only(state: TrainState, *, learner: learning.Learner) -> TrainState:
  """A step of between-steps learning alone (wm's mirror-only epochs): nothing but the rules' state changes."""
  learned = learner.between_steps(state.variables(), state.key(BETWEEN_STEPS))
  return state.replace(step=state.step + 1, feedback=learned["feedback"])


def eval_step(state: TrainState, batch: dict, *, model, task: str) -> dict:
  """Sums of loss, top-1 and top-5 over the real (unmasked) examples; language models add bits per token."""
  outputs = model.apply(state.variables(), batch["image"], train=False, rngs={"feedback": state.key(FEEDBACK)})
  mask = batch["mask"]
  sums = {"loss": jnp.sum(_loss(task, outputs, batch["label"]) * mask), "count": jnp.sum(mask)}
  if task != "regression":
    for k in (1, 5):
      sums[f"top{k}"] = jnp.sum(_correct(task, outputs, batch["label"], k) * mask)
  if task == "language_model":
    sums["bits_per_token"] = sums["loss"] / math.log(2.0)
  return sums


def alignment_step(state: TrainState, batch: dict, *, model, task: str,
                   learner: learning.Learner | None = None) -> dict:
  """Per-layer weight angles, ``|B|/|W|`` and delta angles on ``batch``.

  Angles are in degrees. dfa layers have no weight angle (their B maps the
  output error, not the layer's output, to the layer's input).
  """
  x = batch["image"]
  learner = learner or make_learner(model, x.shape[1:], input_dtype=x.dtype)
  objective = learner.objective(functools.partial(_loss, task), state.variables(), x, targets=batch["label"],
                                key=state.key(RULE), rngs={"feedback": state.key(FEEDBACK)}, train=True)
  outputs, collected = objective.apply(state.params, mutable=("alignment", "perturbations"))

  def loss_of(rule):
    return lambda perturbations: objective.mean_loss(
        objective.apply(state.params, variables={"perturbations": perturbations}, rule=rule)[0])

  deltas = metrics.delta_angles(loss_of(None), loss_of(feedback.get_rule("bp")), collected["perturbations"])
  maps = learner.owner.feedback_maps(collected[feedback.STEP], outputs.shape)
  weights = metrics.weight_angles(collected["alignment"])
  ratios = metrics.weight_ratios(collected["alignment"], maps)
  return {
      **{f"angle/weight/{k}": v for k, v in weights.items()},
      **{f"ratio/weight/{k}": v for k, v in ratios.items()},
      **{f"angle/delta/{k}": v for k, v in deltas.items()},
      **{f"rule/{k}": v for k, v in metrics.rule_reports(collected["alignment"]).items()},
  }
