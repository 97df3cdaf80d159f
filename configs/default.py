"""Defaults every config starts from: a small MLP on digits with feedback alignment.

    python -m wtfree.main --config=configs/default.py --workdir=runs/default
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
  """The default hyperparameters; published runs override what differs."""
  config = ml_collections.ConfigDict()
  # Data.
  config.dataset = "digits"
  config.data_dir = ml_collections.config_dict.placeholder(str)
  config.data_path = ml_collections.config_dict.placeholder(str)
  config.image_size = 224
  config.flatten = False
  config.data_workers = 0
  config.prefetch = 2
  # Model and rule.
  config.model = "mlp"
  config.model_options = ml_collections.ConfigDict({"widths": (256, 256), "activation": "relu"})
  config.rule = "fa"
  # Fields of the rules; each rule takes the ones it has (sc: p, usf: magnitude, wm: eta, decay, noise).
  config.rule_options = ml_collections.ConfigDict(
      {"scale": 1.0, "p": 1.0, "magnitude": "rms", "eta": 0.1, "decay": 0.5, "noise": "gaussian"}
  )
  config.last_layer_bp = False
  # Weight mirror (rule 'wm'): mirror batch, mirror-only epochs, passes after each step.
  config.mirror_batch_size = 256
  config.mirror_epochs = 0.0
  config.mirror_passes = 1
  # Optimizer.
  config.optimizer = "sgd"
  config.learning_rate = 0.05
  config.scale_lr_by_batch = False
  config.momentum = 0.9
  config.nesterov = False
  config.weight_decay = 0.0
  config.batch_manhattan = False
  config.schedule = "constant"
  config.warmup_epochs = 0.0
  config.decay_epochs = ()
  # Length and bookkeeping.
  config.batch_size = 64
  config.eval_batch_size = 512
  config.num_epochs = 20.0
  config.num_steps = -1
  config.seed = 0
  config.log_every_steps = 50
  config.eval_every_steps = 500
  config.checkpoint_every_steps = 500
  config.checkpoint_every_minutes = 0.0
  config.keep_checkpoints = 3
  # Continue a run in a workdir even though its config differs.
  config.resume_anyway = False
  # Skip a step whose loss or gradients are not finite, instead of stopping.
  config.skip_nonfinite = False
  config.angles = True
  config.tensorboard = True
  return config
