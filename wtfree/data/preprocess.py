"""Per-example image transforms in numpy and PIL: crops, flips, normalisation.

Each takes one ``uint8`` HWC image; the random ones take a
``numpy.random.Generator`` so that a batch is a function of its seeds alone.
"""

import math

import numpy as np

# Inception-style crop (Szegedy et al. 2015, as in flax examples/imagenet).
_AREA_RANGE = (0.08, 1.0)
_LOG_RATIO_RANGE = (math.log(3 / 4), math.log(4 / 3))
_ATTEMPTS = 10
# Eval crops the centre image_size / (image_size + 32) of the shorter side: 224 of 256.
_CROP_PADDING = 32


def normalize(image: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
  """``(image / 255 - mean) / std`` per channel, as float32."""
  return ((image.astype(np.float32) / 255.0 - mean) / std).astype(np.float32)


def pad_crop_flip(image: np.ndarray, rng: np.random.Generator, pad: int, flip: bool) -> np.ndarray:
  """Zero-pads ``pad`` pixels on each side, crops back at a random offset, flips half the time."""
  h, w = image.shape[:2]
  padded = np.pad(image, ((pad, pad), (pad, pad), (0, 0)))
  top, left = rng.integers(0, 2 * pad + 1, size=2)
  out = padded[top : top + h, left : left + w]
  if flip and rng.random() < 0.5:
    out = out[:, ::-1]
  return np.ascontiguousarray(out)


def inception_crop(image: np.ndarray, rng: np.random.Generator, size: int) -> np.ndarray:
  """A random crop of 8-100 % of the area and aspect 3/4-4/3, resized to ``size`` and flipped half the time.

  After ten draws that do not fit, falls back to the eval centre crop.
  """
  h, w = image.shape[:2]
  for _ in range(_ATTEMPTS):
    area = h * w * rng.uniform(*_AREA_RANGE)
    ratio = math.exp(rng.uniform(*_LOG_RATIO_RANGE))
    cw = int(round(math.sqrt(area * ratio)))
    ch = int(round(math.sqrt(area / ratio)))
    if 0 < cw <= w and 0 < ch <= h:
      top = int(rng.integers(0, h - ch + 1))
      left = int(rng.integers(0, w - cw + 1))
      out = _resize(image, (left, top, left + cw, top + ch), size)
      break
  else:
    out = center_crop(image, size)
  if rng.random() < 0.5:
    out = out[:, ::-1]
  return np.ascontiguousarray(out)


def center_crop(image: np.ndarray, size: int) -> np.ndarray:
  """The central square of side ``size / (size + 32)`` of the shorter side, resized to ``size``."""
  h, w = image.shape[:2]
  side = max(1, int(size / (size + _CROP_PADDING) * min(h, w)))
  top, left = (h - side + 1) // 2, (w - side + 1) // 2
  return _resize(image, (left, top, left + side, top + side), size)


def _resize(image: np.ndarray, box: tuple[int, int, int, int], size: int) -> np.ndarray:
  """Crops ``box`` (left, top, right, bottom) and resizes it to ``size`` x ``size``, bicubic."""
  try:
    from PIL import Image  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ImportError("ImageNet crops need Pillow: pip install pillow") from e
  pil = Image.fromarray(image)
  return np.asarray(pil.resize((size, size), resample=Image.Resampling.BICUBIC, box=box))
