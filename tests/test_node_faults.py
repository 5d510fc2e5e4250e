"""Storage nodes that fill up, fail writes or lie about their space, in a real cluster:
`--capacity` (what a node reports and counts), and the faults a node injects with
`CAIRN_NODE_FAULTS` (`write-fail=P`, `report-free=BYTES`).

The rule checked throughout: an acknowledged object is never lost.
"""

import json
import os
import time

import pytest

from harness.data import MiB, sha256
from harness.wait import wait_for


def node_info(node) -> dict:
    r = node.api().call("GET", "/v1/info?challenge=x")
    assert r.status == 200, r.body
    return json.loads(r.body)


def gateway_nodes(cluster) -> dict:
    """{node addr: entry} of the gateway's `/_cairn/nodes`."""
    status, body = cluster.gateway.admin_get("/_cairn/nodes")
    assert status == 200
    return {n["addr"]: n for n in json.loads(body)}


def stored_bytes(node) -> int:
    """Bytes of shard files and manifests in the node's data dir."""
    total = 0
    for dirpath, _dirs, files in os.walk(node.data_dir / "shards"):
        total += sum(os.path.getsize(os.path.join(dirpath, f)) for f in files)
    return total


def temp_files(cluster) -> list:
    return [p for n in cluster.nodes for p in (n.data_dir / "tmp").iterdir()]


def test_capacity_is_reported_and_counts_what_is_stored(cluster_factory, tmp_path):
    # Big enough for the gateway's free-space reserve, small enough to bind on this disk.
    cap = 3 * 1024 * MiB
    st = os.statvfs(tmp_path)
    if st.f_bavail * st.f_frsize < cap + 1024 * MiB:
        pytest.skip("the test file system has less than 4 GiB free: --capacity 3GiB would not bind")
    c = cluster_factory(node_args=["--capacity", "3GiB"])
    for n in c.nodes:
        info = node_info(n)
        assert info["capacity_bytes"] == cap
        assert info["free_bytes"] == cap
        assert n.metrics().value("cairn_node_capacity_bytes") == cap
    wait_for(
        lambda: all(e["capacity_bytes"] == cap for e in gateway_nodes(c).values()),
        timeout=10,
        what="the gateway to see each node's capacity",
    )
    s3 = c.client()
    s3.create_bucket(Bucket="bkt")
    data = os.urandom(6 * MiB + 3)
    s3.put_object(Bucket="bkt", Key="ckpt", Body=data)
    for n in c.nodes:
        used = stored_bytes(n)
        assert used > MiB, f"{n}: the object should have a shard here"
        assert node_info(n)["free_bytes"] == cap - used
        assert n.metrics().value("cairn_node_free_bytes") == cap - used
    # Counted again from the disk after a restart.
    n0 = c.nodes[0]
    n0.kill()
    n0.start()
    assert node_info(n0)["free_bytes"] == cap - stored_bytes(n0)
    c.wait_gateway_sees_nodes(4)
    assert sha256(s3.get_object(Bucket="bkt", Key="ckpt")["Body"].read()) == sha256(data)


def test_a_node_lying_about_its_free_space_is_what_the_gateway_sees(cluster_factory):
    c = cluster_factory(extra_env={"CAIRN_NODE_FAULTS": "report-free=4096"})
    for n in c.nodes:
        assert node_info(n)["free_bytes"] == 4096
        assert n.metrics().value("cairn_node_free_bytes") == 4096
        assert "injecting faults" in n.proc.log_since_start()
    wait_for(
        lambda: all(e["free_bytes"] == 4096 for e in gateway_nodes(c).values()),
        timeout=10,
        what="the gateway to see the reported free space",
    )


def test_acknowledged_writes_survive_a_node_that_fails_writes(cluster_factory):
    # One node fails half of its shard writes: refused as disk-full, a 500 part way
    # through the body, or the connection dropped part way. A client with default
    # retries gets its PUTs through the other nodes; whatever was acknowledged must read
    # back, also with a healthy node killed afterwards (acknowledged = fully redundant).
    c = cluster_factory(gateway_args=["--repair-after", "1h"])
    faulty = c.nodes[1]
    env = faulty.env()
    env["CAIRN_NODE_FAULTS"] = "write-fail=0.5"
    faulty.env = lambda: env  # this node only: the cluster's env is every node's
    faulty.stop()
    faulty.start()
    assert "injecting faults" in faulty.proc.log_since_start()
    c.wait_gateway_sees_nodes(4)
    s3 = c.client(retries=None)
    s3.create_bucket(Bucket="bkt")
    acked = {}
    for i in range(16):
        key = f"ckpt/{i}"
        data = os.urandom([100_000, 3 * MiB + 17, 5 * MiB][i % 3])
        try:
            s3.put_object(Bucket="bkt", Key=key, Body=data)
        except Exception:  # noqa: BLE001 - a refused write is allowed, a lost one is not
            continue
        acked[key] = data
    assert len(acked) >= 8, f"only {len(acked)} of 16 PUTs acknowledged"
    # one series per fault kind (`write-internal`, `write-reset`, ...), from the first injected
    injected = sum(s.value for s in faulty.metrics().series("cairn_node_injected_faults_total"))
    assert injected > 0, "no fault was injected: the test proves nothing"
    # No failed write left a temp file behind.
    wait_for(lambda: not temp_files(c), timeout=30, what="temp files gone")
    for key, data in acked.items():
        body = s3.get_object(Bucket="bkt", Key=key)["Body"].read()
        assert sha256(body) == sha256(data), key
    c.nodes[2].kill()
    time.sleep(0.5)
    for key, data in acked.items():
        body = s3.get_object(Bucket="bkt", Key=key)["Body"].read()
        assert sha256(body) == sha256(data), f"{key} lost with a healthy node down"
