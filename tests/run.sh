#!/usr/bin/env bash
# The test command: installs what the tests need, builds, runs the Rust tests and the
# integration suite (real cairn-node / cairn-gateway processes on loopback).
#
#   bash tests/run.sh                  # everything
#   bash tests/run.sh -k range -x      # extra arguments go to pytest
#
# Environment knobs:
#   SKIP_INSTALL=1     don't check/install apt and pip packages
#   SKIP_BUILD=1       don't run cargo build (use the binaries already in target/release)
#   SKIP_CARGO_TEST=1  don't run cargo test
#   CAIRN_TEST_TIMEOUT per-test timeout in seconds (default 300)
#   CAIRN_BIN_DIR      where the binaries are (default target/release)
set -uo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
export PATH="$HOME/.cargo/bin:$PATH"
export CARGO_TERM_COLOR=${CARGO_TERM_COLOR:-never}
export PYTHONDONTWRITEBYTECODE=1

step() { printf '\n==> %s\n' "$*"; }
die() { printf '\nFAILED: %s\n' "$*" >&2; exit 1; }

if [ "${SKIP_INSTALL:-0}" != 1 ]; then
    step "checking system packages"
    missing=()
    command -v curl >/dev/null 2>&1 || missing+=(curl)
    command -v rclone >/dev/null 2>&1 || missing+=(rclone)
    if [ ${#missing[@]} -gt 0 ]; then
        echo "installing: ${missing[*]}"
        SUDO=""
        [ "$(id -u)" = 0 ] || SUDO="sudo"
        export DEBIAN_FRONTEND=noninteractive
        $SUDO apt-get update -qq || die "apt-get update"
        $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null || die "apt-get install ${missing[*]}"
    fi

    step "checking Python packages"
    if ! "$PY" - <<'PYEOF' 2>/dev/null
import importlib.metadata as md, re, sys
for line in open("tests/requirements.txt"):
    line = line.split("#")[0].strip()
    if not line:
        continue
    name = re.split(r"[\[<>=!~ ]", line)[0]
    md.version(name)
    if "[crt]" in line:
        md.version("awscrt")
PYEOF
    then
        "$PY" -m pip install -q -r tests/requirements.txt || die "pip install -r tests/requirements.txt"
    fi
fi

if [ "${SKIP_BUILD:-0}" != 1 ]; then
    step "cargo build --release --workspace"
    cargo build --release --workspace || die "cargo build"
fi

rc=0
if [ "${SKIP_CARGO_TEST:-0}" != 1 ]; then
    step "cargo test --release --workspace"
    cargo test --release --workspace || { echo "cargo test failed" >&2; rc=1; }
fi

step "integration tests (pytest)"
"$PY" -m pytest tests/ -q -ra --durations=15 --timeout="${CAIRN_TEST_TIMEOUT:-300}" "$@" || rc=1

if [ $rc -ne 0 ]; then
    echo "FAILED: see above" >&2
fi
exit $rc
