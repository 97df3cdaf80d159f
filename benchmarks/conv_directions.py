"""Where a ResNet's train step spends its convolution time: per layer shape and direction, wtfree beside PyTorch.

    python benchmarks/conv_directions.py --out runs/conv_directions                  # ResNet-20 and ResNet-18
    python benchmarks/conv_directions.py --out /tmp/conv_dirs --models resnet20 --repeats 5
    python benchmarks/conv_directions.py --out /tmp/conv_dirs --quick                # a smoke run, seconds

Each model's convolutions are found by tracing it: every
``conv_general_dilated`` in the jaxpr of its forward pass in training mode
(under bp, at `step_time`'s input size and batch), however deeply nested,
with its input shape (batch included), window, strides, padding and
channels. Identical ones are grouped and counted; a convolution whose input
depends on no parameter (the stem's, which reads the image) computes no
input gradient in a train step, and its input gradient, timed all the same,
is left out of the totals.

For each distinct shape three directions are timed: the output, the input
gradient and the kernel gradient, each jitted alone through
`wtfree.backend.conv_lowering.conv2d` (the function, custom_vjp and
`cpu_plan` lowering that every wtfree conv layer takes) and compiled by
`wtfree.steps.jit`, with the train step's compiler options. When PyTorch is
installed (``pip install -e '.[peers]'``) its same three directions are timed
beside them: ``torch.nn.functional.conv2d``, ``torch.nn.grad.conv2d_input``
and ``torch.nn.grad.conv2d_weight`` on contiguous NCHW float32 tensors, with
PyTorch's default threads. PyTorch pads symmetrically, as `torch_peers`'
twins do (padding 1 where XLA's 'SAME' pads a stride-2 3x3 window by 0 and
1): the same cost, a window shifted by a pixel. Before any timing, each
PyTorch direction's result is checked against wtfree's lowering at
PyTorch's padding. PyTorch's OpenMP threads spin while they wait (libgomp's
default), which makes every PyTorch call far slower where other processes
hold the cores: on a shared machine, run with ``OMP_WAIT_POLICY=PASSIVE``
(the tables name it, and the load average at the start).

All directions of all shapes of a model are timed in rounds that visit them
round-robin, each round starting one later, each call blocked on before the
next, as `step_time` times steps. The tables give per shape the median ms
per call of each direction, the ratio wtfree / PyTorch (paired per round,
median) and the count-weighted difference; per model, the total of each
direction over the network, each shape's time times its count (the step's
convolution time by direction). The plan column is `cpu_plan`'s lowering of
output, input gradient and kernel gradient (x = XLA's convolution, m =
im2col and a matmul); on GPU and TPU every direction is XLA's. Writes
``OUT/conv_directions.json`` and ``OUT/conv_directions.md``.
"""

import argparse
import dataclasses
import functools
import json
import math
import os
import pathlib
import re
import sys
import time
from typing import Any, Callable

from absl import logging
import jax
import jax.extend.core as jex
from jax import lax
import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).parent))

import step_time  # noqa: E402
import torch_peers  # noqa: E402
from wtfree import backend  # noqa: E402
from wtfree import models  # noqa: E402
from wtfree import steps  # noqa: E402
from wtfree.backend import conv_lowering  # noqa: E402

DIRECTIONS = ("output", "input_grad", "kernel_grad")
FRAMEWORKS = ("wtfree", "pytorch")
BENCHES = {name: step_time.BENCHES[name] for name in ("resnet20", "resnet18")}
QUICK_BENCHES = {"resnet_tiny": dataclasses.replace(step_time.QUICK_BENCHES["resnet_tiny"], batch=2)}
# A PyTorch direction agrees with wtfree's when their largest difference is
# this small against the largest entry: float32 sums in another order.
AGREEMENT = 1e-3


FULL = step_time.Timing(rounds=10, round_seconds=0.1, min_steps=1, max_steps=100, warmup=2)
QUICK = step_time.Timing(rounds=2, round_seconds=0.0, min_steps=1, max_steps=1, warmup=1)


