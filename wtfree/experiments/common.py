"""What the experiments share: flags, configs, training through wtfree's loop, writing PNG + JSON.

Every experiment module has ``run(out, quick=False) -> dict`` (the record it
writes) and is run as

    python -m wtfree.experiments.NAME --out DIR [--quick]

writing ``DIR/NAME.png`` and ``DIR/NAME.json`` (the numbers behind the
figure, with the setup). A long experiment keeps each finished part (a rule,
a cell) in ``DIR/NAME.partial/`` as it goes (`remembered`), so that the same
command started again after an interruption trains only what is missing.
"""

import argparse
from collections.abc import Callable
import dataclasses
import hashlib
import json
import os
import shutil
import tempfile
import time
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from wtfree import data
from wtfree import defaults
from wtfree import sweep as sweep_lib
from wtfree import train as train_lib
from wtfree import settings

Array = jax.Array


def uniform(low: float, high: float) -> Callable[..., Array]:
  """An initializer ``init(key, shape, dtype)`` drawing uniform in [low, high)."""

  def init(key, shape, dtype=jnp.float32):
    return jax.random.uniform(key, shape, dtype, low, high)

  return init


# ---------------------------------------------------------------------------
# Training: every experiment trains through `wtfree.train.train_and_evaluate`.


def config(**fields) -> ml_collections.ConfigDict:
  """`wtfree.defaults` with ``fields`` set: ``model_options`` replaces the defaults' MLP options, ``rule_options`` updates.

  Experiments evaluate at step 0 and checkpoint only at the end, without TensorBoard.
  """
  c = defaults.get_config()
  c.tensorboard = False
  c.eval_at_start = True
  c.model_options = ml_collections.ConfigDict(dict(fields.pop("model_options", None) or {}))
  for name, value in (fields.pop("rule_options", None) or {}).items():
    c.rule_options[name] = value
  for key, value in fields.items():
    c[key] = value
  if c.num_steps > 0:
    c.checkpoint_every_steps = int(c.num_steps)
  return c


@dataclasses.dataclass(frozen=True)
class Run:
  """What a run logged: its ``metrics.jsonl`` records by split, and its final state."""

  records: dict[str, list[dict]]
  state: Any

  def steps(self, split: str, key: str) -> np.ndarray:
    """The steps at which ``split`` logged ``key``."""
    return np.array([r["step"] for r in self.records[split] if key in r])

  def values(self, split: str, key: str) -> np.ndarray:
    """``[logged steps, seeds]``: ``key`` of every replica at every step that logged it."""
    rows = [r.get(f"{key}/seeds", [r[key]]) for r in self.records[split] if key in r]
    return np.asarray(rows, np.float64)

  def final(self, split: str, key: str) -> np.ndarray:
    """``[seeds]``: the last logged value of ``key`` of every replica."""
    return self.values(split, key)[-1]


def train(run_config: ml_collections.ConfigDict) -> Run:
  """Trains ``run_config`` with `wtfree.train.train_and_evaluate` in a fresh workdir; returns what it logged."""
  with tempfile.TemporaryDirectory(prefix="wtfree-experiment-") as workdir:
    state = jax.device_get(train_lib.train_and_evaluate(run_config, workdir))
    records: dict[str, list[dict]] = {"train": [], "eval": []}
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
      for line in f:
        record = json.loads(line)
        records.setdefault(record["split"], []).append(record)
  return Run(records, state)


def sweep(run_config: ml_collections.ConfigDict, *, hold_out: bool = True) -> dict:
  """Runs ``run_config``'s sweep (`wtfree.sweep.run`) in a fresh workdir; returns its summary."""
  with tempfile.TemporaryDirectory(prefix="wtfree-experiment-") as workdir:
    return sweep_lib.run(run_config, workdir, hold_out=hold_out)


def choose_rate_and_epochs(run_config: ml_collections.ConfigDict, rates: list[float], seeds: int) -> dict:
  """The learning rate and epoch count with the lowest mean validation error (Lillicrap et al.'s protocol).

  ``run_config`` evaluates after every epoch; every rate times ``seeds``
  seeds trains as replicas of one program (its sweep over ``rates``).
  Returns ``learning_rate``, ``epochs`` and each rate's mean validation
  error (%) after every epoch.
  """
  run_config.sweep.learning_rate = ",".join(map(str, rates))
  run_config.angles = False
  run = train(run_config)
  # [epochs, rates, seeds] of validation error in %.
  errors = 100.0 * (1.0 - run.values("validation", "val/top1")).reshape(-1, len(rates), seeds)
  mean = errors.mean(-1)
  epoch, rate = np.unravel_index(np.argmin(mean), mean.shape)
  return {
      "learning_rate": rates[rate],
      "epochs": int(epoch) + 1,
      "validation_error_mean": {str(lr): mean[:, i].tolist() for i, lr in enumerate(rates)},
  }


