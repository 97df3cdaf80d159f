"""Train-step time of every rule against backprop, side by side in one run.

    python benchmarks/step_time.py --out runs/step_time            # the full table
    python benchmarks/step_time.py --out /tmp/step_time --quick    # a smoke run, < 60 s
    python benchmarks/step_time.py --out /tmp/step_time --quick --models mlp,resnet_tiny

For each model, every rule's full train step (forward, the rule's backward,
SGD with momentum and weight decay, and for wm one mirror pass of a batch as
large as the training batch) is jitted with the state donated, as
`wtfree.train` runs it, and compiled before any timing starts. The rules are
then timed in rounds that visit them round-robin, each round starting one
rule later, so that whatever else the machine does falls on all of them
alike; each step is blocked on before the next starts. Each round gives one
time per step per rule (the mean over that round's steps) and one ratio to
bp's time in the same round: the tables report medians over rounds with the
interquartile range.

Two references share the rounds: ``forward`` (the bp model's forward pass in
training mode, batch statistics updated, no gradient) and ``mirror`` (wm's
mirror pass alone, `steps.between_steps_only`), to check that a mirror pass
costs no more than an extra forward pass. Two cheaper wm settings are timed
alongside the Akrout one: uniform mirror noise, and a mirror batch a quarter
of the training batch. XLA's own counts for each compiled step (flops, bytes
accessed, temporary buffers) go into the JSON beside the times.

When PyTorch is installed (``pip install -e '.[peers]'``), each model that
has a plain PyTorch twin (`torch_peers`: the MLPs, ResNet-18, ResNet-20)
is also trained in PyTorch in the same rounds, and every row carries its
ratio to that step.

ResNet-50 on 224x224 images runs only on a GPU, computing in bfloat16; its
rows give the share of the chip's dense bf16 peak that XLA's flop count over
the step time reaches (`BF16_PEAK`, or ``--peak-tflops``). Writes
``OUT/step_time.json`` and ``OUT/step_time.md``.
"""

import argparse
import dataclasses
import datetime
import functools
import json
import math
import os
import pathlib
import platform
import sys
import time
from typing import Any, Callable

from absl import logging
import jax
import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).parent))

import torch_peers  # noqa: E402
from wtfree import feedback  # noqa: E402
from wtfree import models  # noqa: E402
from wtfree import optim  # noqa: E402
from wtfree import sharding  # noqa: E402
from wtfree import steps  # noqa: E402

# Every ratio is taken against this rule's step.
BASELINE = "bp"
# Every registered rule, the baseline first.
RULES = (BASELINE, *(name for name in feedback.names() if name != BASELINE))
REFERENCES = ("forward", "mirror")
# Cheaper wm settings than the Akrout configs' (Gaussian noise, mirror batch
# = training batch), timed alongside: {name: (noise, mirror batch divisor)}.
WM_VARIANTS = {"wm_uniform": ("uniform", 1), "wm_mirror_batch_quarter": ("gaussian", 4)}
# dfa's broadcast maps (output size x tapped input size, summed over layers)
# above this many entries are not timed: ResNet-50 on 224x224 with 1000
# classes would need ~10^10, tens of GB and several times bp's flops.
DFA_MAX_MAP_ENTRIES = feedback.direct.LARGE_MAPS
# Dense (no sparsity) bf16 tensor-core peaks from the vendor's datasheets,
# FLOP/s, by the start of `jax.Device.device_kind`.
BF16_PEAK = {
    "NVIDIA H100 PCIe": 756e12,
    "NVIDIA H100 NVL": 835e12,
    "NVIDIA H100": 989e12,  # SXM5
    "NVIDIA H200": 989e12,
}


@dataclasses.dataclass(frozen=True)
class Bench:
  """One model at one input size and batch."""

  name: str
  model: str
  options: dict[str, Any]
  input_shape: tuple[int, ...]
  batch: int
  num_classes: int
  gpu_only: bool = False
  dtype: str = "float32"  # the computation dtype; params stay float32

  def model_options(self) -> dict[str, Any]:
    return self.options if self.dtype == "float32" else {**self.options, "dtype": self.dtype}

  def describe(self) -> str:
    shape = "x".join(map(str, self.input_shape))
    opts = ", ".join(f"{k}={v}" for k, v in self.model_options().items())
    return f"{self.model}({opts}) on {shape}, batch {self.batch}" if opts else f"{self.model} on {shape}, batch {self.batch}"


