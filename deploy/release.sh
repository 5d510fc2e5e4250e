#!/usr/bin/env bash
# Release tarballs: one per target, each with a .sha256 file (`sha256sum -c` and
# `shasum -a 256 -c` both read it).
#
#   bash deploy/release.sh                 # every target this machine can link, into dist/
#   bash deploy/release.sh aarch64-unknown-linux-musl      # only the targets named
#
# Targets:
#   x86_64-unknown-linux-gnu     glibc >= 2.36 (linked against 2.36 by zig)
#   aarch64-unknown-linux-gnu    glibc >= 2.36: Debian 12/13, Raspberry Pi OS (the Pi nodes)
#   aarch64-unknown-linux-musl   static, runs on any aarch64 Linux
#   aarch64-apple-darwin         the Mac coordinator
#
# Linux targets are built with cargo-zigbuild (zig is the cross linker and C compiler):
# `pip install ziglang cargo-zigbuild` and `rustup target add <target>`; this script installs
# both if missing. A macOS binary needs Apple's SDK to link (the CLI and the gateway use
# system frameworks): on a Mac the aarch64-apple-darwin tarball is built natively with
# cargo; elsewhere it is built only if SDKROOT points at a MacOSX.sdk, and otherwise skipped
# with a message (run this script on the Mac for it).
#
# Each tarball, cairn-<version>-<target>.tar.gz, holds cairn, cairn-gateway and cairn-node,
# the service files (deploy/systemd, deploy/launchd) and the install guides. The binaries
# print the version, the commit and the target: `cairn version`, `cairn-node --version`.
#
# Environment knobs:
#   DIST                 output directory (default dist/)
#   CAIRN_RELEASE_TARGET_DIR  cargo target directory (default target/release-build)
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
# pip puts cargo-zigbuild in ~/.local/bin when it installs for the user.
export PATH="$HOME/.cargo/bin:$HOME/.local/bin:$PATH"
export CARGO_TERM_COLOR=${CARGO_TERM_COLOR:-never}
export CARGO_TARGET_DIR=${CAIRN_RELEASE_TARGET_DIR:-$PWD/target/release-build}
DIST=${DIST:-$PWD/dist}
GLIBC_FLOOR=2.36
ALL=(x86_64-unknown-linux-gnu aarch64-unknown-linux-gnu aarch64-unknown-linux-musl aarch64-apple-darwin)
BINS=(cairn cairn-gateway cairn-node)

say() { printf '==> %s\n' "$*" >&2; }

version=$(sed -n 's/^version *= *"\(.*\)"/\1/p' Cargo.toml | head -n 1)
[ -n "$version" ] || { echo "no version in Cargo.toml" >&2; exit 1; }
if commit=$(git rev-parse HEAD 2>/dev/null); then
    # The commit goes into the binaries (see gateway/build.rs); local edits would not.
    if [ -n "$(git status --porcelain --untracked-files=no 2>/dev/null)" ]; then
        say "warning: the working tree has uncommitted changes; the binaries say $commit"
    fi
else
    commit=${CAIRN_BUILD_COMMIT:-unknown}
fi
export CAIRN_BUILD_COMMIT=$commit

targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=("${ALL[@]}")

need_zigbuild() {
    if ! command -v cargo-zigbuild >/dev/null 2>&1 || ! "$PY" -m ziglang version >/dev/null 2>&1; then
        "$PY" -m pip install -q ziglang cargo-zigbuild \
            || "$PY" -m pip install -q --break-system-packages ziglang cargo-zigbuild
    fi
}

need_target() {
    rustup target list --installed | grep -qx "$1" || rustup target add "$1"
}

bin_args=()
for b in "${BINS[@]}"; do bin_args+=(--bin "$b"); done

# build TARGET: builds the binaries, prints the directory holding them (or fails).
build() {
    local target=$1
    case "$target" in
        *-linux-gnu)
            need_target "$target"
            need_zigbuild
            cargo-zigbuild zigbuild --release "${bin_args[@]}" --target "$target.$GLIBC_FLOOR" >&2
            ;;
        *-linux-musl)
            need_target "$target"
            need_zigbuild
            cargo-zigbuild zigbuild --release "${bin_args[@]}" --target "$target" >&2
            ;;
        *-apple-darwin)
            if [ "$(uname -s)" = Darwin ]; then
                need_target "$target"
                cargo build --release "${bin_args[@]}" --target "$target" >&2
            elif [ -n "${SDKROOT:-}" ] && [ -d "$SDKROOT" ]; then
                need_target "$target"
                need_zigbuild
                cargo-zigbuild zigbuild --release "${bin_args[@]}" --target "$target" >&2
            else
                say "skipping $target: linking a macOS binary needs the macOS SDK."
                say "  Run this script on the Mac (Xcode command line tools: xcode-select --install),"
                say "  or set SDKROOT to a MacOSX.sdk. CI type-checks it: tests/cross.sh."
                return 2
            fi
            ;;
        *)
            say "unknown target $target (known: ${ALL[*]})"
            return 1
            ;;
    esac
    echo "$CARGO_TARGET_DIR/$target/release"
}

sha256_line() { # prints "<hex>  <name>" for a file in the current directory
    if command -v sha256sum >/dev/null 2>&1; then
        sha256sum "$1"
    else
        shasum -a 256 "$1"
    fi
}

mkdir -p "$DIST"
made=()
skipped=()
for target in "${targets[@]}"; do
    say "building $target"
    t0=$SECONDS
    set +e
    dir=$(build "$target")
    rc=$?
    set -e
    if [ $rc = 2 ]; then
        skipped+=("$target")
        continue
    fi
    [ $rc = 0 ] || { say "build for $target failed"; exit 1; }
    name="cairn-$version-$target"
    stage=$(mktemp -d)
    mkdir -p "$stage/$name/docs" "$stage/$name/deploy"
    for b in "${BINS[@]}"; do
        install -m 0755 "$dir/$b" "$stage/$name/$b"
    done
    cp README.md "$stage/$name/"
    cp docs/install-macos.md docs/deploy-pi.md "$stage/$name/docs/"
    cp -R deploy/systemd deploy/launchd "$stage/$name/deploy/"
    printf 'version %s\ncommit %s\ntarget %s\n' "$version" "$commit" "$target" >"$stage/$name/BUILD"
    tar -C "$stage" -czf "$DIST/$name.tar.gz" --owner=0 --group=0 "$name" 2>/dev/null \
        || tar -C "$stage" -czf "$DIST/$name.tar.gz" "$name"
    rm -rf "$stage"
    (cd "$DIST" && sha256_line "$name.tar.gz" >"$name.tar.gz.sha256")
    made+=("$name.tar.gz ($((SECONDS - t0))s)")
    say "built $DIST/$name.tar.gz in $((SECONDS - t0))s"
done

say "done: ${#made[@]} tarball(s) in $DIST"
for m in "${made[@]}"; do echo "  $m" >&2; done
for s in "${skipped[@]}"; do echo "  skipped $s (needs the macOS SDK: run on the Mac)" >&2; done
