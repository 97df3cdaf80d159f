"""Models whose every Dense and Conv follows one feedback rule.

    >>> from wtfree import models
    >>> model = models.get_model('resnet18', num_classes=1000, rule='usf')
    >>> logits = model.apply(variables, images, train=False)

Every model has the fields ``num_classes``, ``rule`` and ``last_layer_bp`` and
is called as ``model(x, *, train, between_steps=False)`` (``between_steps``: a
between-steps pass's `wtfree.feedback.BetweenSteps`, handed to every layer);
``model.clone(rule='bp')`` is its backprop twin.
"""

from wtfree.models.lenet import LeNet
from wtfree.models.mlp import MLP
from wtfree.models.registry import create, get_model, names, register
from wtfree.models.resnet import BasicBlock, Bottleneck, ResNet
from wtfree.models.transformer import CausalLM, EncoderBlock, SelfAttention, ViT

__all__ = [
    "BasicBlock",
    "Bottleneck",
    "CausalLM",
    "EncoderBlock",
    "LeNet",
    "MLP",
    "ResNet",
    "SelfAttention",
    "ViT",
    "create",
    "get_model",
    "names",
    "register",
]
