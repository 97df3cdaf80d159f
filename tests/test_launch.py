"""The launch scripts: syntax, shellcheck, help, argument errors and dry runs.

Nothing here reaches Google Cloud: dry runs print the gcloud commands, and the
remote job scripts are run locally by a stand-in `gcloud`.
"""

import os
import pathlib
import shutil
import stat
import subprocess
import time

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
LAUNCH = ROOT / "launch"
SCRIPTS = sorted(LAUNCH.glob("*.sh"))
TPU = LAUNCH / "tpu_pod.sh"
GPU = LAUNCH / "gpu.sh"

POD = ["--name=wtfree-v2-32", "--zone=us-central1-a"]
R50_WM = ["--config=configs/resnet50_wm.py", "--workdir=gs://my-bucket/runs/resnet50_wm"]


def _run(*args, env=None, cwd=ROOT):
  return subprocess.run(
      [str(a) for a in args], capture_output=True, text=True, check=False, timeout=60, env=env, cwd=cwd
  )


def _commands(stdout):
  """The commands a dry run printed, one string each (a command may span lines)."""
  commands = []
  for line in stdout.splitlines():
    if line.startswith("+ "):
      commands.append(line[2:])
    elif commands and not line.startswith("#"):
      commands[-1] += "\n" + line
  return commands


def test_there_are_scripts():
  assert {p.name for p in SCRIPTS} >= {"common.sh", "tpu_pod.sh", "gpu.sh"}
  for script in (TPU, GPU):
    assert os.access(script, os.X_OK), f"{script} is not executable"


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_bash_syntax(script):
  result = _run("bash", "-n", script)
  assert result.returncode == 0, result.stderr


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck is not on PATH (apt-get install shellcheck)")
@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_shellcheck(script):
  result = _run("shellcheck", "-x", script)
  assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    "script, subcommands",
    [(TPU, ["create", "setup", "run", "launch", "logs", "stop", "delete"]), (GPU, ["install", "run"])],
    ids=["tpu_pod", "gpu"],
)
def test_help_names_every_subcommand(script, subcommands):
  for flag in ("--help", "-h"):
    result = _run(script, flag)
    assert result.returncode == 0, result.stderr
    for sub in subcommands:
      assert f"  {sub} " in result.stdout, sub
    assert "--dry-run" in result.stdout


@pytest.mark.parametrize(
    "args, missing",
    [
        ([TPU, "create", "--dry-run", "--zone=us-central1-a", "--accelerator-type=v2-32"], "--name"),
        ([TPU, "create", "--dry-run", "--name=x", "--accelerator-type=v2-32"], "--zone"),
        ([TPU, "create", "--dry-run", *POD], "--accelerator-type"),
        ([TPU, "run", "--dry-run", *POD, "--workdir=gs://b/r"], "--config"),
        ([TPU, "run", "--dry-run", *POD, "--config=configs/resnet50_wm.py"], "--workdir"),
        ([TPU, "launch", "--dry-run", *POD, "--accelerator-type=v2-32", "--workdir=gs://b/r"], "--config"),
        ([GPU, "run", "--dry-run", "--workdir=runs/x"], "--config"),
        ([GPU, "run", "--dry-run", "--config=configs/digits_mlp.py"], "--workdir"),
    ],
)
def test_missing_required_argument_is_named(args, missing):
  result = _run(*args)
  assert result.returncode != 0
  assert f"missing required argument {missing}" in result.stderr
  assert "gcloud" not in result.stdout, "nothing may run before every flag is checked"


@pytest.mark.parametrize(
    "args, message",
    [
        ([TPU, *POD], "missing subcommand"),
        ([TPU, "start", *POD], "'start' is not one of"),
        ([TPU, "run", "--dry-run", *POD, "--config=configs/resnet50_wm.py", "--workdir=runs/x"], "must be a gs:// path"),
        ([TPU, "create", "--dry-run", *POD, "--accelerator-type=v9-8"], "no default --version"),
        ([TPU, "create", "--dry-run", *POD, "--accelerator-type"], "--accelerator-type needs a value"),
        ([TPU, "create", "--dry-run", *POD, "--accelerator-type=v2-32", "--bogus"], "unknown option '--bogus'"),
        ([TPU, "delete", "--dry-run", *POD, "--", "--config.x=1"], "only run and launch take them"),
        ([GPU, "install", "--dry-run", "--cuda=11"], "--cuda=11 is not 12 or 13"),
        ([GPU, "run", "--dry-run", "--config=configs/nope.py", "--workdir=runs/x"], "configs/nope.py"),
    ],
)
def test_bad_arguments_are_refused(args, message):
  result = _run(*args)
  assert result.returncode != 0
  assert message in result.stderr


