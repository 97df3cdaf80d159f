"""Liao, Leibo & Poggio 2016: sign concordance, BatchNorm and Batch Manhattan, on all of MNIST.

A small LeNet (conv 5x5x16 - pool - conv 5x5x32 - pool - dense 128 - 10,
ReLU; BatchNorm before the ReLU when on) on ``mnist_full`` (all of MNIST:
50,000 train / 10,000 validation / 10,000 test; prepare it once with
``python -m wtfree.data.prepare mnist_full``), trained with bp, uSF, BRSF,
FRSF and fa, each without and with BatchNorm and Batch Manhattan (the 4
combinations), then the sign-concordance sweep: B = |M| * sign(W) * S with
S = +1 with probability p, for p in 0.5 ... 1.0, under each combination.

Liao et al.'s conventions, as options of the rules: uSF is B = sign(W)
unscaled (``magnitude='one'``); the magnitudes of BRSF, FRSF and sc are
M ~ U[0, 1) (``magnitudes='uniform'``), whatever W's scale; fa's B is
drawn from N(0, 1). The mismatch of scales between B and W is what
BatchNorm and Batch Manhattan are reported to rescue.

No rule shares another's learning rate: every cell (rule x combination, and
every p) takes the rate with the lowest mean validation error from its grid,
by one `wtfree.sweep` per rule and combination (every rate times every seed
in one program; the p sweep puts every p, rate and seed in one program), and
its test error is reported with its seeds' spread; findings are tested with
Welch's t-test.

``--quick`` runs the protocol on mnist5k (10 % of its training digits held
out), with fewer cells, seeds and steps.

    python -m wtfree.experiments.liao_sign --out docs/figures
"""

import jax
import numpy as np
from scipy import stats as scipy_stats

from wtfree.experiments import common
from wtfree.sweep_report import stats

NAME = "liao_sign"
COMBOS = ("plain", "BM", "BN", "BN+BM")
UNIT = jax.nn.initializers.normal(1.0)


def _rule(name: str) -> tuple[str, dict]:
  """The rule and its options under Liao et al.'s conventions."""
  if name == "usf":
    return "usf", {"magnitude": "one"}
  if name in ("brsf", "frsf", "sc"):
    return name, {"magnitudes": "uniform"}
  if name == "fa":
    return "fa", {"init": UNIT}
  return name, {}


def _setup(quick: bool) -> dict:
  return {
      "dataset": "mnist5k" if quick else "mnist_full",
      "data": ("mnist5k: 5,000 MNIST digits, 10 % of the 4,000 training digits held out for validation" if quick
               else "mnist_full: all of MNIST, 50,000 train / 10,000 validation / 10,000 test"),
      "model": "lenet, 2-D: conv5x5x16 - pool2 - conv5x5x32 - pool2 - dense128 - dense10, ReLU; BN before ReLU",
      "feedback": "usf: sign(W); brsf, frsf, sc: M ~ U[0, 1) (Liao et al.'s convention); fa: B ~ N(0, 1)",
      "optimizer": "SGD momentum 0.9; Batch Manhattan: the sign of the gradient, then momentum 0.9",
      "learning_rates": {"sgd": [0.003, 0.01] if quick else [0.003, 0.01, 0.03],
                         "manhattan": [1e-4, 3e-4] if quick else [1e-4, 3e-4, 1e-3]},
      "batch_size": 64,
      "steps": 200 if quick else 3900,  # 5 epochs of 50,000 at batch 64.
      "seeds": 2 if quick else 5,
      "rules": ["bp", "usf", "frsf"] if quick else ["bp", "usf", "brsf", "frsf", "fa"],
      "combos": ["plain", "BN+BM"] if quick else list(COMBOS),
      "p_values": [0.5, 1.0] if quick else [0.5, 0.6, 0.7, 0.8, 0.9, 1.0],
      "error": "top-1 test error %, at the end of training, of the rate chosen on validation; steps with a "
               "non-finite loss are skipped (skip_nonfinite), so a diverging run ends near chance (about 90 %)",
  }


