#!/usr/bin/env bash
# Cross builds the users' machines need, checked on this x86-64 Linux box (tests/run.sh
# calls it unless SKIP_CROSS=1; it also runs on its own):
#
#   - aarch64-apple-darwin (the Mac coordinator): `cargo check` of the whole workspace,
#     every target (tests included). A link adds nothing here: the binary cannot run.
#   - aarch64-unknown-linux-gnu with glibc 2.36 as the floor (Debian 12 and 13, Pi OS):
#     cairn-node and cairn-gateway, optimized, linked with zig; the glibc floor is verified.
#     tests/test_aarch64.py runs them under qemu-user.
#   - aarch64-unknown-linux-musl (the static node): `cargo check` of cairn-node, or a full
#     build with CROSS_MUSL_BUILD=1.
#
# C parts (the erasure code's SIMD kernels, ring) are compiled by `zig cc` through
# cargo-zigbuild for every target. Builds go to their own target directory so they never
# invalidate the native build in target/.
#
#   bash tests/cross.sh              # installs what it needs, then checks and builds
#
# Environment knobs:
#   SKIP_INSTALL=1         don't check/install rustup targets, pip and apt packages
#   CAIRN_CROSS_TARGET_DIR cargo target directory (default target/cross)
#   CROSS_MUSL_BUILD=1     build (link) the musl node instead of checking it
# The aarch64 binaries end up in $CAIRN_CROSS_TARGET_DIR/aarch64-unknown-linux-gnu/release,
# with a .cross-ok stamp when this run built them.
set -uo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
# pip puts cargo-zigbuild in ~/.local/bin when it installs for the user.
export PATH="$HOME/.cargo/bin:$HOME/.local/bin:$PATH"
export CARGO_TERM_COLOR=${CARGO_TERM_COLOR:-never}
export CARGO_TARGET_DIR=${CAIRN_CROSS_TARGET_DIR:-$PWD/target/cross}

DARWIN=aarch64-apple-darwin
GNU=aarch64-unknown-linux-gnu
GLIBC_FLOOR=2.36
MUSL=aarch64-unknown-linux-musl

step() { printf '\n==> %s\n' "$*"; }
die() { printf '\nFAILED: %s\n' "$*" >&2; exit 1; }
timings=()
timed() { # timed LABEL CMD... : runs CMD, records its wall time
    local label=$1 t0=$SECONDS
    shift
    "$@"
    local rc=$?
    timings+=("$(printf '%-48s %4ds%s' "$label" $((SECONDS - t0)) "$([ $rc = 0 ] || echo '  FAILED')")")
    return $rc
}

if [ "${SKIP_INSTALL:-0}" != 1 ]; then
    step "checking cross toolchains"
    installed=$(rustup target list --installed 2>/dev/null) || die "rustup not found"
    want=()
    for t in $DARWIN $GNU $MUSL; do
        grep -qx "$t" <<<"$installed" || want+=("$t")
    done
    if [ ${#want[@]} -gt 0 ]; then
        rustup target add "${want[@]}" || die "rustup target add ${want[*]}"
    fi
    # Pinned: a new zig can change what it links (glibc stubs, the macOS target).
    zig_pkgs=(ziglang==0.17.1 cargo-zigbuild==0.24.1)
    if ! command -v cargo-zigbuild >/dev/null 2>&1 || ! "$PY" - "${zig_pkgs[@]}" <<'PYEOF'
import sys
from importlib import metadata as md
for pin in sys.argv[1:]:
    name, version = pin.split("==")
    try:
        if md.version(name) != version:
            sys.exit(1)
    except md.PackageNotFoundError:
        sys.exit(1)
PYEOF
    then
        "$PY" -m pip install -q "${zig_pkgs[@]}" \
            || "$PY" -m pip install -q --break-system-packages "${zig_pkgs[@]}" \
            || die "pip install ${zig_pkgs[*]}"
    fi
    missing=()
    command -v qemu-aarch64-static >/dev/null 2>&1 || missing+=(qemu-user-static)
    [ -e /usr/aarch64-linux-gnu/lib/ld-linux-aarch64.so.1 ] || missing+=(libc6-arm64-cross)
    if [ ${#missing[@]} -gt 0 ]; then
        SUDO=""
        [ "$(id -u)" = 0 ] || SUDO="sudo"
        export DEBIAN_FRONTEND=noninteractive
        $SUDO apt-get update -qq || die "apt-get update"
        $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null \
            || die "apt-get install ${missing[*]}"
    fi
fi
command -v cargo-zigbuild >/dev/null 2>&1 || die "cargo-zigbuild not installed (pip install ziglang cargo-zigbuild)"

rc=0
bin_dir="$CARGO_TARGET_DIR/$GNU/release"
# Present only when this run built the aarch64 binaries (tests/run.sh then runs the qemu
# tests on them, even if a later step here fails); never left over from an earlier run.
stamp="$bin_dir/.cross-ok"
rm -f "$stamp"

# Optimized like a release (tests/test_aarch64.py runs these under qemu, where an
# unoptimized gateway would crawl); the workspace's release profile already keeps no DWARF.
step "cargo zigbuild --release -p cairn-node -p cairn-gateway --target $GNU.$GLIBC_FLOOR"
timed "build node+gateway $GNU.$GLIBC_FLOOR" \
    cargo-zigbuild zigbuild --release -p cairn-node -p cairn-gateway --target "$GNU.$GLIBC_FLOOR" \
    || rc=1

if [ $rc = 0 ]; then
    step "glibc symbol versions needed (floor $GLIBC_FLOOR)"
    for b in cairn-node cairn-gateway; do
        newest=$(readelf -V --wide "$bin_dir/$b" | grep -o 'GLIBC_[0-9][0-9.]*' | sed 's/GLIBC_//' | sort -uV | tail -n 1)
        echo "$b: needs glibc $newest"
        if [ "$(printf '%s\n%s\n' "$newest" "$GLIBC_FLOOR" | sort -V | tail -n 1)" != "$GLIBC_FLOOR" ]; then
            echo "$b needs glibc $newest, newer than the floor $GLIBC_FLOOR" >&2
            rc=1
        fi
    done
    [ $rc = 0 ] && touch "$stamp"
fi

step "cargo check --workspace --all-targets --target $DARWIN"
timed "check workspace $DARWIN" \
    cargo-zigbuild check --release --workspace --all-targets --target "$DARWIN" || rc=1

if [ "${CROSS_MUSL_BUILD:-0}" = 1 ]; then
    step "cargo zigbuild --release -p cairn-node --target $MUSL"
    timed "build node $MUSL" \
        cargo-zigbuild zigbuild --release -p cairn-node --target "$MUSL" || rc=1
else
    step "cargo check -p cairn-node --target $MUSL"
    timed "check node $MUSL" \
        cargo-zigbuild check --release -p cairn-node --target "$MUSL" || rc=1
fi

step "cross build times"
printf '%s\n' "${timings[@]}"
if [ -f "$bin_dir/cairn-node" ]; then
    ls -l "$bin_dir/cairn-node" "$bin_dir/cairn-gateway" 2>/dev/null
fi
[ $rc = 0 ] || echo "FAILED: cross build, see above" >&2
echo "aarch64 binaries: $bin_dir"
exit $rc