@dataclasses.dataclass(frozen=True)
class Conv:
  """One 2-d convolution as a model runs it: NHWC input (batch included), HWIO kernel."""

  input_shape: tuple[int, int, int, int]
  window: tuple[int, int]
  strides: tuple[int, int]
  padding: tuple[tuple[int, int], tuple[int, int]]
  out_channels: int
  dtype: str
  precision: Any = None

  @property
  def geometry(self) -> conv_lowering.Geometry:
    """The `conv_lowering.Geometry` that `conv_lowering.conv2d` builds for it."""
    return conv_lowering.Geometry(self.strides, self.padding, self.precision, tuple(self.input_shape[1:3]),
                                  self.window)

  @property
  def output_shape(self) -> tuple[int, int, int, int]:
    """NHWC."""
    return (self.input_shape[0], *self.geometry.output, self.out_channels)

  @property
  def kernel_shape(self) -> tuple[int, int, int, int]:
    """HWIO."""
    return (*self.window, self.input_shape[-1], self.out_channels)

  def describe(self) -> str:
    """E.g. '3x3 s2, 32x32x16 -> 16x16x32, pad (0, 1)'."""
    window = "x".join(map(str, self.window))
    if self.strides != (1, 1):
      window += f" s{self.strides[0]}" if len(set(self.strides)) == 1 else f" s{self.strides}"
    image = "x".join(map(str, self.input_shape[1:]))
    out = "x".join(map(str, self.output_shape[1:]))
    pads = set(self.padding)
    if pads == {(0, 0)}:
      pad = ""
    elif len(pads) == 1:
      (lo, hi), = pads
      pad = f", pad {lo}" if lo == hi else f", pad ({lo}, {hi})"
    else:
      pad = f", pad {self.padding}"
    return f"{window}, {image} -> {out}{pad}"

  def plan(self) -> conv_lowering.Plan:
    """The lowering of each direction on the CPU (`conv_lowering.cpu_plan`)."""
    return conv_lowering.cpu_plan(self.geometry)

  def torch_padding(self) -> tuple[int, int]:
    """PyTorch's symmetric padding with this convolution's output size: the larger side of each pair."""
    padding = tuple(max(pair) for pair in self.padding)
    for size, p, k, s, out in zip(self.input_shape[1:3], padding, self.window, self.strides, self.geometry.output):
      if (size + 2 * p - k) // s + 1 != out:
        raise ValueError(f"no symmetric padding gives {self.describe()} its output size in PyTorch")
    return padding


@dataclasses.dataclass
class Group:
  """Identical convolutions of a model: how many, and how many of them compute an input gradient in a step."""

  conv: Conv
  count: int = 0
  input_grad_count: int = 0

  def counts(self) -> dict[str, int]:
    """How many times a train step runs each direction of this shape."""
    return {"output": self.count, "input_grad": self.input_grad_count, "kernel_grad": self.count}


def _subjaxprs(eqn) -> list:
  subs = []
  for value in eqn.params.values():
    for item in value if isinstance(value, (tuple, list)) else (value,):
      if isinstance(item, jex.ClosedJaxpr):
        subs.append(item.jaxpr)
      elif isinstance(item, jex.Jaxpr):
        subs.append(item)
  return subs


def _walk(jaxpr, dependent: list[bool], found: list) -> None:
  """Appends ``(eqn, lhs depends on a parameter)`` for each convolution in ``jaxpr`` and the jaxprs inside it.

  ``dependent[i]`` says whether ``jaxpr.invars[i]`` depends on a parameter.
  """
  depends = dict(zip(jaxpr.invars, dependent))
  for eqn in jaxpr.eqns:
    inputs = [not isinstance(v, jex.Literal) and depends.get(v, False) for v in eqn.invars]
    if eqn.primitive is lax.conv_general_dilated_p:
      found.append((eqn, inputs[0]))
    for sub in _subjaxprs(eqn):
      # An inner jaxpr takes the call's last operands (a cond's first is its
      # branch index); where it takes others, each depends if any operand does.
      n = len(sub.invars)
      _walk(sub, inputs[len(inputs) - n:] if n <= len(inputs) else [any(inputs)] * n, found)
    for v in eqn.outvars:
      depends[v] = any(inputs)


