"""N seeds as one run (``config.num_seeds``) against one seed, wall time side by side in one process.

    python benchmarks/seeds_speed.py --out runs/seeds_speed                 # configs/digits_mlp.py, 20 seeds
    python benchmarks/seeds_speed.py --out /tmp/seeds_speed --quick         # a smoke run

Each round times ``configs/digits_mlp.py`` as it ships (logging, angles,
evaluation, checkpoints; TensorBoard off) with one seed and with ``--seeds``
replicas, each in a fresh workdir, two ways: the whole command a user types
(``python -m wtfree.main ... --config.num_seeds=N``, the interpreter's start
and imports included) and `wtfree.train.train_and_evaluate` called in this
process (compilation included, imports not). Reported per round: the four
wall times, the two ratios, and the speed-up over running the seeds one after
another (``seeds * single / many``, in process). Writes
``OUT/seeds_speed.json`` and ``OUT/seeds_speed.md``.
"""

import argparse
import json
import pathlib
import subprocess
import sys
import tempfile
import time

import jax
import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).parents[1]))
sys.path.insert(0, str(pathlib.Path(__file__).parent))

import loop_speed  # noqa: E402  (the same config, quick or as it ships)
from configs import digits_mlp  # noqa: E402
from wtfree import train  # noqa: E402


def _config(quick: bool, seeds: int):
  config = loop_speed._config(quick)
  config.num_seeds = seeds
  return config


def wall_seconds(config) -> tuple[float, dict]:
  """Seconds one `train_and_evaluate` call takes, and its last eval record."""
  with tempfile.TemporaryDirectory() as workdir:
    start = time.perf_counter()
    train.train_and_evaluate(config, workdir)
    seconds = time.perf_counter() - start
    rows = [json.loads(line) for line in open(pathlib.Path(workdir) / "metrics.jsonl")]
  return seconds, [r for r in rows if r["split"] == "eval"][-1]


def command_seconds(config) -> float:
  """Seconds the command ``python -m wtfree.main`` takes to run ``config`` from a fresh interpreter."""
  overrides = [f"--config.{k}={v}" for k, v in _overrides(config).items()]
  root = pathlib.Path(__file__).parents[1]
  with tempfile.TemporaryDirectory() as workdir:
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "wtfree.main", "--config=configs/digits_mlp.py",
                           f"--workdir={workdir}/run", *overrides], cwd=root, capture_output=True, text=True)
    seconds = time.perf_counter() - start
  if done.returncode:
    raise RuntimeError(f"the command failed ({done.returncode}): {done.stderr[-2000:]}")
  return seconds


def _overrides(config) -> dict:
  """The fields where ``config`` differs from configs/digits_mlp.py as it ships."""
  shipped = digits_mlp.get_config()
  return {k: config[k] for k in ("tensorboard", "num_seeds", "num_steps", "log_every_steps",
                                 "eval_every_steps", "checkpoint_every_steps")
          if config.get(k) != shipped.get(k)}


def main(argv=None) -> dict:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--out", required=True, help="directory for seeds_speed.json and seeds_speed.md")
  parser.add_argument("--quick", action="store_true", help="60 steps, 4 seeds, 1 round: a smoke run")
  parser.add_argument("--seeds", type=int, default=None, help="replicas of the many-seed run (default 20, --quick 4)")
  parser.add_argument("--rounds", type=int, default=None, help="alternating rounds (default 2, --quick 1)")
  args = parser.parse_args(argv)
  seeds = args.seeds or (4 if args.quick else 20)
  rounds = args.rounds or (1 if args.quick else 2)
  singles, manys, single_commands, many_commands, last = [], [], [], [], None
  for _ in range(rounds):
    single_commands.append(command_seconds(_config(args.quick, 1)))
    many_commands.append(command_seconds(_config(args.quick, seeds)))
    singles.append(wall_seconds(_config(args.quick, 1))[0])
    seconds, last = wall_seconds(_config(args.quick, seeds))
    manys.append(seconds)
  ratios = [m / s for m, s in zip(manys, singles)]
  command_ratios = [m / s for m, s in zip(many_commands, single_commands)]
  record = {
      "config": "configs/digits_mlp.py" + (" (quick: 60 steps)" if args.quick else ""),
      "backend": jax.default_backend(),
      "devices": jax.device_count(),
      "seeds": seeds,
      "single_seed_command_seconds": single_commands,
      "many_seeds_command_seconds": many_commands,
      "command_ratio": command_ratios,
      "command_ratio_median": float(np.median(command_ratios)),
      "single_seed_seconds": singles,
      "many_seeds_seconds": manys,
      "ratio": ratios,
      "ratio_median": float(np.median(ratios)),
      "speedup_over_sequential": [seeds * s / m for m, s in zip(manys, singles)],
      "eval_top1_seeds": last.get("eval/top1/seeds", [last["eval/top1"]]),
  }
  out = pathlib.Path(args.out)
  out.mkdir(parents=True, exist_ok=True)
  (out / "seeds_speed.json").write_text(json.dumps(record, indent=1))
  lines = [f"| round | command, 1 seed (s) | command, {seeds} seeds (s) | ratio | in process, 1 seed (s) | "
           f"in process, {seeds} seeds (s) | ratio | speed-up over {seeds} runs in a row |",
           "|---:|---:|---:|---:|---:|---:|---:|---:|"]
  lines += [f"| {i} | {sc:.1f} | {mc:.1f} | {mc / sc:.2f} | {s:.1f} | {m:.1f} | {m / s:.2f} | {seeds * s / m:.1f}x |"
            for i, (sc, mc, s, m) in enumerate(zip(single_commands, many_commands, singles, manys))]
  (out / "seeds_speed.md").write_text(
      "\n".join(lines) + f"\n\nmedian ratio: command {record['command_ratio_median']:.2f}, "
      f"in process {record['ratio_median']:.2f}\n")
  print("\n".join(lines))
  return record


if __name__ == "__main__":
  main()
