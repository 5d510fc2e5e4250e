"""The simulated home lab of `cairn-bench pisim`, short: correctness, not speed.

A ~100 MB checkpoint on the `1gbit` profile with SD-card nodes under a Pi-class CPU quota
(network namespaces, tc, cgroups, throttled loop devices): every limit must measure right,
and the bytes each client restores, with every node up and with one node killed, must equal
the bytes it saved. No timing is asserted (the full bench prints the figures). Afterwards no
namespace, loop device or mount of the lab may be left.

Skips with the reason where the lab cannot be built: not Linux, not root, no `ip`/`tc`/
`losetup`/`mkfs.ext4`, no network namespaces, no loop devices, no cgroup CPU and block-I/O
controllers, or another pisim run holding the lab.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
LOCK = "/run/lock/cairn-pisim.lock"


def _bin_dir() -> Path:
    d = os.environ.get("CAIRN_BIN_DIR")
    return Path(d) if d else REPO / "target" / "release"


def _why_not() -> str | None:
    """Why the lab cannot be built here, or None."""
    if not sys.platform.startswith("linux"):
        return "pisim needs Linux (network namespaces, tc, cgroups, loop devices)"
    if os.geteuid() != 0:
        return "pisim needs root (network namespaces, tc, cgroups, loop devices)"
    for tool in ("ip", "tc", "losetup", "mkfs.ext4", "mount", "dd", "python3"):
        if shutil.which(tool) is None:
            return f"pisim needs {tool} in PATH"
    if not Path("/dev/loop-control").exists():
        return "no loop devices (/dev/loop-control missing)"
    v2 = Path("/sys/fs/cgroup/cgroup.controllers")
    v1 = Path("/sys/fs/cgroup/cpu/cpu.cfs_quota_us").is_file() and Path(
        "/sys/fs/cgroup/blkio/blkio.throttle.write_bps_device"
    ).is_file()
    if not v1 and not (v2.is_file() and {"cpu", "io"} <= set(v2.read_text().split())):
        return "no cgroup CPU and block-I/O controllers (v1 cpu+blkio or v2 cpu+io)"
    probe = "cairnpisimprobe"
    r = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if r.returncode != 0:
        return f"cannot create network namespaces: {r.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    try:
        with open(LOCK, "a") as f:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return f"another cairn-bench pisim is running (it holds {LOCK})"
    except OSError:
        pass  # no /run/lock: the bench creates it
    return None


_why = _why_not()
pytestmark = [
    pytest.mark.skipif(_why is not None, reason=_why or ""),
    pytest.mark.timeout(300),
]


def _leftovers(work: Path) -> list[str]:
    found = []
    ns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    found += [line.split()[0] for line in ns.splitlines() if line.startswith("pisim-")]
    loops = subprocess.run(["losetup", "-a"], capture_output=True, text=True).stdout
    found += [line for line in loops.splitlines() if str(work) in line]
    mounts = Path("/proc/mounts").read_text()
    found += [line for line in mounts.splitlines() if str(work) in line]
    return found


def test_pisim_short_restores_what_it_saved(tmp_path):
    bench = _bin_dir() / "cairn-bench"
    assert bench.is_file(), f"{bench} missing: build with `cargo build --release --workspace`"
    clients = ["boto3", "cairn"] + (["aws-cli"] if shutil.which("aws") else [])
    work = tmp_path / "lab"
    cmd = [
        str(bench),
        "pisim",
        "--net", "1gbit",
        "--disk", "sd",
        "--size", "100",
        "--clients", ",".join(clients),
        "--scenarios", "clean,node-down",
        "--work-dir", str(work),
        "--bin-dir", str(_bin_dir()),
        "--json",
    ]  # fmt: skip
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=240)
    detail = f"exit {r.returncode}\n--- stderr ---\n{r.stderr[-4000:]}"
    assert r.returncode == 0, detail
    summary = json.loads(r.stdout.strip().splitlines()[-1])
    assert all(c["ok"] for c in summary["checks"]), detail
    assert summary["verified"], detail
    restores = [
        (run["client"], run["scenario"])
        for run in summary["runs"]
        if run["phase"] == "restore" and run["verified"]
    ]
    for client in clients:
        for scenario in ("clean", "node down"):
            assert (client, scenario) in restores, detail
    assert _leftovers(work) == [], "the lab was not removed"
