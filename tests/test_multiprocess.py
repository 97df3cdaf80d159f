"""Two processes on this machine train as two hosts would, and agree with one; four of eight devices, as 32.

Each process runs ``wtfree.main`` (through tests/multiprocess_worker.py, which
also saves the final state it holds) with one CPU device (eight in the pod-shape run), joined by
``jax.distributed`` over localhost and gloo collectives, on a shared workdir as
a pod shares a gs:// bucket.
"""

import json
import os
import pathlib
import re
import signal
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from wtfree import checkpoint

ROOT = pathlib.Path(__file__).resolve().parents[1]
WORKER = ROOT / "tests" / "multiprocess_worker.py"
STEPS = 10
FLAGS = [
    "--config=configs/digits_mlp.py",
    f"--config.num_steps={STEPS}",
    "--config.model_options.widths=(32,)",
    "--config.batch_size=32",
    "--config.log_every_steps=5",
    f"--config.eval_every_steps={STEPS}",
    "--config.checkpoint_every_steps=5",
    "--config.tensorboard=False",
]
TIMEOUT_S = 240


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _env(out: pathlib.Path, devices: int, **extra) -> dict:
  # Proxies would route the coordinator's localhost gRPC through them.
  env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower() and not k.startswith("JAX_")}
  env.update(
      XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
      JAX_PLATFORMS="cpu",
      PYTHONPATH=os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep),
      WTFREE_STATE_OUT=str(out),
      **extra,
  )
  return env


def _run_all(jobs: list[tuple[dict, pathlib.Path, pathlib.Path]], flags: list[str] = FLAGS) -> None:
  """Starts every ``(env, workdir, log)`` job at once; all must exit 0 within the timeout."""
  processes = []
  try:
    for env, workdir, log in jobs:
      with open(log, "w") as f:
        processes.append(subprocess.Popen(
            [sys.executable, str(WORKER), *flags, f"--workdir={workdir}"],
            cwd=ROOT, env=env, stdout=f, stderr=subprocess.STDOUT,
        ))
    codes = [p.wait(timeout=TIMEOUT_S) for p in processes]
  except subprocess.TimeoutExpired:
    codes = None
  finally:
    for p in processes:
      if p.poll() is None:
        p.kill()
        p.wait()
  logs = "\n".join(f"--- {log.name} ---\n{log.read_text()[-3000:]}" for _, _, log in jobs)
  assert codes is not None, f"timed out after {TIMEOUT_S}s\n{logs}"
  assert codes == [0] * len(jobs), f"exit codes {codes}\n{logs}"


def _lines(workdir: pathlib.Path) -> list[dict]:
  return [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]


def _host_copy(tree):
  """The shapes and dtypes of ``tree`` on one device here: a target for a checkpoint of another topology."""
  device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=device), tree)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  """A two-process run and a one-process run (two devices) of the same command."""
  tmp = tmp_path_factory.mktemp("multiprocess")
  multi, single = tmp / "multi", tmp / "single"
  for d in (multi / "out", single / "out"):
    d.mkdir(parents=True)
  address = f"127.0.0.1:{_free_port()}"
  hosts = [
      _env(multi / "out", 1, JAX_COORDINATOR_ADDRESS=address, JAX_COORDINATOR_BIND_ADDRESS=address,
           JAX_NUM_PROCESSES="2", JAX_PROCESS_ID=str(i))
      for i in range(2)
  ]
  _run_all([(hosts[i], multi / "workdir", multi / f"process_{i}.log") for i in range(2)])
  # After, not beside: the machine may have two cores.
  _run_all([(_env(single / "out", 2), single / "workdir", single / "process_0.log")])
  return multi, single


def test_both_processes_joined_one_job(runs):
  multi, _ = runs
  for i in range(2):
    log = (multi / f"process_{i}.log").read_text()
    assert f"JAX process {i} of 2, 1 local of 2 devices (cpu)" in log


