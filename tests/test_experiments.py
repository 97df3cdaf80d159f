"""Each experiment's --quick run: writes PNG + JSON and shows the paper's qualitative claim."""

import json
import os

import numpy as np
import pytest

from wtfree.experiments import akrout_angles
from wtfree.experiments import akrout_fc
from wtfree.experiments import liao_sign
from wtfree.experiments import lillicrap_depth
from wtfree.experiments import lillicrap_linear
from wtfree.experiments import lillicrap_mnist
from wtfree.experiments import transformers


def _written(tmp_path, name):
  assert os.path.getsize(tmp_path / f"{name}.png") > 0
  with open(tmp_path / f"{name}.json") as f:
    return json.load(f)


def test_lillicrap_linear_fa_learns_like_bp_and_aligns(tmp_path):
  lillicrap_linear.run(str(tmp_path), quick=True)
  record = _written(tmp_path, "lillicrap_linear")
  assert {"setup", "steps", "test_error", "fa_delta_angle", "summary"} <= set(record)
  s = record["summary"]
  end, start = s["final_error_mean"], s["initial_error_mean"]
  assert set(end) == {"bp", "fa", "shallow", "np"}
  # fa's error falls like bp's: far below the start, and no worse than 3x bp's.
  assert end["fa"] < 0.05 * start["fa"] and end["bp"] < 0.05 * start["bp"], end
  assert end["fa"] < 3 * end["bp"], end
  # Shallow learning and node perturbation lag far behind.
  assert end["shallow"] > 10 * end["fa"] and end["np"] > 10 * end["fa"], end
  # The hidden error signal starts orthogonal to bp's and aligns.
  assert s["fa_delta_angle_start_mean"] > 70, s
  assert s["fa_delta_angle_end_mean"] < 60, s


@pytest.mark.slow
def test_liao_sign_concordance_and_bn_bm_matter(tmp_path):
  liao_sign.run(str(tmp_path), quick=True)
  record = _written(tmp_path, "liao_sign")
  assert {"setup", "table", "sweep", "summary"} <= set(record)
  setup, table = record["setup"], record["table"]
  errors = {r: {c: s["mean"] for c, s in row.items()} for r, row in record["summary"]["test_error"].items()}
  sweep = {p: s["mean"] for p, s in record["summary"]["sweep_test_error"]["BN+BM"].items()}
  # Every cell took its own rate from its grid, chosen on validation.
  for rule, row in table.items():
    for combo, cell in row.items():
      grid = setup["learning_rates"]["manhattan" if "BM" in combo else "sgd"]
      assert cell["learning_rate"] in grid and len(cell["test_error"]) == setup["seeds"]
  # Error rises as sign concordance falls: p = 1 beats random signs (2 points in the quick run, 200 steps).
  assert sweep["1.0"] < sweep["0.5"] - 1, sweep
  # Asymmetric rules with feedback magnitudes independent of W need BN and BM: without, they diverge.
  for rule in ("usf", "frsf"):
    assert errors[rule]["plain"] > errors[rule]["BN+BM"] + 50, errors
  findings = {f["claim"]: f for f in record["summary"]["findings"]}
  concordance = next(f for c, f in findings.items() if c.startswith("sign concordance does"))
  assert concordance["holds"] is True and concordance["comparison"]["spearman"] < 0


@pytest.mark.slow
def test_akrout_angles_kp_and_wm_align_fa_does_not(tmp_path):
  akrout_angles.run(str(tmp_path), quick=True)
  record = _written(tmp_path, "akrout_angles")
  assert {"setup", "history", "summary"} <= set(record)
  s = record["summary"]
  weight, delta = s["final_weight_angle"], s["final_delta_angle"]
  mean = lambda d: sum(d.values()) / len(d)
  # Kolen-Pollack: B -> W, so both angles go to ~0 in every layer.
  assert s["max_final_weight_angle"]["kp"] < 5 and s["max_final_delta_angle"]["kp"] < 5, s
  # Weight mirror: every layer under 12 deg (Akrout Fig. 4a), deltas under 25.
  assert s["max_final_weight_angle"]["wm"] < 12, weight["wm"]
  assert s["max_final_delta_angle"]["wm"] < 25, delta["wm"]
  # Feedback alignment stays far from backprop.
  assert mean(weight["fa"]) > 45 and mean(delta["fa"]) > 45, (weight["fa"], delta["fa"])


