"""A sweep's grid, read from ``config.sweep``: programs, cells and each replica's values.

    --config.sweep.learning_rate=0.01,0.03,0.1 --config.sweep.rule=bp,fa --config.num_seeds=5

``config.sweep`` mirrors the config's fields (``sweep.rule_options.p``,
``sweep.model_options.batch_norm``, ...); each set entry is a comma-separated
list of values for that field (in a config file, the same string:
``config.sweep.learning_rate = '0.01,0.1'``; a tuple-valued field takes
Python literals, ``'(256,),(256,256)'``). The grid is their product:

- replica fields (`replica_fields`: learning rate, weight decay, momentum
  and a rule's numeric options, such as sc's ``p`` or kp's ``decay``) are
  values the train step takes per replica, so all their cells, times all
  seeds, are the replicas of one compiled program: replica
  ``c * num_seeds + s`` is cell c with seed ``config.seed + s``;
- every other field changes the program (rule, model, widths, batch size,
  optimizer, Batch Manhattan, a rule's switches such as usf's
  ``magnitude``, ...): one program per combination, run one after the other.
"""

import ast
import dataclasses
import itertools
from typing import Any

from wtfree import feedback

# The optimizer's fields that the train step reads as per-replica values.
OPTIMIZER_FIELDS = ("learning_rate", "weight_decay", "momentum")


def replica_fields() -> tuple[str, ...]:
  """Fields the train step reads as per-replica values, not as constants of its trace.

  The optimizer's learning rate, weight decay and momentum, and every
  rule's numeric options (`wtfree.feedback.numeric_options`).
  """
  return OPTIMIZER_FIELDS + tuple(f"rule_options.{name}" for name in feedback.numeric_options())

# Fields that are not hyperparameters of a run: sweeping them means nothing.
_NOT_SWEPT = frozenset({
    "sweep", "num_seeds", "seed", "resume_anyway", "tensorboard", "data_dir", "data_path", "log_every_steps",
    "eval_every_steps", "checkpoint_every_steps", "checkpoint_every_minutes", "keep_checkpoints", "prefetch",
    "data_workers", "angles", "eval_at_start", "eval_batch_size",
})


def declare(config):
  """``config.sweep``'s fields, all unset: one per scalar field of ``config`` and of its option groups."""
  # Imported here: the train step's modules import this one, and must import on a bare JAX image.
  import ml_collections  # pylint: disable=g-import-not-at-top

  fields: dict[str, Any] = {}
  for name, value in config.items():
    if name in _NOT_SWEPT:
      continue
    if isinstance(value, ml_collections.ConfigDict):
      fields[name] = ml_collections.ConfigDict({k: ml_collections.config_dict.placeholder(str) for k in value})
    else:
      fields[name] = ml_collections.config_dict.placeholder(str)
  return ml_collections.ConfigDict(fields)


@dataclasses.dataclass(frozen=True)
class Program:
  """One compiled program of a sweep.

  Attributes:
    name: a directory name made of its program fields' values ('run' when
      the sweep has none).
    values: its program fields, ``{'rule': 'fa', 'model_options.batch_norm': True}``.
    config: the run's config: the base with ``values`` set, its
      ``sweep`` holding only the replica fields.
    cells: each cell's replica-field values, in replica order.
  """

  name: str
  values: dict[str, Any]
  config: Any  # an ml_collections.ConfigDict
  cells: tuple[dict[str, float], ...]


def entries(config) -> dict[str, list]:
  """The sweep's set fields (dotted paths, sorted) and their parsed values."""
  sweep = getattr(config, "sweep", None)
  if not sweep:
    return {}
  found = {}
  for path, text in sorted(set_entries(sweep.to_dict()).items()):
    if not isinstance(text, str) or not text.strip():
      raise ValueError(f"sweep.{path}={text!r} is not a comma-separated list of values: "
                       f"use e.g. --config.sweep.{path}=0.01,0.1")
    values = _parse(text, _field_type(config, path), path)
    if len(set(map(repr, values))) != len(values):
      raise ValueError(f"sweep.{path}={text!r} repeats a value: list each value once")
    found[path] = values
  return found


