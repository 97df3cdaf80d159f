"""wtfree: training deep networks without weight transport, in JAX and Flax."""

__version__ = "0.1.0"
