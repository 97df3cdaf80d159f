"""Feedback rules: one custom_vjp primitive and the rules that make its B.

    >>> from wtfree import feedback
    >>> rule = feedback.get_rule('sc', p=0.8)
    >>> y = feedback.linear(feedback.dense_op, x, w, b)   # x @ w; dx flows back through b

Each rule is one file here and one import line below, which registers it.
"""

# Imported in the order the registry (and its error messages) lists the rules.
from wtfree.feedback import fixed as _fixed
from wtfree.feedback import shallow as _shallow
from wtfree.feedback import sign as _sign
from wtfree.feedback import kolen_pollack as _kolen_pollack
from wtfree.feedback import weight_mirror as _weight_mirror
from wtfree.feedback import direct  # pylint: disable=g-bad-import-order
from wtfree.feedback import symmetric as _symmetric
from wtfree.feedback import activation as _activation
from wtfree.feedback import information as _information
from wtfree.feedback import sparse as _sparse
from wtfree.feedback import node_perturbation as _node_perturbation
from wtfree.feedback import target_projection as _target_projection
from wtfree.feedback import pepita as _pepita
from wtfree.feedback import forward_gradient as _forward_gradient
from wtfree.feedback import step
from wtfree.feedback.direct import connect
from wtfree.feedback.layer import LEARNER_RNG, finish, rule_op
from wtfree.feedback.primitive import conv_op, dense_op, linear
from wtfree.feedback.registry import (Rule, StepContext, all_options, get_rule, names, numeric_options, options,
                                     register)

from wtfree.feedback.step import STEP, BetweenSteps, Objective

del (_fixed, _shallow, _sign, _kolen_pollack, _weight_mirror, _symmetric, _activation, _information, _sparse,
     _node_perturbation, _target_projection, _pepita, _forward_gradient)

__all__ = [
    "BetweenSteps",
    "LEARNER_RNG",
    "Objective",
    "Rule",
    "STEP",
    "StepContext",
    "all_options",
    "connect",
    "conv_op",
    "dense_op",
    "direct",
    "finish",
    "get_rule",
    "linear",
    "names",
    "numeric_options",
    "options",
    "register",
    "rule_op",
    "step",
]