@pytest.mark.slow
def test_lillicrap_mnist_chooses_bps_settings_and_fa_beats_shallow(tmp_path):
  lillicrap_mnist.run(str(tmp_path), quick=True)
  record = _written(tmp_path, "lillicrap_mnist")
  assert {"setup", "selection", "results", "summary"} <= set(record)
  setup, s = record["setup"], record["summary"]
  # The settings come from bp's validation curve: the chosen epoch has the lowest mean there.
  curves = record["selection"]["validation_error_mean"]
  best = min((error, lr, epoch + 1) for lr, curve in curves.items() for epoch, error in enumerate(curve))
  assert (float(best[1]), best[2]) == (s["chosen"]["learning_rate"], s["chosen"]["epochs"])
  errors = {v: e["mean"] for v, e in s["test_error"].items()}
  assert set(errors) == {"bp", "fa", "fa_sparse50", "shallow"}
  assert all(e["n"] == setup["seeds"] for e in s["test_error"].values())
  # The hidden layer learns under fa, also with half of W's and B's entries removed.
  assert errors["bp"] < errors["shallow"] - 10, errors
  assert errors["fa"] < errors["shallow"] - 5, errors
  assert errors["fa_sparse50"] < errors["shallow"] - 2, errors
  # Fig. 3b: fa's hidden error leaves 90 degrees; bp's is bp's own.
  assert s["fa_delta_angle_final"] < 80, s
  assert max(max(row) for row in record["results"]["bp"]["delta_angle"]) < 1e-2
  assert 0.0 <= s["welch_fa_vs_bp"]["p"] <= 1.0


def test_lillicrap_depth_deeper_student_wins_under_fa(tmp_path):
  lillicrap_depth.run(str(tmp_path), quick=True)
  record = _written(tmp_path, "lillicrap_depth")
  assert {"setup", "steps", "final_errors", "summary"} <= set(record)
  test = record["summary"]["t_test"]["fa"]
  errors = record["summary"]["final_error_mean"]["fa"]
  assert errors["30-20-10-10"] < errors["30-20-10"], errors
  assert test["deeper_better"] and test["p"] < 0.05, test


@pytest.mark.slow
def test_transformers_bp_learns_both_models_and_angles_are_per_layer_type(tmp_path):
  transformers.run(str(tmp_path), quick=True)
  record = _written(tmp_path, "transformers")
  setup, results = record["setup"], record["results"]
  for task in ("vit", "lm"):
    assert set(results[task]) == set(setup["rules"])
    for rule, cell in results[task].items():
      assert len(cell["values"]) == setup["seeds"]
      assert set(cell["delta_angle"]) == set(transformers.LAYER_TYPES), (task, rule)
    # bp's feedback is W: zero weight and delta angles at every layer type.
    bp = results[task]["bp"]
    assert max(bp["delta_angle"].values()) < 1e-2 and max(bp["weight_angle"].values()) < 1e-2
  assert results["vit"]["bp"]["mean"] > 0.3  # chance is 0.1
  # Bits per character: below the unigram entropy, and far above what a next-character accuracy (at most 1) reads.
  assert 1.0 < results["lm"]["bp"]["mean"] < setup["unigram_bits"]
  assert results["vit"]["dfa"]["weight_angle"] == {}  # dfa's B does not have W's shape