def is_sweep(config) -> bool:
  """Whether ``config.sweep`` sets any field."""
  return bool(entries(config))


def cells(config) -> tuple[dict[str, float], ...]:
  """The replica-field values of each cell of a one-program config (``({},)`` when nothing is swept).

  Raises:
    ValueError: when ``config.sweep`` still sets a program field (split it
      with `programs` first).
  """
  swept = entries(config)
  program = [path for path in swept if path not in replica_fields()]
  if program:
    raise ValueError(f"sweep.{program[0]} changes the program: run the sweep with wtfree.sweep.run "
                     "(python -m wtfree.main does), which trains one program per value")
  names = list(swept)
  return tuple(dict(zip(names, combo)) for combo in itertools.product(*swept.values())) or ({},)


def programs(config) -> list[Program]:
  """The sweep's programs, each with its config and cells, in grid order (the last swept path fastest)."""
  swept = entries(config)
  program_fields = [path for path in swept if path not in replica_fields()]
  result = []
  for combo in itertools.product(*(swept[path] for path in program_fields)):
    values = dict(zip(program_fields, combo))
    run = config.copy_and_resolve_references()
    with run.ignore_type():
      for path, value in values.items():
        _set(run, path, value)
        _set(run.sweep, path, None)
    name = ",".join(f"{path.rsplit('.', 1)[-1]}={_short(value)}" for path, value in values.items()) or "run"
    result.append(Program(name=name.replace("/", "_"), values=values, config=run, cells=cells(run)))
  return result


def set_entries(sweep: dict) -> dict[str, str]:
  """The set entries of a sweep's fields as plain ``{dotted path: text}`` (e.g. from a saved config.json)."""
  return {path: text for path, text in _flatten(dict(sweep)).items() if text is not None}


def replica_values(cell_list, num_seeds: int) -> dict[str, list[float]]:
  """Each replica field's value per replica (cell-major: replica ``c * num_seeds + s``)."""
  names = list(cell_list[0])
  return {name: [float(cell[name]) for cell in cell_list for _ in range(num_seeds)] for name in names}


def _flatten(tree: dict, prefix: str = "") -> dict[str, Any]:
  flat = {}
  for key, value in tree.items():
    if isinstance(value, dict):
      flat.update(_flatten(value, f"{prefix}{key}."))
    else:
      flat[f"{prefix}{key}"] = value
  return flat


def _field_type(config, path: str) -> type:
  node, *parents, last = [config, *path.split(".")]
  for name in parents:
    node = node[name]
  value = node[last]
  if value is not None:
    return type(value)
  kind = node.get_type(last)
  if kind is type(None) and path.startswith("rule_options."):
    # A copied config's unset options have lost their declared type; the rules still know it.
    kind = feedback.all_options().get(last) or str
  return kind


def _parse(text: str, kind: type, path: str) -> list:
  parts = [p.strip() for p in text.split(",")]
  try:
    if kind is bool:
      truth = {"true": True, "1": True, "false": False, "0": False}
      return [truth[p.lower()] for p in parts]
    if kind is int:
      return [int(p) for p in parts]
    if kind is float:
      return [float(p) for p in parts]
    if kind is str:
      return parts
    if kind in (tuple, list):
      values = ast.literal_eval(f"[{text}]")
      return [tuple(v) if isinstance(v, (tuple, list)) else (v,) for v in values]
  except (KeyError, ValueError, SyntaxError):
    pass
  raise ValueError(f"sweep.{path}={text!r}: cannot read its values as {kind.__name__} "
                   f"(use e.g. --config.sweep.{path}={_example(kind)})")


def _example(kind: type) -> str:
  return {bool: "True,False", int: "1,2", float: "0.01,0.1", str: "a,b"}.get(kind, "'(256,),(256,256)'")


def _set(config, path: str, value) -> None:
  *parents, last = path.split(".")
  for name in parents:
    config = config[name]
  config[last] = value


def _short(value) -> str:
  if isinstance(value, tuple):
    return "x".join(map(str, value))
  return f"{value:g}" if isinstance(value, float) else str(value)
