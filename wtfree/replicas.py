"""Several seeds of one run as one program: the replica axis.

With ``config.num_seeds = N`` every leaf of the train state has a leading
axis of N replicas, and the train, eval, alignment and mirror steps are
vmapped over it. Replica s is the run of seed ``config.seed + s``: its
initialisation, data order and every random draw of the step come from that
seed, as in a single-seed run. A single-seed run has no replica axis.
"""

import dataclasses

import jax
import numpy as np

from wtfree import sharding


def count(config) -> int:
  """The number of replicas ``config`` asks for (``num_seeds``, default 1)."""
  return int(config.get("num_seeds", 1) or 1)


def seeds(config) -> list[int]:
  """The seed of each replica, in replica order."""
  return [int(config.seed) + s for s in range(count(config))]


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
  standard deviation under ``<key>/std`` and its N values, in replica order,
  under ``<key>/seeds``; with one seed the values stay as they are.
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
    out[f"{key}/std"] = float(np.std(value))
    out[f"{key}/seeds"] = [float(v) for v in value]
  return out
