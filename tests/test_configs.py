"""Every published config builds its model and takes a train step at a tiny size."""

import importlib
import pathlib

import jax
import numpy as np
import pytest

from wtfree import models
from wtfree import optim
from wtfree import settings
from wtfree import sharding
from wtfree import steps
from wtfree import validate

CONFIGS = sorted(
    p.stem for p in (pathlib.Path(__file__).parents[1] / "configs").glob("*.py")
    if p.stem not in ("__init__", "default", "akrout_imagenet", "biotorch_cifar")
)
# Compiling a ResNet step takes 10-40 s on two cores: the default run keeps one
# config per family and rule kind; `-m slow` runs them all.
FAST = {"digits_mlp", "mnist1d_mlp", "resnet20_brsf"}
PARAMS = [pytest.param(n, marks=() if n in FAST else pytest.mark.slow) for n in CONFIGS]
# Sizes only: the rule, model, optimizer and schedule stay the config's own.
TINY_IMAGE = {"imagenet2012": (32, 32, 3), "cifar10": (32, 32, 3), "digits": (8, 8, 1), "mnist1d": (40, 1),
              "mnist5k": (28, 28, 1), "pydoc_chars": (16,)}
CLASSES = {"imagenet2012": 1000, "cifar10": 10, "digits": 10, "mnist1d": 10, "mnist5k": 10, "pydoc_chars": 97}
LANGUAGE = {"pydoc_chars"}


@pytest.mark.parametrize("name", PARAMS)
def test_config_takes_one_step(name):
  config = importlib.import_module(f"configs.{name}").get_config()
  validate.check_config(config)
  config.batch_size = 8
  config.mirror_batch_size = 8
  if config.model_options.get("batch_norm_group"):
    config.model_options.batch_norm_group = 8  # The tiny batch, grouped as the config groups its own.
  input_shape = TINY_IMAGE[config.dataset]
  mesh = sharding.make_mesh()
  classes = CLASSES[config.dataset]
  language = config.dataset in LANGUAGE
  dtype = np.int32 if language else np.float32
  run = settings.resolve(config)
  model = models.create(run.model, classes, input_shape, dtype)
  tx = optim.make(run.optimizer, steps_per_epoch=10)
  learner = steps.make_learner(model, input_shape, mirror_batch_size=config.mirror_batch_size,
                               passes=config.mirror_passes, input_dtype=dtype)
  state = steps.create_train_state(model, tx, input_shape, config.seed, mesh, learner)
  rng = np.random.default_rng(0)
  if language:
    tokens = rng.integers(0, classes, size=(8, input_shape[0] + 1), dtype=np.int32)
    local = {"image": tokens[:, :-1], "label": tokens[:, 1:]}
  else:
    local = {
        "image": rng.normal(size=(8, *input_shape)).astype(np.float32),
        "label": np.arange(8, dtype=np.int32) % classes,
    }
  task = "language_model" if language else "classification"
  before = jax.device_get(state.params)
  step = jax.jit(lambda s, b: steps.train_step(s, b, model=model, tx=tx, task=task, learner=learner))
  new_state = state
  # Two steps: a linear warm-up gives the first one a learning rate of 0.
  for _ in range(2):
    new_state, step_metrics = step(new_state, sharding.global_batch(local, mesh))
    assert np.isfinite(float(step_metrics["loss"]))
  changed = jax.tree.map(lambda a, b: not np.array_equal(a, np.asarray(b)), before, jax.device_get(new_state.params))
  assert any(jax.tree.leaves(changed)), "the step left every parameter unchanged"
