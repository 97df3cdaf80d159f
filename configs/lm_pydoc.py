"""A small causal transformer language model on Python's own help texts, character by character.

    python -m wtfree.main --config=configs/lm_pydoc.py --workdir=runs/lm_fa --config.rule=fa

The corpus ships with Python (``pydoc_data``; see `wtfree.data.text`): 90 %
for training, 10 % for test, windows of 64 characters. Width 64, two causal
blocks of 4 heads; every projection follows the rule. The metric is
``eval/bits_per_token``, bits per character (the corpus's unigram entropy is
about 4.7 bits). A few minutes on two cores.
"""

from configs import default


def get_config():
  config = default.get_config()
  config.dataset = "pydoc_chars"
  config.context_length = 64
  config.model = "causal_lm"
  config.model_options = {"max_length": 64, "width": 64, "num_layers": 2, "num_heads": 4, "mlp_dim": 256}
  config.rule = "fa"
  config.optimizer = "adam"
  config.learning_rate = 1e-3
  config.schedule = "cosine"
  config.warmup_epochs = 0.5
  config.batch_size = 32
  config.eval_batch_size = 256
  config.num_epochs = 5.0
  config.log_every_steps = 102
  config.eval_every_steps = 510
  config.checkpoint_every_steps = 510
  return config
