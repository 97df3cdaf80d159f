"""Runs ``python -m wtfree.main`` and saves this process's copy of the final state.

    WTFREE_STATE_OUT=DIR python tests/multiprocess_worker.py --config=... --workdir=... [flags]

Same flags and environment as wtfree.main; on success writes
``DIR/state_<process index>.npz``: the parameters and feedback kernels as this
process holds them, keyed by their path. Used by test_multiprocess.py.
"""

import os

from absl import app
import flax
import jax
import numpy as np

from wtfree import main
from wtfree import train

_train_and_evaluate = train.train_and_evaluate


def _train_and_save(config, workdir):
  state = _train_and_evaluate(config, workdir)
  trees = {"params": state.params, "feedback": state.feedback}
  flat = flax.traverse_util.flatten_dict(flax.core.unfreeze(trees), sep="/")
  # Replicated arrays: the first local shard is the whole value, as this host has it.
  local = {k: np.asarray(v.addressable_data(0)) for k, v in flat.items()}
  out = os.environ["WTFREE_STATE_OUT"]
  np.savez(os.path.join(out, f"state_{jax.process_index()}.npz"), step=np.asarray(int(state.step)), **local)
  return state


if __name__ == "__main__":
  train.train_and_evaluate = _train_and_save  # main calls train.train_and_evaluate by attribute.
  app.run(main.main)
