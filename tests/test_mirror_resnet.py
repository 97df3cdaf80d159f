"""Mirror passes on a whole ResNet: only feedback changes, and B aligns with W."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P

from wtfree import data
from wtfree import feedback
from wtfree import learning
from wtfree import metrics
from wtfree import models
from wtfree import settings
from wtfree import sharding
import ml_collections

INPUT = (8, 8, 1)


def _setup():
  # The paper's decay 0.5 averages too few mirror batches of 256 for the late
  # layers here; decay 0.05 averages ten times more (see SPEC, "Weight mirror").
  rule = feedback.get_rule("wm", decay=0.05)
  model = models.get_model("resnet_tiny", num_classes=10, rule=rule)
  variables = _learner(model, 64).init(jax.random.key(0))
  return model, variables


def _learner(model, batch, passes=1, input_sharding=None):
  return learning.Learner(model, jnp.zeros((1, *INPUT)), mirror_batch_size=batch, passes=passes,
                          input_sharding=input_sharding, train=False)


def _digits_batch(n=256):
  config = ml_collections.ConfigDict({"dataset": "digits", "batch_size": n, "seed": 0})
  return next(data.get_dataset(settings.resolve(config).data, process_index=0, process_count=1).train_batches())


def _warm_up(model, variables, passes, mesh=None):
  input_sharding = sharding.batch_sharding(mesh) if mesh is not None else None
  run = jax.jit(_learner(model, 256, passes=5, input_sharding=input_sharding).between_steps)
  for i in range(passes // 5):
    variables = run(variables, jax.random.key(i))
    jax.block_until_ready(variables)
  return variables


def test_one_pass_changes_only_feedback():
  model, variables = _setup()
  after = jax.jit(_learner(model, 64).between_steps)(variables, jax.random.key(1))
  jax.tree.map(np.testing.assert_array_equal, after["params"], variables["params"])
  jax.tree.map(np.testing.assert_array_equal, after["batch_stats"], variables["batch_stats"])
  changed = jax.tree.map(lambda a, b: not np.array_equal(a, b), after["feedback"], variables["feedback"])
  assert all(jax.tree.leaves(changed))


@pytest.mark.slow
def test_mirror_warm_up_aligns_every_layer_on_an_eight_device_mesh():
  mesh = sharding.make_mesh(jax.devices()[:8])
  model, variables = _setup()
  variables = jax.device_put(variables, NamedSharding(mesh, P()))
  variables = _warm_up(model, variables, passes=100, mesh=mesh)
  batch = _digits_batch()
  x, y = jnp.asarray(batch["image"]), jnp.asarray(batch["label"])
  _, state = model.apply(variables, x, train=True, mutable=["alignment", "perturbations", "batch_stats"])
  weight = metrics.weight_angles(state["alignment"])
  assert len(weight) >= 6
  assert all(float(a) < 12.0 for a in weight.values()), weight

  def loss_of(m):
    def loss(perturbations):
      logits, _ = m.apply({**variables, "perturbations": perturbations}, x, train=True, mutable=["batch_stats"])
      return jnp.mean(metrics.cross_entropy(logits, y))
    return loss

  delta = metrics.delta_angles(loss_of(model), loss_of(model.clone(rule="bp")), state["perturbations"])
  assert all(float(a) < 25.0 for a in delta.values()), delta
