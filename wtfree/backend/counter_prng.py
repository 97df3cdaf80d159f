"""A key whose random bits are an elementwise hash of a counter, so they fuse.

Threefry, JAX's default, is lowered to a loop on CPU, and a loop's output
cannot fuse into the op that reads it: a fresh random array the size of a
kernel (brsf's magnitudes) or of an activation (weight-mirror noise) is
written out in full before anything uses it. Here each value is a hash of
its flat index and the key, a handful of integer ops that XLA fuses into the
consumer on every backend.

Seeding, splitting and folding in go through threefry, so keys derived from a
`fusable` key are as independent as threefry's. The bits are for feedback
noise, not for cryptography: each 32-bit word is murmur3's finaliser applied
twice around the key.
"""

import jax
from jax import lax
import jax.extend.random as jex_random
import jax.numpy as jnp
import numpy as np

Array = jax.Array

_KEY_SHAPE = (2,)


def _threefry(key_data: Array) -> Array:
  return jax.random.wrap_key_data(key_data, impl="threefry2x32")


def _seed(seed: Array) -> Array:
  return jax.random.key_data(jax.random.key(seed, impl="threefry2x32"))


def _split(key_data: Array, shape: tuple[int, ...]) -> Array:
  return jax.random.key_data(jax.random.split(_threefry(key_data), shape))


def _fold_in(key_data: Array, data: Array) -> Array:
  return jax.random.key_data(jax.random.fold_in(_threefry(key_data), data))


def _fmix32(h: Array) -> Array:
  h = h ^ (h >> 16)
  h = h * np.uint32(0x85EBCA6B)
  h = h ^ (h >> 13)
  h = h * np.uint32(0xC2B2AE35)
  return h ^ (h >> 16)


def _words(key_data: Array, shape: tuple[int, ...], stream: int) -> Array:
  """One hashed uint32 per element of ``shape``; ``stream`` separates draws."""
  index = jnp.zeros(shape, jnp.uint32)
  stride = 1
  for axis in reversed(range(len(shape))):
    index = index + lax.broadcasted_iota(jnp.uint32, shape, axis) * np.uint32(stride % 2**32)
    stride *= shape[axis]
  h = _fmix32(index * np.uint32(0x9E3779B9) + key_data[0] + np.uint32(stream * 0x632BE5AB % 2**32))
  return _fmix32(h ^ key_data[1])


def _random_bits(key_data: Array, bit_width: int, shape: tuple[int, ...]) -> Array:
  if bit_width == 64:
    high = _words(key_data, shape, 1).astype(jnp.uint64)
    return (high << np.uint64(32)) | _words(key_data, shape, 2).astype(jnp.uint64)
  words = _words(key_data, shape, 0)
  if bit_width == 32:
    return words
  dtype = {8: jnp.uint8, 16: jnp.uint16}[bit_width]
  return (words >> np.uint32(32 - bit_width)).astype(dtype)


_IMPL = jex_random.define_prng_impl(
    key_shape=_KEY_SHAPE,
    seed=_seed,
    split=_split,
    random_bits=_random_bits,
    fold_in=_fold_in,
    name="wtfree_counter_hash",
    tag="wch",
)


def fusable(key: Array) -> Array:
  """A key of the counter-hash implementation, derived from any JAX key.

  ``jax.random.normal(fusable(key), shape)`` and the like then draw values
  that XLA computes inside the fusion that uses them.
  """
  if not jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
    raise TypeError(f"fusable() takes a typed key (jax.random.key), got dtype {key.dtype}")
  data = jax.random.bits(key, _KEY_SHAPE, jnp.uint32)
  return jax.random.wrap_key_data(data, impl=_IMPL)


NOISES = ("gaussian", "uniform")


def unit_noise(key: Array, shape, dtype=jnp.float32, kind: str = "gaussian") -> Array:
  """Zero-mean, unit-variance noise drawn through a `fusable` key.

  'gaussian' is N(0, 1); 'uniform' is U(-sqrt(3), sqrt(3)), which skips the
  inverse error function (a large share of a Gaussian mirror pass on CPU,
  see docs/performance.md).
  """
  key = fusable(key)
  if kind == "gaussian":
    return jax.random.normal(key, shape, dtype)
  if kind == "uniform":
    return (jax.random.uniform(key, shape, jnp.float32, -1.0, 1.0) * np.sqrt(3.0)).astype(dtype)
  raise ValueError(f"noise {kind!r} is not one of {', '.join(NOISES)}")