def test_dry_run_of_a_v2_32_pod_launch():
  result = _run(
      TPU, "launch", "--dry-run", *POD, "--accelerator-type=v2-32", *R50_WM,
      "--", "--config.data_dir=gs://my-bucket/tensorflow_datasets",
  )
  assert result.returncode == 0, result.stderr
  commands = _commands(result.stdout)
  create = [c for c in commands if c.startswith("gcloud compute tpus tpu-vm create ")]
  ssh = [c for c in commands if c.startswith("gcloud compute tpus tpu-vm ssh ")]
  assert len(create) == 1 and len(ssh) == 2, commands
  assert create[0] == (
      "gcloud compute tpus tpu-vm create wtfree-v2-32 --zone=us-central1-a"
      " --accelerator-type=v2-32 --version=tpu-ubuntu2204-base"
  )
  setup, run = ssh
  for command in ssh:
    assert "wtfree-v2-32 --zone=us-central1-a --worker=all --command=" in command
  assert "jax[tpu]" in setup and "uv pip install" in setup and "--editable ." in setup
  assert "python -m wtfree.main --config=configs/resnet50_wm.py" in run
  assert "--workdir=gs://my-bucket/runs/resnet50_wm --distributed=on" in run
  assert "--config.data_dir=gs://my-bucket/tensorflow_datasets" in run
  assert "nohup" in run and "wtfree-logs/wtfree.log" in run
  # create, then copy the code over, then setup, then run.
  assert commands.index(create[0]) < commands.index(setup) < commands.index(run)
  assert any("tpu-vm scp" in c and "--worker=all" in c for c in commands)


@pytest.mark.parametrize("script,args", [
    (TPU, ["launch", *POD, "--accelerator-type=v2-32", *R50_WM]),
    (GPU, ["run", "--config=configs/resnet18_usf.py", "--workdir=runs/r18"]),
])
def test_dry_run_after_the_overrides_is_a_dry_run_and_no_override(script, args, tmp_path):
  # A gcloud (and a python) that would record any call: a dry run makes none.
  calls = tmp_path / "calls"
  for name in ("gcloud", "python3"):
    _executable(tmp_path / "bin" / name, f"#!/usr/bin/env bash\necho \"$0 $*\" >> {calls}\n")
  env = dict(os.environ, PATH=f"{tmp_path / 'bin'}:{os.environ['PATH']}")
  result = _run(script, *args, "--", "--config.batch_size=512", "--dry-run", env=env)
  assert result.returncode == 0, result.stderr
  assert not calls.exists(), calls.read_text()
  commands = _commands(result.stdout)
  assert commands and any("--config.batch_size=512" in c for c in commands)
  assert not any("--dry-run" in c for c in commands)


def test_dry_run_create_setup_run_one_by_one():
  create = _run(TPU, "create", "--dry-run", *POD, "--accelerator-type=v2-32", "--spot", "--project=p")
  assert create.returncode == 0, create.stderr
  assert "--project=p" in create.stdout and create.stdout.rstrip().endswith("--spot")
  setup = _run(TPU, "setup", "--dry-run", *POD, "--repo=https://example.com/wtfree.git", "--ref=v0.1")
  assert setup.returncode == 0, setup.stderr
  assert "git clone https://example.com/wtfree.git" in setup.stdout
  assert "fetch --tags origin v0.1" in setup.stdout
  assert "tpu-vm scp" not in setup.stdout
  run = _run(TPU, "run", "--dry-run", *POD, *R50_WM)
  assert run.returncode == 0, run.stderr
  assert "--worker=all" in run.stdout and "--distributed=on" in run.stdout
  assert "tpu-vm create" not in run.stdout and "jax[tpu]" not in run.stdout


def test_dry_run_logs_and_delete():
  follow = _run(TPU, "logs", "--dry-run", *POD)
  assert follow.returncode == 0, follow.stderr
  assert "--worker=0" in follow.stdout and "tail" in follow.stdout
  fetch = _run(TPU, "logs", "--dry-run", *POD, "--fetch=out", "--workers=4")
  assert fetch.returncode == 0, fetch.stderr
  for i in range(4):
    assert f"wtfree-v2-32:wtfree-logs/wtfree.log out/worker-{i}.log --zone=us-central1-a --worker={i}" in fetch.stdout
  delete = _run(TPU, "delete", "--dry-run", *POD, "--yes")
  assert delete.returncode == 0, delete.stderr
  assert "gcloud compute tpus tpu-vm delete wtfree-v2-32 --zone=us-central1-a --quiet" in delete.stdout


def test_gpu_dry_run_prints_the_python_command(tmp_path):
  result = _run(
      GPU, "run", "--dry-run", "--config=configs/resnet18_usf.py", "--workdir=runs/r18",
      "--", "--config.batch_size=512", cwd=tmp_path,
  )
  assert result.returncode == 0, result.stderr
  python = f"{ROOT}/.venv/bin/python -m wtfree.main --config=configs/resnet18_usf.py"
  assert f"{python} --workdir={tmp_path}/runs/r18 --distributed=off --config.batch_size=512" in result.stdout
  assert f"+ cd {ROOT}" in result.stdout


