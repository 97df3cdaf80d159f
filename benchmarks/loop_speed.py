"""The training loop against a bare scan of its own train step, in one process.

    python benchmarks/loop_speed.py --out runs/loop_speed            # configs/digits_mlp.py as it ships
    python benchmarks/loop_speed.py --out /tmp/loop_speed --quick    # a smoke run

The loop is `wtfree.train.train_and_evaluate` on ``configs/digits_mlp.py``
(logging, angles, evaluation and checkpoints included); its speed is the
median ``train/examples_per_second`` over its log windows, the first (which
compiles) left out. The reference is `wtfree.steps.train_step` of the same
model and optimizer in a bare ``lax.scan`` over batches gathered on the device,
keeping the step's metrics and nothing else, timed after compiling (the median of five scans of as many
steps as a log window). The two alternate for ``--rounds``
rounds; the ratio of each round is reported, with their median. Writes
``OUT/loop_speed.json`` and ``OUT/loop_speed.md``.
"""

import argparse
import functools
import json
import pathlib
import sys
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).parents[1]))

from configs import digits_mlp  # noqa: E402
from wtfree import data  # noqa: E402
from wtfree import models  # noqa: E402
from wtfree import optim  # noqa: E402
from wtfree import settings  # noqa: E402
from wtfree import sharding  # noqa: E402
from wtfree import steps as train_steps  # noqa: E402
from wtfree import train  # noqa: E402


def _config(quick: bool):
  config = digits_mlp.get_config()
  config.tensorboard = False
  if quick:
    config.num_steps = 60
    config.log_every_steps = 20
    config.eval_every_steps = 60
    config.checkpoint_every_steps = 60
  return config


def loop_examples_per_second(config) -> float:
  """Median examples/s of the loop's log windows after the first."""
  with tempfile.TemporaryDirectory() as workdir:
    train.train_and_evaluate(config, workdir)
    rows = [json.loads(line) for line in open(pathlib.Path(workdir) / "metrics.jsonl")]
  speeds = [r["train/examples_per_second"] for r in rows if "train/examples_per_second" in r]
  return float(np.median(speeds[1:-1] if len(speeds) > 2 else speeds[1:]))


def scan_examples_per_second(config, num_steps: int) -> float:
  """Examples/s of the bare train step in one ``lax.scan`` over device-resident batches."""
  resolved = settings.resolve(config)
  ds = data.get_dataset(resolved.data)
  model = models.create(resolved.model, ds.num_classes, ds.input_shape)
  spe = ds.num_train // config.batch_size
  tx = optim.make(resolved.optimizer, spe)
  mesh = sharding.make_mesh()
  learner = train_steps.make_learner(model, ds.input_shape, mirror_batch_size=config.mirror_batch_size, mesh=mesh)
  state = train_steps.create_train_state(model, tx, ds.input_shape, config.seed, mesh, learner)
  x, y = (jnp.asarray(a) for a in ds.arrays["train"])
  indices = jnp.asarray(ds.train_indices(0, num_steps))
  step = functools.partial(train_steps.train_step, model=model, tx=tx, task=ds.task, learner=learner)

  @train_steps.jit  # compiled as the loop compiles its steps
  def run(state, indices):
    def body(state, rows):
      # The step's metrics are kept, as in any loop that logs them: dropping them
      # would let XLA delete part of the step (its top-1 and finiteness checks).
      return step(state, {"image": x[rows], "label": y[rows]})

    return jax.lax.scan(body, state, indices)

  jax.block_until_ready(run(state, indices))
  times = []
  for _ in range(5):
    start = time.perf_counter()
    jax.block_until_ready(run(state, indices))
    times.append(time.perf_counter() - start)
  return num_steps * config.batch_size / float(np.median(times))


def main(argv=None) -> dict:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--out", required=True, help="directory for loop_speed.json and loop_speed.md")
  parser.add_argument("--quick", action="store_true", help="60 steps, 1 round: a smoke run")
  parser.add_argument("--rounds", type=int, default=None, help="alternating rounds (default 3, --quick 1)")
  args = parser.parse_args(argv)
  rounds = args.rounds or (1 if args.quick else 3)
  config = _config(args.quick)
  loops, scans = [], []
  for _ in range(rounds):
    loops.append(loop_examples_per_second(config))
    scans.append(scan_examples_per_second(config, 100 if not args.quick else 20))
  ratios = [a / b for a, b in zip(loops, scans)]
  record = {
      "config": "configs/digits_mlp.py" + (" (quick: 60 steps)" if args.quick else ""),
      "backend": jax.default_backend(),
      "devices": jax.device_count(),
      "loop_examples_per_second": loops,
      "scan_examples_per_second": scans,
      "ratio": ratios,
      "ratio_median": float(np.median(ratios)),
  }
  out = pathlib.Path(args.out)
  out.mkdir(parents=True, exist_ok=True)
  (out / "loop_speed.json").write_text(json.dumps(record, indent=1))
  lines = ["| round | loop examples/s | bare scan examples/s | loop / scan |", "|---:|---:|---:|---:|"]
  lines += [f"| {i} | {a:.0f} | {b:.0f} | {a / b:.2f} |" for i, (a, b) in enumerate(zip(loops, scans))]
  (out / "loop_speed.md").write_text("\n".join(lines) + f"\n\nmedian ratio {record['ratio_median']:.2f}\n")
  print("\n".join(lines))
  return record


if __name__ == "__main__":
  main()