def _conv(eqn) -> Conv:
  """The `Conv` of a ``conv_general_dilated`` equation, or an error naming what conv_lowering does not take."""
  params = eqn.params
  lhs, rhs = (v.aval for v in eqn.invars)
  lhs_spec, rhs_spec, _ = params["dimension_numbers"]
  if (len(lhs.shape) != 4 or set(params["lhs_dilation"]) != {1} or set(params["rhs_dilation"]) != {1}
      or params["feature_group_count"] != 1 or params["batch_group_count"] != 1):
    raise ValueError(f"a convolution that conv_lowering.conv2d does not lower: {eqn}")
  return Conv(
      input_shape=tuple(lhs.shape[d] for d in (lhs_spec[0], *lhs_spec[2:], lhs_spec[1])),
      window=tuple(rhs.shape[d] for d in rhs_spec[2:]),
      strides=tuple(params["window_strides"]),
      padding=tuple(tuple(int(p) for p in pair) for pair in params["padding"]),
      out_channels=rhs.shape[rhs_spec[0]],
      dtype=str(lhs.dtype),
      precision=params["precision"],
  )


def find_convolutions(bench: step_time.Bench) -> list[Group]:
  """Every convolution of ``bench``'s model under bp, traced from its forward pass, grouped by shape in order."""
  model = models.get_model(bench.model, num_classes=bench.num_classes, rule="bp", **bench.model_options())
  x = jax.ShapeDtypeStruct((bench.batch, *bench.input_shape), np.float32)
  variables = jax.eval_shape(lambda x: model.init(jax.random.key(0), x, train=False), x)

  def forward(params, rest, x):
    return model.apply({"params": params, **rest}, x, train=True, mutable=["batch_stats"])

  rest = {k: v for k, v in variables.items() if k != "params"}
  closed = jax.make_jaxpr(forward)(variables["params"], rest, x)
  n_params = len(jax.tree.leaves(variables["params"]))
  dependent = [True] * n_params + [False] * (len(closed.jaxpr.invars) - n_params)
  found = []
  _walk(closed.jaxpr, dependent, found)
  groups: dict[Conv, Group] = {}
  for eqn, lhs_dependent in found:
    conv = _conv(eqn)
    group = groups.setdefault(conv, Group(conv))
    group.count += 1
    group.input_grad_count += int(lhs_dependent)
  return list(groups.values())


def wtfree_directions(conv: Conv) -> dict[str, Callable]:
  """Each direction of ``conv`` through `conv_lowering.conv2d`, as a function of ``(x, w, g)``.

  The gradients are the custom_vjp's, as a layer's backward takes them; what
  a direction leaves unused (the other gradient, the forward's output), the
  compiler drops.
  """
  op = functools.partial(conv_lowering.conv2d, strides=conv.strides, padding=conv.padding, precision=conv.precision)
  return {
      "output": lambda x, w, g: op(x, w),
      "input_grad": lambda x, w, g: jax.vjp(lambda x_: op(x_, w), x)[1](g)[0],
      "kernel_grad": lambda x, w, g: jax.vjp(lambda w_: op(x, w_), w)[1](g)[0],
  }


def torch_directions(conv: Conv, x, w, g) -> dict[str, Callable]:
  """Each direction of ``conv`` in PyTorch on NCHW / OIHW tensors, as a function of no arguments."""
  import torch  # pylint: disable=g-import-not-at-top

  stride, padding = conv.strides, conv.torch_padding()
  return {
      "output": lambda: torch.nn.functional.conv2d(x, w, stride=stride, padding=padding),
      "input_grad": lambda: torch.nn.grad.conv2d_input(x.shape, w, g, stride=stride, padding=padding),
      "kernel_grad": lambda: torch.nn.grad.conv2d_weight(x, w.shape, g, stride=stride, padding=padding),
  }


_OPS = re.compile(r"\b(convolution|dot)\(")


class Timed:
  """One direction of one shape in one framework, called one blocked call at a time."""

  def __init__(self, index: int, direction: str, framework: str, fn: Callable, args: tuple = ()):
    self.name = (index, direction, framework)
    self.framework = framework
    self.args = args
    self.ops = None
    start = time.perf_counter()
    self.fn = steps.jit(fn).lower(*args).compile() if framework == "wtfree" else fn
    self.compile_s = time.perf_counter() - start
    if framework == "wtfree":
      # Convolutions and dots in the compiled program: one, when a direction
      # is timed alone.
      self.ops = len(_OPS.findall(self.fn.as_text()))

  def __call__(self):
    return self.fn(*self.args)

  def step(self) -> None:
    """One call, finished."""
    jax.block_until_ready(self())


