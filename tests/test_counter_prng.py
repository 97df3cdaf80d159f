"""The counter-hash key: the statistics feedback noise relies on."""

import jax
import numpy as np
import pytest

from wtfree import backend


def test_normal_draws_have_unit_moments_and_no_neighbour_correlation():
  x = np.asarray(jax.random.normal(backend.fusable(jax.random.key(0)), (512, 512)))
  assert abs(x.mean()) < 0.01
  assert abs(x.std() - 1.0) < 0.01
  # Neighbouring counters (along either axis) must not give related values.
  assert abs(np.corrcoef(x[:, :-1].ravel(), x[:, 1:].ravel())[0, 1]) < 0.01
  assert abs(np.corrcoef(x[:-1].ravel(), x[1:].ravel())[0, 1]) < 0.01


def test_uniform_bits_cover_the_interval_evenly():
  u = np.asarray(jax.random.uniform(backend.fusable(jax.random.key(1)), (200_000,)))
  counts, _ = np.histogram(u, bins=20, range=(0.0, 1.0))
  expected = len(u) / 20
  chi2 = np.sum((counts - expected) ** 2 / expected)
  assert chi2 < 45.0  # 19 degrees of freedom: p < 1e-3 above this


def test_same_key_same_draw_and_derived_keys_are_independent():
  key = jax.random.key(2)
  a = jax.random.normal(backend.fusable(key), (4096,))
  np.testing.assert_array_equal(a, jax.random.normal(backend.fusable(key), (4096,)))
  b = jax.random.normal(backend.fusable(jax.random.fold_in(key, 1)), (4096,))
  c = jax.random.normal(jax.random.split(backend.fusable(key))[1], (4096,))
  for other in (b, c):
    assert abs(np.corrcoef(a, other)[0, 1]) < 0.06


def test_draw_is_the_same_under_jit():
  key = jax.random.key(3)
  eager = jax.random.normal(backend.fusable(key), (7, 5))
  jitted = jax.jit(lambda k: jax.random.normal(backend.fusable(k), (7, 5)))(key)
  np.testing.assert_array_equal(eager, jitted)


def test_raw_key_data_is_refused():
  with pytest.raises(TypeError, match="typed key"):
    backend.fusable(jax.random.PRNGKey(0))
