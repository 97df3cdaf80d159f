"""Runs survive SIGKILL and SIGTERM, stop on divergence, and refuse bad configs."""

import os
import pathlib
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from wtfree import checkpoint

ROOT = pathlib.Path(__file__).resolve().parents[1]
SMALL = [
    "--config.model_options.widths=(32,)",
    "--config.batch_size=32",
    "--config.log_every_steps=10",
    "--config.eval_every_steps=1000",
    "--config.checkpoint_every_steps=5",
    "--config.tensorboard=False",
    "--config.angles=False",
]


def _command(workdir, *overrides, config="configs/digits_mlp.py"):
  return [sys.executable, "-m", "wtfree.main", f"--config={config}", f"--workdir={workdir}", *SMALL, *overrides]


def _env():
  env = dict(os.environ)
  # One device, as a user's CPU run, compiled as the tests compile (conftest.py).
  flags = env.get("XLA_FLAGS", "").split()
  env["XLA_FLAGS"] = " ".join(f for f in flags if not f.startswith("--xla_force_host_platform_device_count"))
  env["JAX_PLATFORMS"] = "cpu"
  return env


def _run(workdir, *overrides, **kw):
  return subprocess.run(_command(workdir, *overrides, **kw), cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=300)


def _final(workdir):
  ckpt = checkpoint.Checkpointer(str(workdir))
  step = ckpt.latest_step()
  state, _ = ckpt.restore(step)
  return step, state


def _wait_for_checkpoint(workdir, at_least, process, timeout=120):
  deadline = time.time() + timeout
  directory = pathlib.Path(workdir) / "checkpoints"
  while time.time() < deadline:
    steps = [int(p.name) for p in directory.glob("*") if p.name.isdigit()] if directory.exists() else []
    if steps and max(steps) >= at_least:
      return
    assert process.poll() is None, process.communicate()
    time.sleep(0.2)
  raise TimeoutError(f"no checkpoint at step >= {at_least} in {workdir}")


def _assert_same_state(a, b):
  import jax

  assert np.shape(a["params"]["head"]["kernel"])[0] == 4  # all four replicas
  jax.tree.map(lambda x, y: np.testing.assert_array_equal(np.asarray(x), np.asarray(y)), a, b)


# The kill and resume tests run four seeds as one program: the replica axis is checkpointed too.
SEEDS = "--config.num_seeds=4"


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("straight")
  result = _run(workdir, "--config.num_steps=120", SEEDS)
  assert result.returncode == 0, result.stderr[-3000:]
  return _final(workdir)


@pytest.mark.parametrize("sig", [signal.SIGKILL, pytest.param(signal.SIGTERM, marks=pytest.mark.slow)],
                         ids=["sigkill", "sigterm"])
