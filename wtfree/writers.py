"""Metric writers: JSON lines and TensorBoard events, from process 0 only."""

import json

from etils import epath
import jax
import numpy as np


class MetricWriter:
  """Writes ``WORKDIR/metrics.jsonl`` and TensorBoard events.

  Every call to `write` is one JSON object ``{"step", "split", <metric>: ...}``
  and one scalar per metric in TensorBoard. A metric may be a list (the
  per-seed values of a run of several seeds): it goes to the JSON line only.
  On processes other than 0 it writes nothing.
  """

  def __init__(self, workdir: str, *, tensorboard: bool = True):
    self._active = jax.process_index() == 0
    self._jsonl = None
    self._tb = None
    if not self._active:
      return
    workdir = epath.Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    # epath reaches gs:// as well as local disks.
    self._jsonl = (workdir / "metrics.jsonl").open("a")
    if tensorboard:
      from tensorboardX import SummaryWriter  # Imported lazily: it pulls in protobuf.

      self._tb = SummaryWriter(str(workdir / "tensorboard"))

  def write(self, step: int, split: str, scalars: dict) -> None:
    """Writes one log event of scalar (or list-of-scalar) metrics."""
    if not self._active:
      return
    values = {k: [float(x) for x in v] if isinstance(v, (list, tuple)) else float(np.asarray(v))
              for k, v in scalars.items()}
    self._jsonl.write(json.dumps({"step": int(step), "split": split, **values}) + "\n")
    self._jsonl.flush()
    if self._tb is not None:
      for name, value in values.items():
        if not isinstance(value, list):
          self._tb.add_scalar(name, value, int(step))
      self._tb.flush()

  def close(self) -> None:
    if self._jsonl is not None:
      self._jsonl.close()
    if self._tb is not None:
      self._tb.close()
