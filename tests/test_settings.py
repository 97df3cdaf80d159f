"""The one reading of a config: defaults from wtfree.defaults, derived values computed once."""

import pathlib
import re

import ml_collections
import numpy as np
import pytest

from configs import digits_mlp
from wtfree import defaults
from wtfree import feedback
from wtfree import settings

ROOT = pathlib.Path(__file__).parents[1]


def test_a_field_left_out_or_unset_takes_the_default_of_wtfree_defaults():
  base = defaults.get_config()
  run = settings.resolve(ml_collections.ConfigDict({"learning_rate": 0.2, "momentum": None}))
  assert run.optimizer.learning_rate == 0.2
  assert run.optimizer.momentum == base.momentum
  assert run.data.eval_batch_size == base.eval_batch_size
  assert run.optimizer.lr_scale == 1.0 and run.optimizer.base_learning_rate == 0.2  # scale_lr_by_batch: False
  # An eval batch set to None is the training batch.
  unset = ml_collections.ConfigDict({"batch_size": 32, "eval_batch_size": None})
  assert settings.resolve(unset).data.eval_batch_size == 32


def test_derived_values_are_computed_once_from_the_config():
  config = digits_mlp.get_config()
  config.batch_size, config.learning_rate, config.scale_lr_by_batch = 64, 0.1, True
  config.rule, config.rule_options.p = "sc", 0.8
  config.num_seeds, config.seed = 2, 5
  config.sweep.learning_rate = "0.1,0.2"
  config.num_epochs, config.mirror_epochs = 3.0, 0.0
  run = settings.resolve(config, device_count=4, process_count=1)
  assert run.optimizer.base_learning_rate == pytest.approx(0.1 * 64 / 256)
  assert run.rule == feedback.get_rule("sc", p=0.8) and run.model.rule_name == "sc"
  assert run.replicas.seeds == (5, 6, 5, 6) and run.replicas.count == 4 and run.replicas.groups == 4
  np.testing.assert_array_equal(run.replicas.hparams["learning_rate"], np.float32([0.1, 0.1, 0.2, 0.2]))
  length = run.length(1437)
  assert (length.steps_per_epoch, length.total_steps, length.mirror_steps) == (22, 66, 0)
  config.num_steps = 7
  assert settings.resolve(config).length(1437).total_steps == 7


def test_only_the_settings_module_reads_a_config_by_get():
  readers = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "wtfree").rglob("*.py")
                   if re.search(r"config\.get\(", p.read_text()))
  assert readers == ["wtfree/settings.py"]
