"""Several seeds of one run as one program: the replica axis.

With ``config.num_seeds = S`` (times a sweep's C cells, `wtfree.grid`)
every leaf of the train state has a leading axis of N = C * S replicas, and
the train, eval, alignment and mirror steps are vmapped over it. Replica
``c * S + s`` is the run of cell c with seed ``config.seed + s``: its
initialisation, data order and every random draw of the step come from that
seed, and its learning rate, weight decay, momentum and rule options from
that cell (`wtfree.settings.Replicas.hparams`), as in a single run. A
single run has no replica axis.
"""

import dataclasses

import jax
import numpy as np

from wtfree import sharding


def per_replica(fn, num_seeds: int, in_axes=0):
  """``fn`` vmapped over the replica axis (on the mesh's replica axis); ``fn`` itself for one seed."""
  if num_seeds == 1:
    return fn
  return jax.vmap(fn, in_axes=in_axes, spmd_axis_name=sharding.REPLICA_AXIS)


def datasets(ds, seeds) -> list:
  """One view of ``ds`` per replica, each shuffled by its replica's seed (`wtfree.settings.Replicas.seeds`)."""
  return [dataclasses.replace(ds, seed=seed) for seed in seeds]


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
