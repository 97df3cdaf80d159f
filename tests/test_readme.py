"""The README's commands run as written: each is read from README.md, not copied here."""

import json
import os
import pathlib
import re
import shlex
import subprocess
import sys

ROOT = pathlib.Path(__file__).parents[1]


def _section_commands(heading: str) -> list[str]:
  """The indented ``python -m wtfree.main`` lines of the README section under ``heading``."""
  text = (ROOT / "README.md").read_text()
  section = text.split(f"\n## {heading}\n", 1)[1].split("\n## ", 1)[0]
  return [line.strip() for line in section.splitlines() if re.match(r"^    python -m wtfree\.main ", line)]


def test_the_sweeps_command_prints_its_table(tmp_path):
  (command,) = _section_commands("Sweeps")
  # Run from a folder of its own that sees the repository's configs/, as from the repository root.
  (tmp_path / "configs").symlink_to(ROOT / "configs")
  args = shlex.split(command)
  assert args[:3] == ["python", "-m", "wtfree.main"]
  # This command trains for real: XLA's optimised code pays back its longer compile here.
  env = {**os.environ, "XLA_FLAGS": os.environ.get("XLA_FLAGS", "").replace("--xla_backend_optimization_level=0", "")}
  done = subprocess.run([sys.executable, *args[1:]], cwd=tmp_path, env=env, capture_output=True, text=True,
                        timeout=600)
  assert done.returncode == 0, done.stderr[-3000:]
  workdir = tmp_path / next(a.split("=", 1)[1] for a in args if a.startswith("--workdir="))
  summary = json.loads((workdir / "sweep.json").read_text())
  rates = [float(v) for v in next(a for a in args if "sweep.learning_rate" in a).split("=", 1)[1].split(",")]
  assert [c["values"]["learning_rate"] for c in summary["cells"]] == rates
  assert all(c["final_test"]["n"] == 5 for c in summary["cells"])
  table = [line for line in done.stdout.splitlines() if line.startswith("| ") and "learning_rate" not in line]
  assert len(table) == len(rates) and sum("**yes**" in line for line in table) == 1
  # Each cell learned the digits: the chosen one well above chance.
  assert summary["chosen"]["run"]["test"]["mean"] > 0.9
  assert summary["chosen_on"].startswith("validation: 144 examples (0.1 of the training set) held out")
  # TensorBoard: one run per cell.
  assert sorted(p.name for p in (workdir / "run" / "tensorboard").iterdir()) == [f"cell_{c}" for c in range(4)]


def _python_blocks() -> list[str]:
  text = (ROOT / "README.md").read_text()
  return re.findall(r"```python\n(.*?)```", text, flags=re.S)


def test_every_python_block_runs_as_written():
  blocks = _python_blocks()
  assert len(blocks) >= 2
  for block in blocks:
    namespace = {}
    exec(compile(block, "README.md", "exec"), namespace)  # pylint: disable=exec-used
  # The last block trained the user's model with kp: its loss fell, and B came near W.
  from wtfree import metrics  # pylint: disable=g-import-not-at-top

  ns = namespace
  before = ns["loss_fn"](ns["model"].apply(ns["learner"].init(ns["jax"].random.key(0)), ns["x"]), ns["y"]).mean()
  after = ns["loss_fn"](ns["model"].apply(ns["variables"], ns["x"]), ns["y"]).mean()
  assert float(after) < 0.5 * float(before)
  _, seen = ns["model"].apply(ns["variables"], ns["x"], mutable=["alignment"])
  assert max(metrics.weight_angles(seen["alignment"]).values()) < 45
