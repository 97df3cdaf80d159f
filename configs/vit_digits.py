"""A small ViT on scikit-learn's 8x8 digits (no download), on CPU in a minute or two.

    python -m wtfree.main --config=configs/vit_digits.py --workdir=runs/vit_digits --config.rule=usf

2x2 patches (16 tokens), width 32, two pre-norm blocks of 4 heads; every
projection follows the rule.
"""

from configs import default


def get_config():
  config = default.get_config()
  config.dataset = "digits"
  config.flatten = False
  config.model = "vit"
  config.model_options = {"patch": 2, "width": 32, "num_layers": 2, "num_heads": 4, "mlp_dim": 64}
  config.rule = "fa"
  config.optimizer = "adam"
  config.learning_rate = 1e-3
  config.schedule = "cosine"
  config.warmup_epochs = 1.0
  config.batch_size = 32
  config.eval_batch_size = 360
  config.num_epochs = 30.0
  config.log_every_steps = 112
  config.eval_every_steps = 448
  config.checkpoint_every_steps = 448
  return config
