"""What the experiments share: flags, data, a training loop, writing PNG + JSON.

Every experiment module has ``run(out, quick=False) -> dict`` (the record it
writes) and is run as

    python -m wtfree.experiments.NAME --out DIR [--quick]

writing ``DIR/NAME.png`` and ``DIR/NAME.json`` (the numbers behind the
figure, with the setup).
"""

import argparse
from collections.abc import Callable
import dataclasses
import functools
import json
import os
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from wtfree import learning
from wtfree import train
from wtfree.data import embedded

Array = jax.Array


def uniform(low: float, high: float) -> Callable[..., Array]:
  """An initializer ``init(key, shape, dtype)`` drawing uniform in [low, high)."""

  def init(key, shape, dtype=jnp.float32):
    return jax.random.uniform(key, shape, dtype, low, high)

  return init


# ---------------------------------------------------------------------------
# Data.


@dataclasses.dataclass(frozen=True)
class Arrays:
  """A small classification set held in memory."""

  x_train: np.ndarray
  y_train: np.ndarray
  x_test: np.ndarray
  y_test: np.ndarray
  num_classes: int
  source: str

  @property
  def input_shape(self) -> tuple[int, ...]:
    return tuple(self.x_train.shape[1:])


@functools.lru_cache(maxsize=None)
def load(name: str, flatten: bool = False) -> Arrays:
  """A small classification set: 'digits' (8x8x1, 1437/360) or 'mnist1d' (40x1, 4000/1000).

  Both come from `wtfree.data` and are made locally (scikit-learn's digits
  ship with it; mnist1d is generated, never downloaded), inputs standardised
  with the training set's mean and std.

  Args:
    name: 'digits' or 'mnist1d'.
    flatten: return ``[n, features]`` instead of images/signals.
  """
  if name == "digits":
    x_train, y_train, x_test, y_test = embedded.digits_arrays()
    source = "wtfree.data 'digits': sklearn load_digits, 8x8x1, 1437 train / 360 test (permutation seed 0)"
  elif name == "mnist1d":
    x_train, y_train, x_test, y_test = embedded.mnist1d_arrays()
    source = "wtfree.data 'mnist1d': generated with mnist1d's default arguments (seed 42), 4000 train / 1000 test"
  else:
    raise ValueError(f"dataset {name!r} is not one of 'digits', 'mnist1d'")
  if flatten:
    x_train = x_train.reshape(len(x_train), -1)
    x_test = x_test.reshape(len(x_test), -1)
  return Arrays(x_train, y_train, x_test, y_test, 10, source)


# ---------------------------------------------------------------------------
# Training.


def make_state(model, tx, input_shape, seed: int) -> train.TrainState:
  """A fresh `train.TrainState`, as `train.create_train_state` makes it on one device.

  Also passes a ``'feedback'`` key to init, which brsf's layers draw from.
  Runs eagerly: jitting init recompiles every model's random draws (seconds
  on CPU), while eager ops are compiled once per shape and reused.
  """
  learner = train.make_learner(model, input_shape)

  def init(rng):
    params_key, rng = jax.random.split(rng)
    variables = learner.init({"params": params_key, "feedback": jax.random.fold_in(params_key, 1)})
    return train.TrainState(
        step=jnp.zeros((), jnp.int32), params=variables["params"], feedback=variables.get("feedback", {}),
        batch_stats=variables.get("batch_stats", {}), opt_state=tx.init(variables["params"]),
        rng=jax.random.key_data(rng))

  return init(jax.random.key(seed))


def sgd(learning_rate: float, momentum: float = 0.0, manhattan: bool = False,
        weight_decay: float = 0.0) -> optax.GradientTransformation:
  """``[decay] -> [sign] -> [momentum] -> -lr``, the chain `wtfree.optim.make` builds."""
  from wtfree import optim

  chain = []
  if weight_decay:
    chain.append(optax.add_decayed_weights(weight_decay, mask=optim.decay_mask))
  if manhattan:
    chain.append(optim.batch_manhattan())
  if momentum:
    chain.append(optax.trace(decay=momentum))
  chain.append(optax.scale(-learning_rate))
  return optax.chain(*chain)


