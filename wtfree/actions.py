"""Periodic actions: what a run does every so many steps beside training, added without editing the loop.

    probe = actions.Periodic("probe", every_steps=100, fn=lambda step, state: {"head_norm": ...})
    train.train_and_evaluate(config, workdir, actions=[probe])

The loop stops at every multiple of each action's period (and at the last
step), calls ``fn(step, state)`` there after its own evaluation, and writes
the scalars it returns to metrics.jsonl and TensorBoard under the action's
name, as it writes ``train`` and ``eval``.
"""

from collections.abc import Callable, Mapping
import dataclasses
from typing import Any


@dataclasses.dataclass(frozen=True)
class Periodic:
  """An action the loop runs every ``every_steps`` steps and at the last one.

  Attributes:
    name: the split its metrics are logged under (e.g. ``'probe'``).
    every_steps: its period in steps.
    fn: ``fn(step, state) -> {metric: scalar}`` (or None to log nothing);
      ``state`` is the `wtfree.steps.TrainState` after ``step`` steps, with
      a leading replica axis in a run of several seeds.
  """

  name: str
  every_steps: int
  fn: Callable[[int, Any], Mapping[str, Any] | None]

  def __post_init__(self):
    if self.every_steps < 1:
      raise ValueError(f"periodic action {self.name!r}: every_steps {self.every_steps} is not a positive step count")
    if self.name in ("train", "eval", "validation"):
      raise ValueError(f"periodic action {self.name!r}: the loop's own splits are train, eval and validation; "
                       "name it otherwise")

  def due(self, step: int, total_steps: int) -> bool:
    """Whether the action runs after ``step``."""
    return step % self.every_steps == 0 or step == total_steps
