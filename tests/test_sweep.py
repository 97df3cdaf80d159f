"""config.sweep: a grid of runs as replicas of one program per program field, and its summary."""

import json
import subprocess
import sys

import jax
import numpy as np
import pytest

from configs import digits_mlp
from wtfree import checkpoint
from wtfree import data
from wtfree import grid
from wtfree import settings
from wtfree import sweep
from wtfree import train
from wtfree.data import source


def _config(**overrides):
  config = digits_mlp.get_config()
  config.model_options.widths = (16,)
  config.batch_size = 32
  config.eval_batch_size = 512
  config.num_steps = 12
  config.log_every_steps = 6
  config.eval_every_steps = 6
  config.checkpoint_every_steps = 6
  config.tensorboard = False
  config.angles = False
  for key, value in overrides.items():
    config[key] = value
  return config


def _final_state(workdir):
  ckpt = checkpoint.Checkpointer(str(workdir))
  state, _ = ckpt.restore(ckpt.latest_step())
  ckpt.close()
  return state


def _replica(tree, r):
  return jax.tree.map(lambda x: np.asarray(x)[r], tree)


def _assert_close(a, b):
  # Leaf by leaf: a restored checkpoint holds lists and dicts where the state has tuples.
  a, b = jax.tree.leaves(a), jax.tree.leaves(b)
  assert len(a) == len(b)
  for x, y in zip(a, b):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=2e-5, atol=2e-6)


def test_grid_reads_types_and_splits_replica_fields_from_program_fields():
  config = _config()
  config.sweep.learning_rate = "0.01, 0.1"
  config.sweep.rule = "bp,fa"
  config.sweep.model_options.batch_norm = "False,True"
  config.sweep.model_options.widths = "(16,),(8,8)"
  config.num_seeds = 3
  swept = grid.entries(config)
  assert swept == {"learning_rate": [0.01, 0.1], "model_options.batch_norm": [False, True],
                   "model_options.widths": [(16,), (8, 8)], "rule": ["bp", "fa"]}
  programs = grid.programs(config)
  assert len(programs) == 8 and programs[0].name == "batch_norm=False,widths=16,rule=bp"
  assert programs[-1].config.rule == "fa" and programs[-1].config.model_options.widths == (8, 8)
  assert programs[-1].cells == ({"learning_rate": 0.01}, {"learning_rate": 0.1})
  first = settings.resolve(programs[0].config).replicas
  assert first.count == 6
  assert first.seeds == (0, 1, 2, 0, 1, 2)
  np.testing.assert_array_equal(first.hparams["learning_rate"],
                                np.float32([0.01] * 3 + [0.1] * 3))


@pytest.mark.parametrize("text,message", [("0.1,x", "cannot read its values as float"),
                                          ("0.1,0.1", "repeats a value")])
def test_grid_refuses_values_it_cannot_read(text, message):
  config = _config()
  config.sweep.learning_rate = text
  with pytest.raises(ValueError, match=message):
    grid.entries(config)


