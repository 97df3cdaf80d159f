"""Data sets by name: ``get_dataset(run.data)`` builds the one ``run.data.dataset`` names (`wtfree.settings`)."""

from collections.abc import Callable
import functools

import jax

from wtfree.data import arrays, embedded, mnist_full, synthetic, text, tfds_sets
from wtfree.data.pipeline import Dataset
from wtfree.data.source import Splits, with_validation, with_validation_trained

_DATASETS: dict[str, Callable[..., Splits]] = {}
# The sets that read input_scaling, and its values.
_SCALED = {mnist_full.NAME}
INPUT_SCALINGS = mnist_full.INPUT_SCALINGS


def register(name: str, build: Callable[..., Splits]) -> None:
  """Makes ``dataset=name`` call ``build(data)`` (a `wtfree.settings.Data`), which returns the set's ``Splits``."""
  _DATASETS[name] = build


def names() -> tuple[str, ...]:
  """The names of all registered data sets."""
  return tuple(_DATASETS)


def check_name(name: str) -> None:
  """Raises ValueError, listing the known names, when no data set is called ``name``."""
  if name not in _DATASETS:
    raise ValueError(f"dataset {name!r} is not one of {', '.join(_DATASETS)}")


def check_options(data) -> None:
  """Raises ValueError for data options the set ``data.dataset`` does not read, or that contradict.

  ``input_scaling`` other than 'standardize' is read only by sets of raw
  pixels; ``train_on_validation`` leaves no examples for ``holdout``.
  """
  name, scaling = data.dataset, data.input_scaling
  if scaling not in INPUT_SCALINGS:
    raise ValueError(f"input_scaling {scaling!r} is not one of {', '.join(INPUT_SCALINGS)}")
  if scaling != "standardize" and name not in _SCALED:
    raise ValueError(f"input_scaling {scaling!r} is read only by {', '.join(sorted(_SCALED))}; dataset {name!r} "
                     "scales its inputs its own way: drop --config.input_scaling")
  if data.train_on_validation and data.holdout:
    raise ValueError(f"train_on_validation with holdout {data.holdout} contradicts: the first trains on "
                     "the validation split, the second holds one out of training; drop one")


def get_dataset(data, process_index: int | None = None, process_count: int | None = None) -> Dataset:
  """This host's view of the data set ``data.dataset``.

  Reads ``dataset``, ``batch_size`` (global), ``seed``,
  ``eval_batch_size``, ``holdout`` (the fraction
  of the training set held out as the validation split of a set without
  its own), ``train_on_validation`` (a set's own validation split joins
  the training split, after it), ``shuffle``, ``input_scaling``
  (`check_options`), ``data_dir``, ``data_path``,
  ``image_size``, ``context_length``, ``flatten``, ``data_workers`` and ``prefetch``.

  Args:
    data: the run's data settings, ``settings.resolve(config).data`` (`wtfree.settings.Data`).
    process_index: this host; None asks ``jax.process_index()``.
    process_count: the number of hosts; None asks ``jax.process_count()``.

  Returns:
    A ``Dataset``; ``ds.train_batches(start_step)`` and ``ds.eval_batches()``
    give this host's rows of each global batch.

  Raises:
    ValueError: for an unknown name, or a batch size that does not divide
      over the hosts or exceeds the training set.
    DataNotPreparedError: for a set that needs preparing (TFDS sets,
      'mnist_full') and is not in ``data_dir``.
  """
  name = data.dataset
  check_name(name)
  check_options(data)
  process_index = jax.process_index() if process_index is None else int(process_index)
  process_count = jax.process_count() if process_count is None else int(process_count)
  if not 0 <= process_index < process_count:
    raise ValueError(f"process_index {process_index} is not in [0, process_count={process_count})")
  batch_size = int(data.batch_size)
  eval_batch_size = int(data.eval_batch_size)
  for what, size in (("batch_size", batch_size), ("eval_batch_size", eval_batch_size)):
    if size <= 0 or size % process_count:
      raise ValueError(
          f"global {what} {size} does not divide over {process_count} hosts; make it a positive multiple of "
          f"{process_count}"
      )
  workers, prefetch = int(data.data_workers), int(data.prefetch)
  if workers < 0 or prefetch < 0:
    raise ValueError(f"data_workers {workers} and prefetch {prefetch} must both be >= 0")
  splits = with_validation(_DATASETS[name](data), float(data.holdout))
  if data.train_on_validation:
    splits = with_validation_trained(splits)
  if batch_size > len(splits.train):
    raise ValueError(
        f"batch_size {batch_size} is larger than {name!r}'s {len(splits.train)} training examples; lower it"
    )
  return Dataset(
      splits=splits,
      batch_size=batch_size,
      eval_batch_size=eval_batch_size,
      seed=int(data.seed),
      process_index=process_index,
      process_count=process_count,
      flatten=bool(data.flatten),
      workers=workers,
      prefetch=prefetch,
      shuffle=bool(data.shuffle),
  )


register("digits", embedded.digits)
register("mnist1d", embedded.mnist1d)
register("mnist5k", embedded.mnist5k)
register("mnist_full", mnist_full.mnist_full)
register("pydoc_chars", text.pydoc_chars)
register("arrays", arrays.arrays)
register("linear_teacher", synthetic.linear_teacher_data)
register("tanh_teacher", synthetic.tanh_teacher_data)
register("quadratic_teacher", synthetic.quadratic_teacher_data)
for _name in tfds_sets.RECIPES:
  register(_name, functools.partial(tfds_sets.tfds_dataset, _name))
