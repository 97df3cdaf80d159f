"""TFDS data sets read through ``tfds.data_source`` (array_record files, no TensorFlow).

Prepare a set once, on a machine with TensorFlow (``pip install 'wtfree[tf]'``):

    tfds build cifar10 --data_dir=DIR --file_format=array_record

then point ``config.data_dir`` at DIR (a local path or ``gs://``). Transforms:
ImageNet, Inception-style random-resized crop + flip to ``image_size`` for
training and the centre crop (224 of 256) for eval; CIFAR-10/100 and STL-10,
zero-pad by 1/8 of the side (4 px at 32) + random crop + flip; SVHN the same
without the flip (digits are not mirror-symmetric); MNIST and Fashion-MNIST,
none. Images leave the host as uint8 and are normalised per channel with the
set's mean and std on the device (`wtfree.data.Dataset.prepare`).
"""

import dataclasses

from absl import logging
import numpy as np
import tensorflow_datasets as tfds

from wtfree.data import preprocess
from wtfree.data.source import DataNotPreparedError, Splits


@dataclasses.dataclass(frozen=True)
class Recipe:
  """How one TFDS set is split and transformed.

  Attributes:
    eval_split: the split evaluated on.
    augment: 'inception' (random-resized crop), 'pad_crop' or 'none'.
    mean, std: per-channel statistics of pixels scaled to [0, 1].
    flip: random horizontal flips (pad_crop).
  """

  eval_split: str
  augment: str
  mean: tuple[float, ...]
  std: tuple[float, ...]
  flip: bool = True


RECIPES = {
    "imagenet2012": Recipe("validation", "inception", (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    "cifar10": Recipe("test", "pad_crop", (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": Recipe("test", "pad_crop", (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
    "svhn_cropped": Recipe("test", "pad_crop", (0.4377, 0.4438, 0.4728), (0.1980, 0.2010, 0.1970), flip=False),
    "stl10": Recipe("test", "pad_crop", (0.4467, 0.4398, 0.4066), (0.2603, 0.2566, 0.2713)),
    "mnist": Recipe("test", "none", (0.1307,), (0.3081,)),
    "fashion_mnist": Recipe("test", "none", (0.2860,), (0.3530,)),
}


@dataclasses.dataclass(frozen=True)
class TfdsSource:
  """One split of a TFDS data source, decoded and transformed example by example.

  Attributes:
    data: the ``tfds.data_source`` split (picklable, so grain workers can read it).
    recipe: the transforms.
    image_size: ImageNet's crop side.
    train: random augmentation (needs per-example keys) rather than the eval transform.
  """

  data: object
  recipe: Recipe
  image_size: int
  train: bool

  def __len__(self) -> int:
    return len(self.data)

  def read(self, indices: np.ndarray, keys: np.ndarray | None) -> dict[str, np.ndarray]:
    """uint8 images, transformed; the set's `Splits.pixel_stats` normalise them on the device."""
    images, labels = [], []
    for i, index in enumerate(indices):
      example = self.data[int(index)]
      rng = np.random.default_rng(keys[i].tolist()) if (self.train and keys is not None) else None
      images.append(self._transform(np.asarray(example["image"], np.uint8), rng))
      labels.append(example["label"])
    return {"image": np.stack(images), "label": np.asarray(labels, np.int32)}

  def _transform(self, image: np.ndarray, rng: np.random.Generator | None) -> np.ndarray:
    if self.recipe.augment == "inception":
      return preprocess.center_crop(image, self.image_size) if rng is None else (
          preprocess.inception_crop(image, rng, self.image_size))
    if self.recipe.augment == "pad_crop" and rng is not None:
      return preprocess.pad_crop_flip(image, rng, pad=image.shape[0] // 8, flip=self.recipe.flip)
    return image


def open_split(name: str, split: str, data_dir: str | None):
  """``tfds.data_source(name, split=split)`` that never downloads.

  Raises:
    DataNotPreparedError: saying what is missing and the command that prepares it.
  """
  try:
    return tfds.data_source(name, split=split, data_dir=data_dir, download=False)
  except Exception as e:  # noqa: BLE001  -- any failure to open is diagnosed below
    diagnosis = _not_prepared(name, data_dir, e)
    if diagnosis is None:
      raise
    raise diagnosis from e


def _not_prepared(name: str, data_dir: str | None, cause: Exception) -> DataNotPreparedError | None:
  """What is missing and how to make it, or None when the builder cannot tell."""
  try:
    builder = tfds.builder(name, data_dir=data_dir)
    where, prepared = str(builder.data_dir), builder.is_prepared()
  except Exception:  # noqa: BLE001  -- the original error says more than this one
    return None
  data_flag = f" --data_dir={data_dir}" if data_dir else ""
  build = f"tfds build {name}{data_flag} --file_format=array_record"
  if prepared:
    return DataNotPreparedError(
        f"TFDS data set {name!r} is in {where} but cannot be read by index ({cause}). wtfree reads "
        f"array_record files; rebuild it in that format: {build}"
    )
  if name == "imagenet2012":
    manual = f"{data_dir}/downloads/manual" if data_dir else "~/tensorflow_datasets/downloads/manual"
    return DataNotPreparedError(
        f"ImageNet (imagenet2012) is not prepared: nothing at {where}. It needs the manual download: "
        f"put ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar (from https://image-net.org) in {manual}, "
        f"then run: {build}"
    )
  return DataNotPreparedError(
      f"TFDS data set {name!r} is not prepared: nothing at {where}. Prepare it once with: {build} "
      "(or set config.data_dir to where it is)"
  )


def tfds_dataset(name: str, data) -> Splits:
  """The TFDS set ``name`` with its recipe, both splits opened (so a missing set fails here).

  Reads ``data.data_dir`` and ``data.image_size`` (`wtfree.settings.Data`).
  """
  recipe = RECIPES[name]
  data_dir = data.data_dir
  image_size = int(data.image_size)
  train = open_split(name, "train", data_dir)
  test = open_split(name, recipe.eval_split, data_dir)
  features = train.dataset_info.features
  if recipe.augment == "inception":
    input_shape = (image_size, image_size, 3)
  else:
    input_shape = tuple(features["image"].shape)
  logging.info("TFDS %s: %d train, %d %s examples from %s", name, len(train), len(test), recipe.eval_split,
               data_dir or "the default data_dir")
  return Splits(
      train=TfdsSource(train, recipe, image_size, train=True),
      test=TfdsSource(test, recipe, image_size, train=False),
      num_classes=int(features["label"].num_classes),
      input_shape=input_shape,
      pixel_stats=(recipe.mean, recipe.std),
  )