def test_both_processes_end_with_the_same_state(runs):
  multi, _ = runs
  states = [np.load(multi / "out" / f"state_{i}.npz") for i in range(2)]
  assert sorted(states[0].files) == sorted(states[1].files)
  assert any(k.startswith("feedback/") for k in states[0].files)  # fa's B travels too.
  assert int(states[0]["step"]) == STEPS
  for k in states[0].files:
    np.testing.assert_array_equal(states[0][k], states[1][k], err_msg=k)


def test_only_process_0_writes_metrics(runs):
  multi, _ = runs
  lines = _lines(multi / "workdir")
  events = [(line["step"], line["split"]) for line in lines]
  assert events == [(5, "train"), (10, "train"), (10, "eval")]
  assert lines[1]["train/loss"] > 0 and "angle/weight/Dense_0" in lines[1] and "angle/delta/head" in lines[1]


def test_two_processes_equal_one(runs):
  multi, single = runs
  a, b = np.load(multi / "out" / "state_0.npz"), np.load(single / "out" / "state_0.npz")
  assert sorted(a.files) == sorted(b.files)
  for k in a.files:
    np.testing.assert_allclose(a[k], b[k], rtol=1e-5, atol=1e-6, err_msg=k)
  multi_lines, single_lines = _lines(multi / "workdir"), _lines(single / "workdir")
  assert len(multi_lines) == len(single_lines)
  for x, y in zip(multi_lines, single_lines):
    assert (x["step"], x["split"], x.keys()) == (y["step"], y["split"], y.keys())
    for k in x.keys() - {"step", "split", "train/examples_per_second"}:
      np.testing.assert_allclose(x[k], y[k], rtol=1e-4, atol=1e-4, err_msg=k)


def test_shared_checkpoint_is_whole(runs):
  # Orbax splits the writing of replicated arrays between the processes: the
  # shared directory must hold the whole state, optimizer included.
  multi, single = runs
  reference, _ = checkpoint.Checkpointer(str(single / "workdir")).restore(STEPS)
  state, meta = checkpoint.Checkpointer(str(multi / "workdir")).restore(STEPS, _host_copy(reference))
  assert meta["data_position"] == STEPS
  jax.tree.map(
      lambda x, y: np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-5, atol=1e-6), state, reference
  )
  # Without a target it comes back onto this process's device, for inspection.
  untargeted, _ = checkpoint.Checkpointer(str(multi / "workdir")).restore(STEPS)
  jax.tree.map(
      lambda x, y: np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-5, atol=1e-6),
      untargeted, dict(reference),
  )


POD_HOSTS, POD_DEVICES = 4, 8


@pytest.mark.slow
def test_four_hosts_of_eight_devices_equal_one_host_of_thirty_two(tmp_path):
  """Akrout's pod shape in small: 4 processes x 8 devices, one data axis of 32, as one process with 32."""
  multi, single = tmp_path / "multi", tmp_path / "single"
  for d in (multi / "out", single / "out"):
    d.mkdir(parents=True)
  flags = [*FLAGS, "--config.batch_size=64", "--config.angles=False"]
  address = f"127.0.0.1:{_free_port()}"
  hosts = [
      _env(multi / "out", POD_DEVICES, JAX_COORDINATOR_ADDRESS=address, JAX_COORDINATOR_BIND_ADDRESS=address,
           JAX_NUM_PROCESSES=str(POD_HOSTS), JAX_PROCESS_ID=str(i))
      for i in range(POD_HOSTS)
  ]
  _run_all([(hosts[i], multi / "workdir", multi / f"process_{i}.log") for i in range(POD_HOSTS)], flags)
  _run_all([(_env(single / "out", POD_HOSTS * POD_DEVICES), single / "workdir", single / "process_0.log")], flags)
  for i in range(POD_HOSTS):
    log = (multi / f"process_{i}.log").read_text()
    assert f"JAX process {i} of {POD_HOSTS}, {POD_DEVICES} local of {POD_HOSTS * POD_DEVICES} devices (cpu)" in log
  reference = np.load(single / "out" / "state_0.npz")
  assert int(reference["step"]) == STEPS
  for i in range(POD_HOSTS):
    state = np.load(multi / "out" / f"state_{i}.npz")
    assert sorted(state.files) == sorted(reference.files)
    for k in state.files:
      np.testing.assert_allclose(state[k], reference[k], rtol=1e-5, atol=1e-6, err_msg=f"process {i}: {k}")


