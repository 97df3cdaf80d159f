"""ResNet-18 on ImageNet with backprop, as in Akrout et al. 2019.

    python -m wtfree.main --config=configs/resnet18_bp.py --workdir=gs://BUCKET/resnet18_bp

Needs ImageNet prepared for TFDS (see README, "Data"); data_dir via --config.data_dir.
"""

from configs import akrout_imagenet


def get_config():
  return akrout_imagenet.get_config(model="resnet18", rule="bp")
