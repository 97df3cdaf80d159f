"""The pod-shape check in small: 8 devices, batch 64, BatchNorm groups of 8, the steps the loop compiles.

benchmarks/pod_shape.py runs the same checks on Akrout's ResNet-50 configs
over 32 devices; here a tiny ResNet on the digits keeps them to seconds.
"""

import importlib.util
import pathlib

import jax
import numpy as np
import pytest

from configs import digits_mlp
from wtfree import hlo
from wtfree import sharding

_PATH = pathlib.Path(__file__).parents[1] / "benchmarks" / "pod_shape.py"
BATCH, GROUP, MIRROR_BATCH = 64, 8, 32


def _pod_shape():
  spec = importlib.util.spec_from_file_location("pod_shape", _PATH)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


pod_shape = _pod_shape()


def _config(rule: str, group: int):
  config = digits_mlp.get_config()
  config.flatten = False
  config.model = "resnet_tiny"
  config.model_options = {"batch_norm_group": group}
  config.rule = rule
  config.batch_size = BATCH
  # Unlike the batch, so that the mirror's noise is told from it in the program.
  config.mirror_batch_size = MIRROR_BATCH
  config.num_steps = 10
  return config


@pytest.fixture(scope="module")
def wm_grouped():
  built = pod_shape.build(_config("wm", GROUP), sharding.make_mesh(jax.devices()[:8]))
  return built, pod_shape.compile_steps(built)


def test_groups_of_one_devices_examples_send_no_batch_norm_statistic(wm_grouped):
  built, compiled = wm_grouped
  train = pod_shape.describe(compiled["train"], built)
  assert train["programs"] == 1 and train["per_device_batch"] == BATCH // 8
  parts = train["attributed"]
  assert parts["batch_norm_forward"]["elements"] == 0
  # What crosses devices: the gradients, one reduction of the running averages, the loss and metrics.
  assert parts["gradients"]["elements"] > 0
  assert parts["running_averages"]["elements"] == pod_shape._count(built.state.batch_stats)


def test_whole_batch_statistics_cross_devices_in_the_forward_pass():
  built = pod_shape.build(_config("bp", 0), sharding.make_mesh(jax.devices()[:8]))
  train = pod_shape.describe(pod_shape.compile_steps(built)["train"], built)
  assert train["attributed"]["batch_norm_forward"]["ops"] > 0
  assert train["attributed"]["running_averages"]["elements"] == 0


def test_the_mirror_pass_is_inside_the_train_step(wm_grouped):
  built, compiled = wm_grouped
  train_text, mirror_text = compiled["train"].as_text(), compiled["mirror"].as_text()
  assert hlo.programs(train_text) == hlo.programs(mirror_text) == 1
  # The mirror-only step's first-layer noise is drawn in the train step too...
  noise = pod_shape.noise_batches(mirror_text, built)
  assert noise and set(noise) <= set(pod_shape.noise_batches(train_text, built))
  # Each device draws and mirrors its own share of the mirror batch, not all of it.
  assert MIRROR_BATCH // 8 in noise and MIRROR_BATCH not in noise
  # ...and one call of the train step moves B.
  ran = pod_shape.run_steps(built, compiled, 1)
  assert ran["feedback_moved"] and ran["finite"] and np.isfinite(ran["losses"][0])
