"""SIGTERM handling: Cloud TPU preempts a VM with SIGTERM, and a run saves first.

With one process, SIGTERM sets a flag that the loop reads at the end of the
step (an in-memory set's steps run as one scan between log, eval and
checkpoint boundaries: at the end of that run). With several, every host must save the same step (a checkpoint is
written by all of them together), but the signal reaches the hosts at
different times, or only some of them. There JAX's preemption service, which
``jax.distributed.initialize`` starts, catches SIGTERM on any host and all
hosts agree on the step to stop at
(`jax.experimental.multihost_utils.reached_preemption_sync_point`).
"""

import signal
import threading

from absl import logging
import jax
from jax.experimental import multihost_utils


class Preempted(Exception):
  """The run stopped on SIGTERM after saving a checkpoint."""


def _preemption_service_running() -> bool:
  # pylint: disable-next=protected-access
  return getattr(jax._src.distributed.global_state, "preemption_sync_manager", None) is not None


class StopOnSigterm:
  """Context manager that turns SIGTERM into a stop at a step boundary.

  Call `should_stop(step)` once after every step, with the same steps on
  every host. One process: inside the context SIGTERM only sets a flag (the
  previous handler is restored on exit; outside the main thread, where Python
  cannot install handlers, nothing is caught). Several processes with JAX's
  preemption service: SIGTERM on any host makes every host's
  `should_stop` return True at the same step.
  """

  def __init__(self):
    self.requested = False
    self._previous = None
    self._synced = False

  def _handle(self, signum, frame):
    del frame
    logging.warning("Signal %d received: stopping at the end of this step.", signum)
    self.requested = True

  def should_stop(self, step: int) -> bool:
    """Whether to save and stop after ``step``; the same answer on every host."""
    if self._synced:
      self.requested = self.requested or multihost_utils.reached_preemption_sync_point(step)
    return self.requested

  def __enter__(self):
    if jax.process_count() > 1 and _preemption_service_running():
      self._synced = True
    elif jax.process_count() > 1:
      logging.warning(
          "JAX's preemption service is off (jax_enable_preemption_service): a SIGTERM that reaches "
          "only some hosts stops only those, and the others wait for them."
      )
      self._install()
    else:
      self._install()
    return self

  def _install(self):
    if threading.current_thread() is threading.main_thread():
      self._previous = signal.signal(signal.SIGTERM, self._handle)

  def __exit__(self, *exc):
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)
    return False