@pytest.mark.slow
def test_akrout_fc_every_rule_learns_and_kp_aligns_its_output_layer(tmp_path):
  akrout_fc.run(str(tmp_path), quick=True)
  record = _written(tmp_path, "akrout_fc")
  assert (tmp_path / "akrout_fc.md").read_text().startswith("| rule | theirs")
  setup, s = record["setup"], record["summary"]
  assert set(s["test_accuracy"]) == {"bp", "fa", "wm", "kp"}
  assert all(a["n"] == setup["seeds"] for a in s["test_accuracy"].values())
  assert "NOT the paper's protocol" in s["protocol"]
  assert all(j["verdict"] == "n/a" for j in s["judgement"].values())
  accuracy = {r: a["mean"] for r, a in s["test_accuracy"].items()}
  # 3 epochs of mnist5k: every rule far above chance (10 %), bp and kp within a few points of each other.
  assert min(accuracy.values()) > 60, accuracy
  assert abs(accuracy["kp"] - accuracy["bp"]) < 5, accuracy
  # B learns W's direction in the output layer under kp and wm; fa's stays fixed.
  results = record["results"]
  angle = {r: np.mean(results[r]["weight_angle_head"]) for r in ("fa", "wm", "kp")}
  assert angle["kp"] < angle["fa"] and angle["wm"] < 85, angle


def test_an_interrupted_experiment_trains_only_its_missing_parts(tmp_path):
  from wtfree.experiments import common

  trained = []

  def part(name, fail=False):
    def train():
      if fail:
        raise KeyboardInterrupt
      trained.append(name)
      return {"value": np.float32(len(name))}
    return train

  setup = {"rules": ["a", "bb"], "seeds": 2}
  assert common.remembered(str(tmp_path), "exp", setup, "a", part("a")) == {"value": 1.0}
  with pytest.raises(KeyboardInterrupt):
    common.remembered(str(tmp_path), "exp", setup, "bb", part("bb", fail=True))
  # Started again: the finished part is read back, not trained; the missing one is trained.
  assert common.remembered(str(tmp_path), "exp", setup, "a", part("a")) == {"value": 1.0}
  assert common.remembered(str(tmp_path), "exp", setup, "bb", part("bb")) == {"value": 2.0}
  assert trained == ["a", "bb"]
  # Another setup trains its parts again.
  common.remembered(str(tmp_path), "exp", {**setup, "seeds": 3}, "a", part("a"))
  assert trained == ["a", "bb", "a"]
  # Saving the whole record drops what was kept on the way.
  fig, _ = common.figure(1)
  common.save(str(tmp_path), "exp", fig, {"setup": setup})
  assert not (tmp_path / "exp.partial").exists()


@pytest.mark.slow
def test_fa_conv_chooses_bps_settings_and_reports_every_layers_angles(tmp_path):
  from wtfree.experiments import fa_conv

  fa_conv.run(str(tmp_path), quick=True)
  record = _written(tmp_path, "fa_conv")
  s = record["summary"]
  assert s["chosen"]["learning_rate"] in record["setup"]["learning_rates"]
  assert s["test_error"]["bp"]["mean"] < 15, s["test_error"]
  for layer in fa_conv.LAYERS:
    angles = np.asarray(record["results"]["fa"]["delta_angle"][layer])
    assert angles.shape == (len(record["results"]["fa"]["steps"]), record["setup"]["seeds"])
  layers = s["layers"]["fa"]
  assert layers["seeds"] == record["setup"]["seeds"]
  if s["fa_lower_rate"] is not None:
    assert s["fa_lower_rate"] < s["chosen"]["learning_rate"] and "fa_lower_rate" in s["layers"]
  # The dense layer under the head aligns as in the fully connected case; fa starts near orthogonal there.
  trained = max(s["layers"].values(), key=lambda v: v["trained_seeds"])
  assert trained["trained_seeds"] > 0, s["layers"]
  assert trained["Dense_0"]["delta_first"] > 60, trained
  assert trained["Dense_0"]["delta_final"]["mean"] < 70, trained
  assert all(trained[layer]["verdict"] in ("holds", "partly", "not") for layer in fa_conv.LAYERS)
