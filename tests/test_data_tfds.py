"""TFDS sets through ``tfds.data_source`` under ``tfds.testing.mock_data``: shapes, hosts, resuming, errors."""

import itertools

import jax
import ml_collections
import numpy as np
import pytest
import tensorflow_datasets as tfds
from tensorflow_datasets.core.data_sources import array_record

from wtfree import data
from wtfree import settings
from wtfree.data import tfds_sets

NUM_EXAMPLES = 24  # per split, in the mock
BATCH = 8

SHAPES = {"imagenet2012": (224, 224, 3), "cifar10": (32, 32, 3), "mnist": (28, 28, 1)}
CLASSES = {"imagenet2012": 1000, "cifar10": 10, "mnist": 10}


@pytest.fixture
def mock_tfds():
  # USE_CODE: no metadata files exist offline, so examples come from each builder's feature spec.
  with tfds.testing.mock_data(num_examples=NUM_EXAMPLES, policy=tfds.testing.MockPolicy.USE_CODE):
    yield


def _config(name, **overrides):
  config = ml_collections.ConfigDict(
      {"dataset": name, "batch_size": BATCH, "eval_batch_size": BATCH, "seed": 0, "data_dir": "/tmp/wtfree-mock",
       "image_size": 224, "data_workers": 0, "prefetch": 2}
  )
  config.update(overrides)
  return config


def _data(*args, **kw):
  return settings.resolve(_config(*args, **kw)).data


def _hosts(config, count):
  return [data.get_dataset(settings.resolve(config).data, process_index=p, process_count=count) for p in range(count)]


def _bounds(name):
  recipe = tfds_sets.RECIPES[name]
  mean, std = np.asarray(recipe.mean), np.asarray(recipe.std)
  return (0 - mean) / std, (1 - mean) / std


