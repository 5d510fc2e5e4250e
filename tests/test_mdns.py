"""mDNS membership: nodes announce themselves, the gateway finds them with no address
typed anywhere, and a node that announces without the cluster secret gets nothing.

Everything runs inside a network namespace this test creates (only its own loopback), so
no multicast ever leaves it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from harness import cluster as _cluster

BIN = _cluster.bin_dir()


def _netns_available() -> bool:
    return os.geteuid() == 0 and shutil.which("ip") is not None


pytestmark = pytest.mark.skipif(
    not _netns_available() and os.environ.get("CI") != "true",
    reason="needs root and iproute2 to create a network namespace",
)


@pytest.fixture
def netns():
    name = f"cairn-mdns-{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        subprocess.run(["ip", "netns", "exec", name, "ip", "link", "set", "lo", "up"], check=True)
        yield name
    finally:
        out = subprocess.run(["ip", "netns", "pids", name], capture_output=True, text=True).stdout
        for pid in out.split():
            try:
                os.kill(int(pid), 9)
            except ProcessLookupError:
                pass
        subprocess.run(["ip", "netns", "del", name], check=False)


def _spawn(ns: str, args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    return subprocess.Popen(
        ["ip", "netns", "exec", ns, *args],
        env={**os.environ, **env},
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )


def _get(ns: str, url: str) -> str | None:
    r = subprocess.run(
        ["ip", "netns", "exec", ns, "curl", "-sf", "--max-time", "2", url],
        capture_output=True,
        text=True,
    )
    return r.stdout if r.returncode == 0 else None


def _node_id(data: Path, deadline: float) -> str:
    while time.monotonic() < deadline:
        p = data / "node_id"
        if p.exists() and p.read_text().strip():
            return p.read_text().strip()
        time.sleep(0.05)
    raise AssertionError(f"node never wrote {p}")


def test_gateway_discovers_nodes_and_refuses_a_node_without_the_secret(netns, tmp_path):
    secret = uuid.uuid4().hex
    procs = []
    try:
        node_ids = []
        for i in range(2):
            data = tmp_path / f"node{i}"
            procs.append(
                _spawn(
                    netns,
                    [str(BIN / "cairn-node"), "--listen", f"127.0.0.1:{9301 + i}", "--data", str(data), "--mdns", "loopback"],
                    {"CAIRN_CLUSTER_SECRET": secret},
                    tmp_path / f"node{i}.log",
                )
            )
        rogue_data = tmp_path / "rogue"
        procs.append(
            _spawn(
                netns,
                [str(BIN / "cairn-node"), "--listen", "127.0.0.1:9309", "--data", str(rogue_data), "--mdns", "loopback"],
                {"CAIRN_CLUSTER_SECRET": "not-the-secret"},
                tmp_path / "rogue.log",
            )
        )
        deadline = time.monotonic() + 20
        node_ids = [_node_id(tmp_path / f"node{i}", deadline) for i in range(2)]
        rogue_id = _node_id(rogue_data, deadline)
        procs.append(
            _spawn(
                netns,
                [str(BIN / "cairn-gateway"), "--listen", "127.0.0.1:9300", "--meta", str(tmp_path / "meta"), "--mdns", "loopback"],
                {"CAIRN_CLUSTER_SECRET": secret, "CAIRN_ACCESS_KEY": "ak", "CAIRN_SECRET_KEY": "sk"},
                tmp_path / "gateway.log",
            )
        )
        seen: dict[str, str] = {}
        while time.monotonic() < deadline:
            body = _get(netns, "http://127.0.0.1:9300/_cairn/nodes")
            if body:
                seen = {n["id"]: n["state"] for n in json.loads(body)}
                if all(seen.get(i) == "up" for i in node_ids):
                    break
            time.sleep(0.2)
        assert all(seen.get(i) == "up" for i in node_ids), (seen, (tmp_path / "gateway.log").read_text()[-3000:])
        gw_log = (tmp_path / "gateway.log").read_text()
        assert "127.0.0.1:9309" in gw_log, "the rogue node's announcement was never seen"
        # Give the gateway a few more heartbeats to (wrongly) admit the rogue node.
        time.sleep(2.5)
        body = _get(netns, "http://127.0.0.1:9300/_cairn/nodes")
        assert body is not None
        states = {n["id"]: n["state"] for n in json.loads(body)}
        assert rogue_id not in states, f"node without the secret was admitted: {states}"
        assert set(states) == set(node_ids)
        sd = json.loads(_get(netns, "http://127.0.0.1:9300/sd/prometheus") or "[]")
        targets = {t for g in sd for t in g["targets"]}
        assert {"127.0.0.1:9301", "127.0.0.1:9302"} <= targets and "127.0.0.1:9309" not in targets
    finally:
        for p in procs:
            p.kill()
        for p in procs:
            p.wait(timeout=10)
