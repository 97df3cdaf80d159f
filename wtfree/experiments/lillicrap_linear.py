"""Lillicrap et al. 2016, Fig. 2a-b: a linear 30-20-10 net learning y = T x.

T (10x30) uniform in [-1, 1], x ~ N(0, I), W0 and W uniform in [-0.01, 0.01],
fa's B uniform in [-0.5, 0.5], squared error, plain SGD on fresh minibatches.
Compared: bp, fa, shallow (only the output layer learns: B = 0) and node
perturbation. Test error is the normalised squared error
``sum |y - T x|^2 / sum |T x|^2`` on a fixed test set, mean and spread over
seeds; the delta angle is the angle between the error fa sends to the hidden
layer and the one backprop would send (`wtfree.train.alignment_step`).

Node perturbation (reinforcement-style, Williams 1992 / Werfel et al. 2005):
Gaussian noise xi_l (std sigma) is added to every unit's output of every layer
at once, and each example's loss change dL = L(xi) - L(0) gives the estimate
``dL/dy_l ~ dL * xi_l / sigma^2``, followed by each layer's local rule
``dW_l = x_l^T (dL xi_l / sigma^2) / batch``: no feedback path at all.

    python -m wtfree.experiments.lillicrap_linear --out docs/figures
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax

from wtfree import feedback
from wtfree import models
from wtfree import train
from wtfree.data import synthetic
from wtfree.experiments import common

NAME = "lillicrap_linear"
RULES = ("bp", "fa", "shallow", "node_perturbation")


def _setup(quick: bool) -> dict:
  return {
      "net": "30-20-10 linear, no biases",
      "target": "T (10x30) uniform [-1, 1] (wtfree.data.synthetic.linear_teacher(seed)), x ~ N(0, I_30)",
      "init": "W0, W uniform [-0.01, 0.01]; fa B uniform [-0.5, 0.5]",
      "loss": "0.5 * squared error, summed over outputs, mean over the batch",
      "optimizer": "SGD, no momentum",
      "batch_size": 20,
      "learning_rate": 0.01,
      "node_perturbation": {"sigma": 0.01, "learning_rate": 0.002, "estimate": "node perturbation, all layers at once"},
      "steps": 300 if quick else 800,
      "eval_every": 10,
      "test_examples": 1000,
      "seeds": 3 if quick else 20,
      "error": "normalised squared error sum|y - Tx|^2 / sum|Tx|^2 on the test set",
  }


# Not a feedback rule: a learning algorithm of its own, which takes no gradients.
NODE_PERTURBATION = "node_perturbation"
# The paper's feedback: B uniform in [-0.5, 0.5].
RULE_OPTIONS = {"fa": {"init": common.uniform(-1.0, 1.0), "scale": 0.5}}


def _model(rule: str):
  init = common.uniform(-0.01, 0.01)
  if rule == NODE_PERTURBATION:
    rule = "bp"  # the model's rule is unused
  rule = feedback.get_rule(rule, **RULE_OPTIONS.get(rule, {}))
  return models.get_model("mlp", num_classes=10, widths=(20,), activation="linear", use_bias=False,
                          kernel_init=init, rule=rule)


def _node_perturbation_grads(params, x, y, key, sigma):
  """The node-perturbation estimate of the weight gradients of the linear net."""
  w1, w2 = params["Dense_0"]["kernel"], params["head"]["kernel"]
  k1, k2 = jax.random.split(key)
  xi1 = sigma * jax.random.normal(k1, (x.shape[0], w1.shape[1]))
  xi2 = sigma * jax.random.normal(k2, (x.shape[0], w2.shape[1]))
  h = x @ w1
  clean = 0.5 * jnp.sum(jnp.square(h @ w2 - y), -1)
  hp = h + xi1
  noisy = 0.5 * jnp.sum(jnp.square(hp @ w2 + xi2 - y), -1)
  scale = (noisy - clean)[:, None] / sigma**2
  g1 = x.T @ (scale * xi1) / x.shape[0]
  g2 = hp.T @ (scale * xi2) / x.shape[0]
  return {"Dense_0": {"kernel": g1}, "head": {"kernel": g2}}


@functools.partial(jax.jit, static_argnames=("rule", "setup_items"))
def _run_seed(seed, target, *, rule: str, setup_items: tuple):
  """One run: test error after every ``eval_every`` steps, and fa's delta angle."""
  setup = dict(setup_items)
  model = _model(rule)
  lr = setup["np_lr"] if rule == NODE_PERTURBATION else setup["learning_rate"]
  tx = optax.sgd(lr)
  key = jax.random.key(seed)
  k_init, k_test, k_data = jax.random.split(key, 3)
  # The same target (T^T, so y = x @ T^T) and test set for every rule of a seed.
  x_test = jax.random.normal(k_test, (setup["test_examples"], 30))
  y_test = x_test @ target

  variables = model.init({"params": k_init}, jnp.zeros((1, 30)), train=False)
  state = train.TrainState(
      step=jnp.zeros((), jnp.int32), params=variables["params"], feedback=variables.get("feedback", {}),
      batch_stats={}, opt_state=tx.init(variables["params"]), rng=jax.random.key_data(k_init))

  def test_error(state):
    pred = model.apply(state.variables(), x_test, train=False)
    return jnp.sum(jnp.square(pred - y_test)) / jnp.sum(jnp.square(y_test))

  def step(state, k):
    x = jax.random.normal(k, (setup["batch_size"], 30))
    batch = {"image": x, "label": x @ target}
    if rule == NODE_PERTURBATION:
      grads = _node_perturbation_grads(state.params, x, batch["label"], jax.random.fold_in(k, 1), setup["sigma"])
      updates, opt_state = tx.update(grads, state.opt_state, state.params)
      state = state.replace(step=state.step + 1, params=optax.apply_updates(state.params, updates),
                            opt_state=opt_state)
    else:
      state, _ = train.train_step(state, batch, model=model, tx=tx, task="regression")
    return state, None

  def block(state, k):
    angle_batch = jax.random.normal(jax.random.fold_in(k, 7), (100, 30))
    angles = train.alignment_step(state, {"image": angle_batch, "label": angle_batch @ target},
                                  model=model, task="regression")
    record = (test_error(state), angles["angle/delta/Dense_0"], angles["angle/weight/head"])
    state, _ = jax.lax.scan(step, state, jax.random.split(k, setup["eval_every"]))
    return state, record

  blocks = setup["steps"] // setup["eval_every"]
  state, (errors, deltas, weights) = jax.lax.scan(block, state, jax.random.split(k_data, blocks))
  angles = train.alignment_step(state, {"image": x_test[:100], "label": y_test[:100]}, model=model,
                                task="regression")
  return (jnp.append(errors, test_error(state)), jnp.append(deltas, angles["angle/delta/Dense_0"]),
          jnp.append(weights, angles["angle/weight/head"]))