@pytest.mark.parametrize("hosts", [1, 2])
@pytest.mark.parametrize("name", ["imagenet2012", "cifar10", "mnist"])
def test_batches_have_the_right_shape_dtype_and_range(mock_tfds, name, hosts):
  del mock_tfds
  for ds in _hosts(_config(name), hosts):
    assert isinstance(ds.splits.train.data, array_record.ArrayRecordDataSource)  # the data_source path
    assert (ds.input_shape, ds.num_classes, ds.num_train, ds.task) == (
        SHAPES[name], CLASSES[name], NUM_EXAMPLES, "classification")
    low, high = _bounds(name)
    for batch in (next(ds.train_batches()), next(ds.eval_batches())):
      assert batch["image"].shape == (BATCH // hosts, *SHAPES[name])
      # Pixels leave the host as uint8 and are normalised on the device.
      assert batch["image"].dtype == np.uint8 and batch["label"].dtype == np.int32
      image = np.asarray(jax.jit(ds.prepare)(batch)["image"])
      assert image.dtype == np.float32 and image.shape == batch["image"].shape
      assert np.all(image >= low - 1e-5) and np.all(image <= high + 1e-5)
      assert np.all((batch["label"] >= 0) & (batch["label"] < CLASSES[name]))


@pytest.mark.parametrize("name", ["cifar10", "mnist"])
def test_eval_images_are_the_normalised_source_images(mock_tfds, name):
  del mock_tfds
  ds = data.get_dataset(_data(name))
  source = tfds.data_source(name, split="test", data_dir="/tmp/wtfree-mock", download=False)
  recipe = tfds_sets.RECIPES[name]
  batch = jax.jit(ds.prepare)(next(ds.eval_batches()))
  for i in range(BATCH):
    want = (source[i]["image"] / 255.0 - np.asarray(recipe.mean)) / np.asarray(recipe.std)
    np.testing.assert_allclose(batch["image"][i], want, rtol=1e-5, atol=1e-5)
    assert batch["label"][i] == source[i]["label"]
  np.testing.assert_array_equal(batch["mask"], np.ones(BATCH, np.float32))


@pytest.mark.parametrize("name", ["imagenet2012", "cifar10", "mnist"])
def test_two_hosts_split_each_global_batch(mock_tfds, name):
  del mock_tfds
  (whole,) = _hosts(_config(name), 1)
  halves = _hosts(_config(name), 2)
  for step in (0, 4):  # 4 is in the second epoch (3 steps per epoch)
    one = next(whole.train_batches(step))
    two = [next(ds.train_batches(step)) for ds in halves]
    for key in ("image", "label"):
      np.testing.assert_array_equal(np.concatenate([b[key] for b in two]), one[key])


def test_two_hosts_see_disjoint_examples_covering_an_epoch(mock_tfds):
  del mock_tfds
  # mnist is not augmented, so an image's bytes name its example.
  halves = _hosts(_config("mnist"), 2)
  steps = NUM_EXAMPLES // BATCH
  seen = [
      {img.tobytes() for b in itertools.islice(ds.train_batches(), steps) for img in b["image"]} for ds in halves
  ]
  assert len(seen[0]) == len(seen[1]) == NUM_EXAMPLES // 2
  assert not seen[0] & seen[1]


def test_same_seed_same_batches_and_resume_continues(mock_tfds):
  del mock_tfds
  config = _config("cifar10")  # random crops and flips: the augmentation must repeat too
  straight = list(itertools.islice(data.get_dataset(settings.resolve(config).data).train_batches(), 7))
  again = list(itertools.islice(data.get_dataset(settings.resolve(config).data).train_batches(), 7))
  # A run stopped after 5 steps restores its position (the step) and asks for the rest.
  resumed = list(itertools.islice(data.get_dataset(settings.resolve(config).data).train_batches(start_step=5), 2))
  other_seed = next(data.get_dataset(_data("cifar10", seed=1)).train_batches())
  for a, b in zip(straight, again):
    np.testing.assert_array_equal(a["image"], b["image"])
  for a, b in zip(straight[5:], resumed):
    np.testing.assert_array_equal(a["image"], b["image"])
    np.testing.assert_array_equal(a["label"], b["label"])
  assert not np.array_equal(straight[0]["image"], other_seed["image"])


def test_training_augments_and_eval_does_not(mock_tfds):
  del mock_tfds
  ds = data.get_dataset(_data("cifar10", batch_size=NUM_EXAMPLES, eval_batch_size=NUM_EXAMPLES))
  train, evals = next(ds.train_batches()), next(ds.eval_batches())
  originals = {img.tobytes() for img in evals["image"]}  # mock train and test splits hold the same examples
  unchanged = sum(img.tobytes() in originals for img in train["image"])
  # A crop at offset (4, 4) without a flip leaves an image as it was: 1 in 162.
  assert unchanged <= 2, unchanged
  assert sorted(train["label"]) == sorted(evals["label"])


@pytest.mark.parametrize("name", ["cifar10", "imagenet2012"])
def test_an_unprepared_set_fails_at_start_with_the_command_that_prepares_it(tmp_path, name):
  with pytest.raises(data.DataNotPreparedError) as err:
    data.get_dataset(_data(name, data_dir=str(tmp_path)))
  message = str(err.value)
  assert f"tfds build {name} --data_dir={tmp_path} --file_format=array_record" in message
  assert str(tmp_path) in message
  if name == "imagenet2012":
    assert "manual" in message and "ILSVRC2012_img_train.tar" in message


def test_flattened_rgb_images_are_normalised_per_channel(mock_tfds):
  del mock_tfds
  flat = data.get_dataset(_data("cifar10", flatten=True))
  images = data.get_dataset(_data("cifar10"))
  a = np.asarray(jax.jit(flat.prepare)(next(flat.eval_batches()))["image"])
  b = np.asarray(jax.jit(images.prepare)(next(images.eval_batches()))["image"])
  np.testing.assert_allclose(a, b.reshape(len(b), -1), rtol=1e-6, atol=1e-6)


def test_the_loop_trains_seeds_on_a_host_fed_set(mock_tfds, tmp_path):
  """Host-fed batches (uint8 to the device, read ahead) train every replica as its own single-seed run."""
  del mock_tfds
  from wtfree import defaults
  from wtfree import train

  def config(**fields):
    c = defaults.get_config()
    c.update(dict(dataset="mnist", data_dir="/tmp/wtfree-mock", flatten=True, batch_size=8, eval_batch_size=8,
                  num_steps=6, log_every_steps=3, eval_every_steps=6, checkpoint_every_steps=6,
                  tensorboard=False, angles=False, **fields))
    c.model_options.widths = (16,)
    return c

  both = train.train_and_evaluate(config(num_seeds=2), str(tmp_path / "both"))
  alone = train.train_and_evaluate(config(seed=1), str(tmp_path / "alone"))
  jax.tree.map(lambda a, b: np.testing.assert_allclose(np.asarray(a)[1], np.asarray(b), rtol=2e-5, atol=2e-6),
               jax.device_get(both.params), jax.device_get(alone.params))
  import json

  last = [json.loads(line) for line in open(tmp_path / "both" / "metrics.jsonl")][-1]
  assert last["split"] == "eval" and len(last["eval/top1/seeds"]) == 2
