"""Feedback rules: one custom_vjp primitive and the rules that make its B.

    >>> from wtfree import feedback
    >>> rule = feedback.get_rule('sc', p=0.8)
    >>> y = feedback.dense(x, w, b)            # dx flows back through b
"""

# Imported in the order the registry (and its error messages) lists the rules.
from wtfree.feedback import fixed as _fixed
from wtfree.feedback import learned as _learned
from wtfree.feedback import sign as _sign
from wtfree.feedback import direct  # pylint: disable=g-bad-import-order
from wtfree.feedback.counter_prng import fusable
from wtfree.feedback.direct import connect
from wtfree.feedback.primitive import conv, conv_op, dense, dense_op, linear
from wtfree.feedback.registry import Rule, get_rule, names, register

del _fixed, _learned, _sign

__all__ = [
    "Rule",
    "connect",
    "conv",
    "conv_op",
    "dense",
    "dense_op",
    "direct",
    "fusable",
    "get_rule",
    "linear",
    "names",
    "register",
]
