"""The primitive's gradients equal their closed forms, for every rule."""

import jax
from jax import lax
import jax.numpy as jnp
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
import numpy as np
import pytest

from wtfree import feedback
from wtfree import nn as wnn

RULES = ["bp", "fa", "usf", "frsf", "brsf", "sc", "kp", "wm", "shallow"]
CONVS = [
    dict(strides=1, padding="SAME", feature_group_count=1),
    dict(strides=2, padding="VALID", feature_group_count=1),
    dict(strides=(2, 1), padding="SAME", feature_group_count=2),
]
RNGS = {"params": jax.random.key(0), "feedback": jax.random.key(1)}
TOL = dict(rtol=1e-5, atol=1e-5)


def _plain_conv(x, w, cfg):
  strides = cfg["strides"] if isinstance(cfg["strides"], tuple) else (cfg["strides"],) * 2
  return lax.conv_general_dilated(
      x, w, strides, cfg["padding"],
      dimension_numbers=("NHWC", "HWIO", "NHWC"),
      feature_group_count=cfg["feature_group_count"],
      precision=lax.Precision.HIGHEST,
  )


def _layer_grads(module, variables, x, cotangent):
  """Gradients of <y, cotangent> w.r.t. the input and the params."""

  def pairing(params, x):
    y = module.apply({**variables, "params": params}, x, rngs={"feedback": RNGS["feedback"]})
    return jnp.sum(y * cotangent)

  return jax.jit(jax.grad(pairing, argnums=(0, 1)))(variables["params"], x)


def _used_feedback(module, variables, x):
  _, state = module.apply(variables, x, rngs={"feedback": RNGS["feedback"]}, mutable=["alignment"])
  return state["alignment"]["feedback"]


def _check(module, x, closed_dx, closed_dw, rule):
  variables = module.init(RNGS, x)
  variables = {k: v for k, v in variables.items() if k in ("params", "feedback")}
  y = module.apply(variables, x, rngs={"feedback": RNGS["feedback"]})
  g = jax.random.normal(jax.random.key(7), y.shape)
  dparams, dx = _layer_grads(module, variables, x, g)
  b = _used_feedback(module, variables, x)
  w = variables["params"]["kernel"]
  np.testing.assert_allclose(dx, closed_dx(g, b), **TOL)
  np.testing.assert_allclose(dparams["kernel"], closed_dw(g, w), **TOL)
  # B receives no gradient: kp's factor c moves only in the optimizer.
  for name, grad in dparams.items():
    if name not in ("kernel", "bias"):
      np.testing.assert_array_equal(grad, 0.0, err_msg=name)
  return variables, b


@pytest.mark.parametrize("rule", RULES)
def test_dense_gradients_match_closed_form(rule):
  x = jax.random.normal(jax.random.key(3), (6, 5))
  module = wnn.Dense(4, rule=rule, precision=lax.Precision.HIGHEST)
  _check(
      module, x,
      closed_dx=lambda g, b: g @ b.T,
      closed_dw=lambda g, w: x.T @ g,
      rule=rule,
  )


@pytest.mark.parametrize("cfg", CONVS, ids=lambda c: f"s{c['strides']}-{c['padding']}-g{c['feature_group_count']}")
@pytest.mark.parametrize("rule", RULES)
def test_conv_gradients_match_closed_form(rule, cfg):
  x = jax.random.normal(jax.random.key(3), (2, 7, 6, 4))
  module = wnn.Conv(6, (3, 3), use_bias=False, rule=rule, precision=lax.Precision.HIGHEST, **cfg)

  def closed_dx(g, b):
    _, vjp = jax.vjp(lambda x_: _plain_conv(x_, b, cfg), x)
    return vjp(g)[0]

  def closed_dw(g, w):
    _, vjp = jax.vjp(lambda w_: _plain_conv(x, w_, cfg), w)
    return vjp(g)[0]

  _check(module, x, closed_dx, closed_dw, rule)


@pytest.mark.parametrize("rule", RULES)
def test_sharded_batch_gives_the_same_gradients(rule):
  """On an 8-device mesh with the batch sharded, gradients equal the unsharded ones."""
  mesh = Mesh(np.array(jax.devices()[:8]), ("data",))
  x = jax.random.normal(jax.random.key(3), (16, 6, 6, 4))
  module = wnn.Conv(8, (3, 3), strides=2, rule=rule, precision=lax.Precision.HIGHEST)
  variables = module.init(RNGS, x)
  variables = {k: v for k, v in variables.items() if k in ("params", "feedback")}
  g = jax.random.normal(jax.random.key(7), module.apply(variables, x, rngs={"feedback": RNGS["feedback"]}).shape)
  expected = _layer_grads(module, variables, x, g)
  batch = NamedSharding(mesh, P("data"))
  sharded = _layer_grads(module, jax.device_put(variables, NamedSharding(mesh, P())),
                         jax.device_put(x, batch), jax.device_put(g, batch))
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, **TOL), sharded, expected)


def test_generic_form_serves_an_einsum():
  """feedback.linear with an einsum sends dx through b and keeps dw."""
  op = lambda x, w: jnp.einsum("btd,dhk->bthk", x, w)
  x = jax.random.normal(jax.random.key(0), (2, 3, 4))
  w = jax.random.normal(jax.random.key(1), (4, 2, 5))
  b = jax.random.normal(jax.random.key(2), (4, 2, 5))
  g = jax.random.normal(jax.random.key(3), (2, 3, 2, 5))
  dx, dw, db = jax.grad(lambda x, w, b: jnp.sum(feedback.linear(op, x, w, b) * g), argnums=(0, 1, 2))(x, w, b)
  np.testing.assert_allclose(dx, jnp.einsum("bthk,dhk->btd", g, b), **TOL)
  np.testing.assert_allclose(dw, jnp.einsum("btd,bthk->dhk", x, g), **TOL)
  np.testing.assert_array_equal(db, 0.0)


def test_unknown_rule_lists_the_known_ones():
  with pytest.raises(ValueError, match="'fx' is not one of") as raised:
    feedback.get_rule("fx")
  for name in ("bp", "fa", "usf", "frsf", "brsf", "sc", "kp", "wm", "shallow", "dfa"):
    assert name in str(raised.value)
  with pytest.raises(ValueError, match="takes options"):
    feedback.get_rule("fa", p=0.5)