BENCHES = {
    "mlp": Bench("mlp", "mlp", {"widths": (1000,), "activation": "sigmoid"}, (784,), 128, 10),
    "resnet18": Bench("resnet18", "resnet18", {}, (32, 32, 3), 64, 10),
    "resnet20": Bench("resnet20", "resnet20", {}, (32, 32, 3), 128, 10),
    "resnet50": Bench("resnet50", "resnet50", {}, (224, 224, 3), 128, 1000, gpu_only=True, dtype="bfloat16"),
}
# Batches divide over the 8 devices of the tests. --quick alone runs only the
# MLP: each step compiles in about a second, a resnet_tiny step in 3-15 s.
QUICK_BENCHES = {
    "mlp": Bench("mlp_tiny", "mlp", {"widths": (32,), "activation": "sigmoid"}, (64,), 16, 10),
    "resnet_tiny": Bench("resnet_tiny", "resnet_tiny", {}, (8, 8, 3), 16, 10),
}
QUICK_DEFAULT = ("mlp",)


@dataclasses.dataclass(frozen=True)
class Timing:
  """How long to time: rounds, and the steps of each round."""

  rounds: int
  round_seconds: float  # a round of one rule lasts about this long...
  min_steps: int  # ...but takes at least this many steps
  max_steps: int  # ...and at most this many
  warmup: int


# Short rounds, many of them: a burst of load from elsewhere then hits one
# round of a few rules, and the medians drop it.
FULL = Timing(rounds=15, round_seconds=0.5, min_steps=1, max_steps=200, warmup=2)
QUICK = Timing(rounds=2, round_seconds=0.02, min_steps=2, max_steps=5, warmup=1)


# The optimizer of the ResNet-20 CIFAR recipe: SGD, momentum 0.9, weight decay 1e-4, lr 0.1.
RECIPE = {"learning_rate": 0.1, "momentum": 0.9, "weight_decay": 1e-4}


def _decay_rate(step):
  """How fast the recipe's weight decay shrinks a weight with no gradient (kp's decay in wtfree's loop)."""
  del step
  return RECIPE["learning_rate"] * RECIPE["weight_decay"] / (1.0 - RECIPE["momentum"])


class Timed:
  """A compiled function with its arguments, called one blocked step at a time."""

  def __init__(self, name: str, fn: Callable, state: Any, batch: Any, donates: bool):
    self.name = name
    self.framework = "wtfree"
    self.donates = donates
    self.batch = batch
    start = time.perf_counter()
    args = (state,) if batch is None else (state, batch)
    self.compiled = fn.lower(*args).compile()
    self.compile_s = time.perf_counter() - start
    self.state = state
    self.costs = _costs(self.compiled)

  def step(self) -> None:
    args = (self.state,) if self.batch is None else (self.state, self.batch)
    out = self.compiled(*args)
    if self.donates:
      # The step returns (state, metrics) or the state; the old state is gone.
      self.state = out[0] if isinstance(out, tuple) else out
    jax.block_until_ready(out)


def time_steps(item, n: int) -> float:
  """Seconds per step of ``item`` (a `Timed` or a `torch_peers.Step`) over ``n`` steps, each finished."""
  start = time.perf_counter()
  for _ in range(n):
    item.step()
  return (time.perf_counter() - start) / n


def _costs(compiled) -> dict[str, float]:
  costs: dict[str, float] = {}
  try:
    analysis = compiled.cost_analysis()
    if isinstance(analysis, (list, tuple)):
      analysis = analysis[0] if analysis else {}
    for key, name in (("flops", "flops"), ("bytes accessed", "bytes_accessed"), ("transcendentals", "transcendentals")):
      if analysis and key in analysis:
        costs[name] = float(analysis[key])
  except Exception as e:  # noqa: BLE001 - an analysis some backend lacks only costs a column
    logging.info("no cost analysis: %s", e)
  try:
    memory = compiled.memory_analysis()
    if memory is not None:
      costs["temp_bytes"] = float(memory.temp_size_in_bytes)
  except Exception as e:  # noqa: BLE001
    logging.info("no memory analysis: %s", e)
  return costs


