"""The device mesh and the shardings of the train step: seeds x data parallel.

The mesh has two axes: ``'replicas'`` (independent seeds of one run, see
``config.num_seeds``) and ``'data'`` (the batch). A single-seed run has one
replica and every device on ``'data'``.
"""

import math

import jax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
import numpy as np

REPLICA_AXIS = "replicas"
DATA_AXIS = "data"


def replica_groups(num_seeds: int, device_count: int, process_count: int = 1) -> int:
  """How many device groups the replicas are split over: the largest divisor of both counts.

  Several hosts keep every replica on every host (one group), so that each
  host feeds its rows of every replica's batch.
  """
  return 1 if process_count > 1 else math.gcd(int(num_seeds), int(device_count))


def make_mesh(devices=None, replicas: int = 1) -> Mesh:
  """A ``replicas x data`` mesh over ``devices`` (default: all devices of all hosts)."""
  devices = np.asarray(jax.devices() if devices is None else devices)
  if devices.size % replicas:
    raise ValueError(f"{devices.size} devices do not split into {replicas} replica groups")
  return Mesh(devices.reshape(replicas, -1), (REPLICA_AXIS, DATA_AXIS))


def data_size(mesh: Mesh) -> int:
  """The number of devices one replica's batch is split over."""
  return mesh.shape[DATA_AXIS]


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Leading (batch) axis split over the data axis."""
  return NamedSharding(mesh, P(DATA_AXIS))


def replica_sharding(mesh: Mesh) -> NamedSharding:
  """Leading (replica) axis split over the replica axis: a state of several seeds."""
  return NamedSharding(mesh, P(REPLICA_AXIS))


def replica_batch_sharding(mesh: Mesh) -> NamedSharding:
  """``[replica, batch, ...]``: replicas over the replica axis, each batch over the data axis."""
  return NamedSharding(mesh, P(REPLICA_AXIS, DATA_AXIS))


def replicated(mesh: Mesh) -> NamedSharding:
  """The same array on every device."""
  return NamedSharding(mesh, P())


def check_batch_size(batch_size: int, mesh: Mesh, what: str = "batch_size") -> None:
  """Raises ValueError unless ``batch_size`` divides over the data axis and the hosts."""
  devices, hosts = data_size(mesh), jax.process_count()
  if batch_size % devices or batch_size % hosts:
    raise ValueError(
        f"global {what} {batch_size} does not divide over {devices} devices "
        f"({hosts} hosts): use a multiple of {devices}"
    )


def global_batch(local: dict, mesh: Mesh, replicas: bool = False) -> dict:
  """Assembles each host's slice of a batch (``[replica, batch, ...]`` with ``replicas``) into global arrays."""
  if not replicas:
    sharding = batch_sharding(mesh)
    return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v)) for k, v in local.items()}
  sharding = replica_batch_sharding(mesh)
  hosts = jax.process_count()

  def assemble(v):
    v = np.asarray(v)
    return jax.make_array_from_process_local_data(sharding, v, (v.shape[0], v.shape[1] * hosts, *v.shape[2:]))

  return {k: assemble(v) for k, v in local.items()}
