#!/usr/bin/env bash
# Runs wtfree on one machine with NVIDIA GPUs: install JAX for CUDA and wtfree
# into a venv, then run a config on all local GPUs (one process sees them all).
set -euo pipefail

# shellcheck source=common.sh source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

usage() {
  cat <<'EOF'
Usage: launch/gpu.sh SUBCOMMAND [options] [--dry-run] [-- OVERRIDES...]

Subcommands:
  install  make the venv and pip install -U "jax[cudaN]" and wtfree (editable)
             --python=PYTHON     interpreter that makes the venv, >= 3.11 (default python3)
             --cuda=N            CUDA major version of the jax extra: 12 or 13 (default 12)
             --extras=LIST       wtfree extras to install, e.g. tf
  run      python -m wtfree.main --config=CONFIG --workdir=WORKDIR --distributed=off OVERRIDES
             --config=PATH       required, e.g. configs/resnet18_usf.py
             --workdir=DIR       required, local or gs://; re-running with the same
                                 workdir resumes from its latest checkpoint
             --gpus=LIST         CUDA_VISIBLE_DEVICES, e.g. 0,1 (default: all GPUs)
             --log=FILE          run detached (nohup), appending output to FILE

Options for every subcommand:
  --venv=DIR          the venv (default: .venv in the repo)
  --dry-run           print every command instead of running it (also after --)
  -h, --help          this help
  -- OVERRIDES        everything after -- goes to wtfree.main (run):
                      --config.batch_size=256 --config.data_dir=gs://BUCKET/tensorflow_datasets

Example:
  launch/gpu.sh install
  launch/gpu.sh run --config=configs/resnet18_usf.py --workdir=runs/resnet18_usf -- \
      --config.batch_size=512 --config.data_dir=$HOME/tensorflow_datasets
EOF
}

subcommand=''
venv="$WTFREE_ROOT/.venv"
python='python3'
cuda='12'
extras=''
config=''
workdir=''
gpus=''
log=''
overrides=()

while (($#)); do
  case "$1" in
    -h | --help) usage; exit 0 ;;
    --dry-run) DRY_RUN=1; shift ;;
    --venv | --venv=*) flag_value venv "$@"; shift "$FLAG_SHIFT" ;;
    --python | --python=*) flag_value python "$@"; shift "$FLAG_SHIFT" ;;
    --cuda | --cuda=*) flag_value cuda "$@"; shift "$FLAG_SHIFT" ;;
    --extras | --extras=*) flag_value extras "$@"; shift "$FLAG_SHIFT" ;;
    --config | --config=*) flag_value config "$@"; shift "$FLAG_SHIFT" ;;
    --workdir | --workdir=*) flag_value workdir "$@"; shift "$FLAG_SHIFT" ;;
    --gpus | --gpus=*) flag_value gpus "$@"; shift "$FLAG_SHIFT" ;;
    --log | --log=*) flag_value log "$@"; shift "$FLAG_SHIFT" ;;
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
  install | run) ;;
  '') usage >&2; die "missing subcommand: one of install, run" ;;
  *) die "subcommand '$subcommand' is not one of install, run" ;;
esac
if ((${#overrides[@]})) && [[ "$subcommand" != run ]]; then
  die "arguments after -- are for wtfree.main; only run takes them"
fi

do_install() {
  [[ "$cuda" == 12 || "$cuda" == 13 ]] || die "--cuda=$cuda is not 12 or 13"
  if [[ ! -x "$venv/bin/python" ]]; then
    if [[ "$DRY_RUN" == 0 ]]; then
      command -v "$python" >/dev/null || die "--python=$python is not on PATH"
      "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' ||
        die "--python=$python is older than 3.11; pass --python=python3.12 (or make the venv with uv)"
    fi
    run "$python" -m venv "$venv"
  fi
  local package="$WTFREE_ROOT"
  [[ -z "$extras" ]] || package="${WTFREE_ROOT}[$extras]"
  run "$venv/bin/python" -m pip install --upgrade pip
  run "$venv/bin/python" -m pip install --upgrade "jax[cuda$cuda]" --editable "$package"
  run "$venv/bin/python" -c 'import jax; print(jax.devices())'
}

do_run() {
  require --config "$config"
  require --workdir "$workdir"
  [[ "$config" == /* || -f "$WTFREE_ROOT/$config" ]] ||
    die "--config='$config' is not a file in $WTFREE_ROOT (configs/ lists the runs)"
  if [[ "$DRY_RUN" == 0 && ! -x "$venv/bin/python" ]]; then
    die "no venv at $venv; run 'launch/gpu.sh install' first (or pass --venv=DIR)"
  fi
  # wtfree.main runs from the repo (configs import each other as a package), so
  # paths the user gave relative to where they stand are made absolute first.
  [[ "$workdir" == *://* || "$workdir" == /* ]] || workdir="$PWD/$workdir"
  [[ -z "$log" || "$log" == /* ]] || log="$PWD/$log"
  local cmd=()
  [[ -z "$gpus" ]] || cmd+=(env CUDA_VISIBLE_DEVICES="$gpus")
  cmd+=("$venv/bin/python" -m wtfree.main --config="$config" --workdir="$workdir" --distributed=off ${overrides[@]+"${overrides[@]}"})
  run cd "$WTFREE_ROOT"
  if [[ -z "$log" ]]; then
    run "${cmd[@]}"
  else
    run_shell "nohup $(quote_all "${cmd[@]}") >> $(quote "$log") 2>&1 < /dev/null & echo \"started pid \$!, log $(quote "$log")\""
  fi
}

case "$subcommand" in
  install) do_install ;;
  run) do_run ;;
esac
