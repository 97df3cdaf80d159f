"""Checkpoints through orbax: the only module that imports it."""

import os
import time

from absl import logging
from etils import epath
import jax
import orbax.checkpoint as ocp


class Checkpointer:
  """Saves and restores the train state (and a JSON of metadata) in a workdir.

  Checkpoints go to ``workdir/checkpoints/<step>``; the latest one is restored
  by `restore_latest`, so a run started again in the same workdir resumes.
  """

  def __init__(self, workdir: str, *, keep: int = 3, save_every_steps: int = 1):
    directory = epath.Path(workdir if "://" in workdir else os.path.abspath(workdir)) / "checkpoints"
    # A save cut short (a full disk, a killed run) leaves a *.orbax-checkpoint-tmp directory: removed on start.
    options = ocp.CheckpointManagerOptions(
        max_to_keep=keep, save_interval_steps=save_every_steps, create=True, cleanup_tmp_directories=True
    )
    self._directory = directory
    self._manager = ocp.CheckpointManager(directory, options=options)

  def latest_step(self) -> int | None:
    """The step of the newest checkpoint, or None."""
    return self._manager.latest_step()

  def save(self, step: int, state, meta: dict, *, force: bool = False) -> bool:
    """Saves ``state`` and ``meta`` at ``step`` (every ``save_every_steps`` unless forced)."""
    return self._manager.save(
        step,
        args=ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)),
        force=force,
    )

  def restore_latest(self, abstract_state):
    """Restores the newest readable checkpoint as ``(step, state, meta)``.

    A checkpoint that cannot be read (a save cut short, a corrupt file) is
    moved aside to ``checkpoints/<step>.corrupt-<time>``, named in a
    warning, and the one before is tried: the run then saves that step anew
    instead of finding it taken. Returns ``(None, None, None)`` when there
    is none.

    Raises:
      ValueError: when there are checkpoints but none can be read into
        ``abstract_state`` (e.g. written by an older layout of the state):
        starting over would silently drop them.
    """
    steps = sorted(self._manager.all_steps(), reverse=True)
    errors = []
    for step in steps:
      try:
        state, meta = self.restore(step, abstract_state)
      except Exception as e:  # orbax raises many types for unreadable data.
        errors.append(f"step {step}: {type(e).__name__}")
        if _other_layout(e):
          continue  # Readable, but another layout of the state: kept, and refused below.
        aside = self._move_aside(step)
        logging.warning("Checkpoint at step %d cannot be read (%s: %s); moved aside to %s; trying the one before.",
                        step, type(e).__name__, e, aside)
        continue
      return step, state, meta
    if steps:
      raise ValueError(
          f"none of the checkpoints in {self._directory} can be read into this run's state "
          f"({'; '.join(errors)}), e.g. they were written by another version of wtfree or config: "
          "use a new --workdir, or move the checkpoints away to start over"
      )
    return None, None, None

  def _move_aside(self, step: int) -> epath.Path:
    """Renames an unreadable checkpoint out of orbax's sight, so that the run can save that step anew."""
    aside = self._directory / f"{step}.corrupt-{time.strftime('%Y%m%d-%H%M%S')}"
    if jax.process_index() == 0:
      (self._directory / str(step)).rename(aside)
    self._manager.reload()
    return aside

  def restore(self, step: int, abstract_state=None):
    """Restores ``(state, meta)`` at ``step``.

    Into the shapes and shardings of ``abstract_state``; without one, as a
    tree (nested dicts) of arrays on this host's first device, whatever the
    topology the run saved it from (for inspecting a run).
    """
    if abstract_state is None:
      abstract_state = self._on_one_device(step)
    restored = self._manager.restore(
        step,
        args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract_state), meta=ocp.args.JsonRestore()
        ),
    )
    return restored.state, restored.meta

  def _on_one_device(self, step: int):
    # Orbax restores without a target only onto the topology that saved the
    # checkpoint; read the shapes and dtypes and place them here instead.
    metadata = ocp.StandardCheckpointer().metadata(self._manager.directory / str(step) / "state")
    tree = metadata.item_metadata.tree
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    return jax.tree.map(lambda leaf: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=device), tree)

  def wait(self) -> None:
    """Blocks until pending saves are on disk."""
    self._manager.wait_until_finished()

  def close(self) -> None:
    self._manager.close()


def _other_layout(error: Exception) -> bool:
  """Whether orbax read the checkpoint and found another tree or shapes than the state's."""
  text = str(error)
  return isinstance(error, ValueError) and ("tree structures do not match" in text
                                            or "not compatible with the stored shape" in text)


def abstract_like(state):
  """Shape, dtype and sharding of every leaf, for restoring into."""
  return jax.tree.map(ocp.utils.to_shape_dtype_struct, state)
