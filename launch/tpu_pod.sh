#!/usr/bin/env bash
# Runs wtfree on a Cloud TPU VM pod: create the pod, install wtfree on every
# worker, start the same job on all of them, read the logs, delete the pod.
# See launch/README.md for the Akrout et al. v2-32 run end to end.
set -euo pipefail

# shellcheck source=common.sh source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

# Where things live on each worker, relative to the remote $HOME.
REMOTE_DIR='wtfree'
REMOTE_LOGS='wtfree-logs'

usage() {
  cat <<'EOF'
Usage: launch/tpu_pod.sh SUBCOMMAND --name=TPU --zone=ZONE [options] [--dry-run] [-- OVERRIDES...]

Subcommands:
  create   gcloud compute tpus tpu-vm create TPU
             --accelerator-type=TYPE   required: v2-32, v3-32, v4-32, v5litepod-16, ...
             --version=RUNTIME         default from TYPE: tpu-ubuntu2204-base (v2, v3, v4),
                                       v2-alpha-tpuv5-lite (v5litepod), v2-alpha-tpuv5 (v5p),
                                       v2-alpha-tpuv6e (v6e)
             --spot | --preemptible    cheaper capacity that can be taken back
  setup    on --worker=all: put the code in ~/wtfree, make ~/wtfree/.venv,
           pip install -U "jax[tpu]" and wtfree (editable)
             --repo=URL                git clone URL (with --ref); without it the
                                       files of this checkout are copied over
             --ref=REF                 branch, tag or commit of --repo (default: its HEAD)
             --python=VERSION          Python of the venv, made with uv (default 3.12)
             --extras=LIST             wtfree extras to install, e.g. tf
  run      on --worker=all, detached (nohup, survives ssh disconnect):
           python -m wtfree.main --config=CONFIG --workdir=WORKDIR --distributed=on OVERRIDES
             --config=PATH             required, relative to the repo: configs/resnet50_wm.py
             --workdir=gs://...        required; checkpoints, metrics.jsonl, tensorboard/.
                                       Re-running with the same workdir resumes the run.
             --log-name=NAME           ~/wtfree-logs/NAME.log on each worker (default wtfree)
  launch   create, setup and run in one go (takes all of their options)
  logs     follow worker 0's log (or --worker=N's)
             --fetch=DIR               instead, copy every worker's log to DIR/worker-I.log
             --workers=N               number of workers for --fetch (default: asked of gcloud)
             --log-name=NAME           as for run
  stop     stop the job started by run on every worker (--log-name as for run)
  delete   gcloud compute tpus tpu-vm delete TPU (--yes: do not ask)

Options for every subcommand:
  --name=TPU          required: the TPU VM's name
  --zone=ZONE         required: a zone that offers TYPE, e.g. us-central1-a
                      (gcloud compute tpus accelerator-types list --zone=ZONE)
  --project=PROJECT   Google Cloud project (default: gcloud's configured one)
  --dry-run           print every command instead of running it (also after --)
  -h, --help          this help
  -- OVERRIDES        everything after -- goes to wtfree.main (run, launch):
                      --config.batch_size=1024 --config.data_dir=gs://BUCKET/tensorflow_datasets

Example (Akrout et al. 2019, ResNet-50 with weight mirrors on 32 TPU v2 cores):
  launch/tpu_pod.sh launch --name=wtfree-v2-32 --zone=us-central1-a \
      --accelerator-type=v2-32 --config=configs/resnet50_wm.py \
      --workdir=gs://BUCKET/runs/resnet50_wm -- \
      --config.data_dir=gs://BUCKET/tensorflow_datasets
EOF
}

# Runtime image for an accelerator type, for when --version is not given.
default_version() {
  case "$1" in
    v2-* | v3-* | v4-*) echo 'tpu-ubuntu2204-base' ;;
    v5litepod-* | v5e-*) echo 'v2-alpha-tpuv5-lite' ;;
    v5p-*) echo 'v2-alpha-tpuv5' ;;
    v6e-*) echo 'v2-alpha-tpuv6e' ;;
    *) die "no default --version for --accelerator-type=$1; pass --version=RUNTIME (gcloud compute tpus tpu-vm versions list --zone=ZONE)" ;;
  esac
}

# ---------------------------------------------------------------- arguments

subcommand=''
name=''
zone=''
project=''
accelerator_type=''
version=''
capacity=''
repo=''
ref=''
python_version='3.12'
extras=''
config=''
workdir=''
log_name='wtfree'
worker='0'
fetch_dir=''
workers=''
assume_yes=0
overrides=()