def test_gpu_dry_run_install():
  result = _run(GPU, "install", "--dry-run", "--venv=/tmp/wtfree-test-venv-that-does-not-exist", "--cuda=13")
  assert result.returncode == 0, result.stderr
  assert "pip install --upgrade 'jax[cuda13]' --editable" in result.stdout
  assert "-m venv /tmp/wtfree-test-venv-that-does-not-exist" in result.stdout


def _executable(path, text):
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text(text)
  path.chmod(path.stat().st_mode | stat.S_IEXEC)


# Stands in for gcloud on a one-worker pod living in the test's $HOME: `ssh
# --command=SCRIPT` runs SCRIPT with sh, `scp SRC TPU:DEST` copies SRC to $HOME/DEST.
FAKE_GCLOUD = """#!/usr/bin/env bash
set -eu
for a; do case $a in --command=*) exec sh -c "${a#--command=}";; esac; done
if [ "$4" = scp ]; then cp "$5" "$HOME/${6#*:}"; exit 0; fi
echo "unexpected gcloud call: $*" >&2; exit 1
"""


def _fake_worker(tmp_path):
  """A stand-in gcloud and worker home; returns (home, env)."""
  _executable(tmp_path / "bin" / "gcloud", FAKE_GCLOUD)
  home = tmp_path / "home"
  home.mkdir()
  env = dict(os.environ, HOME=str(home), TMPDIR=str(tmp_path), PATH=f"{tmp_path / 'bin'}:{os.environ['PATH']}")
  return home, env


def test_setup_copies_this_checkout_and_installs_on_a_stand_in_worker(tmp_path):
  home, env = _fake_worker(tmp_path)
  # uv as setup calls it: `venv` makes a python that logs, `pip install` logs.
  _executable(
      home / ".local" / "bin" / "uv",
      "#!/bin/sh\n"
      "echo \"uv $*\" >> \"$HOME/uv.log\"\n"
      "if [ \"$1\" = venv ]; then mkdir -p .venv/bin && printf '#!/bin/sh\\necho python \"$@\"\\n' > .venv/bin/python"
      " && chmod +x .venv/bin/python; fi\n",
  )
  stale = home / "wtfree" / "stale.py"
  _executable(stale, "")
  result = _run(TPU, "setup", *POD, env=env)
  assert result.returncode == 0, result.stdout + result.stderr
  checkout = home / "wtfree"
  assert (checkout / "configs" / "resnet50_wm.py").read_text() == (ROOT / "configs" / "resnet50_wm.py").read_text()
  assert (checkout / "launch" / "tpu_pod.sh").exists()
  assert not stale.exists(), "files left from an earlier copy must go"
  assert not list(checkout.rglob("__pycache__")) and not list(tmp_path.glob("wtfree-src-*"))
  uv_log = (home / "uv.log").read_text()
  assert "uv venv --python 3.12 .venv" in uv_log
  assert "uv pip install --python .venv/bin/python --upgrade jax[tpu] --editable ." in uv_log
  assert "import jax, wtfree" in result.stdout, "setup ends by importing both"


def _fake_job(home):
  # Records its arguments one per line, then stays up like a training job.
  _executable(
      home / "wtfree" / ".venv" / "bin" / "python",
      '#!/bin/sh\nprintf "%s\\n" "$@" > "$HOME/argv.txt"\nexec sleep 60\n',
  )


@pytest.mark.skipif(shutil.which("setsid") is None, reason="needs setsid (util-linux), as a TPU VM has")
def test_run_and_stop_on_a_stand_in_worker(tmp_path):
  """The remote run script quotes every argument, detaches, refuses a second start, and stops."""
  home, env = _fake_worker(tmp_path)
  _fake_job(home)
  odd = "--config.note=it's a $HOME & \"x\""
  pidfile = home / "wtfree-logs" / "wtfree.pid"
  try:
    first = _run(TPU, "run", *POD, *R50_WM, "--", odd, env=env)
    assert first.returncode == 0, first.stderr
    assert "started pid" in first.stdout
    argv_file = home / "argv.txt"
    for _ in range(100):
      if argv_file.exists() and argv_file.read_text().endswith("\n"):
        break
      time.sleep(0.05)
    assert argv_file.read_text().splitlines() == [
        "-m", "wtfree.main", "--config=configs/resnet50_wm.py",
        "--workdir=gs://my-bucket/runs/resnet50_wm", "--distributed=on", odd,
    ]
    log = (home / "wtfree-logs" / "wtfree.log").read_text()
    assert "start" in log and "--distributed=on" in log

    second = _run(TPU, "run", *POD, *R50_WM, env=env)
    assert second.returncode != 0
    assert "already running" in second.stderr

    stop = _run(TPU, "stop", *POD, env=env)
    assert stop.returncode == 0, stop.stderr
    assert "stopped" in stop.stdout
    assert not pidfile.exists()
  finally:
    if pidfile.exists():
      subprocess.run(["kill", "--", f"-{pidfile.read_text().strip()}"], check=False)
