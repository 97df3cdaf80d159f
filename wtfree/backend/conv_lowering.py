"""2-d convolutions lowered per direction for XLA:CPU.

XLA:CPU's convolutions are fast for most shapes but slow, by an order of
magnitude, for a few that conv nets are full of: windows wider than the
image (the last stages of a ResNet on 32x32 inputs) and the input gradient
of a strided convolution; they are also slower on the kernel gradient of a
single-pixel output or of a 1x1 window. For those, an im2col lowering (the
image's shifted, strided views side by side on the channel axis, then one
matmul with the kernel) is the faster one. Each of the three directions
(output, input gradient, kernel gradient) picks its lowering by shape; both
lowerings compute the same linear map, so no gradient changes, only the
order of a float sum. On GPU and TPU every direction is XLA's own
convolution.

The plan assumes XLA's own convolution kernels, not YNNPACK's, which XLA:CPU
uses by default and which are slower on these nets' shapes (measurements in
docs/performance.md): `compiler_options` gives the `jax.jit` options that
select XLA's for convolutions (YNNPACK keeps reductions and single dots), and
`wtfree.steps.jit` compiles with them.
"""

from collections.abc import Sequence
import dataclasses
import functools
from typing import Any

from absl import logging
import jax
from jax import lax
import jax.numpy as jnp

Array = jax.Array

XLA = "xla"
MATMUL = "matmul"
# YNNPACK keeps the reductions (BatchNorm's statistics, which it sums faster
# than XLA's own loops) and single dots (faster on dense layers' products,
# batched over replicas or not); convolutions go back to XLA. Dots with their
# fused neighbours (LIBRARY_FUSION_TYPE_DOT) are faster still, but this XLA
# computes a dot whose operand is a broadcast scalar wrongly under them.
_CPU_OPTIONS = {"xla_cpu_experimental_ynn_fusion_type": "LIBRARY_FUSION_TYPE_REDUCE,LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT"}


@dataclasses.dataclass(frozen=True)
class Geometry:
  """The static shape of one 2-d convolution (NHWC input, HWIO kernel)."""

  strides: tuple[int, int]
  padding: tuple[tuple[int, int], tuple[int, int]]
  precision: Any
  image: tuple[int, int]
  window: tuple[int, int]

  @property
  def output(self) -> tuple[int, int]:
    return tuple(
        (size + lo + hi - k) // s + 1
        for size, (lo, hi), k, s in zip(self.image, self.padding, self.window, self.strides)
    )


@dataclasses.dataclass(frozen=True)
class Plan:
  """Which lowering each direction of a convolution takes on the CPU."""

  output: str
  input_grad: str
  kernel_grad: str


def cpu_plan(geometry: Geometry) -> Plan:
  """The faster lowering per direction on XLA:CPU, by the convolution's shape."""
  overhangs = any(k > size for k, size in zip(geometry.window, geometry.image))
  strided = geometry.strides != (1, 1)
  one_pixel = geometry.output == (1, 1)
  # A 1x1 window's im2col is the image itself (strided): no patches to build.
  pointwise = geometry.window == (1, 1)
  return Plan(
      output=MATMUL if overhangs else XLA,
      input_grad=MATMUL if overhangs or strided else XLA,
      kernel_grad=MATMUL if one_pixel or pointwise else XLA,
  )


@functools.cache
def _cpu_options_compile() -> bool:
  try:
    jax.jit(lambda: jnp.zeros(()), compiler_options=_CPU_OPTIONS).lower().compile()
  except jax.errors.JaxRuntimeError as e:
    logging.warning("XLA:CPU refused the convolution options %s (%s); compiling without them.", _CPU_OPTIONS, e)
    return False
  return True


def compiler_options(platform: str | None = None) -> dict[str, str]:
  """`jax.jit`'s ``compiler_options`` that `cpu_plan` was chosen under, for ``platform``.

  On the CPU they make XLA run convolutions itself instead of through
  YNNPACK, which keeps reductions and single dots; elsewhere, and where this
  XLA does not know the option, there are none.

  Args:
    platform: 'cpu', 'gpu', 'tpu'; by default JAX's default backend.
  """
  if (platform or jax.default_backend()) != "cpu" or not _cpu_options_compile():
    return {}
  return dict(_CPU_OPTIONS)