def test_two_by_two_grid_times_two_seeds_equals_the_four_single_runs(tmp_path):
  config = _config(num_seeds=2)
  config.sweep.learning_rate = "0.02,0.05"
  config.sweep.momentum = "0.0,0.9"
  summary = sweep.run(config, str(tmp_path / "sweep"))
  swept = _final_state(tmp_path / "sweep" / "run")
  assert [c["values"] for c in summary["cells"]] == [
      {"learning_rate": lr, "momentum": m} for lr in (0.02, 0.05) for m in (0.0, 0.9)]
  for c, cell in enumerate(summary["cells"]):
    alone = train.train_and_evaluate(
        _config(num_seeds=2, holdout=sweep.DEFAULT_HOLDOUT, **cell["values"]), str(tmp_path / f"cell{c}"))
    alone = jax.device_get(alone)
    for s in range(2):
      mine = _replica(swept, 2 * c + s)
      # A swept momentum keeps its trace where the cell's is 0 (the run alone has none): same updates.
      fields = ("params", "rng", "step") + (("opt_state",) if cell["values"]["momentum"] else ())
      for field in fields:
        _assert_close(mine[field], jax.tree.map(lambda x: np.asarray(x)[s], getattr(alone, field)))
    lines = [json.loads(l) for l in open(tmp_path / f"cell{c}" / "metrics.jsonl")]
    final_test = [l for l in lines if l["split"] == "eval"][-1]["eval/top1/seeds"]
    np.testing.assert_allclose(cell["final_test"]["values"], final_test, rtol=1e-6)
    assert cell["final_test"]["sd"] == pytest.approx(np.std(final_test, ddof=1))
  # The cells differ: they are other runs.
  assert np.abs(np.asarray(swept["params"]["head"]["kernel"][0]) - swept["params"]["head"]["kernel"][6]).max() > 1e-3
  for name in ("sweep.json", "sweep.md", "sweep.png"):
    assert (tmp_path / "sweep" / name).exists()
  chosen = summary["chosen"]["run"]
  best = max(summary["cells"], key=lambda c: c["final_validation"]["mean"])
  assert chosen["values"] == best["values"] and chosen["test"] == best["final_test"]


# sc's p is drawn from at init, kp's decay acts between steps, sa's alpha inside the backward pass.
@pytest.mark.parametrize("rule,option,values", [
    ("sc", "p", (0.6, 1.0)),
    pytest.param("kp", "decay", (0.01, 0.3), marks=pytest.mark.slow),
    pytest.param("sa", "alpha", (0.01, 0.5), marks=pytest.mark.slow),
])
def test_a_rules_numeric_option_is_a_per_replica_value_equal_to_its_single_run(rule, option, values, tmp_path):
  config = _config(rule=rule)
  config.sweep.rule_options[option] = ",".join(map(str, values))
  assert [p.name for p in grid.programs(config)] == ["run"]  # One program: the option is traced.
  sweep.run(config, str(tmp_path / "sweep"))
  swept = _final_state(tmp_path / "sweep" / "run")
  finals = []
  for c, value in enumerate(values):
    single = _config(rule=rule, holdout=sweep.DEFAULT_HOLDOUT)
    single.rule_options[option] = value
    alone = jax.device_get(train.train_and_evaluate(single, str(tmp_path / f"alone{c}")))
    for field in ("params", "feedback", "opt_state"):
      _assert_close(_replica(swept[field], c), getattr(alone, field))
    finals.append(alone)
  # The option matters: the two cells end apart.
  a, b = (jax.tree.leaves(f.params) + jax.tree.leaves(f.feedback) for f in finals)
  assert max(float(np.abs(x - y).max()) for x, y in zip(a, b)) > 1e-4


def test_a_cell_whose_option_the_rule_refuses_is_an_error_before_anything_runs(tmp_path):
  config = _config(rule="sc")
  config.sweep.rule_options.p = "0.5,1.5"
  with pytest.raises(ValueError, match=r"sc probability p=1.5 is not in \[0, 1\]"):
    sweep.run(config, str(tmp_path))
  assert not (tmp_path / "run").exists()


def test_a_diverging_cell_is_marked_and_the_others_finish_as_alone(tmp_path):
  config = _config(rule="bp")
  config.sweep.learning_rate = "0.05,1e30"
  summary = sweep.run(config, str(tmp_path / "sweep"))
  good, bad = summary["cells"]
  assert not good["diverged"]
  assert len(bad["diverged"]) == 1 and bad["diverged"][0]["seed"] == 0 and bad["diverged"][0]["step"] >= 1
  swept = _final_state(tmp_path / "sweep" / "run")
  alone = jax.device_get(train.train_and_evaluate(
      _config(rule="bp", learning_rate=0.05, holdout=sweep.DEFAULT_HOLDOUT), str(tmp_path / "alone")))
  _assert_close(_replica(swept["params"], 0), alone.params)
  # The diverged cell kept its last finite state, and its metrics read from it.
  assert all(np.all(np.isfinite(np.asarray(x))) for x in jax.tree.leaves(_replica(swept["params"], 1)))
  assert np.isfinite(bad["final_test"]["mean"])
  assert summary["chosen"]["run"]["values"] == {"learning_rate": 0.05}