def dfa_map_entries(bench: Bench) -> int:
  """Entries of all of dfa's broadcast maps for ``bench``'s model, from shapes alone."""
  model = models.get_model(bench.model, num_classes=bench.num_classes, rule="dfa", **bench.model_options())
  x = jax.ShapeDtypeStruct((1, *bench.input_shape), np.float32)
  def channel(x):
    variables = model.init(jax.random.key(0), x, train=False)
    return model.apply(variables, x, train=False, mutable=[feedback.STEP])[1]

  return feedback.direct.map_entries(jax.eval_shape(channel, x).get(feedback.STEP, {}), (1, bench.num_classes))


def build(bench: Bench, rules: tuple[str, ...], mesh, seed: int = 0, peers: bool = True,
          references: bool = True) -> list:
  """Compiles each rule's train step for ``bench``, and with ``references`` the wm variants and references.

  With ``peers``, and PyTorch installed, the bench's PyTorch twin
  (`torch_peers.Step`) joins them as ``pytorch``.
  """
  rng = np.random.default_rng(seed)
  local = {
      "image": rng.normal(size=(bench.batch, *bench.input_shape)).astype(np.float32),
      "label": (np.arange(bench.batch) % bench.num_classes).astype(np.int32),
  }
  batch = sharding.global_batch(local, mesh)
  tx = optim.chain(**RECIPE)
  items = []
  variants = [(rule, feedback.get_rule(rule), bench.batch) for rule in rules]
  if "wm" in rules and references:
    for name, (noise, divisor) in WM_VARIANTS.items():
      if bench.batch % (divisor * mesh.size) == 0:
        variants.append((name, feedback.get_rule("wm", noise=noise), bench.batch // divisor))
  for name, rule, mirror_batch in variants:
    model = models.get_model(bench.model, num_classes=bench.num_classes, rule=rule, **bench.model_options())
    learner = steps.make_learner(model, bench.input_shape, mirror_batch_size=mirror_batch, mesh=mesh)
    state = steps.create_train_state(model, tx, bench.input_shape, seed, mesh, learner)
    step = steps.jit(
        functools.partial(steps.train_step, model=model, tx=tx, task="classification", learner=learner,
                          weight_decay_rate=_decay_rate),
        donate_argnums=0,
    )
    items.append(Timed(name, step, state, batch, donates=True))
    logging.info("%s %s compiled in %.1f s", bench.name, name, items[-1].compile_s)
    if rule.takes("mirror_batch_size") and name in rules and references:
      mirror_step = steps.jit(functools.partial(steps.between_steps_only, learner=learner), donate_argnums=0)
      wm_state = steps.create_train_state(model, tx, bench.input_shape, seed, mesh, learner)
      items.append(Timed("mirror", mirror_step, wm_state, None, donates=True))
  if references:
    items.append(_forward(bench, mesh, seed, batch))
  if peers and torch_peers.available() and torch_peers.has_twin(bench):
    items.append(torch_peers.Step(bench, seed))
  return items


def _forward(bench: Bench, mesh, seed: int, batch) -> Timed:
  """The bp model's forward pass in training mode, batch statistics updated."""
  model = models.get_model(bench.model, num_classes=bench.num_classes, rule="bp", **bench.model_options())
  state = steps.create_train_state(model, optim.chain(**RECIPE), bench.input_shape, seed, mesh)

  def forward(variables, batch):
    return model.apply(variables, batch["image"], train=True, mutable=["batch_stats"])

  return Timed("forward", steps.jit(forward), state.variables(), batch, donates=False)


# The rule each reference row belongs to; the wm variants belong to wm.
_REFERENCE_RULES = {"forward": BASELINE, "mirror": "wm", "pytorch": BASELINE}


def quantiles(values: list[float]) -> tuple[float, float, float]:
  """The 25th, 50th and 75th percentiles of ``values``."""
  q25, q50, q75 = np.percentile(values, [25, 50, 75])
  return float(q25), float(q50), float(q75)


def measure(items: list, timing: Timing) -> dict[str, dict]:
  """Seconds per step of each item in each round, the items interleaved; and each item's steps per round.

  An item has a ``name`` (any hashable key) and a ``step()`` that finishes one step.
  """
  steps = {}
  for item in items:
    for _ in range(timing.warmup):
      item.step()
    once = time_steps(item, 1)
    steps[item.name] = int(min(timing.max_steps, max(timing.min_steps, math.ceil(timing.round_seconds / once))))
  times: dict[str, list[float]] = {item.name: [] for item in items}
  for r in range(timing.rounds):
    shift = r % len(items)
    for item in items[shift:] + items[:shift]:
      times[item.name].append(time_steps(item, steps[item.name]))
  return {"seconds": times, "steps": steps}


def bf16_peak(device_kind: str) -> float | None:
  """The dense bf16 peak of a device in FLOP/s, or None if `BF16_PEAK` lacks it."""
  # Longest prefix first: "NVIDIA H100 PCIe" before "NVIDIA H100".
  for prefix in sorted(BF16_PEAK, key=len, reverse=True):
    if device_kind.startswith(prefix):
      return BF16_PEAK[prefix]
  return None


def summarise(bench: Bench, items: list[Timed], measured: dict, peak: float | None = None) -> list[dict]:
  """One row per item: medians and spreads in ms, ratios to bp (and mirror to forward).

  With a ``peak`` (FLOP/s) and a bfloat16 bench, rows also carry
  ``bf16_peak_share``: XLA's flops of the step over its median time, over the peak.
  """
  seconds, steps = measured["seconds"], measured["steps"]
  rows = []
  for item in items:
    ms = [1e3 * s for s in seconds[item.name]]
    q25, median, q75 = quantiles(ms)
    row = {
        "model": bench.name,
        "kind": "train_step" if item.name in (*RULES, *WM_VARIANTS) or item.framework != "wtfree" else item.name,
        "rule": item.name if item.name in RULES else _REFERENCE_RULES.get(item.name, "wm"),
        "framework": item.framework,
        "mirror_batch": bench.batch // WM_VARIANTS.get(item.name, ("", 1))[1],
        "mirror_noise": WM_VARIANTS.get(item.name, ("gaussian",))[0],
        "setup": bench.describe(),
        "batch": bench.batch,
        "ms_per_step": median,
        "ms_q25": q25,
        "ms_q75": q75,
        "ms_min": min(ms),
        "ms_max": max(ms),
        "examples_per_s": bench.batch / (median / 1e3),
        "rounds": len(ms),
        "steps_per_round": steps[item.name],
        "compile_s": item.compile_s,
        "dtype": bench.dtype,
        **item.costs,
    }
    if peak and bench.dtype == "bfloat16" and "flops" in row:
      row["bf16_peak_share"] = row["flops"] / (median / 1e3) / peak
    for base in (BASELINE, "forward", "pytorch"):
      if base in seconds and (base == "forward") == (row["kind"] != "train_step"):
        ratios = [a / b for a, b in zip(seconds[item.name], seconds[base])]
        r25, r50, r75 = quantiles(ratios)
        row.update({f"ratio_to_{base}": r50, f"ratio_to_{base}_q25": r25, f"ratio_to_{base}_q75": r75})
    rows.append(row)
  return rows


def _cpu_name() -> str:
  try:
    for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
      if line.startswith("model name"):
        return line.split(":", 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or platform.machine()


def environment(quick: bool, timing: Timing) -> dict[str, Any]:
  """What the numbers were measured on."""
  import flax  # pylint: disable=g-import-not-at-top

  device = jax.devices()[0]
  return {
      "backend": jax.default_backend(),
      "device": getattr(device, "device_kind", str(device)),
      "device_count": jax.device_count(),
      "cpu": _cpu_name(),
      "cpu_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
      "jax": jax.__version__,
      "flax": flax.__version__,
      "python": platform.python_version(),
      "quick": quick,
      "rounds": timing.rounds,
      "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
      "optimizer": "sgd, momentum 0.9, weight decay 1e-4",
      "pytorch": torch_peers.version() if torch_peers.available() else None,
      "rule_options": (
          "each rule's defaults (docs/rules.md); wm's mirror batch is the training batch, and its variants take "
          "uniform noise, or a mirror batch of a quarter of the batch"
      ),
  }


def _fmt_ratio(row: dict, base: str) -> str:
  if f"ratio_to_{base}" not in row:
    return ""
  return f"{row[f'ratio_to_{base}']:.2f} [{row[f'ratio_to_{base}_q25']:.2f}, {row[f'ratio_to_{base}_q75']:.2f}]"


def markdown(env: dict, rows: list[dict]) -> str:
  """The tables: one per model, rules then references."""
  lines = [
      f"# Train-step time, {env['backend']}: {env['cpu'] if env['backend'] == 'cpu' else env['device']}",
      "",
      f"{env['cpu']}, {env['cpu_cores']} cores, {env['device_count']} device(s); jax {env['jax']}, "
      f"flax {env['flax']}; {env['rounds']} interleaved rounds; {env['date']}.",
      f"Optimizer {env['optimizer']}; rule options {env['rule_options']}.",
      "Medians over rounds, [interquartile range]; ratios are paired per round. "
      "*mirror* is wm's mirror pass alone, its ratio to *forward*, the bp forward pass in training mode.",
      *([f"*PyTorch* is the same model, batch and optimizer in plain PyTorch {env['pytorch']}, "
         "timed in the same rounds; *x PyTorch* is a step's time over its time."] if env.get("pytorch") else []),
      *(f"Skipped: {note}." for note in env.get("skipped", ())),
      "",
  ]
  for model in dict.fromkeys(r["model"] for r in rows):
    mrows = [r for r in rows if r["model"] == model]
    peak = any("bf16_peak_share" in r for r in mrows)
    peer = any("ratio_to_pytorch" in r for r in mrows)
    lines += [
        f"## {model}: {mrows[0]['setup']}",
        "",
        "| rule | ms/step | [IQR] | examples/s | x bp [IQR] |" + (" x PyTorch [IQR] |" if peer else "")
        + " GFLOP | GB accessed | compile s |" + (" % of bf16 peak |" if peak else ""),
        "|---|---:|---:|---:|---:|" + ("---:|" if peer else "") + "---:|---:|---:|" + ("---:|" if peak else ""),
    ]
    for r in mrows:
      name = r["rule"] if r["kind"] == "train_step" else f"*{r['kind']}* ({r['rule']})"
      if r["framework"] != "wtfree":
        name = "*PyTorch*, plain torch.nn (bp)"
      if r["mirror_noise"] != "gaussian":
        name += f", {r['mirror_noise']} noise"
      if r["mirror_batch"] != r["batch"]:
        name += f", mirror batch {r['mirror_batch']}"
      ratio = _fmt_ratio(r, "bp") or (f"{_fmt_ratio(r, 'forward')} x fwd" if r["kind"] == "mirror" else "")
      to_peer = f" {_fmt_ratio(r, 'pytorch')} |" if peer else ""
      gflop = f"{r['flops'] / 1e9:.2f}" if "flops" in r else ""
      gbytes = f"{r['bytes_accessed'] / 1e9:.2f}" if "bytes_accessed" in r else ""
      share = f" {100 * r['bf16_peak_share']:.1f} |" if "bf16_peak_share" in r else (" |" if peak else "")
      lines.append(
          f"| {name} | {r['ms_per_step']:.2f} | [{r['ms_q25']:.2f}, {r['ms_q75']:.2f}] | "
          f"{r['examples_per_s']:.0f} | {ratio} |{to_peer} {gflop} | {gbytes} | {r['compile_s']:.1f} |{share}"
      )
    lines.append("")
  return "\n".join(lines)


def run(
    out: str,
    *,
    quick: bool = False,
    model_names: list[str] | None = None,
    repeats: int | None = None,
    dtype: str | None = None,
    peak_tflops: float | None = None,
) -> dict:
  """Measures every rule on each model; writes ``out/step_time.{json,md}``.

  Args:
    out: the output directory (created).
    quick: tiny models, 2 rounds of a few steps: a smoke run.
    model_names: keys of `BENCHES` (or `QUICK_BENCHES` with ``quick``); None
      takes all (ResNet-50 only on a GPU), or with ``quick`` the tiny MLP.
    repeats: timing rounds; None keeps the default (15, or 2 with ``quick``).
    dtype: the computation dtype of every model ('float32' or 'bfloat16');
      None keeps each bench's (bfloat16 for ResNet-50, else float32).
    peak_tflops: the device's dense bf16 peak in TFLOP/s; None looks it up
      in `BF16_PEAK` (no peak share where it is missing).

  Returns:
    The record written to ``step_time.json``.
  """
  table = QUICK_BENCHES if quick else BENCHES
  timing = QUICK if quick else FULL
  if repeats is not None:
    if repeats < 1:
      raise ValueError(f"--repeats {repeats} must be at least 1")
    timing = dataclasses.replace(timing, rounds=repeats)
  if model_names is None and quick:
    model_names = list(QUICK_DEFAULT)
  elif model_names is None:
    model_names = [n for n, b in table.items() if not b.gpu_only or jax.default_backend() == "gpu"]
  unknown = [n for n in model_names if n not in table]
  if unknown:
    raise ValueError(f"models {unknown} are not among {', '.join(table)}{' (--quick)' if quick else ''}")
  mesh = sharding.make_mesh()
  env = environment(quick, timing)
  peak = peak_tflops * 1e12 if peak_tflops else bf16_peak(env["device"])
  env["bf16_peak_tflops"] = peak / 1e12 if peak else None
  rows = []
  for name in model_names:
    bench = table[name] if dtype is None else dataclasses.replace(table[name], dtype=dtype)
    if bench.gpu_only and jax.default_backend() != "gpu":
      logging.warning("skipping %s: it runs only on a GPU", name)
      continue
    rules = RULES
    if (entries := dfa_map_entries(bench)) > DFA_MAX_MAP_ENTRIES:
      note = f"{bench.name}: dfa not timed, its broadcast maps would hold {entries:.1e} entries"
      logging.warning(note)
      env.setdefault("skipped", []).append(note)
      rules = tuple(r for r in RULES if r != "dfa")
    items = build(bench, rules, mesh)
    measured = measure(items, timing)
    rows += summarise(bench, items, measured, peak)
    del items
  record = {"environment": env, "rules": list(RULES), "rows": rows}
  path = pathlib.Path(out)
  path.mkdir(parents=True, exist_ok=True)
  (path / "step_time.json").write_text(json.dumps(record, indent=2))
  (path / "step_time.md").write_text(markdown(env, rows))
  return record


def main(argv: list[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--out", required=True, help="directory for step_time.json and step_time.md")
  parser.add_argument("--quick", action="store_true", help="a tiny MLP (or --models mlp,resnet_tiny), 2 rounds: a smoke run")
  parser.add_argument("--models", default=None, help=f"comma-separated, of {', '.join(BENCHES)}")
  parser.add_argument("--repeats", type=int, default=None, help="timing rounds (default 15, --quick 2)")
  parser.add_argument("--dtype", choices=("float32", "bfloat16"), default=None,
                      help="computation dtype of every model (default: bfloat16 for ResNet-50, else float32)")
  parser.add_argument("--peak-tflops", type=float, default=None,
                      help="the device's dense bf16 peak, for devices BF16_PEAK does not list")
  args = parser.parse_args(argv)
  logging.set_verbosity(logging.INFO)
  names = args.models.split(",") if args.models else None
  record = run(args.out, quick=args.quick, model_names=names, repeats=args.repeats, dtype=args.dtype,
               peak_tflops=args.peak_tflops)
  sys.stdout.write(markdown(record["environment"], record["rows"]) + "\n")


if __name__ == "__main__":
  main()
