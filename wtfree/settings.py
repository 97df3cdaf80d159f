"""The one reading of a run's config: `resolve` turns it into plain, frozen values.

    run = settings.resolve(config)
    ds = data.get_dataset(run.data)
    model = models.create(run.model, ds.num_classes)
    tx = optim.make(run.optimizer, run.length(ds.num_train).steps_per_epoch)

Every default comes from `wtfree.defaults`: a field the config leaves out (or
sets to None) takes its value there. Derived values (the batch-scaled
learning rate, the replicas' seeds and per-replica values, the replica
groups, the rule built with its options, and once the training set's size is
known the steps per epoch and the run's length) are computed here once.
Nothing below `wtfree.train` reads a config.
"""

from collections.abc import Mapping
import dataclasses
import functools
from typing import Any

import jax
import numpy as np

from wtfree import feedback
from wtfree import grid
from wtfree import sharding

# Akrout et al. (and Goyal et al.) quote learning rates per 256 examples.
REFERENCE_BATCH = 256


@functools.cache
def _defaults() -> Mapping[str, Any]:
  from wtfree import defaults  # pylint: disable=g-import-not-at-top  (defaults imports the rules)

  return defaults.get_config()


def field(config, name: str) -> Any:
  """``config``'s value of the top-level field ``name``; `wtfree.defaults`' where it is left out or None."""
  value = config.get(name, None)
  return _defaults()[name] if value is None else value


@dataclasses.dataclass(frozen=True)
class Data:
  """What `wtfree.data.get_dataset` reads: the set, its options and the batches (see `wtfree.defaults`)."""

  dataset: str
  batch_size: int
  eval_batch_size: int
  seed: int
  holdout: float
  train_on_validation: bool
  shuffle: bool
  input_scaling: str
  data_dir: str | None
  data_path: str | None
  image_size: int
  context_length: int
  flatten: bool
  data_workers: int
  prefetch: int


@dataclasses.dataclass(frozen=True)
class Model:
  """What `wtfree.models.create` reads: the model's name and fields, the rule built once, and the loss.

  Attributes:
    name: a registered model name.
    options: the model's fields the config sets (``model_options``); the
      model's own defaults for the rest.
    rule: the rule with the options the config sets, built once.
    rule_name: the rule's name as the config spells it.
    last_layer_bp: the output layer learns by backprop.
    loss: the classification loss (`wtfree.steps.LOSSES`).
  """

  name: str
  options: Mapping[str, Any]
  rule: feedback.Rule
  rule_name: str
  last_layer_bp: bool
  loss: str


@dataclasses.dataclass(frozen=True)
class Optimizer:
  """What `wtfree.optim.make` reads: the chain's settings and the learning rate's schedule.

  Attributes:
    learning_rate: the rate as the config quotes it.
    lr_scale: ``batch_size / 256`` with ``scale_lr_by_batch``, else 1.
    mirror_epochs: the mirror-only epochs, through which the rate is 0.
    num_epochs: the run's epochs, where the cosine schedule ends.
  """

  optimizer: str
  learning_rate: float
  lr_scale: float
  momentum: float
  nesterov: bool
  b1: float
  b2: float
  eps: float
  weight_decay: float
  weight_decay_on: str
  batch_manhattan: bool
  bias_learning_rate_scale: float
  schedule: str
  warmup_epochs: float
  decay_epochs: tuple[float, ...]
  decay_factor: float
  mirror_epochs: float
  num_epochs: float

  @property
  def base_learning_rate(self) -> float:
    """The quoted rate, scaled by the batch where the config asks (`wtfree.optim.base_learning_rate`)."""
    rate = float(self.learning_rate)
    return rate * self.lr_scale if self.lr_scale != 1.0 else rate


@dataclasses.dataclass(frozen=True)
class Loop:
  """What the train loop reads: length, cadences, guards and the between-steps passes."""

  num_epochs: float
  num_steps: int
  log_every_steps: int
  eval_every_steps: int
  checkpoint_every_steps: int
  checkpoint_every_minutes: float
  keep_checkpoints: int
  skip_nonfinite: bool
  angles: bool
  eval_at_start: bool
  tensorboard: bool
  resume_anyway: bool
  mirror_batch_size: int
  mirror_epochs: float
  mirror_passes: int


@dataclasses.dataclass(frozen=True)
class Replicas:
  """The replicas trained as one program (`wtfree.replicas`).

  Attributes:
    num_seeds: seeds per cell, as the config sets it.
    cells: each sweep cell's replica-field values (``({},)`` with no sweep).
    seeds: each replica's seed, in replica order.
    hparams: each swept replica field's values, one per replica.
    groups: the device groups the replicas are split over.
  """

  num_seeds: Any
  cells: tuple[dict[str, float], ...]
  seeds: tuple[int, ...]
  hparams: Mapping[str, np.ndarray]
  groups: int

  @property
  def count(self) -> int:
    """The number of replicas: cells times seeds."""
    return len(self.seeds)


@dataclasses.dataclass(frozen=True)
class Length:
  """The run's length in steps, once the training set's size is known."""

  steps_per_epoch: int
  total_steps: int
  mirror_steps: int


