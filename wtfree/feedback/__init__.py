"""Feedback rules: one custom_vjp primitive and the rules that make its B.

    >>> from wtfree import feedback
    >>> rule = feedback.get_rule('sc', p=0.8)
    >>> y = feedback.dense(x, w, b)            # dx flows back through b
"""

from wtfree.feedback import fixed as _fixed
from wtfree.feedback import learned as _learned
from wtfree.feedback import sign as _sign
from wtfree.feedback.primitive import conv, conv_op, dense, dense_op, linear
from wtfree.feedback.registry import Rule, get_rule, names, register

del _fixed, _learned, _sign

__all__ = [
    "Rule",
    "conv",
    "conv_op",
    "dense",
    "dense_op",
    "get_rule",
    "linear",
    "names",
    "register",
]