def _nchw(a: np.ndarray, layout: str):
  import torch  # pylint: disable=g-import-not-at-top

  order = {"image": (0, 3, 1, 2), "kernel": (3, 2, 0, 1)}[layout]
  return torch.from_numpy(np.ascontiguousarray(a.transpose(order)))


def _difference(ours, theirs, layout: str) -> float:
  ours = np.asarray(ours)
  theirs = theirs.numpy().transpose({"image": (0, 2, 3, 1), "kernel": (2, 3, 1, 0)}[layout])
  return float(np.max(np.abs(ours - theirs)) / max(float(np.max(np.abs(theirs))), 1e-30))


def build(groups: list[Group], peers: bool, seed: int = 0) -> tuple[list[Timed], list[dict]]:
  """Compiles each direction of each shape, and with ``peers`` builds PyTorch's and checks it against wtfree's.

  Returns:
    The timed items, and per shape ``{direction: largest difference to PyTorch, relative}``.
  """
  rng = np.random.default_rng(seed)
  items, differences = [], []
  for index, group in enumerate(groups):
    conv = group.conv
    x, w, g = (rng.normal(size=shape).astype(conv.dtype)
               for shape in (conv.input_shape, conv.kernel_shape, conv.output_shape))
    w /= math.sqrt(math.prod(conv.kernel_shape[:3]))
    args = tuple(jax.device_put(a) for a in (x, w, g))
    ours = {d: Timed(index, d, "wtfree", fn, args) for d, fn in wtfree_directions(conv).items()}
    items += ours.values()
    differences.append({})
    if not peers:
      continue
    tx, tw, tg = _nchw(x, "image"), _nchw(w, "kernel"), _nchw(g, "image")
    theirs = {d: Timed(index, d, "pytorch", fn) for d, fn in torch_directions(conv, tx, tw, tg).items()}
    items += theirs.values()
    # Against wtfree's lowering at PyTorch's padding: the map PyTorch computes.
    padded = dataclasses.replace(conv, padding=tuple((p, p) for p in conv.torch_padding()))
    reference = {d: item.fn for d, item in ours.items()} if padded == conv else {
        d: steps.jit(fn) for d, fn in wtfree_directions(padded).items()}
    for d, layout in zip(DIRECTIONS, ("image", "image", "kernel")):
      diff = _difference(reference[d](*args), theirs[d](), layout)
      if not diff <= AGREEMENT:
        raise AssertionError(f"PyTorch's {d} of {conv.describe()} differs from wtfree's by {diff:.2e} of its largest")
      differences[-1][d] = diff
  return items, differences


def _stats(ms: list[float]) -> dict[str, float]:
  q25, q50, q75 = step_time.quantiles(ms)
  return {"ms": float(q50), "ms_q25": float(q25), "ms_q75": float(q75)}


def _ratio(ours: list[float], theirs: list[float]) -> dict[str, float]:
  q25, q50, q75 = step_time.quantiles([a / b for a, b in zip(ours, theirs)])
  return {"ratio": float(q50), "ratio_q25": float(q25), "ratio_q75": float(q75)}


