r"""Runs a wtfree training job.

    python -m wtfree.main --config=configs/digits_mlp.py --workdir=runs/digits
    python -m wtfree.main --config=configs/resnet50_wm.py --workdir=gs://bucket/r50_wm \
        --config.batch_size=1024
    python -m wtfree.main --config=configs/digits_mlp.py --workdir=runs/lr \
        --config.sweep.learning_rate=0.01,0.03,0.1,0.3 --config.num_seeds=5

A config whose ``sweep`` sets a field runs the grid (`wtfree.sweep`) and
prints its table.

Every process of a multi-host job runs this same command. Outside Cloud TPU,
Slurm and Open MPI, which jax detects by itself, describe the job to each
process with JAX_COORDINATOR_ADDRESS=host:port, JAX_NUM_PROCESSES and
JAX_PROCESS_ID (0 on the host at that address).
"""

import errno
import logging as std_logging
import os
import re
import shutil
import sys

from absl import app
from absl import flags
from absl import logging
import jax
from ml_collections import config_flags

from wtfree import data
from wtfree import grid
from wtfree import lock
from wtfree import preemption
from wtfree import steps
from wtfree import sweep
from wtfree import sweep_report
from wtfree import train

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "Where checkpoints and metrics go; a run resumes from it.")
flags.DEFINE_enum(
    "distributed", "auto", ["auto", "on", "off"],
    "Call jax.distributed.initialize(): 'auto' does when the environment describes several hosts.",
)
config_flags.DEFINE_config_file("config", None, "A config file with get_config().", lock_config=True)
flags.mark_flags_as_required(["config", "workdir"])


class _QuietCheckpointing(std_logging.Filter):
  """Keeps orbax's per-save INFO lines out of the console; warnings pass."""

  def filter(self, record):
    return record.levelno >= std_logging.WARNING or "/orbax/" not in record.pathname


class _QuietBackendProbe(std_logging.Filter):
  """Keeps jax's INFO line about a backend it probed and did not find (no TPU on a CPU) out of the console."""

  def filter(self, record):
    return record.levelno >= std_logging.WARNING or "Unable to initialize backend" not in record.getMessage()


def _multi_host_environment() -> bool:
  hosts = os.environ.get("TPU_WORKER_HOSTNAMES", "")
  return (
      len([h for h in hosts.split(",") if h]) > 1
      or "JAX_COORDINATOR_ADDRESS" in os.environ
      or int(os.environ.get("SLURM_NTASKS", "1")) > 1
  )


def _distributed_args() -> dict:
  """num_processes and process_id from JAX_NUM_PROCESSES and JAX_PROCESS_ID, where set.

  jax reads JAX_COORDINATOR_ADDRESS itself, but takes the other two only from
  the clusters it detects; without them it stops with "Number of processes
  must be defined".
  """
  args = {}
  for variable, name in (("JAX_NUM_PROCESSES", "num_processes"), ("JAX_PROCESS_ID", "process_id")):
    value = os.environ.get(variable)
    if value is not None:
      try:
        args[name] = int(value)
      except ValueError:
        raise app.UsageError(f"{variable}={value!r} is not an integer") from None
  return args


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  logging.get_absl_logger().addFilter(_QuietCheckpointing())
  logging.get_absl_handler().addFilter(_QuietBackendProbe())
  if FLAGS.distributed == "on" or (FLAGS.distributed == "auto" and _multi_host_environment()):
    jax.distributed.initialize(**_distributed_args())
  logging.info("JAX process %d of %d, %d local of %d devices (%s)",
               jax.process_index(), jax.process_count(), jax.local_device_count(),
               jax.device_count(), jax.default_backend())
  try:
    if grid.is_sweep(FLAGS.config):
      summary = sweep.run(FLAGS.config, FLAGS.workdir)
      print(sweep_report.markdown(summary))
    else:
      train.train_and_evaluate(FLAGS.config, FLAGS.workdir)
  except (ValueError, FileNotFoundError, data.DataNotPreparedError) as e:  # A config or input that cannot run.
    _exit(f"error: {e}", 2)
  except steps.DivergenceError as e:
    _exit(f"diverged: {e}", 1)
  except lock.WorkdirBusy as e:  # Another run's: worth retrying once it ends.
    _exit(f"error: {e}", 75)
  except OSError as e:  # The machine's: a full disk, a permission; worth retrying once mended.
    _exit(f"error: {_os_error(e, FLAGS.workdir)}", 75)
  except preemption.Preempted as e:
    _exit(str(e), 143)  # 128 + SIGTERM, as if the signal had ended the process.