def _config(rule: str, combo: str, setup: dict):
  name, options = _rule(rule)
  manhattan = "BM" in combo
  rates = setup["learning_rates"]["manhattan" if manhattan else "sgd"]
  config = common.config(
      dataset=setup["dataset"], model="lenet", rule=name, rule_options=options,
      model_options={"features": (16, 32), "dense": (128,), "batch_norm": "BN" in combo},
      optimizer="sgd", momentum=0.9, learning_rate=rates[0], batch_manhattan=manhattan,
      batch_size=setup["batch_size"], eval_batch_size=1000, num_steps=setup["steps"],
      log_every_steps=setup["steps"], eval_every_steps=setup["steps"], num_seeds=setup["seeds"], angles=False,
      eval_at_start=False, skip_nonfinite=True, holdout=0.1 if setup["dataset"] != "mnist_full" else 0.0)
  config.sweep.learning_rate = ",".join(map(str, rates))
  return config


def _best(cells: list[dict]) -> dict:
  """The cell with the highest mean final validation accuracy: its rate and its test errors in %."""
  cell = max(cells, key=lambda c: np.nan_to_num(c["final_validation"]["mean"], nan=-1.0))
  return {"learning_rate": cell["values"]["learning_rate"],
          "validation_error": [100.0 * (1.0 - v) for v in cell["final_validation"]["values"]],
          "test_error": [100.0 * (1.0 - v) for v in cell["final_test"]["values"]]}


def _cell(rule: str, combo: str, setup: dict) -> dict:
  return _best(common.sweep(_config(rule, combo, setup))["cells"])


def _sign_concordance(combo: str, setup: dict) -> dict[str, dict]:
  """Each p's cell: every p, rate and seed are replicas of one program; the rate chosen per p."""
  config = _config("sc", combo, setup)
  config.sweep.rule_options.p = ",".join(map(str, setup["p_values"]))
  cells = common.sweep(config)["cells"]
  return {str(p): _best([c for c in cells if c["values"]["rule_options.p"] == p]) for p in setup["p_values"]}


def _welch(a, b) -> dict:
  test = scipy_stats.ttest_ind(a, b, equal_var=False)
  return {"difference": float(np.mean(a) - np.mean(b)), "t": float(test.statistic), "p": float(test.pvalue)}


def _findings(table: dict, sweep: dict, setup: dict) -> list[dict]:
  """Each of Liao et al.'s findings against ours, with the comparison that decides it."""
  mean = lambda cell: float(np.mean(cell["test_error"]))
  best = {r: min(table[r], key=lambda c: mean(table[r][c])) for r in table}
  findings = []
  sign_rules = [r for r in ("usf", "brsf", "frsf") if r in table]
  gaps = {r: _welch(table[r][best[r]]["test_error"], table["bp"][best["bp"]]["test_error"]) for r in sign_rules}
  findings.append({
      "claim": "feedback magnitudes don't matter (sign-concordant rules, best combination, vs bp)",
      "comparison": gaps,
      "holds": all(g["difference"] < 1.0 for g in gaps.values()),
  })
  combo = "BN+BM" if "BN+BM" in sweep else next(iter(sweep))
  ps = sorted(sweep[combo], key=float)
  rising = [mean(sweep[combo][p]) for p in ps]
  findings.append({
      "claim": f"sign concordance does: error rises as p falls from 1 ({combo})",
      "comparison": {"error_by_p": dict(zip(ps, rising)),
                     "p_half_vs_one": _welch(sweep[combo][ps[0]]["test_error"], sweep[combo][ps[-1]]["test_error"]),
                     "spearman": float(scipy_stats.spearmanr([float(p) for p in ps], rising).statistic)},
      "holds": rising[0] > rising[-1] and scipy_stats.spearmanr([float(p) for p in ps], rising).statistic < 0,
  })
  random_rules = [r for r in ("brsf", "frsf") if r in table]
  findings.append({
      "claim": "random magnitudes with 100 % sign concordance match or beat SGD",
      "comparison": {r: gaps[r] for r in random_rules},
      "holds": all(gaps[r]["difference"] <= 0 or gaps[r]["p"] > 0.05 for r in random_rules),
  })
  asymmetric = [r for r in table if r != "bp"]
  rescued = {r: {c: mean(table[r][c]) for c in table[r]} for r in asymmetric}
  findings.append({
      "claim": "asymmetric rules need BN and/or BM",
      "comparison": rescued,
      "holds": all(min(v for c, v in row.items() if c != "plain") < row["plain"] for row in rescued.values()),
  })
  if set(setup["combos"]) == set(COMBOS):
    together = {r: {c: mean(table[r][c]) for c in COMBOS} for r in asymmetric}
    findings.append({
        "claim": "BN and BM together work best",
        "comparison": together,
        "holds_for": [r for r, row in together.items() if min(row, key=row.get) == "BN+BM"],
    })
  if "fa" in table and "BN" in table["fa"]:
    findings.append({
        "claim": "fixed random feedback with BN beats chance, not SGD",
        "comparison": {"fa_BN": mean(table["fa"]["BN"]), "bp_best": mean(table["bp"][best["bp"]])},
        "holds": mean(table["fa"]["BN"]) < 80 and mean(table["fa"]["BN"]) > mean(table["bp"][best["bp"]]),
    })
  return findings