def summarise(bench: step_time.Bench, groups: list[Group], items: list[Timed], measured: dict,
              differences: list[dict]) -> dict:
  """A model's record: per shape and direction the times and ratios, and count-weighted totals per direction."""
  seconds, calls = measured["seconds"], measured["steps"]
  by_key = {item.name: item for item in items}
  frameworks = [f for f in FRAMEWORKS if any(k[2] == f for k in seconds)]
  shapes = []
  for index, group in enumerate(groups):
    conv = group.conv
    plan = conv.plan()
    directions = {}
    for d in DIRECTIONS:
      entry = {}
      for f in frameworks:
        item = by_key[(index, d, f)]
        entry[f] = {**_stats([1e3 * s for s in seconds[item.name]]), "calls_per_round": calls[item.name],
                    "compile_s": item.compile_s}
        if item.ops is not None:
          entry[f]["ops"] = item.ops
      if "pytorch" in frameworks:
        entry.update(_ratio(seconds[(index, d, "wtfree")], seconds[(index, d, "pytorch")]))
        entry["difference"] = differences[index][d]
      entry["lowering"] = getattr(plan, d)
      entry["count"] = group.counts()[d]
      directions[d] = entry
    shape = {
        "convolution": conv.describe(),
        "input_shape": list(conv.input_shape),
        "output_shape": list(conv.output_shape),
        "window": list(conv.window),
        "strides": list(conv.strides),
        "padding": [list(p) for p in conv.padding],
        "in_channels": conv.input_shape[-1],
        "out_channels": conv.out_channels,
        "dtype": conv.dtype,
        "count": group.count,
        "input_grad_count": group.input_grad_count,
        "plan": "".join("x" if getattr(plan, d) == conv_lowering.XLA else "m" for d in DIRECTIONS),
        "directions": directions,
    }
    if "pytorch" in frameworks:
      shape["torch_padding"] = list(conv.torch_padding())
      shape["gap_ms"] = sum(
          e["count"] * (e["wtfree"]["ms"] - e["pytorch"]["ms"]) for e in directions.values())
    shapes.append(shape)
  rounds = len(next(iter(seconds.values())))
  weighted = {f: {d: [sum(1e3 * g.counts()[d] * seconds[(i, d, f)][r] for i, g in enumerate(groups))
                      for r in range(rounds)] for d in DIRECTIONS} for f in frameworks}
  for f in frameworks:
    weighted[f]["all"] = [sum(weighted[f][d][r] for d in DIRECTIONS) for r in range(rounds)]
  totals = {}
  for d in (*DIRECTIONS, "all"):
    totals[d] = {f: _stats(weighted[f][d]) for f in frameworks}
    if "pytorch" in frameworks:
      totals[d].update(_ratio(weighted["wtfree"][d], weighted["pytorch"][d]))
  return {
      "model": bench.name,
      "setup": bench.describe(),
      "batch": bench.batch,
      "convolutions": sum(g.count for g in groups),
      "frameworks": frameworks,
      "shapes": shapes,
      "totals": totals,
  }


_TITLES = {"output": "output", "input_grad": "input grad", "kernel_grad": "kernel grad"}


def markdown(env: dict, records: list[dict]) -> str:
  """One table per model: a row per shape, then the count-weighted total."""
  peer = env.get("pytorch")
  lines = [
      f"# Convolution time per direction, {env['backend']}: {env['cpu'] if env['backend'] == 'cpu' else env['device']}",
      "",
      f"{env['cpu']}, {env['cpu_cores']} cores; jax {env['jax']}, flax {env['flax']}"
      + (f", PyTorch {peer}" if peer else "")
      + (f", OMP_WAIT_POLICY={env['omp_wait_policy']}" if peer and env.get("omp_wait_policy") else "")
      + (f"; load average {env['load_average']:.1f} at the start" if env.get("load_average") is not None else "")
      + f"; {env['rounds']} interleaved rounds; {env['date']}.",
      "ms per call, medians over rounds. Plan: `cpu_plan`'s lowering of output, input grad, kernel grad "
      "(x = XLA's convolution, m = im2col + matmul).",
      *(["*x* is wtfree / PyTorch, paired per round; *gap* is the count-weighted wtfree - PyTorch ms over the three "
         "directions. PyTorch pads symmetrically (as its twin), e.g. 1 where XLA pads a stride-2 3x3 window by "
         "(0, 1)."] if peer else []),
      "An input grad in parentheses is not run in a train step (the convolution reads the image) and is left out "
      "of the total.",
      "",
  ]
  for record in records:
    frameworks = record["frameworks"]
    both = "pytorch" in frameworks
    header, rule = "| convolution | count | plan |", "|---|---:|---|"
    for d in DIRECTIONS:
      if both:
        header += f" {_TITLES[d]} wtfree | PyTorch | x |"
        rule += "---:|---:|---:|"
      else:
        header += f" {_TITLES[d]} |"
        rule += "---:|"
    if both:
      header += " gap |"
      rule += "---:|"
    lines += [f"## {record['model']}: {record['setup']}, {record['convolutions']} convolutions", "", header, rule]
    for shape in record["shapes"]:
      cells = f"| {shape['convolution']} | {shape['count']} | {shape['plan']} |"
      for d in DIRECTIONS:
        entry = shape["directions"][d]
        skipped = entry["count"] == 0
        for f in frameworks:
          ms = f"{entry[f]['ms']:.2f}"
          cells += f" ({ms}) |" if skipped else f" {ms} |"
        if both:
          cells += f" {entry['ratio']:.2f} |"
      if both:
        cells += f" {shape['gap_ms']:+.1f} |"
      lines.append(cells)
    totals = record["totals"]
    cells = f"| **total** (x count) | {record['convolutions']} | |"
    for d in DIRECTIONS:
      for f in frameworks:
        cells += f" **{totals[d][f]['ms']:.1f}** |"
      if both:
        cells += f" **{totals[d]['ratio']:.2f}** |"
    if both:
      cells += f" **{totals['all']['wtfree']['ms'] - totals['all']['pytorch']['ms']:+.1f}** |"
    lines.append(cells)
    everything = totals["all"]
    summary = f"All directions: wtfree {everything['wtfree']['ms']:.1f} ms"
    if both:
      summary += (f", PyTorch {everything['pytorch']['ms']:.1f} ms, x {everything['ratio']:.2f} "
                  f"[{everything['ratio_q25']:.2f}, {everything['ratio_q75']:.2f}]")
    lines += ["", summary + ".", ""]
  return "\n".join(lines)