def test_killed_run_resumes_to_the_uninterrupted_parameters(sig, uninterrupted, tmp_path):
  process = subprocess.Popen(_command(tmp_path, "--config.num_steps=120", SEEDS), cwd=ROOT, env=_env(),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  _wait_for_checkpoint(tmp_path, 10, process)
  process.send_signal(sig)
  _, stderr = process.communicate(timeout=120)
  if sig == signal.SIGTERM:
    assert process.returncode == 143, stderr[-3000:]
    match = re.search(r"stopped on SIGTERM after step (\d+), checkpoint saved", stderr)
    assert match, stderr[-3000:]
    assert checkpoint.Checkpointer(str(tmp_path)).latest_step() == int(match.group(1))
  else:
    assert process.returncode == -signal.SIGKILL
  result = _run(tmp_path, "--config.num_steps=120", SEEDS)
  assert result.returncode == 0, result.stderr[-3000:]
  assert "Resumed from the checkpoint" in result.stderr
  step, state = _final(tmp_path)
  assert step == uninterrupted[0] == 120
  _assert_same_state(state, uninterrupted[1])


@pytest.mark.slow
def test_truncated_latest_checkpoint_is_skipped(uninterrupted, tmp_path):
  result = _run(tmp_path, "--config.num_steps=20", SEEDS)
  assert result.returncode == 0, result.stderr[-3000:]
  latest = tmp_path / "checkpoints" / "20"
  for path in latest.rglob("*"):
    if path.is_file() and path.stat().st_size > 0:
      path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
  result = _run(tmp_path, "--config.num_steps=120", SEEDS)
  assert result.returncode == 0, result.stderr[-3000:]
  assert "cannot be read" in result.stderr
  assert "Resumed from the checkpoint at step 15" in result.stderr
  step, state = _final(tmp_path)
  assert step == 120
  _assert_same_state(state, uninterrupted[1])


def test_diverging_run_stops_and_keeps_the_last_good_checkpoint(tmp_path):
  result = _run(tmp_path, "--config.num_steps=200", "--config.learning_rate=1e30", "--config.checkpoint_every_steps=1",
                "--config.num_seeds=2")
  assert result.returncode == 1, result.stderr[-3000:]
  assert re.search(r"at step \d+ with rule 'fa' in replica\(s\) 0 \(seed 0, step \d+\)", result.stderr), \
      result.stderr[-3000:]
  assert "last good checkpoint is step" in result.stderr
  assert "Traceback" not in result.stderr
  step, state = _final(tmp_path)
  import jax

  assert all(np.all(np.isfinite(np.asarray(x))) for x in jax.tree.leaves(state["params"]))


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["--config.rule=fx"], "rule 'fx' is not one of bp, fa"),
        (["--config.model=vgg"], "model 'vgg' is not one of"),
        (["--config.dataset=imagenet3000"], "imagenet3000"),
        (["--config.batch_size=30"], "does not divide"),
        (["--config.optimizer=adam", "--config.batch_manhattan=True"], "contradicts"),
        (["--config.mirror_epochs=2.0"], "apply only to rules that mirror B"),
        (["--config.learning_rat=0.1"], "--config.learning_rat names no field of the config; "
                                         "did you mean --config.learning_rate?"),
        (["--config.rule=fa", "--config.rule_options.decay=0.1"], "decay belong to kp, wm"),
        (["--config=configs/no_such_config.py"], "config file configs/no_such_config.py does not exist"),
        (["--config.dataset=cifar10", "--config.data_dir=/nonexistent"], "is not prepared"),
    ],
)
def test_bad_config_exits_2_with_a_message_and_no_traceback(overrides, message, tmp_path):
  env = _env()
  env["XLA_FLAGS"] += " --xla_force_host_platform_device_count=8"
  result = subprocess.run(_command(tmp_path, *overrides), cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
  assert result.returncode == 2, result.stderr[-3000:]
  assert message in result.stderr
  assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_workdir_with_another_config_is_refused(tmp_path):
  assert _run(tmp_path, "--config.num_steps=5").returncode == 0
  result = _run(tmp_path, "--config.num_steps=10", "--config.rule=kp")
  assert result.returncode == 2
  assert "holds a run with rule='fa'" in result.stderr
  # resume_anyway continues with a changed setting, but kp's state has another layout than fa's:
  # an error that says so, not a silent fresh start.
  assert _run(tmp_path, "--config.num_steps=10", "--config.learning_rate=0.01",
              "--config.resume_anyway=True").returncode == 0
  result = _run(tmp_path, "--config.num_steps=15", "--config.rule=kp", "--config.resume_anyway=True")
  assert result.returncode == 2 and "can be read into this run's state" in result.stderr, result.stderr[-2000:]


def test_checkpoints_that_no_longer_fit_the_state_are_an_error_not_a_fresh_start(tmp_path):
  import jax.numpy as jnp

  from wtfree import checkpoint

  ckpt = checkpoint.Checkpointer(str(tmp_path), save_every_steps=1)
  ckpt.save(1, {"params": {"kernel": jnp.ones(3)}}, {"data_position": 1}, force=True)
  ckpt.wait()
  other_layout = {"params": {"kernel": jnp.ones(3), "offset_scale": jnp.ones(())}}
  with pytest.raises(ValueError, match="none of the checkpoints .* can be read into this run's state"):
    checkpoint.Checkpointer(str(tmp_path)).restore_latest(checkpoint.abstract_like(other_layout))


def test_help_exits_0_and_lists_every_config_field_with_its_default():
  done = subprocess.run([sys.executable, "-m", "wtfree.main", "--help"], cwd=ROOT, env=_env(), capture_output=True,
                        text=True, timeout=120)
  assert done.returncode == 0, done.stderr
  from wtfree import defaults  # pylint: disable=g-import-not-at-top

  for field in ("learning_rate", "num_seeds", "holdout", "rule_options.p", "model_options.widths"):
    assert f"--config.{field}=" in done.stdout
  assert f"--config.learning_rate={defaults.get_config().learning_rate!r}" in done.stdout
  # The module's usage keeps its line breaks (a continued command, not one long line).
  assert "--workdir=gs://bucket/r50_wm \\\n" in done.stdout


def test_the_cpus_probe_for_a_tpu_stays_off_the_console():
  import logging as std_logging  # pylint: disable=g-import-not-at-top

  from wtfree import main  # pylint: disable=g-import-not-at-top

  record = lambda level, text: std_logging.LogRecord("jax", level, "xla_bridge.py", 1, text, None, None)
  quiet = main._QuietBackendProbe()
  assert not quiet.filter(record(std_logging.INFO, "Unable to initialize backend 'tpu': INTERNAL: no libtpu.so"))
  assert quiet.filter(record(std_logging.INFO, "JAX process 0 of 1"))
  assert quiet.filter(record(std_logging.WARNING, "Unable to initialize backend 'cuda': a real problem"))


def test_a_resumed_run_logs_each_step_once_and_keeps_what_it_dropped(tmp_path):
  import json  # pylint: disable=g-import-not-at-top
  import shutil  # pylint: disable=g-import-not-at-top

  first = _run(tmp_path, "--config.num_steps=20", "--config.log_every_steps=5", "--config.checkpoint_every_steps=10")
  assert first.returncode == 0, first.stderr[-3000:]
  lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
  # As if the run had died after logging step 20 but before its checkpoint was written.
  shutil.rmtree(tmp_path / "checkpoints" / "20")
  again = _run(tmp_path, "--config.num_steps=20", "--config.log_every_steps=5", "--config.checkpoint_every_steps=10")
  assert again.returncode == 0, again.stderr[-3000:]
  records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
  keys = [(r["step"], r["split"]) for r in records]
  assert len(keys) == len(set(keys)) and [k for k in keys if k[1] == "train"] == [(s, "train") for s in (5, 10, 15, 20)]
  dropped = (tmp_path / "metrics.dropped.jsonl").read_text().splitlines()
  assert dropped == [line for line in lines if json.loads(line)["step"] > 10]


@pytest.mark.parametrize("field,value,message", [
    ("learning_rate", -0.1, "learning_rate -0.1 is not positive"),
    ("learning_rate", 0.0, "learning_rate 0.0 is not positive"),
    ("num_steps", 0, "num_steps 0 trains nothing"),
    ("num_epochs", 0.0, "num_epochs 0.0 trains nothing"),
])
def test_a_run_that_cannot_learn_is_refused_before_anything_compiles(field, value, message):
  from configs import digits_mlp  # pylint: disable=g-import-not-at-top
  from wtfree import validate  # pylint: disable=g-import-not-at-top

  config = digits_mlp.get_config()
  config[field] = value
  with pytest.raises(ValueError, match=message):
    validate.check_config(config)


@pytest.mark.slow
def test_a_corrupt_latest_checkpoint_is_moved_aside_and_the_run_finishes(tmp_path):
  first = _run(tmp_path, "--config.num_steps=10")
  assert first.returncode == 0, first.stderr[-3000:]
  latest = tmp_path / "checkpoints" / "10"
  for path in latest.rglob("*"):
    if path.is_file() and path.stat().st_size > 0:
      path.write_bytes(b"garbage")
  # The same command again: it used to retrain 5 -> 10 and then find step 10 taken, forever.
  again = _run(tmp_path, "--config.num_steps=10")
  assert again.returncode == 0, again.stderr[-3000:]
  assert re.search(r"Checkpoint at step 10 cannot be read .*moved aside to \S*10\.corrupt-", again.stderr)
  assert "Resumed from the checkpoint at step 5" in again.stderr
  finished = _run(tmp_path, "--config.num_steps=10")  # And once more: a finished run, nothing to redo.
  assert finished.returncode == 0 and "Resumed from the checkpoint at step 10" in finished.stderr
  aside = list((tmp_path / "checkpoints").glob("10.corrupt-*"))
  assert len(aside) == 1 and (aside[0] / "state").exists()
  assert checkpoint.Checkpointer(str(tmp_path)).latest_step() == 10


def test_a_workdir_holds_one_live_run(tmp_path):
  import json  # pylint: disable=g-import-not-at-top
  import socket  # pylint: disable=g-import-not-at-top

  from wtfree import lock  # pylint: disable=g-import-not-at-top

  with lock.hold(str(tmp_path)):
    held = json.loads((tmp_path / "lock").read_text())
    assert held["pid"] == os.getpid() and held["host"] == socket.gethostname()
    expected = (rf"held by the run started {re.escape(held['started'])} on host .* as pid {os.getpid()}: "
                "wait for it to end, or, if it no longer runs, delete")
    with pytest.raises(lock.WorkdirBusy, match=expected):
      with lock.hold(str(tmp_path)):
        pass
  assert not (tmp_path / "lock").exists()
  # A lock whose process is gone (a killed run) is taken over.
  dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
  (tmp_path / "lock").write_text(json.dumps({"host": socket.gethostname(), "pid": int(dead.stdout), "started": "x"}))
  with lock.hold(str(tmp_path)):
    assert json.loads((tmp_path / "lock").read_text())["pid"] == os.getpid()


def test_a_second_run_on_a_held_workdir_exits_75_in_one_line(tmp_path):
  import json  # pylint: disable=g-import-not-at-top
  import socket  # pylint: disable=g-import-not-at-top

  (tmp_path / "lock").write_text(json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "started": "then"}))
  result = _run(tmp_path, "--config.num_steps=5")
  assert result.returncode == 75, result.stderr[-3000:]
  assert result.stderr.strip().splitlines()[-1].startswith(f"error: workdir {tmp_path} is held by the run started then")
  assert "Traceback" not in result.stderr and not (tmp_path / "checkpoints").exists()


