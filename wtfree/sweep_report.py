"""A sweep's summary from its programs' metrics: ``sweep.json``, ``sweep.md`` and ``sweep.png``.

For every cell: its values, and per seed, with the mean, the sample standard
deviation (ddof=1) and a 95 % t-interval over seeds, the final and best
validation metric, the test metric at the end and at the best validation
step, the final angles, and which seeds diverged (step, loss). Per program,
the cell with the best mean final validation metric is chosen and its test
metric reported: the test split never takes part in the choice.
"""

import json
import math
from typing import Any

from etils import epath
import numpy as np

from wtfree import grid
from wtfree import settings


def _lines(workdir) -> list[dict]:
  """The program's log lines, each (step, split) once: a resumed run's repeat replaces the earlier line."""
  path = epath.Path(workdir) / "metrics.jsonl"
  latest = {}
  for text in path.read_text().splitlines() if path.exists() else []:
    line = json.loads(text)
    latest[(line["step"], line["split"])] = line
  return sorted(latest.values(), key=lambda line: line["step"])


def _per_replica(line: dict, key: str, n: int) -> np.ndarray | None:
  if n > 1:
    values = line.get(f"{key}/seeds")
    return None if values is None else np.asarray(values, np.float64)
  return None if key not in line else np.asarray([line[key]], np.float64)


def _metric(lines: list[dict]) -> tuple[str, bool]:
  """The metric that chooses and whether higher is better: bits per token (language models), top-1, or the loss."""
  keys = {k.split("/", 1)[1].split("/")[0] for line in lines for k in line if k.startswith(("val/", "eval/"))}
  # A language model logs its next-token top-1 too; what it is judged by is its bits per token.
  if "bits_per_token" in keys:
    return "bits_per_token", False
  if "top1" in keys:
    return "top1", True
  return "loss", False


def stats(values) -> dict[str, Any]:
  """Mean, sample standard deviation (ddof=1), 95 % t-interval half-width, n and the values."""
  values = np.asarray(values, np.float64)
  n = int(values.size)
  mean = float(np.mean(values)) if n else math.nan
  sd = float(np.std(values, ddof=1)) if n > 1 else math.nan
  half = math.nan
  if n > 1:
    from scipy import stats as scipy_stats  # pylint: disable=g-import-not-at-top

    half = float(scipy_stats.t.ppf(0.975, n - 1) * sd / math.sqrt(n))
  return {"mean": mean, "sd": sd, "ci95": half, "n": n, "values": [float(v) for v in values]}


def _program_cells(program: grid.Program, workdir: epath.Path) -> list[dict]:
  run_dir = workdir / program.name
  lines = _lines(run_dir)
  seeds = settings.field(program.config, "num_seeds")
  n = len(program.cells) * seeds
  metric, higher = _metric(lines)
  evals = [line for line in lines if line["split"] == "eval"]
  vals = [line for line in lines if line["split"] == "validation"]
  trains = [line for line in lines if line["split"] == "train"]
  diverged_path = run_dir / "diverged.json"
  diverged = json.loads(diverged_path.read_text()) if diverged_path.exists() else {}
  val = np.stack([_per_replica(line, f"val/{metric}", n) for line in vals]) if vals else np.full((1, n), np.nan)
  test_by_step = {line["step"]: _per_replica(line, f"eval/{metric}", n) for line in evals}
  test = np.stack([test_by_step.get(line["step"], np.full(n, np.nan)) for line in vals]) if vals else val
  # Per seed, the evaluation with the best validation metric (a NaN, a diverged step, is never best).
  best_row = (np.argmax if higher else np.argmin)(np.where(np.isnan(val), -np.inf if higher else np.inf, val), axis=0)
  final_test = _per_replica(evals[-1], f"eval/{metric}", n) if evals else np.full(n, np.nan)
  angle_keys = sorted(k for k in (trains[-1] if trains else {})
                      if k.startswith("angle/") and not k.endswith(("/std", "/seeds")))
  cells = []
  for c, values in enumerate(program.cells):
    rows = slice(c * seeds, (c + 1) * seeds)
    columns = np.arange(n)[rows]
    cells.append({
        "program": program.name,
        "values": {**program.values, **values},
        "metric": metric,
        "higher_is_better": higher,
        "final_validation": stats(val[-1, rows]),
        "best_validation": stats(val[best_row[rows], columns]),
        "final_test": stats(final_test[rows]),
        "test_at_best_validation": stats(test[best_row[rows], columns]),
        "angles": {k: stats(_per_replica(trains[-1], k, n)[rows]) for k in angle_keys},
        "diverged": [{"seed": int(program.config.seed) + r - c * seeds, **diverged[str(r)]}
                     for r in range(rows.start, rows.stop) if str(r) in diverged],
    })
  return cells


