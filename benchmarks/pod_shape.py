"""Akrout et al.'s pod setup checked at its real shape on this machine's CPUs, and projected on paper.

    python benchmarks/pod_shape.py --out runs/pod_shape        # compile only, 32x32 and 224x224
    python benchmarks/pod_shape.py --out runs/pod_shape_run --configs resnet50_bp --image-size 16 \
        --steps 2 --no-full-size                                # steps run as well

The real configs/resnet50_wm.py and configs/resnet50_bp.py at their global
batch of 2048 over 32 simulated CPU devices (64 examples each, BatchNorm
grouped by 64), read through `wtfree.data`'s ImageNet pipeline from TFDS's
mock ImageNet, and built with the functions `wtfree.train`'s loop builds its
step from: `steps.create_train_state`, `steps.train_step` under
`dispatch.guarded`, `steps.between_steps_only`, `steps.jit`.

On small images the train step and wm's mirror-only step are compiled, once
with BatchNorm grouped as the config says and once over the whole batch,
and read from their HLO (`wtfree.hlo`): how many programs; the batch each
device gets; the batch of the image-shaped arrays (the mirror's first-layer
noise among them, which shows the mirror pass inside the train step); and
every collective, element by element, by what it carries (`attribute`):
gradients, BatchNorm statistics the forward pass waits for, grouped
BatchNorm's running averages, or metrics. With ``--steps`` the steps also
run (32 copies of the state and the steps' buffers must then fit in this
machine's memory).

At 224x224 each step is compiled, not run, on abstract arguments: XLA's
per-device memory (`memory_analysis`), flops and bytes (`cost_analysis`, of
the float32 program XLA's CPU backend compiles), and from them a roofline
bound of the step time and of the whole run on a TPU v2-32 and on H200s
(`CHIPS`): ``max(flops / peak, bytes / bandwidth)``, a lower bound, not a
measurement. Writes ``OUT/pod_shape.json`` and ``OUT/pod_shape.md``.
"""

if __name__ == "__main__":
  import os

  # Before jax is imported: 32 CPU devices, whatever the environment asked for.
  _flags = [f for f in os.environ.get("XLA_FLAGS", "").split()
            if not f.startswith("--xla_force_host_platform_device_count")]
  os.environ["XLA_FLAGS"] = " ".join([*_flags, "--xla_force_host_platform_device_count=32"])
  os.environ.setdefault("JAX_PLATFORMS", "cpu")

import argparse
import dataclasses
import datetime
import json
import pathlib
import re
import sys
import time
from typing import Any, Callable

import jax
import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).parents[1]))

from wtfree import data  # noqa: E402
from wtfree import dispatch  # noqa: E402
from wtfree import hlo  # noqa: E402
from wtfree import models  # noqa: E402
from wtfree.models import batch_norm  # noqa: E402
from wtfree import optim  # noqa: E402
from wtfree import settings  # noqa: E402
from wtfree import sharding  # noqa: E402
from wtfree import steps  # noqa: E402
from wtfree import validate  # noqa: E402

DEVICES = 32
SMALL_IMAGE = 32
IMAGENET_TRAIN = 1_281_167  # ImageNet-1k's training images


@dataclasses.dataclass(frozen=True)
class Chip:
  """One worker's accelerator, by its published dense bf16 peak and memory bandwidth."""

  name: str
  peak_flops: float  # FLOP/s
  bandwidth: float  # bytes/s
  memory: float  # bytes
  source: str


# A TPU v2 chip has two cores with 8 GiB of HBM each; a v2-32 slice is 16 chips, 32 cores: Akrout's
# 32 workers are its cores, one per 64 examples.
CHIPS = (
    Chip("TPU v2 core (v2-32: 32 cores)", 45e12 / 2, 600e9 / 2, 8 * 2**30,
         "a v2 chip: 45 TFLOP/s bf16 (180 per 4-chip board), 600 GB/s HBM, 16 GiB, over its 2 TensorCores"),
    Chip("H200 (one per 64 examples)", 989e12, 4.8e12, 141e9,
         "NVIDIA H200 datasheet: 989 TFLOP/s dense bf16 (SXM), 4.8 TB/s, 141 GB"),
)