def test_a_workdir_that_is_a_file_is_refused_before_anything_runs(tmp_path):
  from configs import digits_mlp  # pylint: disable=g-import-not-at-top
  from wtfree import validate  # pylint: disable=g-import-not-at-top

  (tmp_path / "run").write_text("not a directory")
  with pytest.raises(ValueError, match=r"workdir .*run is a file, not a directory"):
    validate.check_workdir(digits_mlp.get_config(), str(tmp_path / "run"))


def test_a_machine_fault_is_one_line_that_says_where_and_what_to_do(tmp_path):
  import errno  # pylint: disable=g-import-not-at-top

  from wtfree import main  # pylint: disable=g-import-not-at-top

  full = main._os_error(OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "checkpoints" / "10")),
                        str(tmp_path))
  assert re.fullmatch(r"No space left on device \(.*checkpoints/10\): \d+ MiB free there; free some space and run "
                      r"the same command again to resume from the last checkpoint", full)
  denied = main._os_error(PermissionError(errno.EACCES, "Permission denied", "/ro/run/config.json"), "/ro/run")
  assert denied == "Permission denied (/ro/run/config.json); make /ro/run writable or pass another --workdir"


def test_a_finished_run_started_again_rewrites_nothing(tmp_path):
  from configs import digits_mlp  # pylint: disable=g-import-not-at-top
  from wtfree import settings  # pylint: disable=g-import-not-at-top
  from wtfree import train  # pylint: disable=g-import-not-at-top

  run = settings.resolve(digits_mlp.get_config())
  train._save_config(run, str(tmp_path))
  saved = tmp_path / "config.json"
  os.utime(saved, (1, 1))
  train._save_config(run, str(tmp_path))
  assert saved.stat().st_mtime == 1