def summarise(config, programs: list[grid.Program], workdir: str) -> dict:
  """The sweep's summary: every cell, and per program the cell the validation split chooses."""
  root = epath.Path(workdir)
  cells, chosen = [], {}
  for program in programs:
    program_cells = _program_cells(program, root)
    means = np.array([cell["final_validation"]["mean"] for cell in program_cells])
    higher = program_cells[0]["higher_is_better"]
    if np.all(np.isnan(means)):  # No validation split: nothing to choose on.
      best = None
    else:
      best = int(np.nanargmax(means) if higher else np.nanargmin(means))
    if best is not None:
      chosen[program.name] = {"cell": len(cells) + best, "values": program_cells[best]["values"],
                              "validation": program_cells[best]["final_validation"],
                              "test": program_cells[best]["final_test"]}
    cells.extend(program_cells)
  swept = grid.entries(config)
  return {
      "swept": {path: list(values) for path, values in swept.items()},
      "replica_fields": [path for path in swept if path in grid.replica_fields()],
      "num_seeds": settings.field(config, "num_seeds"),
      "chosen_on": _validation_source(programs[0].config) if chosen else "nothing: no validation split",
      "reported_on": "test",
      "programs": [{"name": p.name, "values": p.values, "cells": len(p.cells)} for p in programs],
      "cells": cells,
      "chosen": chosen,
  }


def _validation_source(config) -> str:
  """Which examples the validation split that chose holds, in words."""
  from wtfree import data  # pylint: disable=g-import-not-at-top  (pulls in tfds)

  splits = data.get_dataset(settings.resolve(config).data).splits
  if splits.held_out:
    return (f"validation: {len(splits.validation)} examples ({splits.held_out:g} of the training set) held out "
            "of training by a fixed permutation")
  return f"validation: {config.dataset}'s own validation split ({len(splits.validation)} examples)"


def _fmt(s: dict) -> str:
  if math.isnan(s["mean"]):
    return "-"
  return f"{s['mean']:.4g}" if s["n"] < 2 else f"{s['mean']:.4g} ± {s['sd']:.2g}"


def markdown(summary: dict) -> str:
  """``sweep.md``: one row per cell, the chosen cell of each program marked."""
  fields = list(summary["swept"])
  metric = summary["cells"][0]["metric"] if summary["cells"] else "top1"
  head = fields + [f"val {metric} (final)", f"val {metric} (best)", f"test {metric}", "diverged", "chosen"]
  rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
  chosen_cells = {c["cell"] for c in summary["chosen"].values()}
  for i, cell in enumerate(summary["cells"]):
    values = [str(cell["values"].get(f)) for f in fields]
    diverged = f"{len(cell['diverged'])}/{cell['final_test']['n']}" if cell["diverged"] else ""
    rows.append("| " + " | ".join(values + [_fmt(cell["final_validation"]), _fmt(cell["best_validation"]),
                                            _fmt(cell["final_test"]), diverged,
                                            "**yes**" if i in chosen_cells else ""]) + " |")
  text = [
      f"# Sweep: {', '.join(fields)} x {summary['num_seeds']} seeds",
      "",
      f"Mean ± sample standard deviation (ddof=1) over seeds. Each program's cell is chosen on "
      f"{summary['chosen_on']}; the test split is only reported.",
      "",
      *rows,
      "",
      "Chosen per program:",
      "",
  ]
  if not summary["chosen"]:
    text.append("- none: the runs had no validation split (config.holdout, or a set with its own)")
  for name, choice in summary["chosen"].items():
    text.append(f"- {name}: {choice['values']}: validation {_fmt(choice['validation'])}, "
                f"test {_fmt(choice['test'])}")
  return "\n".join(text) + "\n"


def figure(summary: dict):
  """The validation metric against each swept per-replica field, one line per program, ± one sd as a band.

  Programs run without a validation split show the test metric instead.
  """
  import matplotlib  # pylint: disable=g-import-not-at-top

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

  fields = summary["replica_fields"] or ["program"]
  fig, axes = plt.subplots(1, len(fields), figsize=(4.4 * len(fields), 3.4), squeeze=False)
  metric = summary["cells"][0]["metric"] if summary["cells"] else "top1"
  # Without a validation split (nothing chosen) the figure shows the test metric, and says so.
  split = "final_validation" if summary["chosen"] else "final_test"
  for ax, field in zip(axes[0], fields):
    for program in summary["programs"]:
      cells = [c for c in summary["cells"] if c["program"] == program["name"]]
      if field == "program":
        xs, best = [program["name"]], cells[:1]
      else:
        xs = sorted({c["values"][field] for c in cells})
        pick = max if cells[0]["higher_is_better"] else min
        best = [pick((c for c in cells if c["values"][field] == x),
                     key=lambda c: np.nan_to_num(c[split]["mean"], nan=-np.inf if pick is max else np.inf))
                for x in xs]
      mean = np.array([c[split]["mean"] for c in best])
      sd = np.nan_to_num(np.array([c[split]["sd"] for c in best]))
      ax.plot(xs, mean, "o-", label=program["name"])
      ax.fill_between(range(len(xs)) if field == "program" else xs, mean - sd, mean + sd, alpha=0.2)
    if field != "program" and all(c["values"][field] > 0 for c in summary["cells"]):
      ax.set_xscale("log")
    ax.set_xlabel(field)
    ax.set_ylabel(f"{'validation' if split == 'final_validation' else 'test'} {metric}")
  axes[0][0].legend(fontsize=7)
  fig.tight_layout()
  return fig


def write(summary: dict, workdir: str) -> None:
  """Writes ``sweep.json``, ``sweep.md`` and ``sweep.png`` into ``workdir``."""
  root = epath.Path(workdir)
  (root / "sweep.json").write_text(json.dumps(summary, indent=1, default=str))
  (root / "sweep.md").write_text(markdown(summary))
  fig = figure(summary)
  with (root / "sweep.png").open("wb") as f:
    fig.savefig(f, dpi=110)
