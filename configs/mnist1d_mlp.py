"""A 40-256-256-10 MLP on mnist1d (generated, no download), where rules separate.

    python -m wtfree.main --config=configs/mnist1d_mlp.py --workdir=runs/mnist1d_fa
    python -m wtfree.main --config=configs/mnist1d_mlp.py --workdir=runs/mnist1d_kp --config.rule=kp

On digits a net whose hidden layers never learn still reaches ~96 %; on mnist1d
the output layer alone stays under 48 % while backprop passes 60 %.
"""

from configs import default


def get_config():
  config = default.get_config()
  config.dataset = "mnist1d"
  config.model = "mlp"
  config.model_options.widths = (256, 256)
  config.model_options.activation = "relu"
  config.rule = "fa"
  config.batch_size = 64
  config.learning_rate = 0.02
  config.num_epochs = 60.0
  config.log_every_steps = 250
  config.eval_every_steps = 1250
  config.checkpoint_every_steps = 1250
  return config
