"""Metric writers: JSON lines and TensorBoard events, from process 0 only."""

import json

from etils import epath
import jax
import numpy as np


def _drop_after(path: epath.Path, step: int) -> None:
  """Moves the lines of steps after ``step`` (a run resumed there writes them again) to ``metrics.dropped.jsonl``."""
  lines = path.read_text().splitlines(keepends=True)
  kept = [line for line in lines if json.loads(line)["step"] <= step]
  if len(kept) == len(lines):
    return
  with (path.parent / "metrics.dropped.jsonl").open("a") as dropped:
    dropped.writelines(line for line in lines if json.loads(line)["step"] > step)
  path.write_text("".join(kept))


class MetricWriter:
  """Writes ``WORKDIR/metrics.jsonl`` and TensorBoard events.

  Each step is logged once: a run resumed from the checkpoint at step k
  (``resumed_at``) first moves the lines of later steps, written before it
  stopped and about to be written again, to ``metrics.dropped.jsonl``, and
  TensorBoard purges their events; a fresh run (None) starts the file anew.

  Every call to `write` is one JSON object ``{"step", "split", <metric>: ...}``
  and one scalar per metric in TensorBoard. A metric may be a list (the
  per-seed values of a run of several seeds): it goes to the JSON line only,
  except in a sweep of several ``cells``, whose TensorBoard has one run per
  cell (``tensorboard/cell_<c>``) with the mean over that cell's seeds.
  On processes other than 0 it writes nothing.
  """

  def __init__(self, workdir: str, *, tensorboard: bool = True, cells: int = 1, resumed_at: int | None = None):
    self._active = jax.process_index() == 0
    self._jsonl = None
    self._tb = None
    self._cells = []
    if not self._active:
      return
    # Opened at the first write: a finished run started again (even on a read-only disk) writes nothing.
    self._workdir = epath.Path(workdir)  # epath reaches gs:// as well as local disks.
    self._tensorboard = tensorboard
    self._cell_count = cells
    self._resumed_at = resumed_at

  def _open(self) -> None:
    workdir = self._workdir
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / "metrics.jsonl"
    if path.exists():
      _drop_after(path, -1 if self._resumed_at is None else self._resumed_at)
    self._jsonl = path.open("a")
    if self._tensorboard:
      from tensorboardX import SummaryWriter  # Imported lazily: it pulls in protobuf.

      # A resumed run writes its steps again: TensorBoard drops the events after the checkpoint.
      purge = None if self._resumed_at is None else self._resumed_at + 1
      if self._cell_count > 1:
        self._cells = [SummaryWriter(str(workdir / "tensorboard" / f"cell_{c}"), purge_step=purge)
                       for c in range(self._cell_count)]
      else:
        self._tb = SummaryWriter(str(workdir / "tensorboard"), purge_step=purge)

  def write(self, step: int, split: str, scalars: dict) -> None:
    """Writes one log event of scalar (or list-of-scalar) metrics."""
    if not self._active:
      return
    if self._jsonl is None:
      self._open()
    values = {k: [float(x) for x in v] if isinstance(v, (list, tuple)) else float(np.asarray(v))
              for k, v in scalars.items()}
    self._jsonl.write(json.dumps({"step": int(step), "split": split, **values}) + "\n")
    self._jsonl.flush()
    if self._tb is not None:
      for name, value in values.items():
        if not isinstance(value, list):
          self._tb.add_scalar(name, value, int(step))
      self._tb.flush()
    for c, cell_writer in enumerate(self._cells):
      # A sweep's cells: each gets the mean over its own seeds (replicas are cell-major).
      for name, value in values.items():
        if isinstance(value, list) and name.endswith("/seeds"):
          per_cell = np.asarray(value, np.float64).reshape(len(self._cells), -1)[c]
          if np.all(np.isfinite(per_cell)):  # A cell with a diverged seed has no mean to plot.
            cell_writer.add_scalar(name[: -len("/seeds")], float(np.mean(per_cell)), int(step))
      cell_writer.flush()

  def close(self) -> None:
    if self._jsonl is not None:
      self._jsonl.close()
    for writer in [self._tb, *self._cells]:
      if writer is not None:
        writer.close()
