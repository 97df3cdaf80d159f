# Helpers sourced by launch/tpu_pod.sh and launch/gpu.sh: errors, flag values,
# shell quoting and the dry-run runner. Not meant to be run on its own.
# shellcheck shell=bash

# Read by the scripts that source this file.
# shellcheck disable=SC2034
DRY_RUN=0
# shellcheck disable=SC2034
WTFREE_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

die() {
  printf '%s: error: %s\n' "$(basename "$0")" "$*" >&2
  exit 2
}

# flag_value VAR "$@": stores the value of the flag in $1 ("--flag=value" or
# "--flag value") in VAR and the number of words it used in FLAG_SHIFT.
flag_value() {
  local var="$1"
  shift
  if [[ "$1" == *=* ]]; then
    printf -v "$var" '%s' "${1#*=}"
    # shellcheck disable=SC2034
    FLAG_SHIFT=1
  else
    [[ $# -ge 2 ]] || die "$1 needs a value"
    printf -v "$var" '%s' "$2"
    # shellcheck disable=SC2034
    FLAG_SHIFT=2
  fi
}

# require FLAG VALUE: fails naming FLAG when VALUE is empty.
require() {
  [[ -n "$2" ]] || die "missing required argument $1 (see --help)"
}

# quote WORD: WORD as the shell reads it back, single-quoted only when needed;
# "--flag=value" keeps the flag bare so printed commands stay readable.
quote() {
  local word="$1" prefix=""
  if [[ "$word" =~ ^[A-Za-z0-9_./:=@%+,-]+$ ]]; then
    printf '%s' "$word"
    return
  fi
  if [[ "$word" =~ ^(--[A-Za-z0-9_.-]+=)(.*)$ ]]; then
    prefix="${BASH_REMATCH[1]}"
    word="${BASH_REMATCH[2]}"
  fi
  printf "%s'%s'" "$prefix" "${word//\'/\'\\\'\'}"
}

# quote_all WORD...: the words quoted and joined by spaces.
quote_all() {
  local out="" word
  for word in "$@"; do
    out+="${out:+ }$(quote "$word")"
  done
  printf '%s' "$out"
}

# take_overrides ARGS...: the words after --, into the caller's array `overrides`;
# --dry-run among them is a dry run, never a wtfree.main override.
take_overrides() {
  local arg
  for arg in "$@"; do
    if [[ "$arg" == --dry-run ]]; then DRY_RUN=1; else overrides+=("$arg"); fi
  done
}

# run COMMAND...: prints COMMAND, then runs it unless --dry-run was given.
run() {
  printf '+ %s\n' "$(quote_all "$@")"
  if [[ "$DRY_RUN" == 0 ]]; then
    "$@"
  fi
}

# run_shell SCRIPT: like run, for a pipeline given as one bash script.
run_shell() {
  printf '+ %s\n' "$1"
  if [[ "$DRY_RUN" == 0 ]]; then
    bash -c "set -euo pipefail; $1"
  fi
}
