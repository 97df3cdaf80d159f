"""How wtfree's ops run on each backend: XLA:CPU's lowerings and compiler options, and fusable keys.

Nothing here knows a rule. The layers' ops (`wtfree.feedback.primitive`)
lower their convolutions and products through `conv_lowering` and
`dense_lowering`, rules draw B on the fly with `counter_prng`'s keys, and
the step compiler (`wtfree.steps.jit`) compiles with `compiler_options`.
"""

from wtfree.backend.conv_lowering import compiler_options
from wtfree.backend.counter_prng import NOISES, fusable, unit_noise

__all__ = ["NOISES", "compiler_options", "fusable", "unit_noise"]
