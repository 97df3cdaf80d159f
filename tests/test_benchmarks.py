"""The step-time benchmark's smoke run writes a row per rule with finite, positive times."""

import importlib.util
import json
import math
import pathlib
import subprocess
import sys

import pytest

_PATH = pathlib.Path(__file__).parents[1] / "benchmarks" / "step_time.py"


def _step_time():
  spec = importlib.util.spec_from_file_location("step_time", _PATH)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


@pytest.mark.slow
def test_quick_run_writes_a_row_per_rule_and_model(tmp_path):
  step_time = _step_time()
  step_time.main(["--out", str(tmp_path), "--quick"])
  record = json.loads((tmp_path / "step_time.json").read_text())
  rows = record["rows"]
  peers = [r for r in rows if r["framework"] == "pytorch"]
  rows = [r for r in rows if r["framework"] == "wtfree"]
  steps = [r for r in rows if r["kind"] == "train_step"]
  models = {r["model"] for r in rows}
  assert models == {step_time.QUICK_BENCHES[n].name for n in step_time.QUICK_DEFAULT}
  # With PyTorch installed, each model's twin is timed in the same rounds.
  if step_time.torch_peers.available():
    assert sorted(r["model"] for r in peers) == sorted(models)
    assert all(r["ratio_to_pytorch"] == 1.0 and r["ratio_to_bp"] > 0 for r in peers)
    assert all(math.isfinite(r["ratio_to_pytorch"]) and r["ratio_to_pytorch"] > 0 for r in steps)
    assert "| *PyTorch*, plain torch.nn (bp) |" in (tmp_path / "step_time.md").read_text()
  else:
    assert not peers
  plain = [r for r in steps if r["mirror_noise"] == "gaussian" and r["mirror_batch"] == r["batch"]]
  assert sorted((r["model"], r["rule"]) for r in plain) == sorted(
      (m, rule) for m in models for rule in step_time.RULES
  )
  # The cheaper wm settings that fit the batch: uniform noise at any batch.
  variants = [r for r in steps if r not in plain]
  assert {r["rule"] for r in variants} == {"wm"}
  assert any(r["mirror_noise"] == "uniform" for r in variants)
  # Each model also times a forward pass and wm's mirror pass alone.
  assert sorted((r["model"], r["kind"]) for r in rows if r["kind"] != "train_step") == sorted(
      (m, k) for m in models for k in step_time.REFERENCES
  )
  for r in rows:
    for key in ("ms_per_step", "ms_q25", "ms_q75", "ms_min", "ms_max", "examples_per_s"):
      assert math.isfinite(r[key]) and r[key] > 0, (r["model"], r["rule"], key, r[key])
    assert r["ms_min"] <= r["ms_per_step"] <= r["ms_max"]
    assert r["rounds"] == step_time.QUICK.rounds
  for r in steps:
    assert math.isfinite(r["ratio_to_bp"]) and r["ratio_to_bp"] > 0
  assert next(r for r in steps if r["rule"] == "bp")["ratio_to_bp"] == 1.0
  assert record["environment"]["quick"] is True
  table = (tmp_path / "step_time.md").read_text()
  assert all(f"| {rule} |" in table for rule in step_time.RULES)


@pytest.mark.slow
def test_bfloat16_rows_report_their_share_of_the_peak_and_large_dfa_is_skipped(tmp_path):
  step_time = _step_time()
  assert step_time.bf16_peak("NVIDIA H100 80GB HBM3") == 989e12
  assert step_time.bf16_peak("NVIDIA H100 PCIe") == 756e12
  assert step_time.bf16_peak("cpu") is None
  # The tiny MLP's dfa maps: 10 outputs times its 64 inputs and 32 hidden units.
  assert step_time.dfa_map_entries(step_time.QUICK_BENCHES["mlp"]) == 10 * (64 + 32)
  step_time.DFA_MAX_MAP_ENTRIES = 10 * (64 + 32) - 1
  step_time.main(["--out", str(tmp_path), "--quick", "--dtype", "bfloat16", "--peak-tflops", "0.001", "--repeats", "1"])
  record = json.loads((tmp_path / "step_time.json").read_text())
  assert record["environment"]["bf16_peak_tflops"] == 0.001
  assert "dfa" not in {r["rule"] for r in record["rows"]} and "dfa not timed" in record["environment"]["skipped"][0]
  for r in record["rows"]:
    assert r["dtype"] == "bfloat16" and "dtype=bfloat16" in r["setup"]
    assert math.isclose(r["bf16_peak_share"], r["flops"] / (r["ms_per_step"] / 1e3) / 1e9, rel_tol=1e-9)
  table = (tmp_path / "step_time.md").read_text()
  assert "% of bf16 peak |" in table and "Skipped: mlp_tiny: dfa not timed" in table


