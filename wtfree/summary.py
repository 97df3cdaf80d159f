"""What the terminal shows of a run: angles in a few numbers per log line, and a closing summary."""

import json

from etils import epath
import numpy as np


def angles_line(values: dict) -> str:
  """``angle/delta 12/45/80 angle/weight 3/40/88``: min/median/max over layers, in degrees, of each kind.

  Layers at exactly 0 (the output layer's delta angle) count only when every layer is at 0 (bp).
  """
  parts = []
  for kind in ("delta", "weight"):
    layers = [v for k, v in values.items()
              if k.startswith(f"angle/{kind}/") and not k.endswith(("/std", "/seeds")) and np.isfinite(v)]
    # The output layer's delta angle is 0 by construction: it says nothing unless all are.
    layers = [v for v in layers if v > 0] or layers
    if layers:
      parts.append(f"angle/{kind} {np.min(layers):.0f}/{np.median(layers):.0f}/{np.max(layers):.0f}")
  return " ".join(parts)


def _records(workdir) -> list[dict]:
  path = epath.Path(workdir) / "metrics.jsonl"
  return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def closing_lines(workdir: str, *, num_classes: int, seconds: float, steps_taken: int,
                  finished_before: bool) -> list[str]:
  """The run's closing summary, read from its ``metrics.jsonl``: what it reached, what it cost, where it is.

  Warns when the last training loss is above the first one, or the final
  top-1 accuracy is at chance (no more than 1.5 / num_classes).
  """
  records = _records(workdir)
  evals = [r for r in records if r["split"] == "eval" and "eval/top1" in r]
  trains = [r for r in records if r["split"] == "train" and "train/loss" in r]
  lines = []
  if finished_before:
    lines.append(f"already finished at step {records[-1]['step'] if records else '?'}; nothing to train")
  else:
    rate = steps_taken / seconds if seconds > 0 else 0.0
    lines.append(f"finished: {steps_taken} steps in {seconds:.1f} s ({rate:.1f} steps/s)")
  if evals:
    final, best = evals[-1], max(evals, key=lambda r: r["eval/top1"])
    lines.append(f"eval/top1 final {final['eval/top1']:.4g} at step {final['step']}, best {best['eval/top1']:.4g} "
                 f"at step {best['step']}")
    if final["eval/top1"] <= 1.5 / max(num_classes, 1):
      lines.append(f"warning: eval/top1 {final['eval/top1']:.4g} is at chance for {num_classes} classes")
  if len(trains) > 1 and not trains[-1]["train/loss"] < trains[0]["train/loss"]:
    lines.append(f"warning: the last training loss ({trains[-1]['train/loss']:.4g}) is not below the first "
                 f"({trains[0]['train/loss']:.4g}): lower the learning rate?")
  lines.append(f"results in {workdir} (metrics.jsonl, tensorboard/, checkpoints/)")
  return lines
