"""A short run of the torture tool: kill -9 of random nodes and the gateway while
concurrent clients upload, overwrite and delete (plain and multipart), then every
acknowledged object must read back byte for byte, nothing partial may be visible, and
everything must read with a node down. The tool exits 0 only when all of that holds.

The fault-injection modes (`--faults all`: a full disk, failing shard writes, nodes killed
mid-part, corrupt blocks) take about 90 s even when short; they run in the benches, not
here (`cairn-torture --faults all`)."""

import os
import random
import subprocess

from harness.procs import bin_dir


def test_kill_rounds_lose_nothing(tmp_path):
    seed = int(os.environ.get("CAIRN_TORTURE_SEED", random.randrange(1 << 32)))
    args = [
        str(bin_dir() / "cairn-torture"),
        "--rounds", "3",
        "--keys", "16",
        "--max-size-mib", "8",
        "--degraded-check-every", "3",
        "--seed", str(seed),
    ]
    r = subprocess.run(args, capture_output=True, text=True, timeout=240, cwd=tmp_path)
    report = r.stdout[-4000:] + r.stderr[-4000:]
    assert r.returncode == 0, f"seed {seed} (rerun with CAIRN_TORTURE_SEED={seed}):\n{report}"
    for line in ("lost:                 0", "corrupt:              0", "partial visible:      0"):
        assert line in r.stdout, f"seed {seed}: report lacks {line!r}:\n{report}"
