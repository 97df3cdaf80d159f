"""The BioTorch CIFAR-10 setup (Sanfiz & Akrout 2021), shared by configs/resnet20_*.py.

SGD, learning rate 0.1, momentum 0.9, weight decay 1e-4 on every parameter
(torch's SGD), batch 128, 250 epochs, learning rate divided by 10 at epochs
100, 150 and 200; pad-4 crop and flip. usf scales sign(W) by the constant
std of the initializer, as BioTorch does.
"""

from configs import default


def get_config(model: str, rule: str):
  """The BioTorch run of ``model`` ('resnet20', 'resnet56') with ``rule``."""
  config = default.get_config()
  config.dataset = "cifar10"
  config.model = model
  config.model_options = {"bn_before_relu": True}
  config.rule = rule
  config.optimizer = "sgd"
  config.momentum = 0.9
  config.weight_decay = 1e-4
  config.weight_decay_on = "all"
  config.learning_rate = 0.1
  config.schedule = "step"
  config.decay_epochs = (100, 150, 200)
  config.batch_size = 128
  config.eval_batch_size = 1000
  config.num_epochs = 250.0
  config.log_every_steps = 100
  config.eval_every_steps = 390
  config.checkpoint_every_steps = 390
  if rule == "usf":
    config.rule_options.magnitude = "init_std"
  return config
