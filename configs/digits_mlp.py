"""The embedded default: a 64-256-256-10 MLP on scikit-learn's digits, on CPU.

    python -m wtfree.main --config=configs/digits_mlp.py --workdir=runs/digits
    python -m wtfree.main --config=configs/digits_mlp.py --workdir=runs/digits_kp --config.rule=kp

No download: the digits ship with scikit-learn. Takes a minute or two on two cores.
"""

from configs import default


def get_config():
  config = default.get_config()
  config.dataset = "digits"
  config.flatten = True
  config.model = "mlp"
  config.model_options.widths = (256, 256)
  config.model_options.activation = "relu"
  config.rule = "fa"
  config.batch_size = 32
  config.learning_rate = 0.02
  config.num_epochs = 30.0
  config.log_every_steps = 100
  config.eval_every_steps = 450
  config.checkpoint_every_steps = 450
  return config