def test_a_resumed_sweep_equals_the_uninterrupted_one(tmp_path):
  def run(workdir, steps):
    config = _config(num_steps=steps)
    config.sweep.learning_rate = "0.02,0.05"
    config.sweep.rule = "fa,kp"
    return sweep.run(config, str(workdir))

  whole = run(tmp_path / "whole", 12)
  run(tmp_path / "cut", 6)  # Stopped at step 6, its checkpoint kept; started again below.
  resumed = run(tmp_path / "cut", 12)
  for program in ("rule=fa", "rule=kp"):
    _assert_close(_final_state(tmp_path / "cut" / program), _final_state(tmp_path / "whole" / program))
  for a, b in zip(whole["cells"], resumed["cells"]):
    np.testing.assert_allclose(a["final_test"]["values"], b["final_test"]["values"], rtol=1e-6)


def test_the_validation_split_never_overlaps_the_training_examples():
  kept, held = source.holdout_indices(1437, 0.1)
  assert len(held) == 144 and len(kept) == 1293
  assert not set(kept) & set(held) and set(kept) | set(held) == set(range(1437))
  config = _config(holdout=0.1)
  ds = data.get_dataset(settings.resolve(config).data)
  assert ds.has_validation and ds.num_train == 1293
  train_rows = {row.tobytes() for row in ds.splits.train.x}
  assert not any(row.tobytes() in train_rows for row in ds.splits.validation.x)
  # The same examples are held out for every seed: the split does not follow the run's seed.
  other = data.get_dataset(settings.resolve(_config(holdout=0.1, seed=7)).data)
  np.testing.assert_array_equal(other.splits.validation.x, ds.splits.validation.x)
  # A set without holdout has no validation split, and asking for one names the splits it has.
  with pytest.raises(ValueError, match="'validation' is not one of this data set's: test"):
    data.get_dataset(settings.resolve(_config()).data).eval_batches("validation")


# The command line's table is checked by tests/test_readme.py, which runs the README's sweep as written.
def test_the_command_line_refuses_a_bad_grid_in_one_line(tmp_path):
  bad = subprocess.run([sys.executable, "-m", "wtfree.main", "--config=configs/digits_mlp.py",
                        f"--workdir={tmp_path}", "--config.sweep.learning_rate=0.01,fast"],
                       capture_output=True, text=True, timeout=300)
  assert bad.returncode == 2
  assert bad.stderr.strip().splitlines()[-1].startswith("error: sweep.learning_rate='0.01,fast'")
  assert "Traceback" not in bad.stderr and not (tmp_path / "run").exists()


def test_a_language_model_sweep_chooses_and_reports_bits_per_token(tmp_path):
  config = _config(model="causal_lm", dataset="pydoc_chars", context_length=16, flatten=False, batch_size=16,
                   eval_batch_size=256, learning_rate=3e-3)
  config.model_options = {"max_length": 16, "width": 16, "num_layers": 1, "num_heads": 2, "mlp_dim": 32}
  config.sweep.learning_rate = "1e-4,3e-3"
  summary = sweep.run(config, str(tmp_path))
  cells = summary["cells"]
  assert {c["metric"] for c in cells} == {"bits_per_token"} and not any(c["higher_is_better"] for c in cells)
  # The rate whose validation bits are lowest is chosen (the language model also logs top-1, which must not choose).
  (chosen,) = summary["chosen"].values()
  validation = [c["final_validation"]["mean"] for c in cells]
  assert chosen["cell"] == int(np.argmin(validation))
  # Each cell's reported test metric is the run's final eval/bits_per_token.
  lines = [json.loads(line) for line in open(tmp_path / cells[0]["program"] / "metrics.jsonl")]
  final = [line for line in lines if line["split"] == "eval"][-1]
  np.testing.assert_allclose([c["final_test"]["values"][0] for c in cells], final["eval/bits_per_token/seeds"])
