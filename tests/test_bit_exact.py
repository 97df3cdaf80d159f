"""The digits run ends where it ended before the loop's refactors: parameters and metrics, bit for bit.

The fixtures in tests/fixtures/ were written by this file's `main` from the
code before a refactor of the loop; a refactor that changes no numerics
keeps them. A change that means to change a rule's numerics rewrites them,
under the tests' XLA flags (tests/conftest.py), and says so in its commit:

    XLA_FLAGS="--xla_force_host_platform_device_count=8 --xla_backend_optimization_level=0" \
        JAX_PLATFORMS=cpu python tests/test_bit_exact.py [RULE ...]

Bit for bit holds on the machine that wrote them (another CPU may round
differently), so the test is in the slow suite, for whoever refactors.
"""

import json
import pathlib
import sys

import flax
import numpy as np
import pytest

from configs import digits_mlp
from wtfree import train

FIXTURES = pathlib.Path(__file__).parent / "fixtures"
RULES = ("bp", "kp", "wm", "dfa")
# Timings vary from run to run; everything else is deterministic on one machine.
UNTIMED = ("train/examples_per_second",)


def _config(rule):
  config = digits_mlp.get_config()
  config.rule = rule
  config.model_options.widths = (32,)
  config.num_steps = 40
  config.log_every_steps = 20
  config.eval_every_steps = 40
  config.checkpoint_every_steps = 40
  config.mirror_batch_size = 64
  config.mirror_epochs = 0.05 if rule == "wm" else 0.0
  config.tensorboard = False
  return config


def _run(rule, workdir) -> tuple[dict, list]:
  state = train.train_and_evaluate(_config(rule), str(workdir))
  flat = flax.traverse_util.flatten_dict({"params": state.params, "feedback": state.feedback}, sep="/")
  params = {k: np.asarray(v) for k, v in flat.items()}
  lines = [{k: v for k, v in json.loads(line).items() if k not in UNTIMED}
           for line in (pathlib.Path(workdir) / "metrics.jsonl").read_text().splitlines()]
  return params, lines


@pytest.mark.slow
@pytest.mark.parametrize("rule", RULES)
def test_the_digits_run_ends_bit_for_bit_where_the_fixture_does(rule, tmp_path):
  params, lines = _run(rule, tmp_path)
  with np.load(FIXTURES / f"digits_{rule}.npz") as saved:
    assert sorted(saved.files) == sorted(params)
    for name in saved.files:
      np.testing.assert_array_equal(params[name], saved[name], err_msg=name)
  assert lines == json.loads((FIXTURES / f"digits_{rule}.json").read_text())


def main(rules):
  import tempfile  # pylint: disable=g-import-not-at-top

  for rule in rules:
    with tempfile.TemporaryDirectory() as workdir:
      params, lines = _run(rule, workdir)
    np.savez(FIXTURES / f"digits_{rule}.npz", **params)
    (FIXTURES / f"digits_{rule}.json").write_text(json.dumps(lines, indent=0))


if __name__ == "__main__":
  main(sys.argv[1:] or RULES)
