#!/usr/bin/env bash
# The test command: installs what the tests need, builds, runs the Rust tests and the
# integration suite (real cairn-node / cairn-gateway processes on loopback).
#
#   bash tests/run.sh                  # everything
#   bash tests/run.sh -k range -x      # extra arguments go to pytest
#   bash tests/run.sh tests/test_auth.py  # paths replace the default (all of tests/)
#
# Environment knobs:
#   SKIP_INSTALL=1     don't check/install apt and pip packages
#   SKIP_BUILD=1       don't run cargo build (use the binaries already in target/release)
#   SKIP_LINT=1        don't run cargo fmt --check and cargo clippy
#   SKIP_CARGO_TEST=1  don't run cargo test
#   SKIP_CROSS=1       don't run tests/cross.sh (aarch64 Linux build, macOS check); the
#                      aarch64 tests (tests/test_aarch64.py) are then skipped. It runs for
#                      the whole suite, or when test paths given include test_aarch64.py.
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
    # command -> Debian package that provides it
    missing=()
    for pair in curl:curl rclone:rclone promtool:prometheus openssl:openssl; do
        command -v "${pair%%:*}" >/dev/null 2>&1 || missing+=("${pair#*:}")
    done
    if [ ${#missing[@]} -gt 0 ]; then
        echo "installing: ${missing[*]}"
        SUDO=""
        [ "$(id -u)" = 0 ] || SUDO="sudo"
        export DEBIAN_FRONTEND=noninteractive
        $SUDO apt-get update -qq || die "apt-get update"
        $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null \
            || die "apt-get install ${missing[*]}"
    fi

    step "checking Python packages"
    reqs=(tests/requirements.txt)
    for f in tests/*/requirements.txt; do [ -f "$f" ] && reqs+=("$f"); done
    for req in "${reqs[@]}"; do
        if ! "$PY" - "$req" <<'PYEOF'
import sys
from importlib import metadata as md
try:
    from packaging.requirements import Requirement
except ImportError:
    from pip._vendor.packaging.requirements import Requirement

def satisfied(text):
    r = Requirement(text)
    try:
        version = md.version(r.name)
    except md.PackageNotFoundError:
        return False
    if r.specifier and not r.specifier.contains(version, prereleases=True):
        return False
    for extra in r.extras:
        for dep in md.requires(r.name) or []:
            d = Requirement(dep)
            if d.marker and d.marker.evaluate({"extra": extra}) and not d.marker.evaluate({"extra": ""}):
                if not satisfied(f"{d.name}{d.specifier}"):
                    return False
    return True

for line in open(sys.argv[1]):
    line = line.split("#")[0].strip()
    if line and not satisfied(line):
        print(f"missing: {line}")
        sys.exit(1)
PYEOF
        then
            # one resolver run for the whole file keeps awscli's exact botocore pin and
            # aiobotocore's (s3fs) range compatible; Debian's own python needs the flag
            "$PY" -m pip install -q -r "$req" \
                || "$PY" -m pip install -q --break-system-packages -r "$req" \
                || die "pip install -r $req"
        fi
    done
fi

if [ "${SKIP_BUILD:-0}" != 1 ]; then
    # Binaries and test harnesses in one invocation: dev-dependencies then unify features
    # for both, so the `cargo test` below reuses every artifact instead of rebuilding the
    # dependency tree with a second feature set.
    step "cargo build --release --workspace --bins --tests"
    cargo build --release --workspace --bins --tests || die "cargo build"
fi

rc=0
if [ "${SKIP_LINT:-0}" != 1 ]; then
    step "cargo fmt --check; cargo clippy --all-targets -D warnings"
    cargo fmt --all --check || { echo "cargo fmt: run cargo fmt --all" >&2; rc=1; }
    cargo clippy --release --workspace --all-targets -- -D warnings || { echo "clippy failed" >&2; rc=1; }
fi

if [ "${SKIP_CARGO_TEST:-0}" != 1 ]; then
    step "cargo test --release --workspace"
    cargo test --release --workspace || { echo "cargo test failed" >&2; rc=1; }
fi

# Arguments naming tests (paths) replace the default of the whole tests/ folder.
targets=(tests/)
cross=1
for a in "$@"; do
    case "$a" in tests/*|*.py|*.py::*) targets=(); cross=0 ;; esac
done
for a in "$@"; do
    case "$a" in *test_aarch64*) cross=1 ;; esac
done

if [ "${SKIP_CROSS:-0}" != 1 ] && [ $cross = 1 ]; then
    step "cross builds (tests/cross.sh)"
    bash tests/cross.sh || { echo "cross builds failed" >&2; rc=1; }
    aarch64_dir="${CAIRN_CROSS_TARGET_DIR:-$PWD/target/cross}/aarch64-unknown-linux-gnu/release"
    if [ -f "$aarch64_dir/.cross-ok" ]; then
        # tests/test_aarch64.py runs these under qemu-user, and fails rather than skips.
        export CAIRN_AARCH64_BIN_DIR="$aarch64_dir"
        export CAIRN_REQUIRE_AARCH64=1
    fi
fi

step "integration tests (pytest)"
"$PY" -m pytest "${targets[@]}" -q -ra --durations=15 --timeout="${CAIRN_TEST_TIMEOUT:-300}" "$@" || rc=1

if [ $rc -ne 0 ]; then
    echo "FAILED: see above" >&2
fi
exit $rc
