"""A sweep as one command: every program of the grid trained in turn, then one table.

    python -m wtfree.main --config=configs/digits_mlp.py --workdir=runs/lr \
        --config.sweep.learning_rate=0.01,0.03,0.1,0.3 --config.num_seeds=5

`wtfree.grid` reads the grid. Each program trains in ``workdir/<program>``
through `wtfree.train.train_and_evaluate` (its cells times its seeds as the
replicas of one compiled program; a replica that diverges is held at its
state from the boundary before and marked while the others go on), and resumes from there like any run. Then
`wtfree.sweep_report` writes ``sweep.json``, ``sweep.md`` and ``sweep.png``
into ``workdir``: every cell's validation and test metrics per seed, their
mean and sample standard deviation, and per program the cell chosen on the
validation split with its test metric.
"""

from absl import logging
from etils import epath
import jax

from wtfree import grid
from wtfree import settings
from wtfree import sweep_report
from wtfree import train
from wtfree import validate

# The fraction of the training set a sweep holds out for validation when the
# set has no validation split of its own and the config holds out none.
DEFAULT_HOLDOUT = 0.1


def run(config, workdir: str, *, hold_out: bool = True) -> dict:
  """Trains every program of ``config``'s sweep under ``workdir`` and writes the sweep's summary.

  Every program's config is checked before the first one compiles. A sweep
  of one cell and one seed is a single run: a divergence stops it
  (`wtfree.steps.DivergenceError`), as it stops any run.

  Args:
    config: the base config, its ``sweep`` setting the grid (`wtfree.grid`).
    workdir: the sweep's directory; each program trains in a folder of it.
    hold_out: hold `DEFAULT_HOLDOUT` of the training set out for validation
      when the set has no validation split and ``config.holdout`` is 0.
      Without (an experiment that only grids, choosing nothing), such a
      set's cells are trained on all of its training set and none is chosen.

  Returns:
    The summary written to ``workdir/sweep.json``.

  Raises:
    ValueError: for a grid or a program config that cannot run.
  """
  programs = grid.programs(config)
  runs = []
  for program in programs:
    if hold_out and not settings.field(program.config, "holdout"):
      program.config.holdout = DEFAULT_HOLDOUT  # Used only where the set has no validation split of its own.
    runs.append(validate.check_config(program.config))
  validate.check_workdir(config, workdir)
  root = epath.Path(workdir)
  if jax.process_index() == 0:
    root.mkdir(parents=True, exist_ok=True)
    (root / "config.json").write_text(config.to_json_best_effort(indent=2, sort_keys=True))
  replica_count = sum(r.replicas.count for r in runs)
  for i, (program, resolved) in enumerate(zip(programs, runs)):
    logging.info("sweep: program %d of %d (%s): %d cells x %d seeds", i + 1, len(programs), program.name,
                 len(program.cells), resolved.replicas.num_seeds)
    train.train_and_evaluate(program.config, str(root / program.name), keep_going=replica_count > 1)
  summary = sweep_report.summarise(config, programs, workdir)
  if jax.process_index() == 0:
    sweep_report.write(summary, workdir)
  return summary
