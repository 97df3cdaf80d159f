"""config.num_seeds: N seeds of one run as one program, each the run of its own seed."""

import json

import jax
import numpy as np
import pytest

from configs import digits_mlp
from wtfree import replicas
from wtfree import sharding
from wtfree import train


def _config(**overrides):
  config = digits_mlp.get_config()
  config.model_options.widths = (16,)
  config.batch_size = 32
  config.eval_batch_size = 360
  config.num_steps = 12
  config.log_every_steps = 6
  config.eval_every_steps = 12
  config.checkpoint_every_steps = 12
  config.mirror_batch_size = 64
  config.tensorboard = False
  for key, value in overrides.items():
    config[key] = value
  return config


def _records(workdir, split):
  with open(workdir / "metrics.jsonl") as f:
    return [r for r in map(json.loads, f) if r["split"] == split]


# wm draws mirror noise and learns B between steps; brsf redraws B every step.
@pytest.mark.parametrize("rule", ["wm", pytest.param("brsf", marks=pytest.mark.slow)])
def test_each_replica_is_the_single_seed_run_of_its_seed(rule, tmp_path):
  many = train.train_and_evaluate(_config(rule=rule, num_seeds=3), str(tmp_path / "three"))
  single = train.train_and_evaluate(_config(rule=rule, seed=2), str(tmp_path / "seed2"))
  third = jax.tree.map(lambda x: np.asarray(x)[2], jax.device_get(many))
  for field in ("params", "feedback", "opt_state", "rng", "step"):
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, np.asarray(b), rtol=2e-5, atol=2e-6),
                 getattr(third, field), getattr(single, field))
  # The replicas differ: another seed is another run.
  first = np.asarray(many.params["head"]["kernel"][0])
  assert np.abs(first - third.params["head"]["kernel"]).max() > 1e-3
  logged, alone = _records(tmp_path / "three", "eval")[-1], _records(tmp_path / "seed2", "eval")[-1]
  assert len(logged["eval/top1/seeds"]) == 3
  np.testing.assert_allclose(logged["eval/loss/seeds"][2], alone["eval/loss"], rtol=1e-5)
  np.testing.assert_allclose(logged["eval/loss"], np.mean(logged["eval/loss/seeds"]), rtol=1e-6)
  np.testing.assert_allclose(logged["eval/loss/std"], np.std(logged["eval/loss/seeds"], ddof=1), rtol=1e-6)
  angles = _records(tmp_path / "three", "train")[-1]
  assert len(angles["angle/weight/Dense_0/seeds"]) == 3 and "angle/weight/Dense_0/std" in angles


def test_replicas_split_over_the_devices_when_the_counts_allow(tmp_path):
  state = train.train_and_evaluate(_config(rule="fa", num_seeds=4, angles=False), str(tmp_path))
  kernel = state.params["Dense_0"]["kernel"]
  assert kernel.shape[0] == 4
  assert kernel.sharding.spec[0] == sharding.REPLICA_AXIS
  assert kernel.sharding.mesh.shape == {sharding.REPLICA_AXIS: 4, sharding.DATA_AXIS: 2}


def test_replica_groups_divide_devices_and_seeds():
  assert sharding.replica_groups(20, 8) == 4
  assert sharding.replica_groups(3, 8) == 1
  assert sharding.replica_groups(8, 8) == 8
  assert sharding.replica_groups(4, 8, process_count=2) == 1


def test_summarise_gives_mean_std_and_the_values_in_replica_order():
  out = replicas.summarise({"eval/top1": np.array([0.5, 1.0, 0.75])}, 3)
  assert out == {"eval/top1": 0.75, "eval/top1/std": pytest.approx(np.std([0.5, 1.0, 0.75], ddof=1)),
                 "eval/top1/seeds": [0.5, 1.0, 0.75]}
  assert replicas.summarise({"eval/top1": np.float32(0.5)}, 1) == {"eval/top1": 0.5}
