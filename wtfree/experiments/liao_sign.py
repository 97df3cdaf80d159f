"""Liao, Leibo & Poggio 2016: sign concordance, BatchNorm and Batch Manhattan.

A small 1-D LeNet (conv 16 - pool - conv 32 - pool - dense 128 - 10, ReLU,
kernel 5) on mnist1d (generated locally, 4000 train / 1000 test), trained with
bp, uSF, BRSF, FRSF and fa, each without and with BatchNorm and Batch
Manhattan (the 4 combinations), then the sign-concordance sweep: B = |M| *
sign(W) * S with S = +1 with probability p, for p in 0.5 ... 1.0, as one
`wtfree.sweep` (``sweep.rule_options.p``): every p and seed is a replica of
one compiled program.

Feedback magnitudes follow Liao et al., independent of W's scale: uSF is
B = sign(W) (``magnitude='one'``), the random magnitudes of BRSF, FRSF, sc and
fa's B are drawn from N(0, 1). (wtfree's default draws them fan-in scaled like
W, which hides the need for BN/BM that the paper reports.)

Optimizer: SGD with momentum 0.9, lr 0.01; with Batch Manhattan
W <- W - lr * momentum(sign(grad)) with lr 3e-4. Batch 64. The seeds of each
cell train as one run of ``num_seeds`` replicas.

    python -m wtfree.experiments.liao_sign --out docs/figures
"""

import jax
import numpy as np

from wtfree.experiments import common

NAME = "liao_sign"
COMBOS = ("plain", "BM", "BN", "BN+BM")
UNIT = jax.nn.initializers.normal(1.0)


def _rule(name: str, p: float | None = None) -> tuple[str, dict]:
  """The rule and its options under Liao et al.'s magnitudes."""
  if name == "usf":
    return "usf", {"magnitude": "one"}
  if name == "sc":
    return "sc", {"p": p, "init": UNIT}
  if name in ("brsf", "frsf", "fa"):
    return name, {"init": UNIT}
  return name, {}


def _setup(quick: bool) -> dict:
  return {
      "data": "wtfree.data 'mnist1d': generated with mnist1d's default arguments (seed 42), 4000 train / 1000 test",
      "model": "lenet, 1-D: conv5x16 - pool2 - conv5x32 - pool2 - dense128 - dense10, ReLU; BN before ReLU when on",
      "feedback_magnitudes": "usf: sign(W); brsf, frsf, sc, fa: |N(0,1)| (Liao et al.'s convention)",
      "optimizer": "SGD momentum 0.9, lr 0.01; Batch Manhattan: sign of the gradient, momentum 0.9, lr 3e-4",
      "batch_size": 64,
      "steps": 350 if quick else 1500,
      "seeds": 2,
      "rules": ["usf", "frsf"] if quick else ["bp", "usf", "brsf", "frsf", "fa"],
      "combos": ["plain", "BN+BM"] if quick else list(COMBOS),
      "p_values": [0.5, 1.0] if quick else [0.5, 0.6, 0.7, 0.8, 0.9, 1.0],
      "p_sweep_combo": "BN+BM",
      "p_sweep_note": "one sweep (wtfree.sweep): every p times every seed as replicas of one program; "
                      "p = 1.0 draws frsf's M (all signs concordant)",
      "error": "top-1 test error %, 1000 test signals; steps with a non-finite loss are skipped "
               "(skip_nonfinite), so a diverging run ends near chance (about 90 %)",
  }


def _config(rule: tuple[str, dict], combo: str, setup: dict):
  name, options = rule
  manhattan = "BM" in combo
  return common.config(
      dataset="mnist1d", model="lenet", rule=name, rule_options=options,
      model_options={"features": (16, 32), "dense": (128,), "batch_norm": "BN" in combo},
      optimizer="sgd", momentum=0.9, learning_rate=3e-4 if manhattan else 0.01, batch_manhattan=manhattan,
      batch_size=setup["batch_size"], eval_batch_size=1000, num_steps=setup["steps"],
      log_every_steps=setup["steps"], eval_every_steps=setup["steps"], num_seeds=setup["seeds"], angles=False,
      eval_at_start=False, skip_nonfinite=True)


def _train(rule: tuple[str, dict], combo: str, setup: dict) -> list[float]:
  """Each seed's test error in %."""
  return (100.0 * (1.0 - common.train(_config(rule, combo, setup)).final("eval", "eval/top1"))).tolist()


def _sign_concordance_sweep(setup: dict) -> dict[float, list[float]]:
  """Each p's test errors in %: every p times every seed, one program (p is a per-replica value)."""
  config = _config(_rule("sc", setup["p_values"][0]), setup["p_sweep_combo"], setup)
  config.sweep.rule_options.p = ",".join(map(str, setup["p_values"]))
  # The paper's protocol trains on all 4000 signals and chooses nothing: no validation split.
  cells = common.sweep(config, hold_out=False)["cells"]
  return {cell["values"]["rule_options.p"]: [100.0 * (1.0 - v) for v in cell["final_test"]["values"]]
          for cell in cells}


def run(out: str, quick: bool = False) -> dict:
  """Trains the table and the sweep; writes the figure and the record."""
  setup = _setup(quick)
  table = {r: {c: _train(_rule(r), c, setup) for c in setup["combos"]} for r in setup["rules"]}
  sweep = _sign_concordance_sweep(setup)

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
