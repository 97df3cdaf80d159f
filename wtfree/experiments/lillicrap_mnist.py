"""Lillicrap et al. 2016, Fig. 2c-d: one hidden layer of 1000 sigmoid units.

MNIST is not prepared on this machine (no tfds data, no download), so the net
runs on the two sets that are made locally: mnist1d (40-1000-10, 4000 train /
1000 test) and scikit-learn's digits (64-1000-10, 1437 / 360). Compared: bp,
fa, fa with 50 % of W and B removed, and shallow (only the output layer
learns). The sparse variant draws one fixed random mask per layer (half the
entries zero) and applies it to W (at init and to every update, so the
removed connections stay at zero) and to B (B = mask * B0): a missing
synapse carries neither the forward signal nor the feedback.

    python -m wtfree.experiments.lillicrap_mnist --out docs/figures
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax

from wtfree import models
from wtfree.experiments import common
from wtfree.feedback import fixed

NAME = "lillicrap_mnist"
VARIANTS = ("bp", "fa", "fa_sparse50", "shallow")


@dataclasses.dataclass(frozen=True)
class SparseFeedbackAlignment(fixed.FeedbackAlignment):
  """fa whose B keeps only the entries of a fixed random mask (kept w.p. ``keep``)."""

  name = "fa_sparse"
  state_names = ("kernel", "mask")
  keep: float = 0.5

  def init_state(self, key, kernel, kernel_init):
    mask = jax.random.bernoulli(jax.random.fold_in(key, 1), self.keep, kernel.shape).astype(kernel.dtype)
    return {"kernel": self.draw(key, kernel.shape, kernel.dtype, kernel_init), "mask": mask}

  def feedback(self, w, state, key, kernel_init):
    return state["kernel"] * state["mask"]


def _mask_updates(masks) -> optax.GradientTransformation:
  """Multiplies every update by its mask, so that removed weights stay removed."""
  return optax.stateless(lambda updates, params=None: jax.tree.map(jnp.multiply, updates, masks))


def _setup(quick: bool) -> dict:
  return {
      "datasets": ["mnist1d", "digits"] if not quick else ["mnist1d"],
      "mnist": "not prepared here (no tfds MNIST on disk and no download); mnist1d and digits instead",
      "net": "in-1000-10, sigmoid hidden units, biases",
      "optimizer": "SGD momentum 0.9, lr 0.3, L2 weight decay 1e-6, batch 32",
      "feedback_init": "B drawn like W (lecun normal, fan-in scaled)",
      "sparse": "one fixed Bernoulli(0.5) mask per layer, applied to W (init and updates) and to B",
      "epochs": {"mnist1d": 16 if quick else 40, "digits": 40},
      "seeds": 1 if quick else 4,
      "variants": list(VARIANTS),
  }


def _train(variant: str, dataset: str, setup: dict, seed: int) -> float:
  arrays = common.load(dataset, flatten=True)
  rule = {"fa_sparse50": SparseFeedbackAlignment()}.get(variant, variant)
  model = models.get_model("mlp", num_classes=arrays.num_classes, widths=(1000,), activation="sigmoid", rule=rule)
  sgd = common.sgd(0.3, momentum=0.9, weight_decay=1e-6)
  steps = setup["epochs"][dataset] * (len(arrays.y_train) // 32)
  state = None
  tx = sgd
  if variant == "fa_sparse50":
    masks = common.make_state(model, sgd, arrays.input_shape, seed).feedback
    param_masks = {layer: {"kernel": masks[layer]["mask"], "bias": jnp.ones_like(masks[layer]["mask"][0])}
                   for layer in masks}
    tx = optax.chain(_mask_updates(param_masks), sgd)
    state = common.make_state(model, tx, arrays.input_shape, seed)
    state = state.replace(params=jax.tree.map(jnp.multiply, state.params, param_masks))
  state = common.train_classifier(model, arrays, tx, steps=steps, batch_size=32, seed=seed, scan=True,
                                  state=state)
  return common.error_rate(model, state, arrays.x_test, arrays.y_test)


def run(out: str, quick: bool = False) -> dict:
  """Trains every variant on every set and seed; writes the figure and the record."""
  setup = _setup(quick)
  errors = {d: {v: [_train(v, d, setup, s) for s in range(setup["seeds"])] for v in VARIANTS}
            for d in setup["datasets"]}
  fig, axes = common.figure(len(setup["datasets"]))
  for ax, dataset in zip(axes, setup["datasets"]):
    means = [np.mean(errors[dataset][v]) for v in VARIANTS]
    stds = [np.std(errors[dataset][v]) for v in VARIANTS]
    ax.bar(np.arange(len(VARIANTS)), means, yerr=stds, color=["k", "tab:green", "tab:olive", "tab:gray"])
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
