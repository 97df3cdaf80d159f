"""SIGTERM handling: Cloud TPU preempts a VM with SIGTERM, and a run saves first."""

import signal
import threading

from absl import logging


class Preempted(Exception):
  """The run stopped on SIGTERM after saving a checkpoint."""


class StopOnSigterm:
  """Context manager noting SIGTERM so the loop can stop at a step boundary.

  Inside the context, SIGTERM sets `requested` instead of killing the
  process; on exit the previous handler is restored. Outside the main thread
  (where Python cannot install handlers) it does nothing.
  """

  def __init__(self):
    self.requested = False
    self._previous = None

  def _handle(self, signum, frame):
    del frame
    logging.warning("Signal %d received: stopping at the end of this step.", signum)
    self.requested = True

  def __enter__(self):
    if threading.current_thread() is threading.main_thread():
      self._previous = signal.signal(signal.SIGTERM, self._handle)
    return self

  def __exit__(self, *exc):
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)
    return False