def conv2d(
    x: Array,
    w: Array,
    *,
    strides: Sequence[int],
    padding: str | Sequence[tuple[int, int]],
    precision=None,
) -> Array:
  """``lax.conv_general_dilated`` (NHWC, HWIO, no dilation, one group), lowered per direction.

  Args:
    x: inputs ``[N, H, W, C]``.
    w: kernel ``[kh, kw, C, O]``.
    strides: the window's two strides.
    padding: 'SAME', 'VALID' or two ``(low, high)`` pairs.
    precision: passed to the convolution or the matmul.

  Returns:
    ``[N, H_out, W_out, O]``.
  """
  image, window = tuple(x.shape[1:3]), tuple(w.shape[:2])
  strides = tuple(strides)
  if isinstance(padding, str):
    padding = lax.padtype_to_pads(image, window, strides, padding)
  padding = tuple(tuple(int(p) for p in pair) for pair in padding)
  geometry = Geometry(strides, padding, precision, image, window)
  return _conv2d(x, w, geometry)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _conv2d(x, w, geometry):
  return _on_platform(geometry, "output")(x, w)


def _conv2d_fwd(x, w, geometry):
  return _conv2d(x, w, geometry), (x, w)


def _conv2d_bwd(geometry, residuals, g):
  x, w = residuals
  input_lowering = _on_platform(geometry, "input_grad")
  kernel_lowering = _on_platform(geometry, "kernel_grad")
  (dx,) = jax.vjp(lambda x_: input_lowering(x_, w), x)[1](g)
  (dw,) = jax.vjp(lambda w_: kernel_lowering(x, w_), w)[1](g)
  return dx, dw


_conv2d.defvjp(_conv2d_fwd, _conv2d_bwd)


def _on_platform(geometry: Geometry, direction: str):
  """``f(x, w)`` by the lowering the CPU plan picks for ``direction`` (a `Plan` field), XLA's elsewhere."""
  xla = functools.partial(_xla, geometry=geometry)
  if getattr(cpu_plan(geometry), direction) == XLA:
    return xla
  matmul = functools.partial(_matmul, geometry=geometry)
  return lambda x, w: lax.platform_dependent(x, w, cpu=matmul, default=xla)


def _xla(x: Array, w: Array, geometry: Geometry) -> Array:
  return lax.conv_general_dilated(
      x,
      w,
      window_strides=geometry.strides,
      padding=geometry.padding,
      dimension_numbers=("NHWC", "HWIO", "NHWC"),
      precision=geometry.precision,
  )


def _taps(geometry: Geometry) -> list[tuple[int, int]]:
  """The window offsets whose reads are not all padding."""
  (out_h, out_w) = geometry.output
  (sh, sw) = geometry.strides
  ((top, _), (left, _)) = geometry.padding
  (h, w) = geometry.image

  def reads_image(offset, low, stride, size, out):
    rows = range(offset - low, offset - low + stride * out, stride)
    return any(0 <= r < size for r in rows)

  kh, kw = geometry.window
  return [
      (i, j)
      for i in range(kh)
      for j in range(kw)
      if reads_image(i, top, sh, h, out_h) and reads_image(j, left, sw, w, out_w)
  ]


def _matmul(x: Array, w: Array, geometry: Geometry) -> Array:
  """The convolution as im2col and one matmul; taps that read only padding are left out."""
  n, _, _, c = x.shape
  out_h, out_w = geometry.output
  sh, sw = geometry.strides
  taps = _taps(geometry)
  if not taps:
    return jnp.zeros((n, out_h, out_w, w.shape[-1]), jnp.result_type(x, w))
  padded = jnp.pad(x, ((0, 0), *geometry.padding, (0, 0)))
  views = [
      lax.slice(
          padded,
          (0, i, j, 0),
          (n, i + sh * (out_h - 1) + 1, j + sw * (out_w - 1) + 1, c),
          (1, sh, sw, 1),
      )
      for i, j in taps
  ]
  patches = views[0] if len(views) == 1 else jnp.concatenate(views, axis=-1)
  if len(taps) == w.shape[0] * w.shape[1]:
    kernel = jnp.reshape(w, (-1, w.shape[-1]))
  else:
    kernel = jnp.concatenate([w[i, j] for i, j in taps], axis=0)
  return lax.dot_general(
      patches, kernel, (((3,), (0,)), ((), ())), precision=geometry.precision
  )
