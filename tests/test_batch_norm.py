"""BatchNorm over groups of the batch (model_options.batch_norm_group), on one device and on eight."""

import re

import flax.linen as nn
import jax
from jax.sharding import NamedSharding, PartitionSpec as P
import jax.numpy as jnp
import numpy as np
import pytest

from wtfree import hlo
from wtfree import models
from wtfree import sharding
from wtfree.models import batch_norm


def _by_hand(x, group, epsilon=1e-5):
  """Each group of ``group`` examples standardised by its own mean and biased variance."""
  x = np.asarray(x, np.float64)
  groups = x.reshape(-1, group, *x.shape[1:])
  axes = tuple(range(1, groups.ndim - 1))
  mean = groups.mean(axes, keepdims=True)
  var = groups.var(axes, keepdims=True)
  return ((groups - mean) / np.sqrt(var + epsilon)).reshape(x.shape), mean.reshape(-1, x.shape[-1]), \
      var.reshape(-1, x.shape[-1])


@pytest.mark.parametrize("shape", [(32, 5), (16, 4, 4, 3)])
def test_groups_are_normalised_by_their_own_statistics(shape):
  x = jax.random.normal(jax.random.key(0), shape) * 3.0 + jnp.arange(shape[-1])
  module = batch_norm.GroupedBatchNorm(group_size=8, momentum=0.9)
  variables = module.init(jax.random.key(1), x)
  y, updated = module.apply(variables, x, mutable=["batch_stats"])
  expected, means, variances = _by_hand(x, 8)
  np.testing.assert_allclose(y, expected, rtol=1e-4, atol=1e-4)
  # The running averages move towards the mean over groups of the groups' statistics.
  np.testing.assert_allclose(updated["batch_stats"]["mean"], 0.1 * means.mean(0), rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(updated["batch_stats"]["var"], 0.9 + 0.1 * variances.mean(0), rtol=1e-5)


def test_one_group_of_the_whole_batch_is_flaxs_batch_norm():
  x = jax.random.normal(jax.random.key(0), (16, 4, 4, 3)) * 2.0 + 1.0
  grouped = batch_norm.GroupedBatchNorm(group_size=16, momentum=0.9)
  plain = nn.BatchNorm(use_running_average=False, momentum=0.9, epsilon=1e-5)
  variables = plain.init(jax.random.key(1), x)
  assert jax.tree.structure(grouped.init(jax.random.key(1), x)) == jax.tree.structure(variables)
  y_grouped, stats_grouped = grouped.apply(variables, x, mutable=["batch_stats"])
  y_plain, stats_plain = plain.apply(variables, x, mutable=["batch_stats"])
  np.testing.assert_allclose(y_grouped, y_plain, rtol=1e-5, atol=1e-5)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), stats_grouped, stats_plain)


def test_a_batch_the_groups_do_not_divide_is_refused():
  module = batch_norm.GroupedBatchNorm(group_size=8)
  with pytest.raises(ValueError, match="groups of 8 examples do not divide a batch of 12"):
    module.init(jax.random.key(0), jnp.ones((12, 3)))


def _resnet_forward(group: int, devices: int, mutable=("batch_stats",)):
  """The tiny ResNet's training-mode forward pass on a batch of 64 split over ``devices`` devices."""
  model = models.get_model("resnet_tiny", num_classes=10, rule="fa", batch_norm_group=group)
  x = jax.random.normal(jax.random.key(0), (64, 8, 8, 3))
  variables = jax.jit(lambda x: model.init({"params": jax.random.key(1)}, x, train=False))(x)
  mesh = sharding.make_mesh(jax.devices()[:devices])
  x = jax.device_put(x, NamedSharding(mesh, P(sharding.DATA_AXIS)))
  forward = jax.jit(lambda v, x: model.apply(v, x, train=True, mutable=list(mutable)))
  return forward, variables, x


@pytest.mark.parametrize("group", [8, 64])
def test_eight_devices_give_one_devices_outputs_and_statistics(group):
  forward, variables, x = _resnet_forward(group, 8)
  on_eight = forward(variables, x)
  on_one = forward(variables, jax.device_put(x, jax.devices()[0]))
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-5), on_eight, on_one)


def test_groups_of_one_devices_examples_normalise_on_the_device():
  hlo = lambda f, v, x: f.lower(v, x).compile().as_text()
  # A forward pass has no gradient to sum: any collective in it is BatchNorm's. Groups of each
  # device's 8 examples normalise with none; the running averages, where they are updated, take
  # one reduction of per-feature vectors.
  assert "all-reduce" not in hlo(*_resnet_forward(8, 8, mutable=()))
  shapes = _operand_shapes(hlo(*_resnet_forward(8, 8)))
  assert shapes and all(re.fullmatch(r"f32\[\d+\]", s) for s in shapes), shapes
  assert "all-reduce" in hlo(*_resnet_forward(0, 8, mutable=("batch_stats",)))


def _operand_shapes(hlo_text: str) -> list[str]:
  """The shapes of every all-reduce's results in ``hlo_text``."""
  return [s for op in hlo.collectives(hlo_text) if op.kind == "all-reduce" for s in op.shapes]
