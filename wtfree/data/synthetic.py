"""Lillicrap et al.'s (2016) synthetic regression tasks: random teachers to imitate.

    >>> teacher = synthetic.linear_teacher(0)
    >>> x, y = teacher.sample(seed=1, n=100)   # x ~ N(0, I_30), y = T x

- ``linear_teacher``: y = T x, T (10 x 30) uniform in [-1, 1] (the paper's linear task).
- ``tanh_teacher``: a 30-20-10-10 net, tanh hidden units and a linear output.
  Our choice where the paper is silent: weights N(0, 1/fan_in), so the hidden
  units are not saturated for x ~ N(0, I).
- ``quadratic_teacher``: 20 -> 20, y_k = x^T A_k x / 20 with A_k uniform in
  [-1, 1] (the target of the paper's 20-1000-20 tanh student; the exact
  quadratic is our choice).

Inputs are x ~ N(0, I) for all three. The data sets 'linear_teacher',
'tanh_teacher' and 'quadratic_teacher' hold 10000 training and 1000 test
pairs drawn with fixed seeds (teacher 0, train 1, test 2), whatever
``config.seed`` is.
"""

import dataclasses
import functools

import jax
import numpy as np

from wtfree.data.source import Splits, array_splits

NUM_TRAIN = 10_000
NUM_TEST = 1_000
_TEACHER_SEED, _TRAIN_SEED, _TEST_SEED = 0, 1, 2


# eq=False: hashed by identity, so an instance can be passed to jax.jit.
@dataclasses.dataclass(frozen=True, eq=False)
class Teacher:
  """A fixed random function to regress: ``teacher(x)`` maps [n, in_dim] to [n, out_dim].

  Attributes:
    kind: 'linear', 'tanh' or 'quadratic'.
    weights: its arrays. linear: (T,) with T [out, in]; tanh: (W1, W2, W3),
      each [fan_in, fan_out]; quadratic: (A,) with A [out, in, in].
  """

  kind: str
  weights: tuple[np.ndarray, ...]

  @property
  def in_dim(self) -> int:
    return self.weights[0].shape[-1] if self.kind != "tanh" else self.weights[0].shape[0]

  @property
  def out_dim(self) -> int:
    return self.weights[-1].shape[0] if self.kind != "tanh" else self.weights[-1].shape[1]

  def __call__(self, x):
    """The target for inputs ``x`` (numpy or jax arrays; jit-able with jax ones)."""
    xp = x.__array_namespace__()
    if self.kind == "linear":
      return x @ self.weights[0].T
    if self.kind == "tanh":
      w1, w2, w3 = self.weights
      return xp.tanh(xp.tanh(x @ w1) @ w2) @ w3
    (a,) = self.weights
    return xp.einsum("ni,kij,nj->nk", x, a, x) / self.in_dim

  def sample(self, seed, n: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` pairs ``(x, teacher(x))`` with x ~ N(0, I), float32, drawn from ``seed`` (int or jax key)."""
    x = _rng(seed).standard_normal((n, self.in_dim)).astype(np.float32)
    return x, np.asarray(self(x), np.float32)


def linear_teacher(seed=_TEACHER_SEED) -> Teacher:
  """y = T x with T (10 x 30) uniform in [-1, 1]."""
  return Teacher("linear", (_rng(seed).uniform(-1.0, 1.0, (10, 30)).astype(np.float32),))


def tanh_teacher(seed=_TEACHER_SEED) -> Teacher:
  """A 30-20-10-10 tanh net (linear output), weights N(0, 1/fan_in)."""
  rng = _rng(seed)
  sizes = (30, 20, 10, 10)
  weights = tuple(
      (rng.standard_normal((m, k)) / np.sqrt(m)).astype(np.float32) for m, k in zip(sizes[:-1], sizes[1:])
  )
  return Teacher("tanh", weights)


def quadratic_teacher(seed=_TEACHER_SEED) -> Teacher:
  """y_k = x^T A_k x / 20 for k < 20, A uniform in [-1, 1]."""
  return Teacher("quadratic", (_rng(seed).uniform(-1.0, 1.0, (20, 20, 20)).astype(np.float32),))


def _rng(seed) -> np.random.Generator:
  """A numpy generator from an int seed or a jax key (typed or raw)."""
  if isinstance(seed, jax.Array):
    if jax.dtypes.issubdtype(seed.dtype, jax.dtypes.prng_key):
      seed = jax.random.key_data(seed)
    seed = np.asarray(seed).ravel().tolist()
  return np.random.default_rng(seed)


@functools.lru_cache(maxsize=None)
def _splits(make_teacher) -> Splits:
  teacher = make_teacher(_TEACHER_SEED)
  x_train, y_train = teacher.sample(_TRAIN_SEED, NUM_TRAIN)
  x_test, y_test = teacher.sample(_TEST_SEED, NUM_TEST)
  return array_splits(x_train, y_train, x_test, y_test, num_classes=teacher.out_dim, task="regression")


def linear_teacher_data(data) -> Splits:
  """The 'linear_teacher' data set: 30 -> 10 regression."""
  del data
  return _splits(linear_teacher)


def tanh_teacher_data(data) -> Splits:
  """The 'tanh_teacher' data set: 30 -> 10 regression."""
  del data
  return _splits(tanh_teacher)


def quadratic_teacher_data(data) -> Splits:
  """The 'quadratic_teacher' data set: 20 -> 20 regression."""
  del data
  return _splits(quadratic_teacher)