def run(out: str, *, quick: bool = False, model_names: list[str] | None = None, repeats: int | None = None) -> dict:
  """Times every direction of every convolution shape of each model; writes ``out/conv_directions.{json,md}``.

  Args:
    out: the output directory (created).
    quick: resnet_tiny at batch 2, 2 rounds of one call: a smoke run.
    model_names: keys of `BENCHES` (or `QUICK_BENCHES` with ``quick``); None takes all.
    repeats: timing rounds; None keeps the default (10, or 2 with ``quick``).

  Returns:
    The record written to ``conv_directions.json``.
  """
  table = QUICK_BENCHES if quick else BENCHES
  timing = QUICK if quick else FULL
  if repeats is not None:
    if repeats < 1:
      raise ValueError(f"--repeats {repeats} must be at least 1")
    timing = dataclasses.replace(timing, rounds=repeats)
  model_names = list(table) if model_names is None else model_names
  unknown = [n for n in model_names if n not in table]
  if unknown:
    raise ValueError(f"models {unknown} are not among {', '.join(table)}{' (--quick)' if quick else ''}")
  env = step_time.environment(quick, timing)
  for key in ("optimizer", "rule_options"):
    env.pop(key)
  env["compiler_options"] = backend.compiler_options()
  # PyTorch's OpenMP threads spin while they wait (libgomp's default): where
  # other work holds the cores, its times depend on this and on the load.
  env["omp_wait_policy"] = os.environ.get("OMP_WAIT_POLICY")
  env["load_average"] = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
  records = []
  for name in model_names:
    bench = table[name]
    groups = find_convolutions(bench)
    peers = torch_peers.available() and all(g.conv.dtype == "float32" for g in groups)
    items, differences = build(groups, peers)
    logging.info("%s: %d convolutions of %d shapes, %d directions compiled", name, sum(g.count for g in groups),
                 len(groups), len(items))
    records.append(summarise(bench, groups, items, step_time.measure(items, timing), differences))
  record = {"environment": env, "directions": list(DIRECTIONS), "models": records}
  path = pathlib.Path(out)
  path.mkdir(parents=True, exist_ok=True)
  (path / "conv_directions.json").write_text(json.dumps(record, indent=2))
  (path / "conv_directions.md").write_text(markdown(env, records))
  return record


def main(argv: list[str] | None = None) -> dict:
  """The command line; prints the markdown and returns the record."""
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--out", required=True, help="directory for conv_directions.json and conv_directions.md")
  parser.add_argument("--quick", action="store_true", help="resnet_tiny, batch 2, 2 rounds: a smoke run")
  parser.add_argument("--models", default=None, help=f"comma-separated, of {', '.join(BENCHES)}")
  parser.add_argument("--repeats", type=int, default=None, help="timing rounds (default 10, --quick 2)")
  args = parser.parse_args(argv)
  logging.set_verbosity(logging.INFO)
  names = args.models.split(",") if args.models else None
  record = run(args.out, quick=args.quick, model_names=names, repeats=args.repeats)
  sys.stdout.write(markdown(record["environment"], record["models"]) + "\n")
  return record


if __name__ == "__main__":
  main()