def _os_error(error: OSError, workdir: str) -> str:
  """One line for an error of the machine: what, where, and for a full disk how much is left."""
  where = error.filename or workdir
  text = f"{error.strerror or error} ({where})"
  if error.errno == errno.ENOSPC:
    existing = os.path.abspath(str(where))
    while not os.path.exists(existing) and os.path.dirname(existing) != existing:
      existing = os.path.dirname(existing)
    text += f": {shutil.disk_usage(existing).free / 2**20:.0f} MiB free there"
    text += "; free some space and run the same command again to resume from the last checkpoint"
  elif error.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
    text += f"; make {workdir} writable or pass another --workdir"
  return text


def _exit(message: str, code: int) -> None:
  logging.error("%s", message)
  print(message, file=sys.stderr)
  sys.exit(code)


def _config_path(argv: list[str]) -> str | None:
  """The last ``--config`` given (absl keeps the last)."""
  path = None
  for i, arg in enumerate(argv):
    if arg.startswith("--config="):
      path = arg.split("=", 1)[1]
    elif arg == "--config" and i + 1 < len(argv):
      path = argv[i + 1]
  return path


def _override_message(error: Exception, argv: list[str]) -> str | None:
  """One line for a command-line override that names no field of the config; None for other errors."""
  text = str(error).replace("\\'", "'")
  quoted = re.findall(r"'([A-Za-z0-9_]+)'", text)
  field = quoted[0] if quoted else None
  # The field may be the last part of the override (a mistyped field) or a parent of it (a mistyped group).
  given = [a.split("=", 1)[0] for a in argv
           if a.startswith("--config.") and field in a.split("=", 1)[0].split(".")[1:]]
  if not given:
    return None  # Raised by the config file itself: a bug there, shown with its traceback.
  close = re.findall(r'Did you mean "([^"]+)"', text)
  parts = given[0].split(".")
  hint = ""
  if close:
    parts[parts.index(field, 1)] = close[0]
    hint = f"; did you mean {'.'.join(parts)}?"
  return f"error: {given[0]} names no field of the config{hint}"


def _help() -> str:
  """The usage, the flags and every config field with its default (`wtfree.defaults`)."""
  from wtfree import defaults  # pylint: disable=g-import-not-at-top

  fields = []

  def walk(config, prefix):
    for name, value in sorted(config.items()):
      if hasattr(value, "items"):
        walk(value, f"{prefix}{name}.")
      elif not prefix.startswith("sweep."):
        fields.append(f"  --config.{prefix}{name}={value!r}")

  walk(defaults.get_config(), "")
  return "\n".join([
      __doc__.strip(), "",
      "flags:",
      "  --config=FILE      a config file with get_config() (configs/*.py; run from the repository root)",
      "  --workdir=DIR      where checkpoints and metrics go; a run resumes from it",
      "  --distributed=auto|on|off   jax.distributed.initialize(); 'auto' when the environment names several hosts",
      "",
      "config fields, with the defaults every config starts from (wtfree/defaults.py); a config file overrides",
      "some, the command line any (--config.FIELD=VALUE); --config.sweep.FIELD=v1,v2,... sweeps any of them:",
      *fields,
  ])


def parse_flags(argv: list[str]) -> list[str]:
  """absl's flag parsing, with bad config flags as one-line errors (exit 2) instead of tracebacks."""
  if any(arg in ("-h", "--help", "--helpshort", "--helpfull") for arg in argv[1:]):
    print(_help())
    sys.exit(0)
  path = _config_path(argv)
  if path is not None and not os.path.exists(path.split(":", 1)[0]):
    _exit(f"error: config file {path} does not exist (--config=configs/NAME.py, run from the repository root)", 2)
  try:
    return FLAGS(argv)
  except flags.Error as e:
    _exit(f"error: {e}", 2)
  except (AttributeError, KeyError) as e:  # ml_collections: an override of a field the config lacks.
    message = _override_message(e, argv)
    if message is None:
      raise
    _exit(message, 2)
  return []


if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags)