@dataclasses.dataclass
class Built:
  """A config's step functions as the loop compiles them, with the arguments they take."""

  config: Any
  mesh: Any
  ds: Any
  train: Callable  # jitted (state, guard, batch, hparams) -> (state, guard, metrics)
  mirror: Callable | None  # jitted (state, hparams) -> state, for a rule that mirrors
  new_state: Callable[..., Any]  # (shapes_only=False) -> the state, allocated on the mesh
  state: Any  # abstract, with shardings
  guard: Any
  batch: Any
  hparams: dict  # a sweep's values, as the loop passes them for one seed ({} without a sweep)
  steps_per_epoch: int
  mirror_steps: int


def config_for(name: str, image_size: int, **overrides):
  """``configs/<name>.py``'s config on images of ``image_size``, read by the pipeline from mock data."""
  module = __import__(f"configs.{name}", fromlist=["get_config"])
  config = module.get_config()
  config.image_size = image_size
  config.data_workers = 0
  config.data_dir = "/tmp/wtfree-mock"
  for key, value in overrides.items():
    target = config
    *parents, leaf = key.split(".")
    for parent in parents:
      target = target[parent]
    target[leaf] = value
  return config


def _abstract(tree, place):
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=place), tree)


def build(config, mesh=None, batch_keys: dict | None = None) -> Built:
  """The train step (and mirror-only step) ``wtfree.train`` compiles for ``config``, one seed.

  Args:
    config: a run's config; one seed, no sweep.
    mesh: the devices (default: all, on the data axis).
    batch_keys: ``{key: (per-example shape, dtype)}`` of a raw training batch; default: read one
      from the data set.

  Returns:
    The jitted steps and abstract arguments to lower them with; nothing is allocated.
  """
  run = validate.check_config(config)
  if run.replicas.count != 1:
    raise ValueError(f"pod_shape builds one seed's step, not {run.replicas.count} replicas: set num_seeds=1")
  mesh = mesh or sharding.make_mesh()
  sharding.check_batch_size(config.batch_size, mesh)
  values = run.replicas.hparams
  hparams = {k: v[0] for k, v in values.items()}
  ds = data.get_dataset(run.data)
  model = models.create(run.model, ds.num_classes, ds.input_shape, ds.input_dtype)
  length = run.length(ds.num_train)
  steps_per_epoch = length.steps_per_epoch
  learner = steps.make_learner(model, ds.input_shape, mirror_batch_size=run.loop.mirror_batch_size,
                               passes=run.loop.mirror_passes, mesh=mesh, input_dtype=ds.input_dtype)
  if learner.may_freeze:
    raise ValueError(f"rule {config.rule!r} freezes layers by a first batch's gradients: not built here")
  make_tx = lambda hp: optim.make(run.optimizer, steps_per_epoch, None, hp)
  skip = bool(run.loop.skip_nonfinite)

  # `wtfree.train._programs`'s composition for one seed: what the loop compiles is what is read here.
  def replica_step(state, batch, hp):
    replica_model, replica_learner = steps.specialise(model, learner, hp)
    return steps.train_step(state, batch, model=replica_model, tx=make_tx(hp), task=ds.task, learner=replica_learner,
                            weight_decay_rate=optim.weight_decay_rate(run.optimizer, steps_per_epoch, hp),
                            skip_nonfinite=skip)

  guarded_step = dispatch.guarded(replica_step, skip_nonfinite=skip)
  train = steps.jit(lambda state, guard, batch, hp: guarded_step(state, guard, ds.prepare(batch), hp),
                    donate_argnums=(0, 1))
  mirror = None
  if learner.changes_between_steps:
    mirror = steps.jit(lambda state, hp: steps.between_steps_only(state, learner=steps.specialise(model, learner, hp)[1]),
                       donate_argnums=0)

  def new_state(shapes_only=False):
    return steps.create_train_state(model, make_tx(hparams), ds.input_shape, config.seed, mesh, learner,
                                    replica_seeds=list(run.replicas.seeds), hparams=values, shapes_only=shapes_only)

  place = sharding.replicated(mesh)
  state = new_state(shapes_only=True)
  guard = _abstract(jax.eval_shape(dispatch.Guard.fresh, state.params), place)
  if batch_keys is None:
    batch_keys = {k: (np.shape(v)[1:], np.asarray(v).dtype) for k, v in next(ds.train_batches(start_step=0)).items()}
  batch_place = sharding.batch_sharding(mesh)
  batch = {k: jax.ShapeDtypeStruct((config.batch_size, *shape), dtype, sharding=batch_place)
           for k, (shape, dtype) in batch_keys.items()}
  if "image" in batch:
    batch["image"] = jax.ShapeDtypeStruct((config.batch_size, *ds.input_shape), batch["image"].dtype,
                                          sharding=batch_place)
  return Built(config, mesh, ds, train, mirror, new_state, state, guard, batch, hparams,
               steps_per_epoch, length.mirror_steps)


