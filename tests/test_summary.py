"""What the terminal shows: angles in a few numbers per log line, and the closing summary."""

import json

from wtfree import summary


def test_angles_line_gives_min_median_max_per_kind_without_the_outputs_zero():
  values = {"angle/delta/Dense_0": 60.0, "angle/delta/Dense_1": 40.0, "angle/delta/head": 0.0,
            "angle/delta/Dense_0/std": 3.0, "angle/weight/Dense_0": 80.0, "angle/weight/head": 88.0,
            "train/loss": 0.5}
  assert summary.angles_line(values) == "angle/delta 40/50/60 angle/weight 80/84/88"
  assert summary.angles_line({"angle/delta/a": 0.0, "angle/delta/head": 0.0}) == "angle/delta 0/0/0"
  assert summary.angles_line({"train/loss": 1.0}) == ""


def _write(workdir, records):
  (workdir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))


def test_closing_summary_names_final_and_best_and_warns_at_chance_or_a_rising_loss(tmp_path):
  _write(tmp_path, [
      {"step": 10, "split": "train", "train/loss": 2.0},
      {"step": 10, "split": "eval", "eval/top1": 0.5},
      {"step": 20, "split": "train", "train/loss": 1.0},
      {"step": 20, "split": "eval", "eval/top1": 0.4},
  ])
  lines = summary.closing_lines(str(tmp_path), num_classes=10, seconds=2.0, steps_taken=20, finished_before=False)
  assert lines[0] == "finished: 20 steps in 2.0 s (10.0 steps/s)"
  assert lines[1] == "eval/top1 final 0.4 at step 20, best 0.5 at step 10"
  assert not any(line.startswith("warning") for line in lines)
  _write(tmp_path, [
      {"step": 10, "split": "train", "train/loss": 2.0},
      {"step": 20, "split": "train", "train/loss": 1e12},
      {"step": 20, "split": "eval", "eval/top1": 0.1},
  ])
  lines = summary.closing_lines(str(tmp_path), num_classes=10, seconds=2.0, steps_taken=0, finished_before=True)
  assert lines[0] == "already finished at step 20; nothing to train"
  assert "warning: eval/top1 0.1 is at chance for 10 classes" in lines
  assert any(line.startswith("warning: the last training loss (1e+12) is not below the first (2)") for line in lines)