def test_targets(run_config: ml_collections.ConfigDict) -> np.ndarray:
  """The test split's targets of the data set ``run_config`` names."""
  return np.asarray(data.get_dataset(settings.resolve(run_config).data).arrays["test"][1])


# ---------------------------------------------------------------------------
# Output.


def remembered(out: str, name: str, setup: dict, part: str, train: Callable[[], dict]) -> dict:
  """``train()``'s result for one part of an experiment, trained once per setup.

  The result is kept in ``out/name.partial/SETUP/part.json``, SETUP a digest
  of ``setup``, until `save` writes the whole record: an interrupted
  experiment started again with the same setup reads the parts it finished
  instead of training them again; a changed setup trains everything.

  Args:
    out: the experiment's output directory.
    name: the experiment's name.
    setup: everything that decides the results (hyperparameters, seeds, rules).
    part: the part's name, unique within the experiment (e.g. ``'vit-fa'``).
    train: trains the part and returns its JSON-serialisable result.
  """
  digest = hashlib.sha256(json.dumps(_jsonable(setup), sort_keys=True).encode()).hexdigest()[:12]
  path = os.path.join(out, f"{name}.partial", digest, f"{part}.json")
  if os.path.exists(path):
    with open(path) as f:
      return json.load(f)
  result = _jsonable(train())
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path + ".tmp", "w") as f:
    json.dump(result, f)
  os.replace(path + ".tmp", path)  # A part is kept whole or not at all.
  return result


def save(out: str, name: str, fig, record: dict[str, Any]) -> dict[str, Any]:
  """Writes ``out/name.png`` and ``out/name.json`` and drops the parts kept on the way; returns ``record``."""
  os.makedirs(out, exist_ok=True)
  fig.savefig(os.path.join(out, f"{name}.png"), dpi=110, bbox_inches="tight")
  import matplotlib.pyplot as plt

  plt.close(fig)
  with open(os.path.join(out, f"{name}.json"), "w") as f:
    json.dump(_jsonable(record), f, indent=1, sort_keys=False)
  shutil.rmtree(os.path.join(out, f"{name}.partial"), ignore_errors=True)
  return record


def _jsonable(value):
  if isinstance(value, dict):
    return {str(k): _jsonable(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [_jsonable(v) for v in value]
  if isinstance(value, (np.ndarray, jax.Array)):
    return _jsonable(np.asarray(value).tolist())
  if isinstance(value, (np.floating, float)):
    return float(f"{float(value):.6g}")
  if isinstance(value, np.integer):
    return int(value)
  if isinstance(value, np.bool_):
    return bool(value)
  return value


def figure(ncols: int, width: float = 4.2, height: float = 3.3):
  """A row of ``ncols`` axes, with the Agg backend (no display needed)."""
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  fig, axes = plt.subplots(1, ncols, figsize=(width * ncols, height), squeeze=False)
  return fig, axes[0]


def main(name: str, run: Callable[..., dict], **options: dict) -> None:
  """Parses ``--out DIR [--quick]`` and runs the experiment.

  ``options``: the experiment's own flags, ``{name: argparse keywords}``,
  handed to ``run`` as keyword arguments of that name.
  """
  parser = argparse.ArgumentParser(prog=f"python -m wtfree.experiments.{name}")
  parser.add_argument("--out", default=os.path.join("runs", "experiments"), help="directory for PNG and JSON")
  parser.add_argument("--quick", action="store_true", help="a small version for tests (< 60 s)")
  for option, keywords in options.items():
    parser.add_argument(f"--{option}", **keywords)
  args = parser.parse_args()
  start = time.time()
  record = run(args.out, quick=args.quick, **{option: getattr(args, option) for option in options})
  summary = record.get("summary", {})
  print(json.dumps(_jsonable(summary), indent=1))
  print(f"{name}: wrote {args.out}/{name}.png and .json in {time.time() - start:.0f} s")
