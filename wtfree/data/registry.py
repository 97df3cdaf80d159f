"""Data sets by name: ``get_dataset(config)`` builds the one ``config.dataset`` names."""

from collections.abc import Callable
import functools

import jax

from wtfree.data import arrays, embedded, mnist_full, synthetic, text, tfds_sets
from wtfree.data.pipeline import Dataset
from wtfree.data.source import Splits, with_validation

_DATASETS: dict[str, Callable[..., Splits]] = {}


def register(name: str, build: Callable[..., Splits]) -> None:
  """Makes ``dataset=name`` call ``build(config)``, which returns the set's ``Splits``."""
  _DATASETS[name] = build


def names() -> tuple[str, ...]:
  """The names of all registered data sets."""
  return tuple(_DATASETS)


def check_name(name: str) -> None:
  """Raises ValueError, listing the known names, when no data set is called ``name``."""
  if name not in _DATASETS:
    raise ValueError(f"dataset {name!r} is not one of {', '.join(_DATASETS)}")


def get_dataset(config, process_index: int | None = None, process_count: int | None = None) -> Dataset:
  """This host's view of the data set ``config.dataset``.

  Reads ``dataset``, ``batch_size`` (global), ``seed`` and, when present,
  ``eval_batch_size`` (default ``batch_size``), ``holdout`` (the fraction
  of the training set held out as the validation split of a set without
  its own), ``data_dir``, ``data_path``,
  ``image_size``, ``context_length``, ``flatten``, ``data_workers`` and ``prefetch``.

  Args:
    config: an ``ml_collections.ConfigDict`` or anything with ``.get``.
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
  name = config.get("dataset", None)
  check_name(name)
  process_index = jax.process_index() if process_index is None else int(process_index)
  process_count = jax.process_count() if process_count is None else int(process_count)
  if not 0 <= process_index < process_count:
    raise ValueError(f"process_index {process_index} is not in [0, process_count={process_count})")
  batch_size = int(config.batch_size)
  eval_batch_size = int(config.get("eval_batch_size", None) or batch_size)
  for what, size in (("batch_size", batch_size), ("eval_batch_size", eval_batch_size)):
    if size <= 0 or size % process_count:
      raise ValueError(
          f"global {what} {size} does not divide over {process_count} hosts; make it a positive multiple of "
          f"{process_count}"
      )
  workers, prefetch = int(config.get("data_workers", 0) or 0), int(config.get("prefetch", 2))
  if workers < 0 or prefetch < 0:
    raise ValueError(f"data_workers {workers} and prefetch {prefetch} must both be >= 0")
  splits = with_validation(_DATASETS[name](config), float(config.get("holdout", 0.0) or 0.0))
  if batch_size > len(splits.train):
    raise ValueError(
        f"batch_size {batch_size} is larger than {name!r}'s {len(splits.train)} training examples; lower it"
    )
  return Dataset(
      splits=splits,
      batch_size=batch_size,
      eval_batch_size=eval_batch_size,
      seed=int(config.get("seed", 0)),
      process_index=process_index,
      process_count=process_count,
      flatten=bool(config.get("flatten", False)),
      workers=workers,
      prefetch=prefetch,
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