@dataclasses.dataclass(frozen=True)
class Run:
  """A run's config, read once: every value below `wtfree.train` comes from here.

  Attributes:
    seed: the first replica's seed (its initialisation and data order).
    data, model, optimizer, loop, replicas: the values each part reads.
    config_json: the config as ``workdir/config.json`` holds it.
  """

  seed: int
  data: Data
  model: Model
  optimizer: Optimizer
  loop: Loop
  replicas: Replicas
  config_json: str

  @property
  def rule(self) -> feedback.Rule:
    """The run's rule, built once with its options (``model.rule``)."""
    return self.model.rule

  def length(self, num_train: int) -> Length:
    """Steps per epoch (at least 1), the steps to train (``num_steps``, else ``num_epochs`` epochs), mirror steps."""
    steps_per_epoch = max(1, num_train // self.data.batch_size)
    loop = self.loop
    total = loop.num_steps if loop.num_steps > 0 else int(loop.num_epochs * steps_per_epoch)
    return Length(steps_per_epoch=steps_per_epoch, total_steps=total,
                  mirror_steps=int(loop.mirror_epochs * steps_per_epoch))


def rule(config) -> feedback.Rule:
  """The rule ``config.rule`` with the options ``config.rule_options`` sets (unset ones: the rule's defaults).

  Raises:
    ValueError: for an option the rule does not have, naming the rules it belongs to.
  """
  options = {k: v for k, v in dict(config.get("rule_options", None) or {}).items() if v is not None}
  return feedback.get_rule(field(config, "rule"), **options)


def _positive_int(value) -> int | None:
  return value if isinstance(value, int) and not isinstance(value, bool) and value >= 1 else None


def resolve(config, *, device_count: int | None = None, process_count: int | None = None) -> Run:
  """Reads ``config`` once into a `Run`, defaults applied and derived values computed.

  Args:
    config: an ``ml_collections.ConfigDict`` (or anything with ``.get``);
      fields it leaves out take `wtfree.defaults`' values.
    device_count: devices to split replicas over; None asks ``jax.device_count()``.
    process_count: hosts; None asks ``jax.process_count()``.

  Raises:
    ValueError: for rule options the rule does not take, or a sweep that
      still sets a program field (`wtfree.grid.cells`).
  """
  get = functools.partial(field, config)
  batch_size = get("batch_size")
  eval_batch_size = config.get("eval_batch_size", _defaults()["eval_batch_size"]) or batch_size
  seed = get("seed")
  data = Data(
      dataset=get("dataset"), batch_size=batch_size, eval_batch_size=eval_batch_size, seed=seed,
      holdout=get("holdout"), train_on_validation=get("train_on_validation"), shuffle=get("shuffle"),
      input_scaling=get("input_scaling"), data_dir=get("data_dir"), data_path=get("data_path"),
      image_size=get("image_size"), context_length=get("context_length"), flatten=get("flatten"),
      data_workers=get("data_workers"), prefetch=get("prefetch"))
  options = config.get("model_options", None)
  model = Model(name=get("model"), options=dict(options.to_dict() if hasattr(options, "to_dict") else options or {}),
                rule=rule(config), rule_name=get("rule"), last_layer_bp=get("last_layer_bp"), loss=get("loss"))
  optimizer = Optimizer(
      optimizer=get("optimizer"), learning_rate=get("learning_rate"),
      lr_scale=batch_size / REFERENCE_BATCH if get("scale_lr_by_batch") else 1.0,
      momentum=get("momentum"), nesterov=get("nesterov"), b1=get("b1"), b2=get("b2"), eps=get("eps"),
      weight_decay=get("weight_decay"), weight_decay_on=get("weight_decay_on"),
      batch_manhattan=get("batch_manhattan"), bias_learning_rate_scale=get("bias_learning_rate_scale"),
      schedule=get("schedule"), warmup_epochs=get("warmup_epochs"), decay_epochs=tuple(get("decay_epochs")),
      decay_factor=get("decay_factor"), mirror_epochs=get("mirror_epochs"), num_epochs=get("num_epochs"))
  loop = Loop(
      num_epochs=get("num_epochs"), num_steps=get("num_steps"), log_every_steps=get("log_every_steps"),
      eval_every_steps=get("eval_every_steps"), checkpoint_every_steps=get("checkpoint_every_steps"),
      checkpoint_every_minutes=get("checkpoint_every_minutes"), keep_checkpoints=get("keep_checkpoints"),
      skip_nonfinite=get("skip_nonfinite"), angles=get("angles"), eval_at_start=get("eval_at_start"),
      tensorboard=get("tensorboard"), resume_anyway=get("resume_anyway"),
      mirror_batch_size=get("mirror_batch_size"), mirror_epochs=get("mirror_epochs"),
      mirror_passes=get("mirror_passes"))
  num_seeds = get("num_seeds")
  per_cell = _positive_int(num_seeds) or 1  # A bad count is refused by wtfree.validate, naming it.
  cells = grid.cells(config)
  hparams = {k: np.asarray(v, np.float32) for k, v in grid.replica_values(cells, per_cell).items()}
  devices = jax.device_count() if device_count is None else device_count
  hosts = jax.process_count() if process_count is None else process_count
  replicas = Replicas(num_seeds=num_seeds, cells=cells, seeds=tuple(seed + s for _ in cells for s in range(per_cell)),
                      hparams=hparams, groups=sharding.replica_groups(len(cells) * per_cell, devices, hosts))
  text = config.to_json_best_effort(indent=2, sort_keys=True) if hasattr(config, "to_json_best_effort") else ""
  return Run(seed=seed, data=data, model=model, optimizer=optimizer, loop=loop, replicas=replicas, config_json=text)
