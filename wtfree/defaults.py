"""Defaults every config starts from: a small MLP on digits with feedback alignment.

    python -m wtfree.main --config=configs/default.py --workdir=runs/default

``configs/default.py`` is this module; every file in ``configs/`` starts from
`get_config` and overrides what differs.
"""

import ml_collections

from wtfree import feedback
from wtfree import grid


def get_config() -> ml_collections.ConfigDict:
  """The default hyperparameters; published runs override what differs."""
  config = ml_collections.ConfigDict()
  # Data.
  config.dataset = "digits"
  config.data_dir = ml_collections.config_dict.placeholder(str)
  config.data_path = ml_collections.config_dict.placeholder(str)
  config.image_size = 224
  # Text sets: characters in each training sequence.
  config.context_length = 64
  config.flatten = False
  config.data_workers = 0
  config.prefetch = 2
  # The fraction of the training set held out as the validation split, for a
  # set without one of its own (a sweep holds out 0.1 when this is 0).
  config.holdout = 0.0
  # Train on the training and validation splits together (a set with its own
  # validation split; there is then none to log).
  config.train_on_validation = False
  # False: every epoch visits the training examples in their stored order.
  config.shuffle = True
  # Inputs of sets of raw pixels (mnist_full): 'standardize' by the training
  # split's mean and std, or 'unit' (pixels / 255, in [0, 1]).
  config.input_scaling = "standardize"
  # Model and rule.
  config.model = "mlp"
  config.model_options = ml_collections.ConfigDict({"widths": (256, 256), "activation": "relu", "batch_norm": False})
  config.rule = "fa"
  # The classification loss (wtfree.steps.LOSSES): 'softmax_cross_entropy' or
  # 'sigmoid_binary_cross_entropy' (a logistic unit per class, one-hot targets).
  config.loss = "softmax_cross_entropy"
  # The options of the rules, all unset: a rule takes its own defaults for
  # those a config or the command line leaves unset
  # (--config.rule=sc --config.rule_options.p=0.8).
  config.rule_options = rule_option_fields()
  config.last_layer_bp = False
  # Between-steps passes (rule 'wm' mirrors in them): mirror batch,
  # mirror-only epochs, passes after each step.
  config.mirror_batch_size = 256
  config.mirror_epochs = 0.0
  config.mirror_passes = 1
  # Optimizer.
  config.optimizer = "sgd"
  config.learning_rate = 0.05
  config.scale_lr_by_batch = False
  # The biases' learning rate as a multiple of the kernels'.
  config.bias_learning_rate_scale = 1.0
  config.momentum = 0.9
  config.nesterov = False
  # Adam's moment decays and epsilon (optimizer 'adam').
  config.b1 = 0.9
  config.b2 = 0.999
  config.eps = 1e-8
  config.weight_decay = 0.0
  # Which parameters weight decay reaches: 'kernels' (W only) or 'all'.
  config.weight_decay_on = "kernels"
  config.batch_manhattan = False
  config.schedule = "constant"
  config.warmup_epochs = 0.0
  config.decay_epochs = ()
  # The factor of each step of the 'step' schedule.
  config.decay_factor = 0.1
  # Length and bookkeeping.
  config.batch_size = 64
  config.eval_batch_size = 512
  config.num_epochs = 20.0
  config.num_steps = -1
  config.seed = 0
  # Independent replicas trained as one program: replica s is the run of
  # seed + s; metrics are the mean over replicas with <key>/std and <key>/seeds.
  config.num_seeds = 1
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
  # Evaluate and log angles once before the first step (a fresh run only).
  config.eval_at_start = False
  config.tensorboard = True
  # A grid of runs in one command, e.g. --config.sweep.learning_rate=0.01,0.1
  # (wtfree.grid): every field above (and its options) as a list of values.
  config.sweep = grid.declare(config)
  return config


def rule_option_fields() -> ml_collections.ConfigDict:
  """Every registered rule's options as typed placeholders with no value."""
  fields = {}
  for name, kind in feedback.all_options().items():
    if kind is not None:
      fields[name] = ml_collections.config_dict.placeholder(kind)
  return ml_collections.ConfigDict(fields)
