"""Akrout et al. 2019's ImageNet setup, shared by configs/resnet{18,50}_{bp,fa,usf,wm,kp}.py.

32 TPU v2 workers, global batch 2048, Nesterov momentum 0.9, L2 weight decay
1e-4, learning rate 0.1 per 256 examples warmed up linearly over 6 epochs and
divided by 10 after epochs 32, 62 and 82; 90 epochs. Weight mirrors: 2
mirror-only epochs first (warm-up over epochs 3-8), mirror batch 2048 of unit
Gaussians, eta_B 0.1, lambda_WM 0.5, one mirror pass after each step. wtfree's
mirror fixes B's scale to W's (see wtfree/feedback/weight_mirror.py), so
lambda_WM is its ``decay`` and eta_B, which set only the scale, has no field.
Sign-symmetry: learning rate 0.5 (their grid over [0.01, 2.0], taken here as
the rate at batch 2048), BatchNorm before the ReLU.
"""

from configs import default


def get_config(model: str, rule: str):
  """The Akrout et al. run of ``model`` ('resnet18', 'resnet50') with ``rule``."""
  config = default.get_config()
  config.dataset = "imagenet2012"
  config.image_size = 224
  config.data_workers = 16
  config.model = model
  config.model_options = {"bn_before_relu": True}
  config.rule = rule
  config.optimizer = "sgd"
  config.momentum = 0.9
  config.nesterov = True
  config.weight_decay = 1e-4
  config.learning_rate = 0.1
  config.scale_lr_by_batch = True
  config.schedule = "step"
  config.warmup_epochs = 6.0
  config.decay_epochs = (32, 62, 82)
  config.batch_size = 2048
  config.eval_batch_size = 2048
  config.num_epochs = 90.0
  config.log_every_steps = 100
  config.eval_every_steps = 625
  config.checkpoint_every_steps = 625
  if rule == "wm":
    config.mirror_epochs = 2.0
    config.mirror_batch_size = 2048
    config.mirror_passes = 1
    config.rule_options.decay = 0.5
    config.num_epochs = 92.0
  if rule == "usf":
    config.learning_rate = 0.5
    config.scale_lr_by_batch = False
  return config