def run(out: str, quick: bool = False) -> dict:
  """Trains the table and the sweep, each cell at its own chosen rate; writes the figure and the record."""
  setup = _setup(quick)
  table = {r: {c: common.remembered(out, NAME, setup, f"{r}-{c}", lambda: _cell(r, c, setup))
               for c in setup["combos"]} for r in setup["rules"]}
  sweep = {c: common.remembered(out, NAME, setup, f"sc-{c}", lambda: _sign_concordance(c, setup))
           for c in setup["combos"]}

  fig, (ax_table, ax_sweep) = common.figure(2, width=4.8)
  width = 0.8 / len(setup["combos"])
  for j, combo in enumerate(setup["combos"]):
    errors = [stats(table[r][combo]["test_error"]) for r in setup["rules"]]
    ax_table.bar(np.arange(len(setup["rules"])) + (j - (len(setup["combos"]) - 1) / 2) * width,
                 [e["mean"] for e in errors], width, yerr=[np.nan_to_num(e["sd"]) for e in errors], label=combo)
  ax_table.set_xticks(np.arange(len(setup["rules"])), setup["rules"])
  ax_table.axhline(90, color="gray", ls=":", lw=1)
  ax_table.set(ylabel="test error (%)", title=f"{setup['dataset']}, LeNet: rule x BN x BM")
  ax_table.legend(fontsize=8)
  ps = np.array(setup["p_values"])
  for combo in setup["combos"]:
    errors = [stats(sweep[combo][str(p)]["test_error"]) for p in setup["p_values"]]
    ax_sweep.errorbar(ps, [e["mean"] for e in errors], yerr=[np.nan_to_num(e["sd"]) for e in errors], fmt="o-",
                      label=combo, capsize=2)
  ax_sweep.set(xlabel="sign-concordance probability p", ylabel="test error (%)", title="sign-concordance sweep")
  ax_sweep.legend(fontsize=8)

  record = {
      "experiment": NAME,
      "paper": "Liao, Leibo & Poggio 2016, Tables 1-2 and the sign-concordance figure",
      "setup": setup,
      "table": table,
      "sweep": sweep,
      "summary": {
          "test_error": {r: {c: stats(cell["test_error"]) for c, cell in row.items()} for r, row in table.items()},
          "sweep_test_error": {c: {p: stats(cell["test_error"]) for p, cell in row.items()}
                               for c, row in sweep.items()},
          "findings": _findings(table, sweep, setup),
      },
  }
  return common.save(out, NAME, fig, record)


if __name__ == "__main__":
  common.main(NAME, run)