def test_main_reads_process_count_and_id_from_the_environment(monkeypatch):
  from absl import app
  from wtfree import main

  monkeypatch.delenv("JAX_NUM_PROCESSES", raising=False)
  monkeypatch.delenv("JAX_PROCESS_ID", raising=False)
  assert main._distributed_args() == {}  # Left to jax's cluster detection (TPU, Slurm, Open MPI).
  monkeypatch.setenv("JAX_NUM_PROCESSES", "4")
  monkeypatch.setenv("JAX_PROCESS_ID", "3")
  assert main._distributed_args() == {"num_processes": 4, "process_id": 3}
  monkeypatch.setenv("JAX_PROCESS_ID", "three")
  with pytest.raises(app.UsageError, match="JAX_PROCESS_ID='three'"):
    main._distributed_args()


@pytest.mark.slow
@pytest.mark.parametrize("count,devices", [(2, 1), (POD_HOSTS, POD_DEVICES)])
def test_sigterm_on_one_host_stops_all_at_the_same_step(tmp_path, count, devices):
  """A pod's hosts get SIGTERM at different times, or only some: all must save the same step."""
  address = f"127.0.0.1:{_free_port()}"
  (tmp_path / "out").mkdir()
  flags = [*FLAGS, "--config.batch_size=64", "--config.checkpoint_every_steps=100000", "--config.angles=False"]
  processes, logs = [], [tmp_path / f"process_{i}.log" for i in range(count)]
  hosts = [
      _env(tmp_path / "out", devices, JAX_COORDINATOR_ADDRESS=address, JAX_COORDINATOR_BIND_ADDRESS=address,
           JAX_NUM_PROCESSES=str(count), JAX_PROCESS_ID=str(i))
      for i in range(count)
  ]
  try:
    for i, env in enumerate(hosts):
      with open(logs[i], "w") as f:
        processes.append(subprocess.Popen(
            [sys.executable, str(WORKER), *flags, "--config.num_steps=100000", f"--workdir={tmp_path / 'workdir'}"],
            cwd=ROOT, env=env, stdout=f, stderr=subprocess.STDOUT,
        ))
    metrics = tmp_path / "workdir" / "metrics.jsonl"
    deadline = time.time() + TIMEOUT_S
    while not (metrics.exists() and len(metrics.read_text().splitlines()) >= 2):
      assert time.time() < deadline and all(p.poll() is None for p in processes), logs[0].read_text()[-3000:]
      time.sleep(0.5)
    processes[1].send_signal(signal.SIGTERM)  # Only the second host.
    codes = [p.wait(timeout=TIMEOUT_S) for p in processes]
  finally:
    for p in processes:
      if p.poll() is None:
        p.kill()
        p.wait()
  texts = [log.read_text() for log in logs]
  assert codes == [143] * count, f"exit codes {codes}\n" + "\n".join(t[-3000:] for t in texts)
  stopped = [re.search(r"stopped on SIGTERM after step (\d+)", t) for t in texts]
  assert all(stopped), texts
  steps = {int(m.group(1)) for m in stopped}
  assert len(steps) == 1, steps
  stopped_at = steps.pop()
  assert checkpoint.Checkpointer(str(tmp_path / "workdir")).latest_step() == stopped_at
  # The same command resumes from there on both hosts.
  resumed = [*flags, f"--config.num_steps={stopped_at + 5}"]
  _run_all([(hosts[i], tmp_path / "workdir", tmp_path / f"resumed_{i}.log") for i in range(count)], resumed)
  assert f"Resumed from the checkpoint at step {stopped_at}" in (tmp_path / "resumed_0.log").read_text()
  states = [np.load(tmp_path / "out" / f"state_{i}.npz") for i in range(count)]
  assert {int(s["step"]) for s in states} == {stopped_at + 5}
