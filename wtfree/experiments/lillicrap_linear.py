"""Lillicrap et al. 2016, Fig. 2a-b: a linear 30-20-10 net learning y = T x.

T (10x30) uniform in [-1, 1] (the 'linear_teacher' data set: 10,000
training pairs, x ~ N(0, I)), W0 and W uniform in [-0.01, 0.01], fa's B
uniform in [-0.5, 0.5], squared error, plain SGD, batch 20. Compared: bp,
fa, shallow (only the output layer learns: B = 0) and node perturbation
(rule 'np': noise on every layer's output, no feedback path). Test error is
the normalised squared error ``sum |y - T x|^2 / sum |T x|^2`` on the 1,000
test pairs, mean and spread over seeds; the delta angle is the angle between
the error fa sends to the hidden layer and the one backprop would send.
Each rule's seeds train as one run of ``num_seeds`` replicas.

    python -m wtfree.experiments.lillicrap_linear --out docs/figures
"""

import numpy as np

from wtfree.experiments import common

NAME = "lillicrap_linear"
RULES = ("bp", "fa", "shallow", "np")
# The paper's feedback: B uniform in [-0.5, 0.5]; node perturbation's noise and its own rate.
RULE_OPTIONS = {"fa": {"init": common.uniform(-1.0, 1.0), "scale": 0.5}, "np": {"sigma": 0.01}}
LEARNING_RATES = {"np": 0.002}


def _setup(quick: bool) -> dict:
  return {
      "net": "30-20-10 linear, no biases",
      "target": "T (10x30) uniform [-1, 1]: data set 'linear_teacher', 10000 train / 1000 test pairs, x ~ N(0, I_30)",
      "init": "W0, W uniform [-0.01, 0.01]; fa B uniform [-0.5, 0.5]",
      "loss": "0.5 * squared error, summed over outputs, mean over the batch",
      "optimizer": "SGD, no momentum",
      "batch_size": 20,
      "learning_rate": 0.01,
      "node_perturbation": {"rule": "np", "sigma": 0.01, "learning_rate": LEARNING_RATES["np"]},
      "steps": 300 if quick else 800,
      "eval_every": 10,
      "seeds": 4 if quick else 20,
      "error": "normalised squared error sum|y - Tx|^2 / sum|Tx|^2 on the test set",
      "angles": "on the step's last training batch (20 examples)",
  }


def _config(rule: str, setup: dict):
  return common.config(
      dataset="linear_teacher", model="mlp", rule=rule, rule_options=RULE_OPTIONS.get(rule, {}),
      model_options={"widths": (20,), "activation": "linear", "use_bias": False,
                     "kernel_init": common.uniform(-0.01, 0.01)},
      optimizer="sgd", momentum=0.0, learning_rate=LEARNING_RATES.get(rule, setup["learning_rate"]),
      batch_size=setup["batch_size"], eval_batch_size=1000, num_steps=setup["steps"],
      log_every_steps=setup["eval_every"], eval_every_steps=setup["eval_every"], num_seeds=setup["seeds"])


def run(out: str, quick: bool = False) -> dict:
  """Trains every rule on ``seeds`` seeds; writes the figure and the record."""
  setup = _setup(quick)
  curves, delta, weight = {}, {}, {}
  for rule in RULES:
    config = _config(rule, setup)
    run = common.train(config)
    scale = np.mean(0.5 * np.sum(np.square(common.test_targets(config)), -1))
    steps = run.steps("eval", "eval/loss")
    curves[rule] = run.values("eval", "eval/loss").T / scale  # [seeds, steps]
    delta[rule] = run.values("train", "angle/delta/Dense_0").T
    weight[rule] = run.values("train", "angle/weight/head").T

  fig, (ax_err, ax_angle) = common.figure(2)
  colors = {"bp": "k", "fa": "tab:green", "shallow": "tab:gray", "np": "tab:orange"}
  labels = {"np": "node perturbation"}
  for rule in RULES:
    ax_err.plot(steps, curves[rule].mean(0), color=colors[rule], label=labels.get(rule, rule))
    ax_err.fill_between(steps, curves[rule].min(0), curves[rule].max(0), color=colors[rule], alpha=0.2)
  ax_err.set(yscale="log", xlabel="step (batch 20)", ylabel="normalised squared error (test)",
             title="30-20-10 linear, y = Tx; band: min-max of seeds")
  ax_err.legend()
  mean, std = delta["fa"].mean(0), delta["fa"].std(0)
  ax_angle.plot(steps, mean, color="tab:green", label="fa vs bp: hidden error signal")
  ax_angle.fill_between(steps, mean - std, mean + std, color="tab:green", alpha=0.2)
  ax_angle.axhline(90, color="gray", ls=":")
  ax_angle.set(xlabel="step", ylabel="angle (deg)", ylim=(0, 100), title="delta angle, fa vs bp (hidden layer)")
  ax_angle.legend()

  summary = {
      "final_error_mean": {r: curves[r][:, -1].mean() for r in RULES},
      "final_error_std": {r: curves[r][:, -1].std() for r in RULES},
      "initial_error_mean": {r: curves[r][:, 0].mean() for r in RULES},
      "quarter_step": int(steps[len(steps) // 4]),
      "quarter_error_mean": {r: curves[r][:, len(steps) // 4].mean() for r in RULES},
      "fa_delta_angle_start_mean": delta["fa"][:, 0].mean(),
      "fa_delta_angle_end_mean": delta["fa"][:, -1].mean(),
      "fa_delta_angle_end_std": delta["fa"][:, -1].std(),
      "fa_weight_angle_head_end_mean": weight["fa"][:, -1].mean(),
  }
  record = {
      "experiment": NAME,
      "paper": "Lillicrap et al. 2016, Fig. 2a-b",
      "setup": setup,
      "steps": steps,
      "test_error": {r: {"mean": curves[r].mean(0), "std": curves[r].std(0)} for r in RULES},
      "fa_delta_angle": {"mean": delta["fa"].mean(0), "std": delta["fa"].std(0)},
      "summary": summary,
  }
  return common.save(out, NAME, fig, record)


if __name__ == "__main__":
  common.main(NAME, run)