def compile_steps(built: Built) -> dict[str, Any]:
  """``{'train': compiled, 'mirror': compiled or None}``, from abstract arguments (nothing allocated)."""
  compiled = {"train": built.train.lower(built.state, built.guard, built.batch, built.hparams).compile()}
  compiled["mirror"] = None if built.mirror is None else built.mirror.lower(built.state, built.hparams).compile()
  return compiled


def _count(tree) -> int:
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))


# What each all-reduced element is, from the JAX operation it came from (`hlo.element_names`).
PARTS = ("gradients", "batch_norm_forward", "running_averages", "other")


def _part(name: str, size: int) -> str:
  if size == 1:  # The loss and other metrics' sums.
    return "other"
  if batch_norm.RUNNING_AVERAGES in name:
    return "running_averages"
  if hlo.in_forward_pass(name):
    return "batch_norm_forward"
  return "gradients" if "transpose(" in name else "other"


def attribute(ops: list[hlo.Collective]) -> dict[str, Any]:
  """The step's collectives, element by element, by what they carry; ``{part: {'elements', 'bytes', 'ops'}}``.

  ``gradients``: the backward pass's sums over the batch (the parameters'
  gradients; under whole-batch BatchNorm, its statistics' backward too).
  ``batch_norm_forward``: what the forward pass waits for, BatchNorm
  statistics over more than one device's examples. ``running_averages``:
  grouped BatchNorm's one reduction of its groups' statistics, which no
  output waits for. ``other``: the rest (metrics, the loss).
  """
  out = {part: {"elements": 0, "bytes": 0, "ops": 0} for part in PARTS}
  for op in ops:
    seen = set()
    for name, size in zip(hlo.element_names(op), op.sizes):
      part = _part(name, size)
      out[part]["elements"] += size
      out[part]["bytes"] += size * op.bytes // max(op.elements, 1)
      seen.add(part)
    for part in seen:
      out[part]["ops"] += 1
  return out


def noise_batches(hlo_text: str, built: Built) -> list[int]:
  """The leading sizes of the image-shaped float arrays of ``hlo_text``: the first layer's batch, or mirror noise.

  In a mirror-only step the only such arrays are the first layer's mirror
  noise: its size is the share of the mirror batch each device draws.
  """
  h, w, c = built.ds.input_shape
  return sorted({int(n) for n in re.findall(rf"f32\[(\d+),{h},{w},{c}\]", hlo_text)})


def _memory(compiled) -> dict[str, int] | None:
  try:
    m = compiled.memory_analysis()
  except Exception:  # noqa: BLE001 - a backend without the analysis only loses these fields
    return None
  fields = ("argument_size_in_bytes", "output_size_in_bytes", "temp_size_in_bytes", "alias_size_in_bytes",
            "generated_code_size_in_bytes")
  out = {f: int(getattr(m, f)) for f in fields}
  out["total_bytes"] = out["argument_size_in_bytes"] + out["output_size_in_bytes"] + out["temp_size_in_bytes"] - \
      out["alias_size_in_bytes"]
  return out


def _cost(compiled) -> dict[str, float]:
  cost = compiled.cost_analysis()
  if isinstance(cost, (list, tuple)):
    cost = cost[0]
  return {"flops": float(cost.get("flops", 0.0)), "bytes_accessed": float(cost.get("bytes accessed", 0.0))}


def describe(compiled, built: Built) -> dict[str, Any]:
  """Programs, the per-device batch, collectives (by kind, and attributed), memory and cost of one step."""
  text = compiled.as_text()
  ops = hlo.collectives(text)
  record = {
      "programs": hlo.programs(text),
      "collectives": hlo.summary(ops),
      "largest_collectives": [dataclasses.asdict(op) for op in sorted(ops, key=lambda o: -o.bytes)[:5]],
      "group_sizes": sorted({op.group_size for op in ops}),
      "memory": _memory(compiled),
      "cost": _cost(compiled),
  }
  if "image" in built.batch:
    image = built.batch["image"]
    record["per_device_batch"] = int(image.sharding.shard_shape(image.shape)[0])
  record["attributed"] = attribute(ops)
  record["image_batches"] = noise_batches(text, built)
  return record


