"""The device mesh and the shardings of the train step (data parallel)."""

import jax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
import numpy as np

DATA_AXIS = "data"


def make_mesh(devices=None) -> Mesh:
  """A 1-d mesh over all devices (of all hosts), axis ``'data'``."""
  devices = jax.devices() if devices is None else devices
  return Mesh(np.asarray(devices), (DATA_AXIS,))


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Leading (batch) axis split over the mesh."""
  return NamedSharding(mesh, P(DATA_AXIS))


def replicated(mesh: Mesh) -> NamedSharding:
  """The same array on every device."""
  return NamedSharding(mesh, P())


def check_batch_size(batch_size: int, mesh: Mesh, what: str = "batch_size") -> None:
  """Raises ValueError unless ``batch_size`` divides over devices and hosts."""
  devices, hosts = mesh.devices.size, jax.process_count()
  if batch_size % devices or batch_size % hosts:
    raise ValueError(
        f"global {what} {batch_size} does not divide over {devices} devices "
        f"({hosts} hosts): use a multiple of {devices}"
    )


def global_batch(local: dict, mesh: Mesh) -> dict:
  """Assembles each host's slice of a batch into global sharded arrays."""
  sharding = batch_sharding(mesh)
  return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v)) for k, v in local.items()}