def _benchmark(name):
  spec = importlib.util.spec_from_file_location(name, _PATH.parent / f"{name}.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def test_loop_speed_quick_run_reports_both_rates_and_their_ratio(tmp_path):
  record = _benchmark("loop_speed").main(["--out", str(tmp_path), "--quick"])
  assert json.loads((tmp_path / "loop_speed.json").read_text()) == record
  assert all(v > 0 and math.isfinite(v) for v in record["loop_examples_per_second"] + record["scan_examples_per_second"])
  assert record["ratio"][0] == record["loop_examples_per_second"][0] / record["scan_examples_per_second"][0]


def test_seeds_speed_quick_run_times_one_and_many_seeds(tmp_path):
  record = _benchmark("seeds_speed").main(["--out", str(tmp_path), "--quick"])
  assert json.loads((tmp_path / "seeds_speed.json").read_text()) == record
  assert len(record["eval_top1_seeds"]) == record["seeds"] == 4
  assert record["ratio"][0] == record["many_seeds_seconds"][0] / record["single_seed_seconds"][0]
  assert record["command_ratio"][0] == record["many_seeds_command_seconds"][0] / record["single_seed_command_seconds"][0]
  # The command pays the interpreter's start and imports on top of the call.
  assert record["single_seed_command_seconds"][0] > record["single_seed_seconds"][0]


@pytest.mark.slow
def test_sweep_speed_quick_run_times_the_sweep_against_one_cell(tmp_path):
  record = _benchmark("sweep_speed").main(["--out", str(tmp_path), "--quick"])
  assert json.loads((tmp_path / "sweep_speed.json").read_text()) == record
  assert record["replicas"] == 4 and "**yes**" in record["sweep_table"]
  assert record["ratio"][0] == record["sweep_seconds"][0] / record["one_cell_seconds"][0]
  assert record["ratio_to_held_out"][0] == record["sweep_seconds"][0] / record["one_cell_held_out_seconds"][0]


@pytest.mark.slow
def test_input_pipeline_quick_run_times_uint8_and_float32_per_worker_count(tmp_path):
  record = _benchmark("input_pipeline").run(str(tmp_path), quick=True, workers=(0, 1))
  rows = {(r["output"], r["workers"]): r for r in record["rows"]}
  assert set(rows) == {("uint8", 0), ("uint8", 1), ("float32", 0), ("float32", 1)}
  assert rows["uint8", 0]["bytes_per_image"] * 4 == rows["float32", 0]["bytes_per_image"] == 224 * 224 * 3 * 4
  assert all(r["images_per_second"] > 0 for r in rows.values())
  assert (tmp_path / "input_pipeline.md").read_text().count("\n") == 2 + len(rows)


@pytest.mark.slow
def test_accelerator_check_tiny_mode_times_each_rule_and_the_pipeline_fed_step(tmp_path):
  accelerator = _benchmark("accelerator")
  record = accelerator.run(str(tmp_path), tiny=True)
  assert json.loads((tmp_path / "accelerator.json").read_text()) == json.loads(json.dumps(record))
  rows = {r["rule"]: r for r in record["rows"]}
  assert sorted(rows) == sorted(accelerator.RULES)
  for r in rows.values():
    assert r["dtype"] == "bfloat16" and math.isfinite(r["ms_per_step"]) and r["ms_per_step"] > 0
    assert r["ratio_to_bp"] > 0 and r["xla_memory_bytes"] > 0
  assert rows["bp"]["ratio_to_bp"] == 1.0
  fed = record["pipeline_fed"]
  assert fed["images_per_second"] > 0 and record["pipeline_note"] is None
  table = (tmp_path / "accelerator.md").read_text()
  assert all(f"| {rule} |" in table for rule in accelerator.RULES) and "fed by the input pipeline" in table


def test_accelerator_check_imports_only_what_a_bare_jax_image_has():
  # The GPU image has jax, flax, optax and orbax, and none of these.
  code = (
      "import sys\n"
      "for m in ('ml_collections', 'grain', 'tensorflow_datasets', 'tensorboardX', 'torch', 'PIL'):\n"
      "  sys.modules[m] = None\n"
      f"sys.path.insert(0, {str(_PATH.parent)!r})\n"
      "import accelerator\n"
      "print(accelerator._pipeline_missing())\n"
  )
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
  assert out.stdout.strip() == "grain and PIL not installed"


def test_conv_directions_quick_run_times_each_direction_of_every_convolution_the_model_holds(tmp_path, monkeypatch):
  import jax  # pylint: disable=g-import-not-at-top
  from wtfree import models  # pylint: disable=g-import-not-at-top
  from wtfree.backend import conv_lowering  # pylint: disable=g-import-not-at-top

  conv_directions = _benchmark("conv_directions")
  record = conv_directions.main(["--out", str(tmp_path), "--quick"])
  assert json.loads((tmp_path / "conv_directions.json").read_text()) == record
  (model,) = record["models"]
  bench = conv_directions.QUICK_BENCHES["resnet_tiny"]
  net = models.get_model(bench.model, num_classes=bench.num_classes)
  x = jax.ShapeDtypeStruct((bench.batch, *bench.input_shape), "float32")
  params = jax.eval_shape(lambda x: net.init(jax.random.key(0), x, train=False), x)["params"]
  kernels = sorted(tuple(leaf.shape) for leaf in jax.tree.leaves(params) if leaf.ndim == 4)
  shapes = model["shapes"]
  # The traced shapes hold every conv kernel of the params, each once.
  assert sorted(
      (*s["window"], s["in_channels"], s["out_channels"]) for s in shapes for _ in range(s["count"])
  ) == kernels
  assert model["convolutions"] == len(kernels) and all(s["input_shape"][0] == bench.batch for s in shapes)
  # Only the stem reads the image, and only its input gradient is not run.
  assert sum(s["input_grad_count"] for s in shapes) == len(kernels) - 1
  peers = conv_directions.torch_peers.available()
  assert model["frameworks"] == (["wtfree", "pytorch"] if peers else ["wtfree"])
  for s in shapes:
    geometry = conv_lowering.Geometry(tuple(s["strides"]), tuple(map(tuple, s["padding"])), None,
                                      tuple(s["input_shape"][1:3]), tuple(s["window"]))
    for d, entry in s["directions"].items():
      assert entry["lowering"] == getattr(conv_lowering.cpu_plan(geometry), d)
      # Each direction is compiled alone: one convolution or dot.
      assert entry["wtfree"]["ops"] == 1, (s["convolution"], d)
      for f in model["frameworks"]:
        assert math.isfinite(entry[f]["ms"]) and entry[f]["ms"] > 0, (s["convolution"], d, f)
      if peers:
        assert entry["ratio"] > 0 and entry["difference"] <= conv_directions.AGREEMENT
  # Over two rounds a median is a mean, so the totals are the count-weighted sums of the shapes' medians.
  for d in conv_directions.DIRECTIONS:
    total = sum(s["directions"][d]["count"] * s["directions"][d]["wtfree"]["ms"] for s in shapes)
    assert math.isclose(model["totals"][d]["wtfree"]["ms"], total, rel_tol=1e-9)
  table = (tmp_path / "conv_directions.md").read_text()
  assert table.count("| 3x3") + table.count("| 1x1") == len(shapes) and ("PyTorch |" in table) == peers

  monkeypatch.setattr(conv_directions.torch_peers, "available", lambda: False)
  record = conv_directions.main(["--out", str(tmp_path), "--quick", "--repeats", "1"])
  (model,) = record["models"]
  assert model["frameworks"] == ["wtfree"] and record["environment"]["pytorch"] is None
  assert all(set(e) == {"wtfree", "lowering", "count"} for s in model["shapes"] for e in s["directions"].values())
  assert "PyTorch" not in (tmp_path / "conv_directions.md").read_text()