def run_steps(built: Built, compiled: dict, train_steps: int) -> dict[str, Any]:
  """Runs wm's mirror-only step once and ``train_steps`` train steps on the pipeline's batches.

  Returns the seconds each took, the loss, and whether the train step moved B.
  """
  state = built.new_state()
  guard = jax.device_put(dispatch.Guard.fresh(state.params), sharding.replicated(built.mesh))
  hp = built.hparams
  out: dict[str, Any] = {}
  if compiled["mirror"] is not None:
    start = time.perf_counter()
    state = jax.block_until_ready(compiled["mirror"](state, hp))
    out["mirror_only_seconds"] = time.perf_counter() - start
  batches = built.ds.train_batches(start_step=built.mirror_steps)
  feedback = jax.device_get(state.feedback)
  seconds, losses = [], []
  for _ in range(train_steps):
    batch = sharding.global_batch(next(batches), built.mesh)
    start = time.perf_counter()
    state, guard, metrics = jax.block_until_ready(compiled["train"](state, guard, batch, hp))
    seconds.append(time.perf_counter() - start)
    losses.append(float(metrics["loss"]))
  moved = jax.tree.map(lambda a, b: bool(np.any(a != np.asarray(b))), feedback, jax.device_get(state.feedback))
  # None for a rule without feedback kernels.
  out.update(train_step_seconds=seconds, losses=losses, finite=bool(np.asarray(guard.ok)),
             feedback_moved=all(jax.tree.leaves(moved)) if jax.tree.leaves(moved) else None)
  return out


def projection(train: dict, mirror: dict | None, config) -> list[dict]:
  """Roofline bounds of one step and of the whole run on each of `CHIPS`, from XLA's per-device counts."""
  steps_per_epoch = IMAGENET_TRAIN // config.batch_size
  total = int(config.num_epochs * steps_per_epoch)
  mirror_only = optim.mirror_steps(settings.resolve(config).optimizer, steps_per_epoch)
  memory = (train.get("memory") or {}).get("total_bytes")
  rows = []
  for chip in CHIPS:
    flops_s = train["cost"]["flops"] / chip.peak_flops
    bytes_s = train["cost"]["bytes_accessed"] / chip.bandwidth
    mirror_s = max(mirror["cost"]["flops"] / chip.peak_flops, mirror["cost"]["bytes_accessed"] / chip.bandwidth) \
        if mirror else 0.0
    step = max(flops_s, bytes_s)
    rows.append({
        "chip": chip.name, "source": chip.source, "flops_seconds": flops_s, "bytes_seconds": bytes_s,
        "step_seconds": step, "mirror_only_step_seconds": mirror_s, "train_steps": total - mirror_only,
        "mirror_only_steps": mirror_only, "run_hours": ((total - mirror_only) * step + mirror_only * mirror_s) / 3600,
        "flops_run_hours": (total - mirror_only) * flops_s / 3600 + mirror_only * (
            mirror["cost"]["flops"] / chip.peak_flops if mirror else 0.0) / 3600,
        "fits": None if memory is None else memory <= chip.memory,
    })
  return rows


def _describe_all(compiled: dict, built: Built) -> dict[str, Any]:
  out = {"train": describe(compiled["train"], built)}
  if compiled["mirror"] is not None:
    out["mirror"] = describe(compiled["mirror"], built)
  return out


