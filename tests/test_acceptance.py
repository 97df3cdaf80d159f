"""Rules separate on mnist1d: every rule learns, the output layer alone does not.

Slow (about 20 s a rule on two cores): `python -m pytest -m slow tests/test_acceptance.py`.
"""

import json

import pytest

from configs import mnist1d_mlp
from wtfree import train

WM = {"mirror_epochs": 2.0, "mirror_batch_size": 1024}


def _accuracy(rule, workdir, **overrides):
  config = mnist1d_mlp.get_config()
  config.rule = rule
  config.tensorboard = False
  config.angles = False
  for key, value in overrides.items():
    config[key] = value
  train.train_and_evaluate(config, str(workdir))
  records = [json.loads(line) for line in open(workdir / "metrics.jsonl")]
  return [r for r in records if r["split"] == "eval"][-1]["eval/top1"]


@pytest.mark.slow
def test_backprop_reaches_sixty_percent(tmp_path):
  assert _accuracy("bp", tmp_path) >= 0.60


@pytest.mark.slow
@pytest.mark.parametrize("rule", ["fa", "usf", "frsf", "brsf", "sc", "kp", "dfa", "wm"])
def test_every_rule_reaches_fifty_two_percent(rule, tmp_path):
  assert _accuracy(rule, tmp_path, **(WM if rule == "wm" else {})) >= 0.52


@pytest.mark.slow
def test_output_layer_alone_stays_below_forty_eight_percent(tmp_path):
  assert _accuracy("shallow", tmp_path) < 0.48
