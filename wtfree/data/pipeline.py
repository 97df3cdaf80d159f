"""Batches for one host: the global batch at step s is a function of (seed, s) alone.

Epoch e visits the training examples in a permutation seeded by (seed, e);
step s takes the next ``batch_size`` of them, and host p keeps rows
``[p * b, (p + 1) * b)`` with ``b = batch_size // process_count``. So within an
epoch the hosts read disjoint examples, the global batch is the same for any
number of hosts, and a run resumed at step k asks for ``train_batches(k)``.
An epoch drops its last ``num_train % batch_size`` examples. Without
shuffling (``shuffle=False``) every epoch visits the examples in their
stored order, the same for every seed.
"""

import dataclasses
import functools
import math

from absl import flags
from absl import logging
import grain
import jax.numpy as jnp
import numpy as np

from wtfree.data.source import ArraySource, Source, Splits

# Stands in for "forever": grain's MapDataset wants a finite length.
_STEPS = 2**62


@dataclasses.dataclass(frozen=True)
class _Layout:
  """Where this host's rows sit in a global batch."""

  global_size: int
  process_index: int
  process_count: int

  @property
  def local_size(self) -> int:
    return self.global_size // self.process_count

  @property
  def rows(self) -> np.ndarray:
    return self.process_index * self.local_size + np.arange(self.local_size)


@functools.lru_cache(maxsize=4)
def _permutation(seed: int, n: int, epoch: int) -> np.ndarray:
  """Epoch ``epoch``'s order of ``n`` training examples."""
  return np.random.default_rng(np.random.SeedSequence([seed, 0x5EED, epoch])).permutation(n)


def train_indices(num_train: int, layout: _Layout, seed: int, steps: np.ndarray, shuffle: bool = True) -> np.ndarray:
  """``[len(steps), local batch]``: the example indices of this host's rows at each step."""
  steps = np.asarray(steps, np.int64)[:, None]
  per_epoch = num_train // layout.global_size
  epochs, within = steps // per_epoch, steps % per_epoch
  offsets = within * layout.global_size + layout.rows[None, :]
  if not shuffle:
    return offsets
  indices = np.empty(offsets.shape, np.int64)
  for epoch in np.unique(epochs):
    rows = epochs[:, 0] == epoch
    indices[rows] = _permutation(int(seed), num_train, int(epoch))[offsets[rows]]
  return indices


@dataclasses.dataclass(frozen=True)
class _TrainStep:
  """Step s -> this host's part of the global training batch (picklable for grain workers)."""

  source: Source
  layout: _Layout
  seed: int
  flatten: bool
  shuffle: bool = True

  def __call__(self, step: int) -> dict[str, np.ndarray]:
    indices = train_indices(len(self.source), self.layout, self.seed, np.array([step]), self.shuffle)[0]
    rows = self.layout.rows
    keys = np.stack([np.full_like(rows, self.seed), np.full_like(rows, step), rows], axis=1)
    return _finish(self.source.read(indices, keys), self.flatten)


@dataclasses.dataclass(frozen=True)
class _EvalStep:
  """Eval batch k -> this host's rows of test examples ``[k * E, (k + 1) * E)``, padded and masked."""

  source: Source
  layout: _Layout
  flatten: bool

  def __call__(self, k: int) -> dict[str, np.ndarray]:
    n = len(self.source)
    positions = int(k) * self.layout.global_size + self.layout.rows
    real = positions < n
    # Only real rows are read; a batch of padding alone reads example 0 for the arrays' structure.
    read = _finish(self.source.read(positions[real] if real.any() else positions[:1] * 0, None), self.flatten)
    batch = {}
    for name, values in read.items():
      batch[name] = np.zeros((len(positions), *values.shape[1:]), values.dtype)
      batch[name][real] = values[: real.sum()]
    batch["mask"] = real.astype(np.float32)
    return batch


def _finish(batch: dict[str, np.ndarray], flatten: bool) -> dict[str, np.ndarray]:
  image = np.asarray(batch["image"])
  if image.dtype != np.uint8:  # uint8 pixels stay as they are: the device normalises them.
    image = image.astype(np.int32 if np.issubdtype(image.dtype, np.integer) else np.float32)  # token ids stay ints
  if flatten:
    image = image.reshape(len(image), -1)
  label = np.asarray(batch["label"])
  label = label.astype(np.int32) if np.issubdtype(label.dtype, np.integer) else label.astype(np.float32)
  return {"image": image, "label": label}


