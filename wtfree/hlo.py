"""What a compiled program communicates: its collectives, read from the HLO text.

    text = jax.jit(step).lower(state, batch).compile().as_text()
    ops = hlo.collectives(text)
    hlo.summary(ops)  # {'all-reduce': {'count': ..., 'elements': ..., 'bytes': ...}, ...}

The text is the partitioned program of one device: each shape is what that
device sends into (or receives from) the collective, so bytes here are per
device and per execution of the op. A collective inside a loop body runs
once per iteration but is listed once. An asynchronous op (a backend that
splits it into ``-start`` and ``-done``) is counted at its ``-start``, whose
result as written may hold its operands too.
"""

import dataclasses
import math
import re

KINDS = ("all-reduce", "all-gather", "reduce-scatter", "collective-permute", "all-to-all")

_BYTES = {"pred": 1, "s8": 1, "u8": 1, "s16": 2, "u16": 2, "f16": 2, "bf16": 2, "s32": 4, "u32": 4, "f32": 4,
          "s64": 8, "u64": 8, "f64": 8, "c64": 8, "c128": 16}
# `%name = <shape> <op>(`, where an async op is split into -start and -done halves: the -start half counts.
_OP = re.compile(r"^\s*(?:ROOT\s+)?%?[\w.\-]+\s*=\s*(?P<shape>.*?)\s(?P<kind>" + "|".join(KINDS) +
                 r")(?:-start)?\(")
_ARRAY = re.compile(r"\b(?P<dtype>[a-z]+\d*)\[(?P<dims>[\d,]*)\]")
_IOTA_GROUPS = re.compile(r"replica_groups=\[(?P<groups>\d+),(?P<size>\d+)\]")
_MESH_GROUPS = re.compile(r"replica_groups=mesh\[(?P<mesh>[^\]]*)\]\s*\{(?P<axes>[^}]*)\}")
_LISTED_GROUPS = re.compile(r"replica_groups=\{(?P<groups>(?:\{[\d,]*\},?)*)\}")
_OP_NAME = re.compile(r'op_name="(?P<name>[^"]*)"')


@dataclasses.dataclass(frozen=True)
class Collective:
  """One collective op of a compiled program.

  Attributes:
    kind: one of `KINDS`.
    shapes: its results' shapes, e.g. ``('f32[3,3,64,64]',)`` (several for a combined op).
    sizes: the number of elements of each.
    elements: the number of elements over those results.
    bytes: their size in bytes, on one device.
    group_size: devices per replica group (0 where the text does not say).
    op_name: the JAX operation it came from, where the metadata names one.
  """

  kind: str
  shapes: tuple[str, ...]
  sizes: tuple[int, ...]
  elements: int
  bytes: int
  group_size: int
  op_name: str


def _group_size(line: str) -> int:
  mesh = _MESH_GROUPS.search(line)
  if mesh:  # replica_groups=mesh['axis_0'=8,'axis_1'=1] {'axis_0'}: the named axes' devices form a group.
    sizes = {k.strip("'"): int(v) for k, v in (a.split("=") for a in mesh.group("mesh").split(","))}
    return math.prod(sizes[a.strip().strip("'")] for a in mesh.group("axes").split(",") if a.strip())
  iota = _IOTA_GROUPS.search(line)
  if iota:
    return int(iota.group("size"))
  listed = _LISTED_GROUPS.search(line)
  if listed and listed.group("groups"):
    first = listed.group("groups").split("}")[0].strip("{,")
    return len(first.split(",")) if first else 0
  return 0


def collectives(hlo_text: str) -> list[Collective]:
  """Every collective op in ``hlo_text`` (the text of ``Compiled.as_text()``), in program order."""
  found = []
  for line in hlo_text.splitlines():
    match = _OP.match(line)
    if not match:
      continue
    shapes, sizes, size = [], [], 0
    for array in _ARRAY.finditer(match.group("shape")):
      count = math.prod(int(d) for d in array.group("dims").split(",") if d)
      shapes.append(f"{array.group('dtype')}[{array.group('dims')}]")
      sizes.append(count)
      size += count * _BYTES.get(array.group("dtype"), 4)
    name = _OP_NAME.search(line)
    found.append(Collective(match.group("kind"), tuple(shapes), tuple(sizes), sum(sizes), size, _group_size(line),
                            name.group("name") if name else ""))
  return found


def summary(ops: list[Collective]) -> dict[str, dict[str, int]]:
  """Per kind: ``count`` (ops), ``elements`` and ``bytes`` (per device, summed over the ops)."""
  out: dict[str, dict[str, int]] = {}
  for op in ops:
    entry = out.setdefault(op.kind, {"count": 0, "elements": 0, "bytes": 0})
    entry["count"] += 1
    entry["elements"] += op.elements
    entry["bytes"] += op.bytes
  return out


def element_names(op: Collective) -> tuple[str, ...]:
  """The JAX operation each result of ``op`` came from, one name per entry of ``op.shapes``.

  XLA writes a combined op's name as ``prefix/(a:b:...)``, one entry per
  result; a name it did not split stands for all of them.
  """
  name = op.op_name
  start = name.find("/(")
  parts = [name]
  if start >= 0 and name.endswith(")"):
    prefix, inner, parts, depth, current = name[:start + 1], name[start + 2:-1], [], 0, ""
    for ch in inner:
      depth += (ch == "(") - (ch == ")")
      if ch == ":" and depth == 0:
        parts.append(prefix + current)
        current = ""
      else:
        current += ch
    parts.append(prefix + current)
  if len(parts) != len(op.shapes):
    parts = [name] * len(op.shapes)
  return tuple(parts)


def in_forward_pass(name: str) -> bool:
  """Whether the operation ``name`` belongs to a forward pass being differentiated (``jvp(...)``, not its transpose).

  In a data-parallel train step, a collective of the forward pass is one it
  waits for: BatchNorm statistics taken over more than one device's examples.
  """
  return "jvp(" in name and "transpose(" not in name


def programs(hlo_text: str) -> int:
  """The number of entry computations in ``hlo_text``: 1 for a step compiled as one program."""
  return sum(1 for line in hlo_text.splitlines() if line.startswith("ENTRY "))