while (($#)); do
  case "$1" in
    -h | --help) usage; exit 0 ;;
    --dry-run) DRY_RUN=1; shift ;;
    --spot | --preemptible) capacity="$1"; shift ;;
    --yes) assume_yes=1; shift ;;
    --name | --name=*) flag_value name "$@"; shift "$FLAG_SHIFT" ;;
    --zone | --zone=*) flag_value zone "$@"; shift "$FLAG_SHIFT" ;;
    --project | --project=*) flag_value project "$@"; shift "$FLAG_SHIFT" ;;
    --accelerator-type | --accelerator-type=*) flag_value accelerator_type "$@"; shift "$FLAG_SHIFT" ;;
    --version | --version=*) flag_value version "$@"; shift "$FLAG_SHIFT" ;;
    --repo | --repo=*) flag_value repo "$@"; shift "$FLAG_SHIFT" ;;
    --ref | --ref=*) flag_value ref "$@"; shift "$FLAG_SHIFT" ;;
    --python | --python=*) flag_value python_version "$@"; shift "$FLAG_SHIFT" ;;
    --extras | --extras=*) flag_value extras "$@"; shift "$FLAG_SHIFT" ;;
    --config | --config=*) flag_value config "$@"; shift "$FLAG_SHIFT" ;;
    --workdir | --workdir=*) flag_value workdir "$@"; shift "$FLAG_SHIFT" ;;
    --log-name | --log-name=*) flag_value log_name "$@"; shift "$FLAG_SHIFT" ;;
    --worker | --worker=*) flag_value worker "$@"; shift "$FLAG_SHIFT" ;;
    --fetch | --fetch=*) flag_value fetch_dir "$@"; shift "$FLAG_SHIFT" ;;
    --workers | --workers=*) flag_value workers "$@"; shift "$FLAG_SHIFT" ;;
    --) shift; take_overrides "$@"; break ;;
    -*) die "unknown option '$1' (see --help)" ;;
    *)
      [[ -z "$subcommand" ]] || die "unexpected argument '$1'; wtfree.main flags go after -- (see --help)"
      subcommand="$1"
      shift
      ;;
  esac
done

case "$subcommand" in
  create | setup | run | launch | logs | stop | delete) ;;
  '') usage >&2; die "missing subcommand: one of create, setup, run, launch, logs, stop, delete" ;;
  *) die "subcommand '$subcommand' is not one of create, setup, run, launch, logs, stop, delete" ;;