def check(config_name: str, devices: int = DEVICES, run: int = 0, full_size: bool = True,
          image_size: int = SMALL_IMAGE, overrides: dict | None = None) -> dict[str, Any]:
  """One config's record: its steps on small images described (and run), and at 224x224 described."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top  (the [tf] extra)

  mesh = sharding.make_mesh(jax.devices()[:devices])
  overrides = dict(overrides or {})
  record: dict[str, Any] = {"config": f"configs/{config_name}.py", "overrides": overrides}
  # USE_CODE: examples made from the builders' feature specs, no files needed.
  with tfds.testing.mock_data(num_examples=2048, policy=tfds.testing.MockPolicy.USE_CODE):
    for label, extra in (("grouped", {}), ("whole_batch_bn", {"model_options.batch_norm_group": 0})):
      built = build(config_for(config_name, image_size, **overrides, **extra), mesh)
      start = time.perf_counter()
      compiled = compile_steps(built)
      small = {"image_size": image_size, "compile_seconds": time.perf_counter() - start,
               **_describe_all(compiled, built)}
      if not extra:
        keys = {k: (v.shape[1:], v.dtype) for k, v in built.batch.items()}
        config = built.config
        record["setup"] = {
            "devices": devices, "batch_size": config.batch_size, "rule": config.rule,
            "batch_norm_group": config.model_options.get("batch_norm_group", 0),
            "mirror_batch_size": config.mirror_batch_size, "num_epochs": config.num_epochs,
            "params": _count(built.state.params), "feedback": _count(built.state.feedback),
            "batch_stats": _count(built.state.batch_stats),
        }
        if run:
          small["run"] = run_steps(built, compiled, run)
      record[label] = small
      del compiled, built
    if full_size:
      built = build(config_for(config_name, 224), mesh, batch_keys=keys)
      start = time.perf_counter()
      compiled = compile_steps(built)
      full = {"image_size": 224, "compile_seconds": time.perf_counter() - start, **_describe_all(compiled, built)}
      full["projection"] = projection(full["train"], full.get("mirror"), built.config)
      record["full_224"] = full
  return record


def _gb(n: float | None) -> str:
  return "" if n is None else f"{n / 1e9:.2f}"


def _collective_cell(summary: dict) -> str:
  if not summary:
    return "none"
  return "; ".join(f"{v['count']} {k} ({v['bytes'] / 1e6:.1f} MB)" for k, v in sorted(summary.items()))


def markdown(record: dict) -> str:
  """The tables: programs and collectives, memory and cost at 224x224, the projection and its assumptions."""
  env = record["environment"]
  lines = [
      f"Pod shape on {env['devices']} simulated CPU devices (jax {env['jax']}, {env['date']}): "
      f"`{env['command']}`.",
      "",
      "| config | image | BatchNorm | step | programs | per-device batch | image arrays' batch "
      "| collectives (MB per device) | gradients MB (ops) | BatchNorm forward MB (ops) | running averages MB (ops) "
      "| other MB (ops) |",
      "|---|---:|---|---|---:|---:|---|---|---:|---:|---:|---:|",
  ]
  for r in record["configs"]:
    group = f"groups of {r['setup']['batch_norm_group']}"
    for label, bn in (("grouped", group), ("whole_batch_bn", "whole batch"), ("full_224", group)):
      for step in ("train", "mirror"):
        if step not in r.get(label, {}):
          continue
        d, a = r[label][step], r[label][step]["attributed"]
        lines.append(
            f"| {r['config']} | {r[label]['image_size']} | {bn} | {step} | {d['programs']} | "
            f"{d.get('per_device_batch', '') if step == 'train' else ''} | "
            f"{', '.join(map(str, d['image_batches']))} | {_collective_cell(d['collectives'])} | "
            + " | ".join(f"{a[p]['bytes'] / 1e6:.2f} ({a[p]['ops']})" for p in PARTS) + " |"
        )
  runs = [(r, r["grouped"]["run"]) for r in record["configs"] if "run" in r.get("grouped", {})]
  if runs:
    lines += ["", "Steps run (CPU, simulated devices: the seconds say nothing of a pod):", ""]
  for r, run in runs:
    overrides = ", ".join(f"{k}={v}" for k, v in r["overrides"].items()) or "none"
    lines.append(
        f"- {r['config']} at {r['grouped']['image_size']}x{r['grouped']['image_size']} (overrides: {overrides}): "
        + (f"mirror-only step {run['mirror_only_seconds']:.1f} s; " if "mirror_only_seconds" in run else "")
        + f"train steps {', '.join(f'{s:.1f}' for s in run['train_step_seconds'])} s, loss "
        f"{', '.join(f'{x:.3f}' for x in run['losses'])}, finite {run['finite']}"
        + ("" if run["feedback_moved"] is None else f", B moved by the train step: {run['feedback_moved']}")
    )
  full = [r for r in record["configs"] if "full_224" in r]
  if not full:
    return "\n".join(lines) + "\n"
  lines += [
      "",
      "At 224x224, per device (64 examples): XLA's CPU counts of the float32 step "
      "(`memory_analysis`, `cost_analysis`):",
      "",
      "| config | step | memory GB (args + out + temp - aliased) | temp GB | GFLOP | GB accessed |",
      "|---|---|---:|---:|---:|---:|",
  ]
  for r in full:
    for step in ("train", "mirror"):
      if step in r["full_224"]:
        d = r["full_224"][step]
        m = d["memory"] or {}
        lines.append(f"| {r['config']} | {step} | {_gb(m.get('total_bytes'))} | {_gb(m.get('temp_size_in_bytes'))} | "
                     f"{d['cost']['flops'] / 1e9:.0f} | {d['cost']['bytes_accessed'] / 1e9:.1f} |")
  lines += [
      "",
      "Roofline lower bound per worker of 64 examples, max(flops / peak, bytes / bandwidth) of those counts "
      "(a bound, not a measurement; communication left out):",
      "",
      "| config | chip | flops bound ms | bytes bound ms | step bound ms | run hours (flops bound) | steps "
      "| fits in memory |",
      "|---|---|---:|---:|---:|---:|---|---|",
  ]
  for r in full:
    for p in r["full_224"]["projection"]:
      lines.append(
          f"| {r['config']} | {p['chip']} | {1e3 * p['flops_seconds']:.1f} | {1e3 * p['bytes_seconds']:.1f} | "
          f"{1e3 * p['step_seconds']:.1f} | {p['run_hours']:.2f} ({p['flops_run_hours']:.2f}) | "
          f"{p['train_steps']:,} + {p['mirror_only_steps']:,} mirror-only | {p['fits']} |"
      )
  if record.get("wm_over_bp"):
    lines += ["", "wm over bp per step at 224x224: " + ", ".join(
        f"{k} {v:.2f}x" for k, v in record["wm_over_bp"].items()) + "."]
  lines += ["", "Chips: " + "; ".join(f"{c.name}: {c.source}" for c in CHIPS) + "."]
  return "\n".join(lines) + "\n"


def run(out: str, configs: tuple[str, ...] = ("resnet50_wm", "resnet50_bp"), devices: int = DEVICES,
        train_steps: int = 0, full_size: bool = True, image_size: int = SMALL_IMAGE,
        overrides: dict | None = None, command: str = "") -> dict:
  """Checks every config; writes ``out/pod_shape.{json,md}``."""
  if jax.device_count() < devices:
    raise ValueError(f"{jax.device_count()} devices, not {devices}: run this file as a script, which sets "
                     f"XLA_FLAGS=--xla_force_host_platform_device_count={devices} before jax starts")
  record = {
      "environment": {"devices": devices, "jax": jax.__version__, "backend": jax.default_backend(),
                      "date": datetime.date.today().isoformat(), "command": command},
      "configs": [check(name, devices, train_steps, full_size, image_size, overrides) for name in configs],
  }
  by_rule = {r["setup"]["rule"]: r for r in record["configs"] if "full_224" in r}
  if "wm" in by_rule and "bp" in by_rule:
    wm, bp = by_rule["wm"]["full_224"], by_rule["bp"]["full_224"]
    record["wm_over_bp"] = {
        "flops": wm["train"]["cost"]["flops"] / bp["train"]["cost"]["flops"],
        "bytes accessed": wm["train"]["cost"]["bytes_accessed"] / bp["train"]["cost"]["bytes_accessed"],
    }
  path = pathlib.Path(out)
  path.mkdir(parents=True, exist_ok=True)
  (path / "pod_shape.json").write_text(json.dumps(record, indent=2, default=str))
  (path / "pod_shape.md").write_text(markdown(record))
  return record


def _override(text: str) -> tuple[str, Any]:
  key, _, value = text.partition("=")
  try:
    return key, json.loads(value)
  except json.JSONDecodeError:
    return key, value


def main(argv: list[str] | None = None) -> None:
  """The command line: runs the check and prints its tables."""
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--out", required=True, help="directory for pod_shape.json and pod_shape.md")
  parser.add_argument("--configs", default="resnet50_wm,resnet50_bp", help="names under configs/")
  parser.add_argument("--image-size", type=int, default=SMALL_IMAGE, help="the small images' side")
  parser.add_argument("--steps", type=int, default=0, help="train steps run on the small images (0: none)")
  parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                      help="a config override for the small images' steps, e.g. mirror_batch_size=64")
  parser.add_argument("--no-full-size", action="store_true", help="skip the 224x224 compile")
  args = parser.parse_args(argv)
  command = "python benchmarks/pod_shape.py " + " ".join(argv if argv is not None else sys.argv[1:])
  run(args.out, tuple(args.configs.split(",")), train_steps=args.steps, full_size=not args.no_full_size,
      image_size=args.image_size, overrides=dict(map(_override, args.set)), command=command)
  sys.stdout.write((pathlib.Path(args.out) / "pod_shape.md").read_text())


if __name__ == "__main__":
  main()
