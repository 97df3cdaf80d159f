"""Akrout et al. 2019, Fig. 4: weight and delta angles per layer over training.

A tiny ResNet (``resnet_tiny``: 3x3 stem of 8 channels, one basic block of 8
and one of 16 with a projection shortcut, BN before ReLU, global pool, Dense)
on scikit-learn's 8x8 digits, trained with fa, usf (sign-symmetry), wm
(weight mirror) and kp (Kolen-Pollack), plus bp for the final error. Every
few steps wtfree's loop logs each layer's weight angle (B vs W) and delta
angle (the error the layer receives vs backprop's, on a training batch),
averaged over the seeds, which train as one run of ``num_seeds`` replicas.

Every rule runs with the defaults it ships with. Weight mirror: its default
rate, two mirror passes of 256 unit-Gaussian inputs after every training step,
after 100 mirror-only steps; B's fixed point has W's scale
(`wtfree.feedback.weight_mirror`), so residual branches get errors of the
right size. Kolen-Pollack: B receives W's updates and B - W decays at the
run's weight-decay rate, lr * decay / (1 - momentum) per step; the weight
decay (the same for every rule) is larger than Akrout's 1e-4 (they took
~10^5 steps; we take ~10^3).

    python -m wtfree.experiments.akrout_angles --out docs/figures
"""

import numpy as np

from wtfree import feedback
from wtfree.experiments import common

NAME = "akrout_angles"
ANGLE_RULES = ("fa", "usf", "wm", "kp")
STEPS_PER_EPOCH = 1437 // 32  # digits' training set at batch 32


def _setup(quick: bool) -> dict:
  return {
      "data": "wtfree.data 'digits': sklearn load_digits, 8x8x1, 1437 train / 360 test (permutation seed 0)",
      "model": "resnet_tiny: stem conv3x3x8, basic blocks 8 and 16 (stride 2, 1x1 projection), BN before ReLU, "
               "no conv biases, global average pool, Dense 10",
      "optimizer": "SGD momentum 0.9, L2 weight decay on kernels (kp: B - W shrinks at the same rate), constant lr",
      "learning_rate": 0.1 if quick else 0.05,
      "weight_decay": 0.04 if quick else 0.01,
      "batch_size": 32,
      "steps": 120 if quick else 1350,
      "angle_every": 60 if quick else 45,
      "rules": ["fa", "wm", "kp"] if quick else ["bp", *ANGLE_RULES],
      # Test error varies by several points between seeds on 360 test
      # examples, so errors and angles are the mean over these seeds.
      "seeds": 1 if quick else 4,
      "quick": quick,
      "weight_mirror": {"rule_options": "defaults", "mirror_batch": 256, "passes_per_step": 2,
                        "mirror_only_steps": 0 if quick else 2 * STEPS_PER_EPOCH},
      "angles": "angle/weight: B vs W; angle/delta: error at the layer's output vs backprop's, same batch",
  }


def _config(rule: str, setup: dict):
  wm = setup["weight_mirror"]
  # The mirror settings reach the rules that mirror B (the registry says which), and only them.
  mirrored = feedback.get_rule(rule).takes("mirror_epochs")
  mirror_steps = wm["mirror_only_steps"] if mirrored else 0
  mirror = {"mirror_epochs": mirror_steps / STEPS_PER_EPOCH, "mirror_passes": wm["passes_per_step"]} if mirrored else {}
  return common.config(
      dataset="digits", model="resnet_tiny", rule=rule, model_options={}, optimizer="sgd", momentum=0.9,
      learning_rate=setup["learning_rate"], weight_decay=setup["weight_decay"], batch_size=setup["batch_size"],
      eval_batch_size=360, mirror_batch_size=wm["mirror_batch"], num_steps=mirror_steps + setup["steps"],
      log_every_steps=setup["angle_every"], eval_every_steps=mirror_steps + setup["steps"],
      num_seeds=setup["seeds"], **mirror)


def _train(rule: str, setup: dict) -> tuple[dict, list[float]]:
  """The rule's angle curves (mean over seeds) and each seed's final test error in %."""
  run = common.train(_config(rule, setup))
  keys = [k for k in run.records["train"][-1] if k.startswith(("angle/weight/", "angle/delta/"))
          and not k.endswith(("/std", "/seeds"))]
  history = {"step": run.steps("train", keys[0]).tolist()}
  for key in keys:
    history[key] = run.values("train", key).mean(1).tolist()
  return history, (100.0 * (1.0 - run.final("eval", "eval/top1"))).tolist()


def _layers(history: dict, kind: str) -> list[str]:
  return [k.split("/", 2)[2] for k in history if k.startswith(f"angle/{kind}/")]


def run(out: str, quick: bool = False) -> dict:
  """Trains each rule, recording angles; writes the figure and the record."""
  setup = _setup(quick)
  histories, errors, error_seeds = {}, {}, {}
  for name in setup["rules"]:
    histories[name], error_seeds[name] = _train(name, setup)
    errors[name] = float(np.mean(error_seeds[name]))
  angle_rules = [r for r in setup["rules"] if r in ANGLE_RULES]

  import matplotlib.pyplot as plt

  fig, axes = plt.subplots(2, len(angle_rules), figsize=(3.6 * len(angle_rules), 6), squeeze=False, sharey=True)
  for j, name in enumerate(angle_rules):
    h = histories[name]
    for i, kind in enumerate(("weight", "delta")):
      ax = axes[i, j]
      for k, layer in enumerate(_layers(h, "weight")):
        if kind == "delta" and layer == "head":
          continue  # 0 by construction
        ax.plot(h["step"], h[f"angle/{kind}/{layer}"], label=layer, lw=1.2, color=f"C{k}")
      ax.axhline(90, color="gray", ls=":", lw=1)
      ax.set(ylim=(-2, 120), title=f"{name}: {kind} angle", xlabel="training step")
      if j == 0:
        ax.set_ylabel("degrees")
  axes[0, 0].legend(fontsize=6)
  if not quick:
    fig.suptitle(f"resnet_tiny on digits; final test error %, mean of {setup['seeds']} seeds: "
                 + ", ".join(f"{r} {errors[r]:.1f}" for r in setup["rules"]), fontsize=9)
  fig.tight_layout()

  def final(name, kind):
    h = histories[name]
    return {layer: h[f"angle/{kind}/{layer}"][-1] for layer in _layers(h, kind)
            if not (kind == "delta" and layer == "head")}

  summary = {
      "test_error": errors,
      "test_error_by_seed": error_seeds,
      "final_weight_angle": {r: final(r, "weight") for r in angle_rules},
      "final_delta_angle": {r: final(r, "delta") for r in angle_rules},
      "max_final_weight_angle": {r: max(final(r, "weight").values()) for r in angle_rules},
      "min_final_weight_angle": {r: min(final(r, "weight").values()) for r in angle_rules},
      "max_final_delta_angle": {r: max(final(r, "delta").values()) for r in angle_rules},
      "min_final_delta_angle": {r: min(final(r, "delta").values()) for r in angle_rules},
  }
  record = {
      "experiment": NAME,
      "paper": "Akrout et al. 2019, Fig. 4 (angles) and Table 1 (errors)",
      "setup": setup,
      "history": histories,
      "summary": summary,
  }
  return common.save(out, NAME, fig, record)


if __name__ == "__main__":
  common.main(NAME, run)