@dataclasses.dataclass(frozen=True)
class Dataset:
  """One host's view of a data set: its shape, and its batches of the global train and eval batches.

  Attributes:
    splits: the data set's splits as its builder made them.
    batch_size, eval_batch_size: global batch sizes (all hosts together).
    seed: picks the shuffle and the augmentation.
    process_index, process_count: this host, and how many there are.
    flatten: give each example as a flat vector.
    workers: grain worker processes (0 reads in this process).
    prefetch: batches read ahead; TFDS sets read each in its own thread.
    shuffle: visit the training examples in a new order every epoch (False:
      in their stored order, every epoch and every seed alike).
  """

  splits: Splits
  batch_size: int
  eval_batch_size: int
  seed: int = 0
  process_index: int = 0
  process_count: int = 1
  flatten: bool = False
  workers: int = 0
  prefetch: int = 2
  shuffle: bool = True

  @property
  def num_classes(self) -> int:
    return self.splits.num_classes

  @property
  def input_shape(self) -> tuple[int, ...]:
    shape = tuple(self.splits.input_shape)
    return (math.prod(shape),) if self.flatten else shape

  @property
  def input_dtype(self):
    """The dtype of the inputs the model takes (float32, or int32 token ids)."""
    return np.dtype(self.splits.input_dtype)

  @property
  def num_train(self) -> int:
    return len(self.splits.train)

  @property
  def num_test(self) -> int:
    return len(self.splits.test)

  @property
  def has_validation(self) -> bool:
    """Whether the set has a validation split (its own or held out of training, ``config.holdout``)."""
    return self.splits.validation is not None

  @property
  def task(self) -> str:
    return self.splits.task

  @property
  def steps_per_epoch(self) -> int:
    return self.num_train // self.batch_size

  @property
  def arrays(self) -> dict[str, tuple[np.ndarray, np.ndarray]] | None:
    """``{'train': (x, y), 'test': (x, y)}`` of a set held in memory (all hosts' examples), else None."""
    train, test = self.splits.train, self.splits.test
    if not self._in_memory:
      return None
    shape = (-1, *self.input_shape)
    return {"train": (train.x.reshape(shape), train.y), "test": (test.x.reshape(shape), test.y)}

  @property
  def _in_memory(self) -> bool:
    return isinstance(self.splits.train, ArraySource) and isinstance(self.splits.test, ArraySource)

  def prepare(self, batch: dict) -> dict:
    """The batch as the model takes it: uint8 pixels normalised (jit-able; run it on the device).

    Sets without `Splits.pixel_stats` are read ready to use and pass through
    (uint8 images from such a source become float32 as they are).
    """
    if self.splits.pixel_stats is None:
      if jnp.asarray(batch["image"]).dtype == jnp.uint8:  # A source's own uint8 images, as numbers.
        return {**batch, "image": jnp.asarray(batch["image"], jnp.float32)}
      return batch
    mean, std = (jnp.asarray(s, jnp.float32) for s in self.splits.pixel_stats)
    image = jnp.asarray(batch["image"], jnp.float32)
    # A flattened HWC image has the channel as its fastest axis: repeat the statistics along it.
    reps = image.shape[-1] // mean.shape[0]
    image = (image / 255.0 - jnp.tile(mean, reps)) / jnp.tile(std, reps)
    return {**batch, "image": image}

  def train_batches(self, start_step: int = 0):
    """This host's part of global batch ``start_step``, then of the next, forever.

    Returns:
      An iterator of ``{'image': [b, *input_shape], 'label': [b, ...]}``
      (images float32, or uint8 for `prepare` to normalise)
      with ``b = batch_size // process_count``; labels are int32 for
      classification, float32 ``[b, num_classes]`` for regression.
    """
    if start_step < 0:
      raise ValueError(f"start_step {start_step} is negative; steps count from 0")
    layout = _Layout(self.batch_size, self.process_index, self.process_count)
    step = _TrainStep(self.splits.train, layout, int(self.seed), self.flatten, self.shuffle)
    return self._iterate(grain.MapDataset.range(start_step, _STEPS).map(step))

  def train_indices(self, start_step: int, steps: int) -> np.ndarray:
    """The example indices of this host's rows of global batches ``start_step .. start_step + steps - 1``.

    ``[steps, batch_size // process_count]``, the same examples `train_batches`
    reads at those steps; for sets held in memory, whose batches can be
    gathered on the device.
    """
    layout = _Layout(self.batch_size, self.process_index, self.process_count)
    return train_indices(self.num_train, layout, int(self.seed), np.arange(start_step, start_step + steps),
                         self.shuffle)

  def eval_batches(self, split: str = "test"):
    """One pass over the ``split`` split ('test' or 'validation') in a fixed order, this host's rows.

    Every host yields ``ceil(len(split) / eval_batch_size)`` batches of
    ``eval_batch_size // process_count`` rows; rows past the end of the split
    are zeros with ``'mask'`` 0 (real rows have 1).
    """
    sources = {"test": self.splits.test, "validation": self.splits.validation}
    if sources.get(split) is None:
      raise ValueError(f"split {split!r} is not one of this data set's: "
                       f"{', '.join(k for k, v in sources.items() if v is not None)}")
    layout = _Layout(self.eval_batch_size, self.process_index, self.process_count)
    steps = math.ceil(len(sources[split]) / self.eval_batch_size)
    return self._iterate(grain.MapDataset.range(steps).map(_EvalStep(sources[split], layout, self.flatten)))

  def _iterate(self, batches: grain.MapDataset):
    # Threads only pay off when reading is I/O or decoding; in-memory sets read fastest inline.
    threads = 0 if self._in_memory else max(1, self.prefetch)
    it = batches.to_iter_dataset(grain.ReadOptions(num_threads=threads, prefetch_buffer_size=self.prefetch))
    if self.workers > 0:
      if not flags.FLAGS.is_parsed():
        # grain's workers read absl flags; outside an absl app (a notebook, pytest) take their defaults.
        logging.info("absl flags unparsed; marking them parsed (defaults) for grain's worker processes")
        flags.FLAGS.mark_as_parsed()
      it = it.mp_prefetch(grain.MultiprocessingOptions(num_workers=self.workers))
    return iter(it)
