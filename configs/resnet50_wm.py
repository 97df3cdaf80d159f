"""ResNet-50 on ImageNet with weight mirrors, as in Akrout et al. 2019.

    python -m wtfree.main --config=configs/resnet50_wm.py --workdir=gs://BUCKET/resnet50_wm

Needs ImageNet prepared for TFDS (see README, "Data"); data_dir via --config.data_dir.
"""

from configs import akrout_imagenet


def get_config():
  return akrout_imagenet.get_config(model="resnet50", rule="wm")