_READ_ONLY = """
import builtins, errno, os
ROOT = os.environ["WTFREE_READ_ONLY"]
def _refuse(path):
  if os.path.abspath(os.fspath(path)).startswith(ROOT):
    raise OSError(errno.EROFS, "Read-only file system", os.fspath(path))
_open = builtins.open
def read_only_open(file, mode="r", *args, **kwargs):
  if isinstance(file, (str, bytes, os.PathLike)) and any(c in mode for c in "wax+"):
    _refuse(file)
  return _open(file, mode, *args, **kwargs)
builtins.open = read_only_open
def _wrap(name):
  original = getattr(os, name)
  def refused(path, *args, **kwargs):
    if name != "mkdir" or not os.path.exists(path):
      _refuse(path)
    return original(path, *args, **kwargs)
  setattr(os, name, refused)
for _name in ("mkdir", "rename", "replace", "remove", "unlink", "rmdir"):
  _wrap(_name)
"""


def test_a_finished_run_on_a_read_only_disk_reports_and_writes_nothing(tmp_path):
  workdir = tmp_path / "run"
  assert _run(workdir, "--config.num_steps=10").returncode == 0
  before = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in workdir.rglob("*") if p.is_file()}
  inject = tmp_path / "inject"
  inject.mkdir()
  (inject / "sitecustomize.py").write_text(_READ_ONLY)  # Every write under the workdir fails as on a read-only disk.
  env = _env()
  env["PYTHONPATH"] = f"{inject}:{env.get('PYTHONPATH', '')}"
  env["WTFREE_READ_ONLY"] = str(workdir)
  again = subprocess.run(_command(workdir, "--config.num_steps=10"), cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=300)
  assert again.returncode == 0, again.stderr[-3000:]
  assert "already finished at step 10" in again.stderr and "Traceback" not in again.stderr
  after = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in workdir.rglob("*") if p.is_file()}
  assert after == before
  # The injection is real: a run with steps left fails at its first write, in one line, worth retrying.
  more = subprocess.run(_command(workdir, "--config.num_steps=20"), cwd=ROOT, env=env, capture_output=True, text=True,
                        timeout=300)
  assert more.returncode == 75 and "Read-only file system" in more.stderr.strip().splitlines()[-1], more.stderr[-3000:]


