"""`cairn version` and `--version` of the three binaries: version, git commit and target,
recorded at build time (gateway/build.rs)."""

from __future__ import annotations

import platform
import re
import subprocess
import sys

import pytest

from harness.procs import REPO, binary

HEX40 = re.compile(r"^[0-9a-f]{40}$")
# The suite runs on Linux (glibc); the binaries under test are built for this machine.
HOST = f"{platform.machine()}-unknown-linux-gnu" if sys.platform == "linux" else None


def run(*argv) -> str:
    r = subprocess.run([str(a) for a in argv], capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
    assert r.returncode == 0, r.stderr
    return r.stdout


def workspace_version() -> str:
    for line in (REPO / "Cargo.toml").read_text().splitlines():
        m = re.match(r'^version\s*=\s*"([^"]+)"', line)
        if m:
            return m.group(1)
    raise AssertionError("no version in Cargo.toml")


def git_knows(commit: str) -> bool:
    r = subprocess.run(["git", "-C", str(REPO), "cat-file", "-e", f"{commit}^{{commit}}"], capture_output=True)
    return r.returncode == 0


def test_cairn_version_prints_version_commit_and_target():
    out = run(binary("cairn"), "version").splitlines()
    assert len(out) == 3, out
    assert out[0] == f"cairn {workspace_version()}"
    kind, commit = out[1].split(" ", 1)
    assert kind == "commit"
    if (REPO / ".git").exists():
        assert HEX40.match(commit), commit
        assert git_knows(commit), f"{commit} is not a commit of this repository"
    assert out[2].startswith("target ")
    if HOST:
        assert out[2] == f"target {HOST}"


@pytest.mark.parametrize("name", ["cairn", "cairn-node", "cairn-gateway"])
def test_dash_dash_version_names_commit_and_target(name):
    out = run(binary(name), "--version").strip()
    m = re.fullmatch(r"(\S+) (\S+) \((\S+) (\S+)\)", out)
    assert m, out
    assert (m.group(1), m.group(2)) == (name, workspace_version())
    if HOST:
        assert m.group(4) == HOST
    if (REPO / ".git").exists():
        assert re.fullmatch(r"[0-9a-f]{12}", m.group(3)), out
        assert git_knows(m.group(3))