def run(out: str, quick: bool = False) -> dict:
  """Trains every rule on ``seeds`` seeds; writes the figure and the record."""
  setup = _setup(quick)
  items = tuple(sorted({
      "batch_size": setup["batch_size"], "learning_rate": setup["learning_rate"],
      "np_lr": setup["node_perturbation"]["learning_rate"], "sigma": setup["node_perturbation"]["sigma"],
      "steps": setup["steps"], "eval_every": setup["eval_every"], "test_examples": setup["test_examples"],
  }.items()))
  steps = np.arange(0, setup["steps"] + 1, setup["eval_every"])
  curves, delta, weight = {}, {}, {}
  for rule in RULES:
    runs = [jax.device_get(_run_seed(s, jnp.asarray(synthetic.linear_teacher(s).weights[0].T), rule=rule,
                                     setup_items=items)) for s in range(setup["seeds"])]
    curves[rule] = np.stack([r[0] for r in runs])
    delta[rule] = np.stack([r[1] for r in runs])
    weight[rule] = np.stack([r[2] for r in runs])

  fig, (ax_err, ax_angle) = common.figure(2)
  colors = {"bp": "k", "fa": "tab:green", "shallow": "tab:gray", "node_perturbation": "tab:orange"}
  for rule in RULES:
    ax_err.plot(steps, curves[rule].mean(0), color=colors[rule], label=rule.replace("_", " "))
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
