"""What each rule feeds back, and how that state behaves across steps."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from wtfree import feedback
from wtfree import metrics
from wtfree import nn as wnn

X = jnp.ones((2, 256))


def _init(rule, features=256, seed=0):
  module = wnn.Dense(features, rule=rule)
  variables = module.init({"params": jax.random.key(seed), "feedback": jax.random.key(1)}, X)
  return module, {k: v for k, v in variables.items() if k in ("params", "feedback")}


def _used(module, variables, step_key=jax.random.key(1)):
  _, state = module.apply(variables, X, rngs={"feedback": step_key}, mutable=["alignment"])
  return state["alignment"]["feedback"]


def test_usf_feeds_back_sign_times_rms():
  module, variables = _init(feedback.get_rule("usf", scale=2.0))
  w = variables["params"]["kernel"]
  expected = jnp.sign(w) * 2.0 * jnp.sqrt(jnp.mean(w**2))
  np.testing.assert_allclose(_used(module, variables), expected, rtol=1e-6)
  module, variables = _init(feedback.get_rule("usf", magnitude="one"))
  np.testing.assert_array_equal(_used(module, variables), jnp.sign(variables["params"]["kernel"]))


def test_usf_init_std_is_biotorchs_constant_glorot_scale():
  module, variables = _init(feedback.get_rule("usf", magnitude="init_std"), features=64)
  w = variables["params"]["kernel"]
  np.testing.assert_allclose(_used(module, variables), jnp.sign(w) * np.sqrt(2.0 / (256 + 64)), rtol=1e-6)
  # A constant: W moving does not change it.
  doubled = {**variables, "params": {**variables["params"], "kernel": 3.0 * w}}
  np.testing.assert_allclose(_used(module, doubled), jnp.sign(w) * np.sqrt(2.0 / (256 + 64)), rtol=1e-6)
  conv = wnn.Conv(8, (3, 3), rule=feedback.get_rule("usf", magnitude="init_std"))
  x = jnp.ones((1, 5, 5, 4))
  v = conv.init(jax.random.key(0), x)
  _, seen = conv.apply(v, x, mutable=["alignment"])
  np.testing.assert_allclose(jnp.abs(seen["alignment"]["feedback"]), np.sqrt(2.0 / (9 * 4 + 9 * 8)), rtol=1e-6)


@pytest.mark.parametrize("rule", ["frsf", "sc"])
def test_fixed_magnitudes_stay_fixed_and_follow_w_signs(rule):
  module, variables = _init(rule)
  first = _used(module, variables, jax.random.key(1))
  second = _used(module, variables, jax.random.key(2))
  np.testing.assert_array_equal(first, second)
  # After W changes, B keeps |M| and takes W's new signs.
  flipped = jax.tree.map(lambda v: v, variables)
  flipped["params"] = {**variables["params"], "kernel": -variables["params"]["kernel"]}
  np.testing.assert_array_equal(jnp.abs(_used(module, flipped)), jnp.abs(first))
  np.testing.assert_array_equal(_used(module, flipped), -first)


def test_brsf_draws_new_magnitudes_every_step():
  module, variables = _init("brsf")
  w = variables["params"]["kernel"]
  first = _used(module, variables, jax.random.key(1))
  second = _used(module, variables, jax.random.key(2))
  assert not np.allclose(first, second)
  np.testing.assert_array_equal(jnp.sign(first), jnp.sign(w))
  np.testing.assert_array_equal(jnp.sign(second), jnp.sign(w))
  np.testing.assert_array_equal(first, _used(module, variables, jax.random.key(1)))


def test_brsf_without_a_feedback_key_says_how_to_pass_one():
  module, variables = _init("brsf")
  with pytest.raises(ValueError, match="rngs=\\{'feedback'"):
    module.apply(variables, X)


def test_sc_with_p_one_is_frsf():
  module_sc, vars_sc = _init(feedback.get_rule("sc", p=1.0))
  module_fr, vars_fr = _init("frsf")
  np.testing.assert_array_equal(_used(module_sc, vars_sc), _used(module_fr, vars_fr))


def test_sc_with_p_half_is_orthogonal():
  module, variables = _init(feedback.get_rule("sc", p=0.5))
  deg = metrics.angle(_used(module, variables), variables["params"]["kernel"])
  assert abs(float(deg) - 90.0) < 5.0


def test_sc_angle_grows_as_p_falls():
  degrees = []
  for p in (1.0, 0.9, 0.7, 0.5):
    module, variables = _init(feedback.get_rule("sc", p=p))
    degrees.append(float(metrics.angle(_used(module, variables), variables["params"]["kernel"])))
  assert degrees == sorted(degrees)


def test_shallow_sends_no_error_down():
  module, variables = _init("shallow")
  dx = jax.grad(lambda x: jnp.sum(module.apply(variables, x)))(X)
  np.testing.assert_array_equal(dx, 0.0)


def test_bp_angle_is_zero_and_fa_is_near_ninety():
  module, variables = _init("bp")
  assert float(metrics.angle(_used(module, variables), variables["params"]["kernel"])) < 1e-2
  module, variables = _init("fa")
  assert abs(float(metrics.angle(_used(module, variables), variables["params"]["kernel"])) - 90.0) < 5.0


def test_feedback_init_and_scale_options():
  uniform = lambda key, shape, dtype: jax.random.uniform(key, shape, dtype, -1.0, 1.0)
  module, variables = _init(feedback.get_rule("fa", init=uniform, scale=0.5))
  b = variables["feedback"]["kernel"]
  assert float(jnp.max(jnp.abs(b))) <= 0.5
  assert float(jnp.max(jnp.abs(b))) > 0.45


@pytest.mark.parametrize("rule", ["frsf", "brsf", "sc"])
def test_uniform_magnitudes_are_liaos_unit_interval_whatever_ws_scale(rule):
  module, variables = _init(feedback.get_rule(rule, magnitudes="uniform"))
  w, b = variables["params"]["kernel"], _used(module, variables)
  m = np.abs(np.asarray(b))
  # 65,536 draws of U[0, 1): the mean within 5 standard errors of 1/2, far above W's scale.
  assert m.min() >= 0.0 and m.max() < 1.0 and abs(m.mean() - 0.5) < 5 * np.sqrt(1 / 12 / m.size)
  assert float(jnp.std(w)) < 0.1
  np.testing.assert_array_equal(np.sign(b), np.sign(w))  # sc's default p = 1: every sign concordant.
  kernel_scale = np.abs(np.asarray(_used(*_init(feedback.get_rule(rule))))).mean()
  assert kernel_scale < 0.2 * m.mean()  # lecun normal at fan-in 256: E|M| = 0.05.


def test_an_unknown_magnitude_draw_is_refused():
  with pytest.raises(ValueError, match="frsf magnitudes 'gauss' is not one of kernel, uniform"):
    feedback.get_rule("frsf", magnitudes="gauss")