esac
require --name "$name"
require --zone "$zone"
[[ "$log_name" =~ ^[A-Za-z0-9_.-]+$ ]] || die "--log-name='$log_name' may hold only letters, digits, '_', '.' and '-'"
if ((${#overrides[@]})) && [[ "$subcommand" != run && "$subcommand" != launch ]]; then
  die "arguments after -- are for wtfree.main; only run and launch take them"
fi

gcloud_args=(--zone="$zone")
[[ -z "$project" ]] || gcloud_args+=(--project="$project")

# ssh_all SCRIPT: runs SCRIPT (POSIX sh) on every worker at once.
ssh_all() {
  run gcloud compute tpus tpu-vm ssh "$name" "${gcloud_args[@]}" --worker=all --command="$1"
}

# --------------------------------------------------------------- subcommands

check_create() {
  require --accelerator-type "$accelerator_type"
  [[ -n "$version" ]] || version="$(default_version "$accelerator_type")"
}

check_setup() {
  [[ -n "$repo" || -z "$ref" ]] || die "--ref=$ref needs --repo=URL; without --repo this checkout's files are copied"
}

check_run() {
  require --config "$config"
  require --workdir "$workdir"
  [[ "$workdir" == gs://* ]] || die "--workdir='$workdir' must be a gs:// path: every worker writes to it and a resumed run reads it back"
  [[ "$config" != /* ]] || die "--config='$config' must be relative to the repo (e.g. configs/resnet50_wm.py): it is read on the workers"
  if [[ ! -f "$WTFREE_ROOT/$config" ]]; then
    printf '%s: warning: --config=%s is not a file in this checkout; it must exist in ~/%s on the workers\n' \
      "$(basename "$0")" "$config" "$REMOTE_DIR" >&2
  fi
}

do_create() {
  local cmd=(gcloud compute tpus tpu-vm create "$name" "${gcloud_args[@]}"
    --accelerator-type="$accelerator_type" --version="$version")
  [[ -z "$capacity" ]] || cmd+=("$capacity")
  run "${cmd[@]}"
}

do_setup() {
  local fetch_code
  if [[ -n "$repo" ]]; then
    fetch_code="if [ -d \"\$HOME/$REMOTE_DIR/.git\" ]; then
  git -C \"\$HOME/$REMOTE_DIR\" remote set-url origin $(quote "$repo")
else
  rm -rf \"\$HOME/$REMOTE_DIR\"
  git clone $(quote "$repo") \"\$HOME/$REMOTE_DIR\"
fi
git -C \"\$HOME/$REMOTE_DIR\" fetch --tags origin $(quote "${ref:-HEAD}")
git -C \"\$HOME/$REMOTE_DIR\" checkout --detach FETCH_HEAD"
  else
    local archive
    archive="${TMPDIR:-/tmp}/wtfree-src-$name.tar.gz"
    # Tracked and untracked-but-not-ignored files that exist: what the user
    # sees, without venvs, runs and build outputs. (GNU and BSD tar alike.)
    run_shell "cd $(quote "$WTFREE_ROOT") && git ls-files -z --cached --others --exclude-standard | while IFS= read -r -d '' f; do if [ -e \"\$f\" ]; then printf '%s\\0' \"\$f\"; fi; done | tar --null -T - -czf $(quote "$archive")"
    run gcloud compute tpus tpu-vm scp "$archive" "$name:wtfree-src.tar.gz" "${gcloud_args[@]}" --worker=all
    run rm -f "$archive"
    fetch_code="mkdir -p \"\$HOME/$REMOTE_DIR\"
find \"\$HOME/$REMOTE_DIR\" -mindepth 1 -maxdepth 1 ! -name .venv -exec rm -rf {} +
tar -xzf \"\$HOME/wtfree-src.tar.gz\" -C \"\$HOME/$REMOTE_DIR\"
rm -f \"\$HOME/wtfree-src.tar.gz\""
  fi
  local package='.'
  [[ -z "$extras" ]] || package=".[$extras]"
  # The runtime images ship an older Python than wtfree needs, so uv makes the
  # venv with its own Python.
  ssh_all "set -eu
$fetch_code
cd \"\$HOME/$REMOTE_DIR\"
export PATH=\"\$HOME/.local/bin:\$PATH\"
command -v uv >/dev/null || python3 -m pip install --user --upgrade uv || curl -LsSf https://astral.sh/uv/install.sh | sh
[ -x .venv/bin/python ] || uv venv --python $(quote "$python_version") .venv
uv pip install --python .venv/bin/python --upgrade 'jax[tpu]' --editable $(quote "$package")
.venv/bin/python -c 'import jax, wtfree; print(\"jax\", jax.__version__, \"wtfree ready\")'"
}

do_run() {
  local main pid log
  main="$(quote_all .venv/bin/python -m wtfree.main --config="$config" --workdir="$workdir" --distributed=on ${overrides[@]+"${overrides[@]}"})"
  log="\"\$HOME/$REMOTE_LOGS/$log_name.log\""
  pid="\"\$HOME/$REMOTE_LOGS/$log_name.pid\""
  # setsid + nohup + no inherited stdio: the job outlives the ssh session and
  # ssh returns at once.
  ssh_all "set -eu
mkdir -p \"\$HOME/$REMOTE_LOGS\"
cd \"\$HOME/$REMOTE_DIR\"
if [ -f $pid ] && kill -0 \"\$(cat $pid)\" 2>/dev/null; then
  echo \"\$(hostname): $log_name is already running as pid \$(cat $pid); stop it first\" >&2
  exit 1
fi
echo \"=== \$(date -u +%Y-%m-%dT%H:%M:%SZ) \$(hostname) start\" >> $log
printf '%s ' $main >> $log
echo >> $log
setsid nohup $main >> $log 2>&1 < /dev/null &
echo \$! > $pid
echo \"\$(hostname): started pid \$!, log \$HOME/$REMOTE_LOGS/$log_name.log\""
}

do_logs() {
  local remote_log="$REMOTE_LOGS/$log_name.log"
  if [[ -z "$fetch_dir" ]]; then
    run gcloud compute tpus tpu-vm ssh "$name" "${gcloud_args[@]}" --worker="$worker" \
      --command="tail -n 200 -F \"\$HOME/$remote_log\""
    return
  fi
  local n="$workers"
  if [[ -z "$n" ]]; then
    local describe=(gcloud compute tpus tpu-vm describe "$name" "${gcloud_args[@]}"
      '--format=value(networkEndpoints.len())')
    printf '+ %s\n' "$(quote_all "${describe[@]}")"
    if [[ "$DRY_RUN" == 0 ]]; then
      n="$("${describe[@]}")"
    else
      n=1
      echo '# (dry run: the worker count comes from describe; showing worker 0)'
    fi
  fi
  [[ "$n" =~ ^[0-9]+$ && "$n" -ge 1 ]] || die "--workers='$n' is not a positive number"
  run mkdir -p "$fetch_dir"
  local i
  for ((i = 0; i < n; i++)); do
    run gcloud compute tpus tpu-vm scp "$name:$remote_log" "$fetch_dir/worker-$i.log" "${gcloud_args[@]}" --worker="$i"
  done
}

do_stop() {
  local pid="\"\$HOME/$REMOTE_LOGS/$log_name.pid\""
  ssh_all "if [ -f $pid ] && kill -- \"-\$(cat $pid)\" 2>/dev/null; then
  echo \"\$(hostname): stopped \$(cat $pid)\"
else
  echo \"\$(hostname): $log_name is not running\"
fi
rm -f $pid"
}

do_delete() {
  local cmd=(gcloud compute tpus tpu-vm delete "$name" "${gcloud_args[@]}")
  ((assume_yes == 0)) || cmd+=(--quiet)
  run "${cmd[@]}"
}

# Every flag is checked before the first command, so launch cannot stop halfway
# for want of one.
case "$subcommand" in
  create) check_create ;;
  setup) check_setup ;;
  run) check_run ;;
  launch) check_create; check_setup; check_run ;;
esac
case "$subcommand" in
  create) do_create ;;
  setup) do_setup ;;
  run) do_run ;;
  launch) do_create; do_setup; do_run ;;
  logs) do_logs ;;
  stop) do_stop ;;
  delete) do_delete ;;
esac