def batch_indices(key: Array, num_train: int, batch_size: int, steps: int) -> Array:
  """``[steps, batch_size]`` indices: shuffled epochs, drop the remainder."""
  per_epoch = num_train // batch_size
  epochs = -(-steps // per_epoch)
  keys = jax.random.split(key, epochs)
  perms = jax.vmap(lambda k: jax.random.permutation(k, num_train)[: per_epoch * batch_size])(keys)
  return perms.reshape(-1, batch_size)[:steps]


def error_rate(model, state: train.TrainState, x: np.ndarray, y: np.ndarray, batch: int = 1000) -> float:
  """Top-1 test error in %, with BatchNorm's running averages."""
  wrong = 0.0
  for i in range(0, len(y), batch):
    logits = _predict(model, state.variables(), jnp.asarray(x[i:i + batch]))
    wrong += float(jnp.sum(jnp.argmax(logits, -1) != jnp.asarray(y[i:i + batch])))
  return 100.0 * wrong / len(y)


@functools.partial(jax.jit, static_argnums=0)
def _predict(model, variables, x):
  return model.apply(variables, x, train=False, rngs={"feedback": jax.random.key(0)})


# ---------------------------------------------------------------------------
# Output.


def save(out: str, name: str, fig, record: dict[str, Any]) -> dict[str, Any]:
  """Writes ``out/name.png`` and ``out/name.json``; returns ``record``."""
  os.makedirs(out, exist_ok=True)
  fig.savefig(os.path.join(out, f"{name}.png"), dpi=110, bbox_inches="tight")
  import matplotlib.pyplot as plt

  plt.close(fig)
  with open(os.path.join(out, f"{name}.json"), "w") as f:
    json.dump(_jsonable(record), f, indent=1, sort_keys=False)
  return record


def _jsonable(value):
  if isinstance(value, dict):
    return {str(k): _jsonable(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [_jsonable(v) for v in value]
  if isinstance(value, (np.ndarray, jax.Array)):
    return _jsonable(np.asarray(value).tolist())
  if isinstance(value, (np.floating, float)):
    return float(f"{float(value):.6g}")
  if isinstance(value, np.integer):
    return int(value)
  return value


def figure(ncols: int, width: float = 4.2, height: float = 3.3):
  """A row of ``ncols`` axes, with the Agg backend (no display needed)."""
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  fig, axes = plt.subplots(1, ncols, figsize=(width * ncols, height), squeeze=False)
  return fig, axes[0]


def main(name: str, run: Callable[..., dict]) -> None:
  """Parses ``--out DIR [--quick]`` and runs the experiment."""
  parser = argparse.ArgumentParser(prog=f"python -m wtfree.experiments.{name}")
  parser.add_argument("--out", default=os.path.join("runs", "experiments"), help="directory for PNG and JSON")
  parser.add_argument("--quick", action="store_true", help="a small version for tests (< 60 s)")
  args = parser.parse_args()
  start = time.time()
  record = run(args.out, quick=args.quick)
  summary = record.get("summary", {})
  print(json.dumps(_jsonable(summary), indent=1))
  print(f"{name}: wrote {args.out}/{name}.png and .json in {time.time() - start:.0f} s")


def train_classifier(model, arrays: Arrays, tx, *, steps: int, batch_size: int, seed: int,
                     scan: bool, chunk: int = 0, learner=None, weight_decay_rate: float | None = None,
                     mirror_only_steps: int = 0,
                     on_chunk: Callable | None = None,
                     state: train.TrainState | None = None) -> train.TrainState:
  """Trains ``model`` on ``arrays`` with `wtfree.train.train_step`.

  Args:
    model, arrays, tx: what to train, on what, with which optimizer.
    steps: training steps (after the mirror-only ones).
    batch_size: examples per step.
    seed: initialisation and data order.
    scan: run the steps of a chunk inside ``lax.scan`` (fast for dense nets;
      XLA:CPU runs convolutions in a loop many times slower, so conv nets
      take one jitted step per Python iteration).
    chunk: steps between calls of ``on_chunk`` (0: one chunk).
    learner: the `wtfree.learning.Learner` whose between-steps passes run
      after each step (kp, wm); None for rules that need none.
    weight_decay_rate: the per-step shrink of the chain's weight decay, for
      kp's B - W.
    mirror_only_steps: mirror-only steps before training starts.
    on_chunk: called as ``on_chunk(step, state, batch)`` before the first
      step and after every chunk (``batch`` is a training batch for angles).

  Returns:
    The final state.
  """
  x, y = jnp.asarray(arrays.x_train), jnp.asarray(arrays.y_train)
  idx = batch_indices(jax.random.key(seed + 1000), len(arrays.y_train), batch_size, max(steps, 1))
  probe = train.make_learner(model, arrays.input_shape)
  if state is None and probe.zeroes_errors:
    # As in wtfree's loop: layers that get no error take no update at all.
    mask = train.frozen_params(model, probe, {"image": x[idx[0]], "label": y[idx[0]]}, "classification", seed)
    tx = learning.freeze(tx, mask)
  if state is None:
    state = make_state(model, tx, arrays.input_shape, seed)
  rate = None if weight_decay_rate is None else (lambda step: weight_decay_rate)
  step_fn = functools.partial(train.train_step, model=model, tx=tx, task="classification", learner=learner,
                              weight_decay_rate=rate)
  if mirror_only_steps:
    mirror_step = jax.jit(functools.partial(train.mirror_only_step, learner=learner))
    for _ in range(mirror_only_steps):
      state = mirror_step(state)
  chunk = chunk or steps

  if scan:
    @jax.jit
    def run_chunk(state, idx):
      def body(state, i):
        state, _ = step_fn(state, {"image": x[i], "label": y[i]})
        return state, None

      return jax.lax.scan(body, state, idx)[0]
  else:
    jit_step = jax.jit(step_fn)

    def run_chunk(state, idx):
      for i in idx:
        state, _ = jit_step(state, {"image": x[i], "label": y[i]})
      return state

  if on_chunk is not None:
    on_chunk(0, state, {"image": x[idx[0]], "label": y[idx[0]]})
  for start in range(0, steps, chunk):
    part = idx[start:start + chunk]
    state = jax.block_until_ready(run_chunk(state, part))
    if on_chunk is not None:
      on_chunk(start + len(part), state, {"image": x[part[-1]], "label": y[part[-1]]})
  return state
