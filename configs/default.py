"""Defaults every config starts from: a small MLP on digits with feedback alignment.

    python -m wtfree.main --config=configs/default.py --workdir=runs/default

The fields and their meaning live in `wtfree.defaults`, so that code which
builds configs (the experiments, notebooks) has them without this folder.
"""

from wtfree.defaults import get_config, rule_option_fields

__all__ = ["get_config", "rule_option_fields"]
