"""A learning-rate sweep as one command against one run of one cell, whole commands alternated.

    python benchmarks/sweep_speed.py --out runs/sweep_speed            # 4 rates x 5 seeds, 3 rounds
    python benchmarks/sweep_speed.py --out /tmp/sweep_speed --quick    # a smoke run

Each round times two commands a user types, each from a fresh interpreter in
a fresh workdir (start-up, imports, compilation, evaluation, checkpoints and,
for the sweep, its summary and figure included), on ``configs/digits_mlp.py``
as it ships with TensorBoard off:

- one cell: ``python -m wtfree.main ... --config.learning_rate=0.05``;
- the same cell on the sweep's split (``--config.holdout=0.1``: 10 % of the
  training set held out, as the sweep does, so the same steps per epoch and
  a validation pass at each evaluation);
- the sweep: ``... --config.sweep.learning_rate=0.005,0.01,0.02,0.05
  --config.num_seeds=5``, 20 replicas of one program.

Writes ``OUT/sweep_speed.json`` and ``OUT/sweep_speed.md``: per round the
wall times and the sweep's ratio to each single run, and the median ratios.
"""

import argparse
import json
import pathlib
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = pathlib.Path(__file__).parents[1]
RATES = (0.005, 0.01, 0.02, 0.05)


def _common(quick: bool) -> list[str]:
  flags = ["--config=configs/digits_mlp.py", "--config.tensorboard=False"]
  if quick:
    flags += ["--config.num_steps=60", "--config.log_every_steps=30", "--config.eval_every_steps=60",
              "--config.checkpoint_every_steps=60"]
  return flags


def command_seconds(flags: list[str]) -> tuple[float, str]:
  """Seconds ``python -m wtfree.main FLAGS`` takes in a fresh workdir, and what it printed."""
  with tempfile.TemporaryDirectory() as workdir:
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "wtfree.main", f"--workdir={workdir}/run", *flags], cwd=ROOT,
                          capture_output=True, text=True)
    seconds = time.perf_counter() - start
  if done.returncode:
    raise RuntimeError(f"the command failed ({done.returncode}): {done.stderr[-2000:]}")
  return seconds, done.stdout


def main(argv=None) -> dict:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--out", required=True, help="directory for sweep_speed.json and sweep_speed.md")
  parser.add_argument("--quick", action="store_true", help="60 steps, 2 rates x 2 seeds, 1 round: a smoke run")
  parser.add_argument("--rounds", type=int, default=None, help="alternating rounds (default 3, --quick 1)")
  args = parser.parse_args(argv)
  rates, seeds = (RATES[1:3], 2) if args.quick else (RATES, 5)
  rounds = args.rounds or (1 if args.quick else 3)
  common = _common(args.quick)
  one = common + [f"--config.learning_rate={rates[-1]}"]
  grid = common + [f"--config.sweep.learning_rate={','.join(map(str, rates))}", f"--config.num_seeds={seeds}"]
  held = one + ["--config.holdout=0.1"]
  singles, helds, sweeps, table = [], [], [], ""
  for _ in range(rounds):
    singles.append(command_seconds(one)[0])
    helds.append(command_seconds(held)[0])
    seconds, table = command_seconds(grid)
    sweeps.append(seconds)
  ratios = [s / o for s, o in zip(sweeps, singles)]
  held_ratios = [s / o for s, o in zip(sweeps, helds)]
  record = {
      "config": "configs/digits_mlp.py" + (" (quick: 60 steps)" if args.quick else ""),
      "one_cell": " ".join(one),
      "one_cell_held_out": " ".join(held),
      "sweep": " ".join(grid),
      "replicas": len(rates) * seeds,
      "one_cell_seconds": singles,
      "one_cell_held_out_seconds": helds,
      "sweep_seconds": sweeps,
      "ratio": ratios,
      "ratio_median": float(np.median(ratios)),
      "ratio_to_held_out": held_ratios,
      "ratio_to_held_out_median": float(np.median(held_ratios)),
      "sweep_table": table,
  }
  out = pathlib.Path(args.out)
  out.mkdir(parents=True, exist_ok=True)
  (out / "sweep_speed.json").write_text(json.dumps(record, indent=1))
  lines = [f"| round | one cell (s) | one cell, holdout 0.1 (s) | sweep, {len(rates)} rates x {seeds} seeds (s) "
           "| ratio | ratio to holdout 0.1 |", "|---:|---:|---:|---:|---:|---:|"]
  lines += [f"| {i} | {o:.1f} | {h:.1f} | {s:.1f} | {s / o:.2f} | {s / h:.2f} |"
            for i, (o, h, s) in enumerate(zip(singles, helds, sweeps))]
  (out / "sweep_speed.md").write_text("\n".join(lines) + f"\n\nmedian ratio {record['ratio_median']:.2f}, "
                                      f"to holdout 0.1 {record['ratio_to_held_out_median']:.2f}\n")
  print("\n".join(lines))
  return record


if __name__ == "__main__":
  main()
