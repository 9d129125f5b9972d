#!/usr/bin/env bash
# Helpers shared by the launchers (sourced, not run).

# Absolute path of $1 (which need not exist yet).
abspath() {
  case "$1" in
    /*) printf '%s\n' "$1" ;;
    *) printf '%s/%s\n' "$PWD" "$1" ;;
  esac
}

# die MESSAGE: print the usage (from the caller's $USAGE) and the problem, exit 1.
die() {
  echo "$USAGE" >&2
  echo "error: $1" >&2
  exit 1
}

require_dir() { [ -d "$1" ] || die "$2 not found: $1"; }
require_file() { [ -f "$1" ] || die "$2 not found: $1"; }
require_count() { [[ "$1" =~ ^[1-9][0-9]*$ ]] || die "$2 must be a positive integer, got '$1'"; }

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PYTHON=${PYTHON:-python3}
