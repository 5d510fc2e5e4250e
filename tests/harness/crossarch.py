"""Run aarch64 builds of Cairn on this x86-64 machine under qemu-user, mixed with native ones.

The cluster harness starts `$CAIRN_BIN_DIR/cairn-node` and `$CAIRN_BIN_DIR/cairn-gateway`.
`bin_dir(tmp, node="aarch64", gateway="native")` makes such a directory: a native binary
is linked in as it is, an aarch64 one through a two-line wrapper that `exec`s it under
`qemu-aarch64-static` (so the process the harness signals and kills is qemu itself, running
the binary). Point `CAIRN_BIN_DIR` at it (e.g. `monkeypatch.setenv`) before starting or
restarting processes, and the next start uses those binaries on the same ports and data.

Where the aarch64 binaries are: `$CAIRN_AARCH64_BIN_DIR` (tests/cross.sh builds them and
sets it). The sysroot for a glibc-linked binary: `$CAIRN_QEMU_SYSROOT`, default
/usr/aarch64-linux-gnu (Debian's libc6-arm64-cross).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from .procs import REPO

NAMES = ("cairn-node", "cairn-gateway", "cairn")
EM_AARCH64 = 183
EM_X86_64 = 62


def native_dir() -> Path:
    d = os.environ.get("CAIRN_BIN_DIR")
    return Path(d) if d else REPO / "target" / "release"


def aarch64_dir() -> Path | None:
    d = os.environ.get("CAIRN_AARCH64_BIN_DIR")
    return Path(d) if d else None


def qemu() -> str | None:
    return shutil.which("qemu-aarch64-static") or shutil.which("qemu-aarch64")


def sysroot() -> str:
    return os.environ.get("CAIRN_QEMU_SYSROOT", "/usr/aarch64-linux-gnu")


def elf_machine(path: Path) -> int:
    """e_machine of an ELF file (62 x86-64, 183 aarch64)."""
    head = Path(path).read_bytes()[:20]
    if head[:4] != b"\x7fELF":
        raise ValueError(f"{path} is not an ELF file")
    order = "little" if head[5] == 1 else "big"
    return int.from_bytes(head[18:20], order)


def missing() -> str | None:
    """Why the aarch64 tests cannot run here, or None if they can."""
    d = aarch64_dir()
    if d is None:
        return "CAIRN_AARCH64_BIN_DIR not set (tests/cross.sh builds the aarch64 binaries)"
    for name in ("cairn-node", "cairn-gateway"):
        if not (d / name).is_file():
            return f"{d / name} not built"
    if qemu() is None:
        return "qemu-aarch64-static not installed (apt-get install qemu-user-static)"
    if not Path(sysroot(), "lib", "ld-linux-aarch64.so.1").exists():
        return f"no aarch64 sysroot at {sysroot()} (apt-get install libc6-arm64-cross)"
    for name in ("cairn-node", "cairn-gateway"):
        if not (native_dir() / name).is_file():
            return f"native {native_dir() / name} not built"
    return None


def qemu_argv(binary: Path) -> list[str]:
    return [qemu() or "qemu-aarch64-static", "-L", sysroot(), str(binary)]


def _wrapper(path: Path, binary: Path) -> None:
    argv = " ".join(f"'{a}'" for a in qemu_argv(binary))
    path.write_text(f'#!/bin/sh\nexec {argv} "$@"\n')
    path.chmod(0o755)


def bin_dir(root: Path, node: str, gateway: str) -> Path:
    """A directory with `cairn-node` of arch `node` and `cairn-gateway` of arch `gateway`
    (each "native" or "aarch64")."""
    d = Path(root) / f"bin-node-{node}-gateway-{gateway}"
    d.mkdir(parents=True, exist_ok=True)
    for name, arch in (("cairn-node", node), ("cairn-gateway", gateway)):
        target = d / name
        if target.exists() or target.is_symlink():
            target.unlink()
        if arch == "native":
            target.symlink_to(native_dir() / name)
        elif arch == "aarch64":
            src = aarch64_dir()
            assert src is not None, "CAIRN_AARCH64_BIN_DIR not set"
            _wrapper(target, src / name)
        else:
            raise ValueError(f"unknown arch {arch!r}")
    return d


def run_aarch64(name: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    """Runs an aarch64 binary under qemu to completion (e.g. `--version`)."""
    src = aarch64_dir()
    assert src is not None, "CAIRN_AARCH64_BIN_DIR not set"
    return subprocess.run(
        [*qemu_argv(src / name), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )
