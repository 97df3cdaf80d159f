"""ResNet-20 on CIFAR-10 with backprop, BioTorch's setup.

    python -m wtfree.main --config=configs/resnet20_bp.py --workdir=runs/resnet20_bp

Needs CIFAR-10 prepared for TFDS (see README, "Data").
"""

from configs import biotorch_cifar


def get_config():
  return biotorch_cifar.get_config(model="resnet20", rule="bp")
