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

from harness.procs import bin_dir
from harness.servers import admin_token

BIN = bin_dir()


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
        _delete_netns(name)


def _delete_netns(name: str):
    """Kills whatever still runs in the namespace, then deletes it."""
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


def _get(ns: str, url: str, secret: str) -> str | None:
    """GET a gateway's internal route with the admin token of cluster `secret`."""
    auth = f"Authorization: Bearer {admin_token(secret)}"
    r = subprocess.run(
        ["ip", "netns", "exec", ns, "curl", "-sf", "--max-time", "2", "-H", auth, url],
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
            body = _get(netns, "http://127.0.0.1:9300/_cairn/nodes", secret)
            if body:
                seen = {n["id"]: n["state"] for n in json.loads(body)}
                if all(seen.get(i) == "up" for i in node_ids):
                    break
            time.sleep(0.2)
        assert all(seen.get(i) == "up" for i in node_ids), (seen, (tmp_path / "gateway.log").read_text()[-3000:])
        # The rogue's announcement may arrive after the good nodes are up (a node announces
        # again when its address comes up): wait for it within the same deadline.
        while "127.0.0.1:9309" not in (tmp_path / "gateway.log").read_text() and time.monotonic() < deadline:
            time.sleep(0.2)
        gw_log = (tmp_path / "gateway.log").read_text()
        assert "127.0.0.1:9309" in gw_log, "the rogue node's announcement was never seen"
        # Give the gateway a few more heartbeats to (wrongly) admit the rogue node.
        time.sleep(2.5)
        body = _get(netns, "http://127.0.0.1:9300/_cairn/nodes", secret)
        assert body is not None
        states = {n["id"]: n["state"] for n in json.loads(body)}
        assert rogue_id not in states, f"node without the secret was admitted: {states}"
        assert set(states) == set(node_ids)
        sd = json.loads(_get(netns, "http://127.0.0.1:9300/_cairn/sd/prometheus", secret) or "[]")
        targets = {t for g in sd for t in g["targets"]}
        assert {"127.0.0.1:9301", "127.0.0.1:9302"} <= targets and "127.0.0.1:9309" not in targets
    finally:
        for p in procs:
            p.kill()
        for p in procs:
            p.wait(timeout=10)


@pytest.fixture
def veth_pair():
    """Two namespaces joined by a veth pair: the gateway's (10.213.0.1) and the nodes'
    (10.213.0.2, later also .3). Multicast stays on that wire."""
    tag = uuid.uuid4().hex[:6]
    gw_ns, node_ns = f"cairn-gw-{tag}", f"cairn-nd-{tag}"
    a, b = f"vg{tag}", f"vn{tag}"
    made = []
    try:
        for ns in (gw_ns, node_ns):
            subprocess.run(["ip", "netns", "add", ns], check=True)
            made.append(ns)
            subprocess.run(["ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up"], check=True)
        subprocess.run(["ip", "link", "add", a, "netns", gw_ns, "type", "veth", "peer", "name", b, "netns", node_ns], check=True)
        for ns, dev, ip in ((gw_ns, a, "10.213.0.1/24"), (node_ns, b, "10.213.0.2/24")):
            subprocess.run(["ip", "netns", "exec", ns, "ip", "addr", "add", ip, "dev", dev], check=True)
            subprocess.run(["ip", "netns", "exec", ns, "ip", "link", "set", dev, "multicast", "on", "up"], check=True)
        yield gw_ns, node_ns, b, a
    finally:
        for ns in made:
            _delete_netns(ns)


# Runs inside the gateway's namespace: PUTs or GETs objects with boto3, prints sha256s.
_CLIENT = r"""
import hashlib, json, os, sys
import boto3
from botocore.config import Config
op, sizes = sys.argv[1], [int(s) for s in sys.argv[2].split(",")]
s3 = boto3.client("s3", endpoint_url="http://127.0.0.1:9300", aws_access_key_id="ak",
                  aws_secret_access_key="sk", region_name="us-east-1",
                  config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}))
out = {}
if op == "put":
    s3.create_bucket(Bucket="bkt")
    for n in sizes:
        data = os.urandom(n)
        s3.put_object(Bucket="bkt", Key=f"obj/{n}", Body=data)
        out[n] = hashlib.sha256(data).hexdigest()
else:
    for n in sizes:
        out[n] = hashlib.sha256(s3.get_object(Bucket="bkt", Key=f"obj/{n}")["Body"].read()).hexdigest()
print(json.dumps(out))
"""


def test_discovery_across_namespaces_and_a_node_that_moves(veth_pair, tmp_path):
    """Nodes in one namespace, the gateway in another, nothing typed: discovered over the
    veth wire by mDNS. A node restarted on a new IP is the same node (same id, its shards
    still used): with another node killed afterwards, every object still reads back."""
    gw_ns, node_ns, node_dev, _gw_dev = veth_pair
    secret = uuid.uuid4().hex
    env = {"CAIRN_CLUSTER_SECRET": secret}
    procs: dict[str, subprocess.Popen] = {}

    def start_node(i: int, ip: str):
        procs[f"node{i}"] = _spawn(
            node_ns,
            [str(BIN / "cairn-node"), "--listen", f"{ip}:{9301 + i}", "--data", str(tmp_path / f"node{i}"), "--mdns", "all"],
            env,
            tmp_path / f"node{i}-{ip}.log",
        )

    def nodes_view() -> dict[str, tuple[str, str]]:
        body = _get(gw_ns, "http://127.0.0.1:9300/_cairn/nodes", secret)
        return {n["id"]: (n["addr"], n["state"]) for n in json.loads(body)} if body else {}

    def wait_view(want: dict[str, tuple[str, str]], what: str, timeout: float = 30):
        deadline = time.monotonic() + timeout
        seen = {}
        while time.monotonic() < deadline:
            seen = nodes_view()
            if seen == want:
                return
            time.sleep(0.2)
        gw_log = (tmp_path / "gateway.log").read_text()[-3000:]
        raise AssertionError(f"{what}: gateway sees {seen}, want {want}\n{gw_log}")

    def client(op: str, sizes: list[int]) -> dict:
        r = subprocess.run(
            ["ip", "netns", "exec", gw_ns, "python3", "-c", _CLIENT, op, ",".join(map(str, sizes))],
            capture_output=True, text=True, timeout=120,
        )
        assert r.returncode == 0, r.stderr[-3000:]
        return json.loads(r.stdout)

    try:
        for i in range(4):
            start_node(i, "10.213.0.2")
        deadline = time.monotonic() + 20
        ids = [_node_id(tmp_path / f"node{i}", deadline) for i in range(4)]
        procs["gateway"] = _spawn(
            gw_ns,
            [str(BIN / "cairn-gateway"), "--listen", "127.0.0.1:9300", "--meta", str(tmp_path / "meta"),
             "--mdns", "all", "--heartbeat-ms", "200"],
            {**env, "CAIRN_ACCESS_KEY": "ak", "CAIRN_SECRET_KEY": "sk"},
            tmp_path / "gateway.log",
        )
        wait_view({ids[i]: (f"10.213.0.2:{9301 + i}", "up") for i in range(4)}, "discovery over the veth")
        sizes = [0, 1, 1000, 3 * 1024 * 1024 + 17]
        written = client("put", sizes)

        # node 0 comes back on another IP with the same disk
        procs.pop("node0").kill()
        subprocess.run(["ip", "netns", "exec", node_ns, "ip", "addr", "add", "10.213.0.3/24", "dev", node_dev], check=True)
        start_node(0, "10.213.0.3")
        want = {ids[i]: (f"10.213.0.2:{9301 + i}", "up") for i in range(1, 4)}
        want[ids[0]] = ("10.213.0.3:9301", "up")
        wait_view(want, "the moved node, same id at its new address")

        # its shards are needed now: with node 1 gone, 3+1 objects read from nodes 0, 2, 3
        procs.pop("node1").kill()
        want[ids[1]] = ("10.213.0.2:9302", "down")
        wait_view(want, "node 1 down")
        assert client("get", sizes) == written
    finally:
        for p in procs.values():
            p.kill()
        for p in procs.values():
            p.wait(timeout=10)


def test_mdns_interface_limits_where_the_gateway_looks(veth_pair, tmp_path):
    """`--mdns-interface`: a gateway told to browse only its veth finds the nodes across
    it; one told to browse only loopback, started at the same time, finds none."""
    gw_ns, node_ns, _node_dev, gw_dev = veth_pair
    secret = uuid.uuid4().hex
    env = {"CAIRN_CLUSTER_SECRET": secret}
    procs = []
    try:
        for i in range(2):
            procs.append(_spawn(
                node_ns,
                [str(BIN / "cairn-node"), "--listen", f"10.213.0.2:{9301 + i}", "--data", str(tmp_path / f"node{i}"), "--mdns", "all"],
                env,
                tmp_path / f"node{i}.log",
            ))
        deadline = time.monotonic() + 20
        ids = {_node_id(tmp_path / f"node{i}", deadline) for i in range(2)}
        for port, interface in ((9300, gw_dev), (9310, "lo")):
            procs.append(_spawn(
                gw_ns,
                [str(BIN / "cairn-gateway"), "--listen", f"127.0.0.1:{port}", "--meta", str(tmp_path / f"meta{port}"),
                 "--mdns", "all", "--mdns-interface", interface, "--heartbeat-ms", "200"],
                {**env, "CAIRN_ACCESS_KEY": "ak", "CAIRN_SECRET_KEY": "sk"},
                tmp_path / f"gateway{port}.log",
            ))

        def view(port: int) -> dict[str, str]:
            body = _get(gw_ns, f"http://127.0.0.1:{port}/_cairn/nodes", secret)
            return {n["id"]: n["state"] for n in json.loads(body)} if body else {}

        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and view(9300) != {i: "up" for i in ids}:
            time.sleep(0.2)
        assert view(9300) == {i: "up" for i in ids}, (tmp_path / "gateway9300.log").read_text()[-3000:]
        # The loopback-only gateway had as long, and a few more announcements' worth.
        time.sleep(3)
        assert _get(gw_ns, "http://127.0.0.1:9310/_cairn/health", secret) is not None, "loopback-only gateway not serving"
        assert view(9310) == {}, "a gateway browsing only loopback found nodes across the veth"
    finally:
        for p in procs:
            p.kill()
        for p in procs:
            p.wait(timeout=10)
