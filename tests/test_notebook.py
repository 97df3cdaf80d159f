"""notebooks/quickstart.ipynb runs top to bottom on CPU, with tiny parameters.

No Jupyter needed: the code cells run in order in one namespace, shell and
magic lines (``!``, ``%``) turned into ``pass``, and the parameter cell's values
replaced after it runs, as papermill would.
"""

import json
import pathlib
import re
import sys

import matplotlib
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "quickstart.ipynb"
STEPS = 20


def _cells() -> list[dict]:
  notebook = json.loads(NOTEBOOK.read_text())
  assert notebook["nbformat"] == 4
  return notebook["cells"]


def _source(cell: dict) -> str:
  text = "".join(cell["source"])
  # An indented magic (inside the install cell's `except`) keeps its block valid as `pass`.
  return re.sub(r"^(\s*)[!%].*$", r"\1pass", text, flags=re.MULTILINE)


def test_notebook_is_saved_clean_with_a_parameter_cell():
  cells = _cells()
  code = [c for c in cells if c["cell_type"] == "code"]
  assert all(c["outputs"] == [] and c["execution_count"] is None for c in code), "clear the outputs before committing"
  tagged = [c for c in code if "parameters" in c["metadata"].get("tags", [])]
  assert len(tagged) == 1 and code.index(tagged[0]) == 0
  assert any("TPU" in "".join(c["source"]) for c in cells if c["cell_type"] == "markdown")


@pytest.mark.parametrize("start_in", ["notebooks", "."])
def test_quickstart_runs_top_to_bottom(start_in, tmp_path, monkeypatch):
  monkeypatch.chdir(ROOT / start_in)  # Jupyter starts in the notebook's directory; some start at the root.
  monkeypatch.setattr(sys, "path", list(sys.path))
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  workdir = tmp_path / "run"
  namespace = {"__name__": "__main__"}
  try:
    for cell in _cells():
      if cell["cell_type"] != "code":
        continue
      exec(compile(_source(cell), f"{NOTEBOOK.name}:{cell['id']}", "exec"), namespace)
      if "parameters" in cell["metadata"].get("tags", []):
        namespace.update(RULE="fa", STEPS=STEPS, WIDTHS=(16,), WORKDIR=str(workdir))
    assert int(namespace["state"].step) == STEPS
    events = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    assert events[-1]["split"] == "eval" and events[-1]["step"] == STEPS
    (figure,) = [plt.figure(n) for n in plt.get_fignums()]
    loss, weight, delta = figure.axes
    assert len(loss.lines) == 3
    assert len(weight.lines) == len(delta.lines) == 2  # Dense_0 and head.
  finally:
    plt.close("all")
