"""Liao, Leibo & Poggio 2016: sign concordance, BatchNorm and Batch Manhattan.

A small 1-D LeNet (conv 16 - pool - conv 32 - pool - dense 128 - 10, ReLU,
kernel 5) on mnist1d (generated locally, 4000 train / 1000 test), trained with
bp, uSF, BRSF, FRSF and fa, each without and with BatchNorm and Batch
Manhattan (the 4 combinations), then the sign-concordance sweep: B = |M| *
sign(W) * S with S = +1 with probability p, for p in 0.5 ... 1.0.

Feedback magnitudes follow Liao et al., independent of W's scale: uSF is
B = sign(W) (``magnitude='one'``), the random magnitudes of BRSF, FRSF, sc and
fa's B are drawn from N(0, 1). (wtfree's default draws them fan-in scaled like
W, which hides the need for BN/BM that the paper reports.)

Optimizer: SGD with momentum 0.9, lr 0.01; with Batch Manhattan
W <- W - lr * momentum(sign(grad)) with lr 3e-4. Batch 64.

    python -m wtfree.experiments.liao_sign --out docs/figures
"""

import jax
import numpy as np

from wtfree import feedback
from wtfree import models
from wtfree.experiments import common

NAME = "liao_sign"
COMBOS = ("plain", "BM", "BN", "BN+BM")


def _rule(name: str, p: float | None = None) -> feedback.Rule:
  unit = jax.nn.initializers.normal(1.0)
  if name == "usf":
    return feedback.get_rule("usf", magnitude="one")
  if name == "sc":
    return feedback.get_rule("sc", p=p, init=unit)
  if name in ("brsf", "frsf", "fa"):
    return feedback.get_rule(name, init=unit)
  return feedback.get_rule(name)


def _setup(quick: bool) -> dict:
  return {
      "data": common.load("mnist1d").source,
      "model": "lenet, 1-D: conv5x16 - pool2 - conv5x32 - pool2 - dense128 - dense10, ReLU; BN before ReLU when on",
      "feedback_magnitudes": "usf: sign(W); brsf, frsf, sc, fa: |N(0,1)| (Liao et al.'s convention)",
      "optimizer": "SGD momentum 0.9, lr 0.01; Batch Manhattan: sign of the gradient, momentum 0.9, lr 3e-4",
      "batch_size": 64,
      "steps": 350 if quick else 1500,
      "seeds": [0] if quick else [0, 1],
      "rules": ["usf", "frsf"] if quick else ["bp", "usf", "brsf", "frsf", "fa"],
      "combos": ["plain", "BN+BM"] if quick else list(COMBOS),
      "p_values": [0.5, 1.0] if quick else [0.5, 0.6, 0.7, 0.8, 0.9, 1.0],
      "p_sweep_combo": "BN+BM",
      "p_sweep_note": "p = 1.0 is frsf's run (same magnitudes M, all signs concordant)",
      "error": "top-1 test error %, 1000 test signals; a diverged run predicts class 0 (about 90 %)",
  }


def _train(rule: feedback.Rule, combo: str, setup: dict, seed: int) -> float:
  arrays = common.load("mnist1d")
  manhattan = "BM" in combo
  model = models.get_model("lenet", num_classes=arrays.num_classes, rule=rule, features=(16, 32), dense=(128,),
                           batch_norm="BN" in combo)
  tx = common.sgd(3e-4 if manhattan else 0.01, momentum=0.9, manhattan=manhattan)
  state = common.train_classifier(model, arrays, tx, steps=setup["steps"], batch_size=setup["batch_size"],
                                  seed=seed, scan=False)
  return common.error_rate(model, state, arrays.x_test, arrays.y_test)


def run(out: str, quick: bool = False) -> dict:
  """Trains the table and the sweep; writes the figure and the record."""
  setup = _setup(quick)
  table = {r: {c: [_train(_rule(r), c, setup, s) for s in setup["seeds"]] for c in setup["combos"]}
           for r in setup["rules"]}
  combo = setup["p_sweep_combo"]
  # sc with p = 1 draws frsf's M from the same key: the same run, so it is reused.
  sweep = {p: (table["frsf"][combo] if p == 1.0 and combo in table.get("frsf", {})
               else [_train(_rule("sc", p), combo, setup, s) for s in setup["seeds"]])
           for p in setup["p_values"]}

  fig, (ax_table, ax_sweep) = common.figure(2, width=4.8)
  width = 0.8 / len(setup["combos"])
  for j, combo in enumerate(setup["combos"]):
    means = [np.mean(table[r][combo]) for r in setup["rules"]]
    ax_table.bar(np.arange(len(setup["rules"])) + (j - (len(setup["combos"]) - 1) / 2) * width, means, width,
                 label=combo)
  ax_table.set_xticks(np.arange(len(setup["rules"])), setup["rules"])
  ax_table.axhline(90, color="gray", ls=":", lw=1)
  ax_table.set(ylabel="test error (%)", title="mnist1d, 1-D LeNet: rule x BN x BM")
  ax_table.legend(fontsize=8)
  ps = np.array(setup["p_values"])
  means = np.array([np.mean(sweep[p]) for p in setup["p_values"]])
  ax_sweep.plot(ps, means, "o-", color="tab:purple")
  for p in setup["p_values"]:
    ax_sweep.plot([p] * len(sweep[p]), sweep[p], ".", color="tab:purple", alpha=0.4)
  ax_sweep.set(xlabel="sign-concordance probability p", ylabel="test error (%)",
               title=f"sign-concordance sweep ({setup['p_sweep_combo']})")

  summary = {
      "error_mean": {r: {c: np.mean(v) for c, v in row.items()} for r, row in table.items()},
      "sweep_error_mean": {str(p): np.mean(v) for p, v in sweep.items()},
  }
  record = {
      "experiment": NAME,
      "paper": "Liao, Leibo & Poggio 2016, Tables 1-2 and the sign-concordance figure",
      "setup": setup,
      "table": table,
      "sweep": {str(p): v for p, v in sweep.items()},
      "summary": summary,
  }
  return common.save(out, NAME, fig, record)


if __name__ == "__main__":
  common.main(NAME, run)
