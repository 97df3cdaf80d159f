"""Your own arrays: ``dataset='arrays'`` with ``data_path`` naming an ``.npz``.

The file holds ``x_train, y_train, x_test, y_test``: inputs as images NHWC or
flat vectors (any numeric dtype, used as given, cast to float32) and integer
labels in ``[0, num_classes)``. ``num_classes`` is the file's own scalar
``num_classes`` where it holds one, else ``max(y_train) + 1``, and then every
class must have a training example (a stray label such as 99 among ten
classes would otherwise make a 100-way head).
"""

from absl import logging
import numpy as np
from etils import epath

from wtfree.data.source import Splits, array_splits

KEYS = ("x_train", "y_train", "x_test", "y_test")


def load_npz(path) -> Splits:
  """Reads and checks an ``.npz`` of ``x_train, y_train, x_test, y_test``.

  Raises:
    FileNotFoundError: when ``path`` does not exist.
    ValueError: naming the array at fault, when a key is missing, shapes do
      not agree, labels are not integers or fall outside the training classes.
  """
  path = epath.Path(path)
  if not path.exists():
    raise FileNotFoundError(f"data_path {str(path)!r} does not exist; point it at an .npz with {', '.join(KEYS)}")
  with path.open("rb") as f:
    try:
      loaded = np.load(f, allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
      raise ValueError(f"data_path {str(path)!r} is not a readable .npz ({e}); save one with np.savez") from e
    if not isinstance(loaded, np.lib.npyio.NpzFile):
      raise ValueError(f"data_path {str(path)!r} holds a single array, not an .npz of {', '.join(KEYS)}")
    with loaded as npz:
      missing = [k for k in KEYS if k not in npz.files]
      if missing:
        raise ValueError(
            f"{path} lacks {missing}; it has {sorted(npz.files)}. Save it with "
            "np.savez(path, x_train=..., y_train=..., x_test=..., y_test=...)"
        )
      arrays = {k: npz[k] for k in KEYS}
      declared = int(npz["num_classes"]) if "num_classes" in npz.files else None
  return _check(arrays, str(path), declared)


def _check(a: dict[str, np.ndarray], where: str, declared: int | None = None) -> Splits:
  for split in ("train", "test"):
    x, y = a[f"x_{split}"], a[f"y_{split}"]
    if x.ndim < 2 or len(x) == 0:
      raise ValueError(f"x_{split} in {where} has shape {x.shape}; it needs [examples, features] or [N, H, W, C]")
    if not (np.issubdtype(x.dtype, np.number) or x.dtype == np.bool_):
      raise ValueError(f"x_{split} in {where} has dtype {x.dtype}; inputs must be numbers")
    if not np.all(np.isfinite(x)):
      raise ValueError(f"x_{split} in {where} holds NaN or infinite values; clean or drop those examples")
    if y.shape != (len(x),):
      raise ValueError(
          f"y_{split} in {where} has shape {y.shape} but x_{split} has {len(x)} examples; "
          f"labels must be one integer per example, shape ({len(x)},)"
      )
    if not np.issubdtype(y.dtype, np.integer):
      raise ValueError(f"y_{split} in {where} has dtype {y.dtype}; labels must be integers (y.astype(np.int32))")
  if a["x_train"].shape[1:] != a["x_test"].shape[1:]:
    raise ValueError(
        f"examples in {where} differ in shape: x_train {a['x_train'].shape[1:]}, x_test {a['x_test'].shape[1:]}"
    )
  num_classes = declared if declared is not None else int(a["y_train"].max()) + 1
  seen = "the file's num_classes" if declared is not None else "the classes seen in y_train"
  for split in ("train", "test"):
    y = a[f"y_{split}"]
    bad = y[(y < 0) | (y >= num_classes)]
    if bad.size:
      raise ValueError(
          f"y_{split} in {where} holds label {int(bad[0])}, outside [0, {num_classes}) ({seen}); relabel to 0..K-1"
      )
  empty = np.setdiff1d(np.arange(num_classes), a["y_train"])
  if declared is None and empty.size:
    raise ValueError(
        f"y_train in {where} has labels up to {num_classes - 1} but no example of {empty.size} of those "
        f"{num_classes} classes (e.g. {int(empty[0])}): relabel to 0..K-1, or save num_classes in the .npz "
        "if classes are missing on purpose")
  logging.info("dataset 'arrays': %d classes (%s), %d training and %d test examples", num_classes, seen,
               len(a["y_train"]), len(a["y_test"]))
  return array_splits(a["x_train"], a["y_train"], a["x_test"], a["y_test"], num_classes=num_classes)


def arrays(data) -> Splits:
  """The 'arrays' data set: the ``.npz`` at ``data.data_path`` (`wtfree.settings.Data`)."""
  path = data.data_path
  if not path:
    raise ValueError("dataset 'arrays' needs data_path, the .npz holding x_train, y_train, x_test, y_test")
  return load_npz(path)