def test_a_field_a_config_file_mistypes_is_an_error_naming_the_close_match():
  from configs import digits_mlp  # pylint: disable=g-import-not-at-top
  from wtfree import validate  # pylint: disable=g-import-not-at-top

  config = digits_mlp.get_config()
  config.num_stepz = 5  # As a config file might, unlocked.
  with pytest.raises(ValueError, match=r"the config sets num_stepz, which is no field .*; did you mean num_steps\?"):
    validate.check_config(config)


def test_an_override_under_a_mistyped_group_is_one_line_naming_the_close_match():
  from wtfree import main  # pylint: disable=g-import-not-at-top

  error = KeyError('\'optimiser\'\nDid you mean "optimizer" instead of "optimiser"?')
  argv = ["wtfree.main", "--config=configs/digits_mlp.py", "--config.optimiser.lr=0.1"]
  assert main._override_message(error, argv) == (
      "error: --config.optimiser.lr names no field of the config; did you mean --config.optimizer.lr?")
  error = KeyError('\'learning_rat\'\nDid you mean "learning_rate" instead of "learning_rat"?')
  assert main._override_message(error, ["m", "--config.learning_rat=1"]) == (
      "error: --config.learning_rat names no field of the config; did you mean --config.learning_rate?")


def test_a_save_cut_short_leaves_no_temporary_directory_behind(tmp_path):
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top

  ckpt = checkpoint.Checkpointer(str(tmp_path), save_every_steps=1)
  ckpt.save(1, {"a": jnp.ones(2)}, {"data_position": 1}, force=True)
  ckpt.wait()
  ckpt.close()
  (tmp_path / "checkpoints" / "2.orbax-checkpoint-tmp-1234").mkdir()  # As a full disk leaves it.
  again = checkpoint.Checkpointer(str(tmp_path))
  # orbax removes it in the background, on start.
  deadline = time.time() + 30
  while len(list((tmp_path / "checkpoints").iterdir())) > 1 and time.time() < deadline:
    time.sleep(0.1)
  assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["1"] and again.latest_step() == 1


