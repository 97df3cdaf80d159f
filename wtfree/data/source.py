"""What a data set hands the pipeline: two random-access splits and their description."""

import dataclasses
from typing import Protocol

import numpy as np


class Source(Protocol):
  """A random-access split that reads whole batches.

  ``read(indices, keys)`` returns ``{'image': [n, ...], 'label': [n, ...]}``
  for the examples at ``indices`` (images float32, or uint8 pixels for a set
  with `Splits.pixel_stats`, normalised on the device); ``keys`` is an int array ``[n, 3]`` of
  per-example random seeds for augmentation, or None for the eval transform.
  """

  def __len__(self) -> int: ...

  def read(self, indices: np.ndarray, keys: np.ndarray | None) -> dict[str, np.ndarray]: ...


class DataNotPreparedError(FileNotFoundError):
  """A data set is not where the run looks for it; the message names the command that prepares it."""


@dataclasses.dataclass(frozen=True)
class ArraySource:
  """A split held in memory, read by fancy indexing; no augmentation."""

  x: np.ndarray
  y: np.ndarray

  def __len__(self) -> int:
    return len(self.x)

  def read(self, indices: np.ndarray, keys: np.ndarray | None) -> dict[str, np.ndarray]:
    del keys  # In-memory sets are not augmented.
    return {"image": self.x[indices], "label": self.y[indices]}


@dataclasses.dataclass(frozen=True)
class Splits:
  """A data set as its builder makes it, before batching.

  Attributes:
    train, test: the two splits.
    validation: the set's own validation split, or None where the set has
      none (model selection then holds out a fixed part of ``train``:
      `with_validation`).
    held_out: the fraction of the training set ``validation`` was held out
      of (`with_validation`); 0 for a set's own.
    num_classes: classes, or the output dimension of a regression task.
    input_shape: one example's shape.
    task: 'classification', 'regression' or 'language_model' (inputs and
      labels are token sequences ``[n, length]``; the loss is the mean
      cross entropy over positions).
    pixel_stats: ``(mean, std)`` per channel of pixels scaled to [0, 1], for
      sets whose sources read uint8 images: they travel to the device as
      uint8 (a quarter of float32's bytes) and are normalised there
      (`wtfree.data.Dataset.prepare`). None: images are read ready to use.
    input_dtype: the dtype the model takes, after `wtfree.data.Dataset.prepare`:
      'float32', or 'int32' for token ids.
  """

  train: Source
  test: Source
  num_classes: int
  input_shape: tuple[int, ...]
  task: str = "classification"
  pixel_stats: tuple[tuple[float, ...], tuple[float, ...]] | None = None
  input_dtype: str = "float32"
  validation: Source | None = None
  held_out: float = 0.0


def array_splits(x_train, y_train, x_test, y_test, num_classes: int, task: str = "classification") -> Splits:
  """``Splits`` of in-memory arrays: inputs as float32, labels int32 (classification) or float32."""
  label_dtype = np.int32 if task == "classification" else np.float32
  return Splits(
      train=ArraySource(np.asarray(x_train, np.float32), np.asarray(y_train, label_dtype)),
      test=ArraySource(np.asarray(x_test, np.float32), np.asarray(y_test, label_dtype)),
      num_classes=int(num_classes),
      input_shape=tuple(np.shape(x_train)[1:]),
      task=task,
  )


# The held-out part of a training set is the same for every run and seed.
_HOLDOUT_SEED = 0x5A11D


@dataclasses.dataclass(frozen=True)
class IndexedSource:
  """The examples of ``source`` at ``indices``, in that order."""

  source: Source
  indices: np.ndarray

  def __len__(self) -> int:
    return len(self.indices)

  def read(self, indices: np.ndarray, keys: np.ndarray | None) -> dict[str, np.ndarray]:
    return self.source.read(self.indices[np.asarray(indices)], keys)


def _subset(source: Source, indices: np.ndarray) -> Source:
  if isinstance(source, ArraySource):  # Stays an in-memory set, which the loop keeps on the device.
    return ArraySource(source.x[indices], source.y[indices])
  return IndexedSource(source, indices)


def holdout_indices(num_train: int, fraction: float) -> tuple[np.ndarray, np.ndarray]:
  """``(kept, held_out)`` indices of a training set of ``num_train``: a fixed random ``fraction`` held out.

  The permutation has a fixed seed of its own, so every run, seed and
  sweep cell holds out the same examples; both index lists are sorted.
  """
  held = int(round(num_train * fraction))
  order = np.random.default_rng(_HOLDOUT_SEED).permutation(num_train)
  return np.sort(order[held:]), np.sort(order[:held])


def with_validation(splits: Splits, fraction: float) -> Splits:
  """``splits`` with a validation split: its own, or ``fraction`` of the training set held out of it.

  Raises:
    ValueError: for a fraction outside [0, 1), or one that holds out every
      training example or none.
  """
  if splits.validation is not None or not fraction:
    return splits
  if not 0.0 < fraction < 1.0:
    raise ValueError(f"holdout {fraction} is not in [0, 1): the fraction of the training set held out "
                     "for validation (--config.holdout=0.1)")
  kept, held = holdout_indices(len(splits.train), fraction)
  if not len(kept) or not len(held):
    raise ValueError(f"holdout {fraction} of {len(splits.train)} training examples leaves "
                     f"{len(kept)} to train on and {len(held)} to validate on; pick another fraction")
  return dataclasses.replace(splits, train=_subset(splits.train, kept), validation=_subset(splits.train, held),
                             held_out=fraction)


@dataclasses.dataclass(frozen=True)
class JoinedSource:
  """The examples of ``first``, then those of ``second``."""

  first: Source
  second: Source

  def __len__(self) -> int:
    return len(self.first) + len(self.second)

  def read(self, indices: np.ndarray, keys: np.ndarray | None) -> dict[str, np.ndarray]:
    indices = np.asarray(indices)
    cut = len(self.first)
    low = indices < cut
    parts = [(low, self.first, indices[low]), (~low, self.second, indices[~low] - cut)]
    read = [(rows, src.read(at, None if keys is None else keys[rows])) for rows, src, at in parts if rows.any()]
    out = {}
    for name in read[0][1]:
      values = read[0][1][name]
      out[name] = np.empty((len(indices), *values.shape[1:]), values.dtype)
      for rows, batch in read:
        out[name][rows] = batch[name]
    return out


def with_validation_trained(splits: Splits) -> Splits:
  """``splits`` with its own validation split appended to the training split, and no validation split.

  Raises:
    ValueError: for a set without a validation split of its own.
  """
  if splits.validation is None or splits.held_out:
    raise ValueError("train_on_validation needs a data set with a validation split of its own (e.g. "
                     "mnist_full); this one has none, so its training split is all there is to train on")
  train, validation = splits.train, splits.validation
  if isinstance(train, ArraySource) and isinstance(validation, ArraySource):  # Stays in memory, on the device.
    joined = ArraySource(np.concatenate([train.x, validation.x]), np.concatenate([train.y, validation.y]))
  else:
    joined = JoinedSource(train, validation)
  return dataclasses.replace(splits, train=joined, validation=None)
