"""How fast the ImageNet input pipeline runs on this host: images/s per worker process and with N.

    python benchmarks/input_pipeline.py --out runs/input_pipeline               # 512 JPEGs, workers 0, 1, 2
    python benchmarks/input_pipeline.py --out /tmp/input --quick                # a smoke run

The images are JPEGs the benchmark makes itself at ImageNet's typical size
(500 x 375, quality 90, smooth content with fine noise, about the bytes of an
ImageNet photo); nothing is downloaded. They are read through wtfree's own
path: a `wtfree.data.tfds_sets.TfdsSource` with the imagenet2012 recipe over
a stand-in for ``tfds.data_source`` that decodes each JPEG with PIL when it is
read (as TFDS's does), then the Inception crop, flip and bicubic resize to
224, batched by `wtfree.data.Dataset` with ``workers`` grain processes.
Two outputs are timed: uint8 (what the pipeline sends; the device
normalises) and normalised float32 on the host (four times the bytes),
which the pipeline used to send. Writes ``OUT/input_pipeline.json`` and
``OUT/input_pipeline.md``.
"""

import argparse
import dataclasses
import io
import itertools
import json
import os
import pathlib
import sys
import time

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).parents[1]))

from wtfree.data import preprocess  # noqa: E402
from wtfree.data import tfds_sets  # noqa: E402
from wtfree.data.pipeline import Dataset  # noqa: E402
from wtfree.data.source import Splits  # noqa: E402

SIZE = (500, 375)  # width x height of a typical ImageNet photo


def make_jpegs(n: int, seed: int = 0, size: tuple[int, int] = SIZE, quality: int = 90) -> list[bytes]:
  """``n`` JPEG-encoded photos-like images: smooth colour fields with fine noise."""
  from PIL import Image  # pylint: disable=g-import-not-at-top

  rng = np.random.default_rng(seed)
  out = []
  for _ in range(n):
    coarse = Image.fromarray(rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)).resize(size, Image.Resampling.BICUBIC)
    pixels = np.asarray(coarse, np.int16) + rng.integers(-12, 13, (size[1], size[0], 3))
    buffer = io.BytesIO()
    Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(buffer, format="JPEG", quality=quality)
    out.append(buffer.getvalue())
  return out


@dataclasses.dataclass(frozen=True)
class JpegExamples:
  """A stand-in for a ``tfds.data_source`` split: examples decoded from JPEG bytes when read."""

  jpegs: tuple[bytes, ...]

  def __len__(self) -> int:
    return len(self.jpegs)

  def __getitem__(self, index: int) -> dict:
    from PIL import Image  # pylint: disable=g-import-not-at-top

    image = np.asarray(Image.open(io.BytesIO(self.jpegs[index])).convert("RGB"))
    return {"image": image, "label": index % 1000}


@dataclasses.dataclass(frozen=True)
class NormalisedSource:
  """A source whose images leave the host normalised float32 (the old path) instead of uint8."""

  source: tfds_sets.TfdsSource

  def __len__(self) -> int:
    return len(self.source)

  def read(self, indices, keys):
    batch = self.source.read(indices, keys)
    recipe = self.source.recipe
    mean, std = np.asarray(recipe.mean, np.float32), np.asarray(recipe.std, np.float32)
    return {**batch, "image": preprocess.normalize(batch["image"], mean, std)}


def dataset(jpegs, batch: int, workers: int, output: str, image_size: int = 224) -> Dataset:
  """The ImageNet training pipeline over ``jpegs``: ``output`` 'uint8' or normalised 'float32' images."""
  recipe = tfds_sets.RECIPES["imagenet2012"]
  source = tfds_sets.TfdsSource(JpegExamples(tuple(jpegs)), recipe, image_size, train=True)
  if output == "float32":
    source = NormalisedSource(source)
  splits = Splits(train=source, test=source, num_classes=1000, input_shape=(image_size, image_size, 3),
                  pixel_stats=None if output == "float32" else (recipe.mean, recipe.std))
  return Dataset(splits=splits, batch_size=batch, eval_batch_size=batch, workers=workers, prefetch=2)


def images_per_second(jpegs, batch: int, workers: int, output: str, batches: int) -> dict:
  """Images/s of ``batches`` training batches after the first (which starts the workers)."""
  it = dataset(jpegs, batch, workers, output).train_batches(start_step=0)
  first = next(it)
  start = time.perf_counter()
  for b in itertools.islice(it, batches):
    assert b["image"].shape == (batch, 224, 224, 3)
  seconds = time.perf_counter() - start
  return {"workers": workers, "output": output, "dtype": str(first["image"].dtype),
          "images_per_second": batch * batches / seconds, "bytes_per_image": int(first["image"][0].nbytes)}


def run(out: str, quick: bool = False, workers: tuple[int, ...] = (0, 1, 2)) -> dict:
  """Times every worker count and output; writes JSON and markdown."""
  n, batch, batches = (64, 16, 3) if quick else (512, 64, 12)
  jpegs = make_jpegs(n)
  rows = []
  for output in ("uint8", "float32"):
    for w in workers:
      rows.append(images_per_second(jpegs, batch, w, output, batches))
      print(f"{output} workers={w}: {rows[-1]['images_per_second']:.0f} images/s", flush=True)
  record = {
      "benchmark": "input_pipeline",
      "images": n, "jpeg_kb_mean": float(np.mean([len(j) for j in jpegs]) / 1024), "size": SIZE,
      "batch": batch, "batches_timed": batches, "cpu_count": os.cpu_count(),
      "transform": "PIL decode, Inception crop (8-100 % area, aspect 3/4-4/3), flip, bicubic resize to 224",
      "rows": rows,
  }
  os.makedirs(out, exist_ok=True)
  with open(os.path.join(out, "input_pipeline.json"), "w") as f:
    json.dump(record, f, indent=1)
  lines = ["| output | workers | images/s | bytes per image |", "|---|---:|---:|---:|"]
  lines += [f"| {r['output']} | {r['workers']} | {r['images_per_second']:.0f} | {r['bytes_per_image']} |" for r in rows]
  with open(os.path.join(out, "input_pipeline.md"), "w") as f:
    f.write("\n".join(lines) + "\n")
  return record


def main() -> None:
  parser = argparse.ArgumentParser(prog="python benchmarks/input_pipeline.py")
  parser.add_argument("--out", default="runs/input_pipeline")
  parser.add_argument("--quick", action="store_true", help="a small version for tests")
  parser.add_argument("--workers", default="0,1,2", help="comma-separated worker counts (0: in this process)")
  args = parser.parse_args()
  run(args.out, quick=args.quick, workers=tuple(int(w) for w in args.workers.split(",")))


if __name__ == "__main__":
  main()
