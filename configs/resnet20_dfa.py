"""ResNet-20 on CIFAR-10 with direct feedback alignment, BioTorch's setup.

    python -m wtfree.main --config=configs/resnet20_dfa.py --workdir=runs/resnet20_dfa

Each layer's input error is the output error through a fixed random map
(Nøkland 2016); the recipe (optimizer, schedule, epochs) is the other
ResNet-20 configs', not tuned for dfa. Needs CIFAR-10 prepared for TFDS (see
README, "Data").
"""

from configs import biotorch_cifar


def get_config():
  return biotorch_cifar.get_config(model="resnet20", rule="dfa")
