"""Lillicrap et al. 2016, Fig. 3a: does depth help under feedback alignment?

A 30-20-10-10 tanh teacher (`wtfree.data.synthetic.tanh_teacher`, weights
times sqrt(2), so N(0, 2/fan_in); tanh hidden layers, linear output, no
biases; one per seed)
makes the targets for x ~ N(0, I_30).
Students 30-20-10 and 30-20-10-10 (tanh hidden, linear output, biases) learn
it with bp and with fa (B drawn like W, fan-in scaled), squared error, plain
SGD on fresh minibatches; test error is the normalised squared error on a
fixed test set. The deeper student should end lower under both rules;
Welch's t-test over seeds gives the p-value (the paper: p = 3e-12 for bp,
9e-13 for fa, n = 20).

    python -m wtfree.experiments.lillicrap_depth --out docs/figures
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
from scipy import stats

from wtfree import models
from wtfree import train
from wtfree.data import synthetic
from wtfree.experiments import common

NAME = "lillicrap_depth"
STUDENTS = {"30-20-10": (20,), "30-20-10-10": (20, 10)}
RULES = ("bp", "fa")
# The shared teacher's N(0, 1/fan_in) weights keep its tanh units nearly
# linear, where a one-hidden-layer student comes within ~15 % of a deeper one
# under fa; a gain of sqrt(2) (N(0, 2/fan_in)) puts them in their nonlinear range.
GAIN = 2.0**0.5


def _setup(quick: bool) -> dict:
  return {
      "teacher": "wtfree.data.synthetic.tanh_teacher(seed) with every weight times sqrt(2): 30-20-10-10, "
                 "tanh hidden, linear output, W ~ N(0, 2/fan_in), no biases; one teacher per seed",
      "teacher_gain": GAIN,
      "students": {k: f"tanh hidden {v}, linear output, lecun-normal W, zero biases" for k, v in STUDENTS.items()},
      "feedback_init": "fa: B lecun normal, like W",
      "loss": "0.5 * squared error, summed over outputs",
      "optimizer": "SGD, batch 20, fresh x ~ N(0, I) every step",
      "learning_rate": 0.1 if quick else 0.05,
      "batch_size": 20,
      "steps": 8000 if quick else 30000,
      "eval_every": 500,
      "test_examples": 1000,
      "seeds": 8 if quick else 20,
      "rules": ["fa"] if quick else list(RULES),
      "error": "normalised squared error sum|y - t|^2 / sum|t - mean t|^2 on the test set",
  }


def _teacher(weights):
  """``wtfree.data.synthetic``'s tanh teacher as a jax function of its weights."""
  w1, w2, w3 = weights
  return lambda x: jnp.tanh(jnp.tanh(x @ w1) @ w2) @ w3


def _teacher_weights(seeds, gain: float = GAIN) -> tuple:
  """Each seed's teacher weights times ``gain``, stacked over seeds."""
  teachers = [synthetic.tanh_teacher(int(s)) for s in seeds]
  return tuple(gain * jnp.stack([t.weights[i] for t in teachers]) for i in range(3))


@functools.partial(jax.jit, static_argnames=("widths", "rule", "steps", "eval_every", "batch_size", "lr"))
def _run_seed(seed, weights, *, widths, rule, steps, eval_every, batch_size, lr):
  model = models.get_model("mlp", num_classes=10, widths=widths, activation="tanh", rule=rule)
  tx = optax.sgd(lr)
  k_init, k_test, k_data = jax.random.split(jax.random.key(seed), 3)
  teacher = _teacher(weights)
  x_test = jax.random.normal(k_test, (1000, 30))
  y_test = teacher(x_test)
  variables = model.init({"params": k_init}, jnp.zeros((1, 30)), train=False)
  state = train.TrainState(
      step=jnp.zeros((), jnp.int32), params=variables["params"], feedback=variables.get("feedback", {}),
      batch_stats={}, opt_state=tx.init(variables["params"]), rng=jax.random.key_data(k_init))

  def test_error(state):
    pred = model.apply(state.variables(), x_test, train=False)
    return jnp.sum(jnp.square(pred - y_test)) / jnp.sum(jnp.square(y_test - y_test.mean(0)))

  def step(state, k):
    x = jax.random.normal(k, (batch_size, 30))
    state, _ = train.train_step(state, {"image": x, "label": teacher(x)}, model=model, tx=tx, task="regression")
    return state, None

  def block(state, k):
    error = test_error(state)
    state, _ = jax.lax.scan(step, state, jax.random.split(k, eval_every))
    return state, error

  state, errors = jax.lax.scan(block, state, jax.random.split(k_data, steps // eval_every))
  return jnp.append(errors, test_error(state))


def run(out: str, quick: bool = False) -> dict:
  """Trains both students with both rules on every seed; writes figure and record."""
  setup = _setup(quick)
  kwargs = dict(steps=setup["steps"], eval_every=setup["eval_every"], batch_size=setup["batch_size"],
                lr=setup["learning_rate"])
  seeds = jnp.arange(setup["seeds"])
  weights = _teacher_weights(range(setup["seeds"]))
  curves = {r: {s: np.asarray(jax.vmap(functools.partial(_run_seed, widths=w, rule=r, **kwargs))(seeds, weights))
                for s, w in STUDENTS.items()} for r in setup["rules"]}
  steps = np.arange(0, setup["steps"] + 1, setup["eval_every"])
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
      "paper": "Lillicrap et al. 2016, Fig. 3a",
      "setup": setup,
      "steps": steps,
      "final_errors": {r: {s: curves[r][s][:, -1] for s in STUDENTS} for r in rules},
      "test_error_mean": {r: {s: curves[r][s].mean(0) for s in STUDENTS} for r in rules},
      "summary": summary,
  }
  return common.save(out, NAME, fig, record)


if __name__ == "__main__":
  common.main(NAME, run)
