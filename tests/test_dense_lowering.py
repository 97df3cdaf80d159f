"""The dense product's own vjp: JAX's gradients, and on the CPU a plain product for the input gradient."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from wtfree import backend
from wtfree.backend import dense_lowering


def _loss(matmul):
  return lambda x, w: jnp.sum(jnp.sin(matmul(x, w)) * jnp.arange(w.shape[1]))


def _reference(x, w):
  return jnp.einsum("...i,io->...o", x, w)


@pytest.mark.parametrize("x_shape", [(5, 3), (2, 5, 3)])
def test_gradients_are_those_of_jax_for_one_kernel_and_over_replicas(x_shape):
  keys = jax.random.split(jax.random.key(0), 2)
  x = jax.random.normal(keys[0], (4, *x_shape))
  w = jax.random.normal(keys[1], (4, 3, 6))
  ours = jax.jit(jax.vmap(jax.value_and_grad(_loss(dense_lowering.matmul), argnums=(0, 1))))(x, w)
  jax_own = jax.vmap(jax.value_and_grad(_loss(_reference), argnums=(0, 1)))(x, w)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5), ours, jax_own)
  # One kernel shared by a batch of inputs (the replica axis on x alone).
  shared = jax.vmap(jax.grad(_loss(dense_lowering.matmul), argnums=1), in_axes=(0, None))(x, w[0])
  np.testing.assert_allclose(shared, jax.vmap(jax.grad(_loss(_reference), argnums=1), in_axes=(0, None))(x, w[0]),
                             rtol=1e-5, atol=1e-5)


def test_a_gradient_through_the_input_gradient_is_jaxs():
  # The alignment losses differentiate B through the input gradient (r = f B^T).
  keys = jax.random.split(jax.random.key(1), 2)
  f, b = jax.random.normal(keys[0], (5, 6)), jax.random.normal(keys[1], (3, 6))

  def reconstruction_loss(matmul):
    def loss(b):
      r = jax.vjp(lambda x: matmul(x, b), jnp.zeros((5, 3)))[1](f)[0]
      return jnp.sum(r ** 2)
    return loss

  np.testing.assert_allclose(jax.grad(reconstruction_loss(dense_lowering.matmul))(b),
                             jax.grad(reconstruction_loss(_reference))(b), rtol=1e-5, atol=1e-5)


def _kernel_contractions(fn, *args) -> list[str]:
  text = jax.jit(fn, compiler_options=backend.compiler_options()).lower(*args).compile().as_text()
  return re.findall(r"rhs_batch_dims=\{0\}, rhs_contracting_dims=\{(\d+)\}", text)


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="the transpose is XLA's own elsewhere")
def test_replicated_input_gradient_contracts_the_kernels_rows_on_the_cpu():
  x, w = jnp.ones((4, 8, 16)), jnp.ones((4, 16, 32))
  input_grad = lambda matmul: jax.vmap(jax.grad(_loss(matmul), argnums=0))
  # JAX's own vjp contracts the kernel's last axis (2): the slow batched product.
  assert "2" in _kernel_contractions(input_grad(_reference), x, w)
  assert set(_kernel_contractions(input_grad(dense_lowering.matmul), x, w)) == {"1"}