def test_a_full_disk_stops_the_run_in_one_line_with_exit_75_and_keeps_the_last_checkpoint(tmp_path):
  # A write error injected into the run's process: the checkpoint of step 10 finds the disk full.
  inject = tmp_path / "inject"
  inject.mkdir()
  (inject / "sitecustomize.py").write_text(
      "import errno\n"
      "from wtfree import checkpoint\n"
      "save = checkpoint.Checkpointer.save\n"
      "def full(self, step, *args, **kwargs):\n"
      "  if step >= 10:\n"
      "    raise OSError(errno.ENOSPC, 'No space left on device', str(self._directory / str(step)))\n"
      "  return save(self, step, *args, **kwargs)\n"
      "checkpoint.Checkpointer.save = full\n")
  env = _env()
  env["PYTHONPATH"] = f"{inject}:{env.get('PYTHONPATH', '')}"
  workdir = tmp_path / "run"
  result = subprocess.run(_command(workdir, "--config.num_steps=20", "--config.log_every_steps=5"), cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
  assert result.returncode == 75, result.stderr[-3000:]
  last = result.stderr.strip().splitlines()[-1]
  assert re.fullmatch(r"error: No space left on device \(.*checkpoints/10\): \d+ MiB free there; free some space "
                      r"and run the same command again to resume from the last checkpoint", last), last
  assert "Traceback" not in result.stderr
  assert checkpoint.Checkpointer(str(workdir)).latest_step() == 5
  assert '"step": 5, "split": "train"' in (workdir / "metrics.jsonl").read_text()


@pytest.mark.slow
@pytest.mark.parametrize("overrides,message", [
    (["--config.learning_rate=-0.1"], "error: learning_rate -0.1 is not positive"),
    (["--config.num_steps=0"], "error: num_steps 0 trains nothing"),
    (["--config.optimiser.lr=0.1"], "error: --config.optimiser.lr names no field of the config; did you mean"),
    (["--config.dataset=arrays", "--config.data_path=/nonexistent/x.npz"], "error: data_path '/nonexistent/x.npz'"),
    (["--config.dataset=arrays", "--config.data_path=STRAY"], "has labels up to 99 but no example of 95 of those"),
])
def test_each_bad_input_exits_2_in_one_line_and_writes_nothing(overrides, message, tmp_path):
  stray = tmp_path / "stray.npz"
  y = np.arange(40) % 4
  y[0] = 99
  np.savez(stray, x_train=np.ones((40, 3), np.float32), y_train=y, x_test=np.ones((8, 3), np.float32),
           y_test=np.arange(8) % 4)
  overrides = [o.replace("STRAY", str(stray)) for o in overrides]
  result = _run(tmp_path / "run", "--config.num_steps=5", *overrides)
  assert result.returncode == 2, result.stderr[-3000:]
  last = result.stderr.strip().splitlines()[-1]
  assert last.startswith("error: ") and message.removeprefix("error: ") in last, last
  assert "Traceback" not in result.stderr and not (tmp_path / "run" / "checkpoints").exists()
