"""Lillicrap et al. 2016, Fig. 3c-d: does depth help under feedback alignment?

A 30-20-10-10 tanh teacher (`wtfree.data.synthetic.tanh_teacher(0)` with its
weights times sqrt(2), so N(0, 2/fan_in); tanh hidden layers, linear
output, no biases) makes the targets of the data set this module registers,
'lillicrap_depth_teacher': 100,000 training and 1,000 test pairs, x ~ N(0, I_30).
Students 30-20-10 and 30-20-10-10 (tanh hidden, linear output, biases) learn
it with bp and with fa (B drawn like W, fan-in scaled), squared error, plain
SGD, batch 20; test error is the normalised squared error on the test pairs.
The deeper student should end lower under both rules; Welch's t-test over
seeds gives the p-value (the paper: p = 3e-12 for bp, 9e-13 for fa, n = 20).
Each student's seeds train as one run of ``num_seeds`` replicas.

    python -m wtfree.experiments.lillicrap_depth --out docs/figures
"""

import numpy as np
from scipy import stats

from wtfree import data
from wtfree.data import source
from wtfree.data import synthetic
from wtfree.experiments import common

NAME = "lillicrap_depth"
STUDENTS = {"30-20-10": (20,), "30-20-10-10": (20, 10)}
RULES = ("bp", "fa")
# The teacher's N(0, 1/fan_in) weights keep its tanh units nearly linear,
# where a one-hidden-layer student comes within ~15 % of a deeper one under
# fa; a gain of sqrt(2) (N(0, 2/fan_in)) puts them in their nonlinear range.
GAIN = 2.0**0.5
DATASET = "lillicrap_depth_teacher"
NUM_TRAIN = 100_000


def _teacher_data(config) -> source.Splits:
  del config
  base = synthetic.tanh_teacher(0)
  teacher = synthetic.Teacher("tanh", tuple(GAIN * w for w in base.weights))
  x_train, y_train = teacher.sample(1, NUM_TRAIN)
  x_test, y_test = teacher.sample(2, 1000)
  return source.array_splits(x_train, y_train, x_test, y_test, num_classes=10, task="regression")


data.register(DATASET, _teacher_data)


def _setup(quick: bool) -> dict:
  return {
      "teacher": "wtfree.data.synthetic.tanh_teacher(0) with every weight times sqrt(2): 30-20-10-10, "
                 "tanh hidden, linear output, W ~ N(0, 2/fan_in), no biases; one teacher for every seed",
      "teacher_gain": GAIN,
      "data": f"{NUM_TRAIN} training pairs (seed 1), 1000 test pairs (seed 2), x ~ N(0, I_30)",
      "students": {k: f"tanh hidden {v}, linear output, lecun-normal W, zero biases" for k, v in STUDENTS.items()},
      "feedback_init": "fa: B lecun normal, like W",
      "loss": "0.5 * squared error, summed over outputs",
      "optimizer": "SGD, batch 20",
      "learning_rate": 0.1 if quick else 0.05,
      "batch_size": 20,
      "steps": 8000 if quick else 30000,
      "eval_every": 500,
      "seeds": 8 if quick else 20,
      "rules": ["fa"] if quick else list(RULES),
      "error": "normalised squared error sum|y - t|^2 / sum|t - mean t|^2 on the test set",
  }


def _config(rule: str, widths: tuple[int, ...], setup: dict):
  return common.config(
      dataset=DATASET, model="mlp", rule=rule, model_options={"widths": widths, "activation": "tanh"},
      optimizer="sgd", momentum=0.0, learning_rate=setup["learning_rate"], batch_size=setup["batch_size"],
      eval_batch_size=1000, num_steps=setup["steps"], log_every_steps=setup["eval_every"],
      eval_every_steps=setup["eval_every"], num_seeds=setup["seeds"], angles=False)


def run(out: str, quick: bool = False) -> dict:
  """Trains both students with both rules on every seed; writes figure and record."""
  setup = _setup(quick)
  curves = {}
  for r in setup["rules"]:
    curves[r] = {}
    for name, widths in STUDENTS.items():
      config = _config(r, widths, setup)
      targets = common.test_targets(config)
      scale = np.mean(0.5 * np.sum(np.square(targets - targets.mean(0)), -1))
      run = common.train(config)
      curves[r][name] = run.values("eval", "eval/loss").T / scale  # [seeds, evals]
      steps = run.steps("eval", "eval/loss")
  shallow, deep = STUDENTS
  rules = setup["rules"]
  tests = {}
  for r in rules:
    a, b = curves[r][shallow][:, -1], curves[r][deep][:, -1]
    t = stats.ttest_ind(a, b, equal_var=False)
    tests[r] = {"t": float(t.statistic), "p": float(t.pvalue), "deeper_better": bool(b.mean() < a.mean())}

  fig, axes = common.figure(1 + len(rules))
  styles = {shallow: "--", deep: "-"}
  colors = {"bp": "k", "fa": "tab:green"}
  for r in rules:
    for s in STUDENTS:
      c = curves[r][s]
      axes[0].plot(steps, c.mean(0), styles[s], color=colors[r], label=f"{r} {s}")
      axes[0].fill_between(steps, c.min(0), c.max(0), color=colors[r], alpha=0.1)
  axes[0].set(yscale="log", xlabel="step (batch 20)", ylabel="normalised squared error (test)",
              title="students of a 30-20-10-10 tanh teacher")
  axes[0].legend(fontsize=8)
  for ax, r in zip(axes[1:], rules):
    finals = [curves[r][s][:, -1] for s in STUDENTS]
    ax.boxplot(finals)
    ax.set_xticks([1, 2], list(STUDENTS))
    ax.set(yscale="log", ylabel="final test error", title=f"{r}: Welch t-test p = {tests[r]['p']:.1e}")

  summary = {
      "final_error_mean": {r: {s: curves[r][s][:, -1].mean() for s in STUDENTS} for r in rules},
      "final_error_std": {r: {s: curves[r][s][:, -1].std() for s in STUDENTS} for r in rules},
      "t_test": tests,
  }
  record = {
      "experiment": NAME,
      "paper": "Lillicrap et al. 2016, Fig. 3c-d",
      "setup": setup,
      "steps": steps,
      "final_errors": {r: {s: curves[r][s][:, -1] for s in STUDENTS} for r in rules},
      "test_error_mean": {r: {s: curves[r][s].mean(0) for s in STUDENTS} for r in rules},
      "summary": summary,
  }
  return common.save(out, NAME, fig, record)


if __name__ == "__main__":
  common.main(NAME, run)
