"""Checks a config at start-up, before anything is compiled or loaded."""

import difflib
import json

from absl import logging
from etils import epath
import jax

from wtfree import feedback
from wtfree import grid
from wtfree import models
from wtfree import optim
from wtfree import settings
from wtfree import steps as steps_lib

# Fields compared between a run in a workdir and a new start there: a
# difference in any other field (logging, checkpoint cadence, length) is
# allowed, so that a run can be extended or its logging changed.
_IDENTITY_FIELDS = (
    "dataset", "model", "model_options", "rule", "rule_options", "last_layer_bp",
    "optimizer", "learning_rate", "momentum", "nesterov", "weight_decay",
    "batch_manhattan", "schedule", "batch_size", "seed", "weight_decay_on", "num_seeds", "holdout",
    "loss", "bias_learning_rate_scale", "train_on_validation", "shuffle", "input_scaling",
)


# Identity fields that older workdirs' config.json lacks, with the value those runs had.
_ADDED_LATER = {"num_seeds": 1, "holdout": 0.0, "loss": "softmax_cross_entropy", "bias_learning_rate_scale": 1.0,
                "train_on_validation": False, "shuffle": True, "input_scaling": "standardize"}


def check_config(config, *, device_count: int | None = None, process_count: int | None = None) -> settings.Run:
  """Reads ``config`` (`wtfree.settings.resolve`) and raises ValueError naming the problem and the fix if it cannot run.

  Checks: every field is one wtfree declares; the rule, its options, model,
  optimizer, schedule, loss and data set exist (with the data options the
  set reads); the learning rate is positive and
  the run has steps to take; ``num_seeds`` is a positive integer; a sweep's
  grid reads (`wtfree.grid`), keeps the learning rate positive and each
  cell's rule options are ones the rule accepts; the global batch sizes
  divide over each replica's devices and over the hosts; Batch Manhattan is
  not paired with Adam; and the rule's own checks
  (`wtfree.feedback.Rule.check_run`), whose warnings are logged.

  Returns:
    The run's resolved settings, checked.
  """
  from wtfree import data  # Imported here: loading it pulls in tfds.

  _check_fields(config)
  run = settings.resolve(config, device_count=device_count, process_count=process_count)
  rule, opt, loop = run.rule, run.optimizer, run.loop
  if not opt.learning_rate > 0:
    raise ValueError(f"learning_rate {opt.learning_rate} is not positive: use e.g. --config.learning_rate=0.01")
  steps = loop.num_steps
  if steps == 0 or steps < -1:
    raise ValueError(f"num_steps {steps} trains nothing: use a positive count, or -1 for num_epochs "
                     f"({loop.num_epochs}) epochs")
  if steps == -1 and not loop.num_epochs > 0:
    raise ValueError(f"num_epochs {loop.num_epochs} trains nothing: use a positive number "
                     "(--config.num_epochs=...) or set --config.num_steps")
  for cell in run.replicas.cells:
    if cell.get("learning_rate", 1.0) <= 0:
      raise ValueError(f"sweep.learning_rate has {cell['learning_rate']}: a learning rate must be positive")
    # Each cell's rule, built with its concrete options, checks them as the rule itself would.
    options = {k[len("rule_options."):]: v for k, v in cell.items() if k.startswith("rule_options.")}
    if options:
      feedback.get_rule(rule, **options)
  if run.model.name not in models.names():
    raise ValueError(f"model {run.model.name!r} is not one of {', '.join(models.names())}")
  data.check_name(run.data.dataset)
  data.check_options(run.data)
  optim.check(opt)
  loss = run.model.loss
  if loss not in steps_lib.LOSSES:
    raise ValueError(f"loss {loss!r} is not one of {', '.join(steps_lib.LOSSES)}")
  devices = jax.device_count() if device_count is None else device_count
  hosts = jax.process_count() if process_count is None else process_count
  num_seeds = run.replicas.num_seeds
  if isinstance(num_seeds, bool) or not isinstance(num_seeds, int) or num_seeds < 1:
    raise ValueError(f"num_seeds {num_seeds!r} is not a positive integer: use e.g. --config.num_seeds=4")
  # Replicas split the devices into groups; each replica's batch divides over its group.
  devices //= run.replicas.groups
  sizes = {"batch_size": run.data.batch_size, "eval_batch_size": run.data.eval_batch_size}
  if rule.takes("mirror_batch_size"):
    sizes["mirror_batch_size"] = loop.mirror_batch_size
  for field, size in sizes.items():
    if size % devices or size % hosts:
      raise ValueError(
          f"global {field} {size} does not divide over {devices} devices and {hosts} hosts: "
          f"use a multiple of {devices} (--config.{field}=...)"
      )
  if opt.batch_manhattan and opt.optimizer == "adam":
    raise ValueError(
        "batch_manhattan=True with optimizer 'adam' contradicts: Adam rescales the signs "
        "away. Use --config.optimizer=sgd or --config.batch_manhattan=False"
    )
  for warning in rule.check_run(run):
    logging.warning("%s", warning)
  return run


def _check_fields(config) -> None:
  """Refuses a field the defaults do not declare: a config file's typo, which nothing would read."""
  from wtfree import defaults  # pylint: disable=g-import-not-at-top  (defaults imports the rules)

  known = set(defaults.get_config().keys())
  for field in sorted(set(config.keys()) - known):
    close = difflib.get_close_matches(field, sorted(known), n=1)
    hint = f"; did you mean {close[0]}?" if close else ""
    raise ValueError(f"the config sets {field}, which is no field of wtfree's (wtfree/defaults.py){hint}")


def check_workdir(config, workdir: str) -> None:
  """Refuses a workdir that is a file, or that holds a run with a different config.

  Raises:
    ValueError: naming the first differing field, unless
      ``config.resume_anyway`` is set.
  """
  if epath.Path(workdir).exists() and not epath.Path(workdir).is_dir():
    raise ValueError(f"workdir {workdir} is a file, not a directory: pass a directory (--workdir=runs/NAME)")
  saved = epath.Path(workdir) / "config.json"
  if settings.field(config, "resume_anyway") or not saved.exists():
    return
  previous = json.loads(saved.read_text())
  current = json.loads(config.to_json_best_effort())
  for field in _IDENTITY_FIELDS:
    if previous.get(field, _ADDED_LATER.get(field)) != current.get(field):
      _refuse(workdir, field, previous.get(field), current.get(field))
  # A sweep's cells are replicas of the run: its set entries are part of what it is.
  was, now = (grid.set_entries(c.get("sweep") or {}) for c in (previous, current))
  if was != now:
    _refuse(workdir, "sweep", was, now)


def _refuse(workdir: str, field: str, was, now) -> None:
  raise ValueError(
      f"workdir {workdir} holds a run with {field}={was!r}, this config has "
      f"{field}={now!r}: use a new --workdir, or --config.resume_anyway=True "
      "to continue that run with this config"
  )

