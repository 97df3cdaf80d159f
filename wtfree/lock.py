"""One live run per workdir: ``WORKDIR/lock`` names the run that holds it."""

import contextlib
import datetime
import errno
import json
import os
import socket

from absl import logging
from etils import epath
import jax


class WorkdirBusy(RuntimeError):
  """Another run holds the workdir."""


def _alive(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:  # Someone else's process: alive.
    return True
  return True


@contextlib.contextmanager
def hold(workdir: str):
  """Holds ``workdir`` for this run (process 0 of a job) while the block runs.

  A lock left by a process of this host that no longer runs is stale and
  taken over, with a warning; one held by a live process, or by another
  host, whose processes cannot be checked from here, is refused. A workdir
  on a read-only disk is not held (nothing can write there): a finished
  run only reports, and any other fails at its first write.

  Raises:
    WorkdirBusy: naming the holder (host, pid, start time) and how to take
      a stale lock over.
  """
  if jax.process_index() != 0:
    yield
    return
  path = epath.Path(workdir) / "lock"
  host, pid = socket.gethostname(), os.getpid()
  if path.exists():
    try:
      holder = json.loads(path.read_text())
    except ValueError:
      holder = {}
    same_host = holder.get("host") == host
    if not (same_host and not _alive(int(holder.get("pid", -1)))):
      raise WorkdirBusy(
          f"workdir {workdir} is held by the run started {holder.get('started', '?')} on host "
          f"{holder.get('host', '?')} as pid {holder.get('pid', '?')}: wait for it to end, or, if it no longer "
          f"runs, delete {path} and start again")
    logging.warning("Taking over the lock of %s from pid %s, which no longer runs", workdir, holder.get("pid"))
  path.parent.mkdir(parents=True, exist_ok=True)
  started = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
  try:
    path.write_text(json.dumps({"host": host, "pid": pid, "started": started}))
  except OSError as e:
    if e.errno not in (errno.EROFS, errno.EACCES, errno.EPERM):
      raise
    logging.warning("%s cannot be written (%s): the run goes on without holding it", path, e.strerror)
    yield
    return
  try:
    yield
  finally:
    path.unlink(missing_ok=True)
