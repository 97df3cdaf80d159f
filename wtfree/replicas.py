"""Several seeds of one run as one program: the replica axis.

With ``config.num_seeds = S`` (times a sweep's C cells, `wtfree.grid`)
every leaf of the train state has a leading axis of N = C * S replicas, and
the train, eval, alignment and mirror steps are vmapped over it. Replica
``c * S + s`` is the run of cell c with seed ``config.seed + s``: its
initialisation, data order and every random draw of the step come from that
seed, and its learning rate, weight decay, momentum and rule options from
that cell (`hparams`), as in a single run. A single run has no replica axis.
"""

import dataclasses

import jax
import numpy as np

from wtfree import grid
from wtfree import sharding


def num_seeds(config) -> int:
  """The seeds per cell ``config`` asks for (``num_seeds``, default 1)."""
  return int(config.get("num_seeds", 1) or 1)


def count(config) -> int:
  """The number of replicas ``config`` asks for: its sweep's cells (`wtfree.grid`) times ``num_seeds``."""
  return len(grid.cells(config)) * num_seeds(config)


def seeds(config) -> list[int]:
  """The seed of each replica, in replica order: cell c's seeds are ``seed .. seed + num_seeds - 1``."""
  return [int(config.seed) + s for _ in grid.cells(config) for s in range(num_seeds(config))]


def hparams(config) -> dict[str, np.ndarray]:
  """The swept replica fields' values, one per replica (``{}`` when nothing is swept)."""
  return {k: np.asarray(v, np.float32) for k, v in grid.replica_values(grid.cells(config), num_seeds(config)).items()}


def per_replica(fn, num_seeds: int, in_axes=0):
  """``fn`` vmapped over the replica axis (on the mesh's replica axis); ``fn`` itself for one seed."""
  if num_seeds == 1:
    return fn
  return jax.vmap(fn, in_axes=in_axes, spmd_axis_name=sharding.REPLICA_AXIS)


def datasets(ds, config) -> list:
  """One view of ``ds`` per replica, each shuffled by its replica's seed."""
  return [dataclasses.replace(ds, seed=seed) for seed in seeds(config)]


def summarise(values: dict, num_seeds: int) -> dict:
  """Per-replica metrics as JSON-ready scalars.

  A value with a replica axis becomes its mean under its own key, its
  sample standard deviation (ddof=1) under ``<key>/std`` and its N values,
  in replica order, under ``<key>/seeds``; with one seed the values stay as
  they are.
  """
  if num_seeds == 1:
    return {k: float(np.asarray(v)) for k, v in values.items()}
  out = {}
  for key, value in values.items():
    value = np.asarray(value, np.float64)
    if value.ndim == 0:
      out[key] = float(value)
      continue
    out[key] = float(np.mean(value))
    out[f"{key}/std"] = float(np.std(value, ddof=1))
    out[f"{key}/seeds"] = [float(v) for v in value]
  return out
