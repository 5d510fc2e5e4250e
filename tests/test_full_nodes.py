"""Nodes whose disks fill up: a full node is written around, never costs stored data, and a
full cluster answers 507 at once.

One node's data directory is a real small file system (a 48 MiB tmpfs, like a Pi whose SD
card is nearly full); uploads go through aws-cli's default multipart (8 MiB parts), the
case where one failed part attempt used to delete the upload's earlier parts.
"""

import os
import subprocess
import time

import pytest

from harness.cluster import Cluster
from harness.data import MiB, sha256

SMALL_FS = "48m"


@pytest.fixture
def small_fs_cluster(tmp_path):
    """Builds (not starts) a cluster whose node 0 has its data dir on a 48 MiB tmpfs."""
    made = []

    def make(**kw) -> Cluster:
        root = tmp_path / f"cluster{len(made)}"
        data = root / "node-0"
        data.mkdir(parents=True)
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={SMALL_FS}", "tmpfs", str(data)])
        if r.returncode != 0:
            pytest.skip("cannot mount a tmpfs here (needs root)")
        c = Cluster(root, **kw)
        made.append((c, data))
        return c

    yield make
    for c, data in made:
        c.close()
        subprocess.run(["umount", "-l", str(data)])


def shard_count(node) -> int:
    return sum(len(files) for _d, _s, files in os.walk(node.data_dir / "shards"))


def upload_until_full(c: Cluster, tmp_path, n: int, size: int, prefix: str = "obj") -> dict:
    """`aws s3 cp` of n objects of `size` bytes into bucket `fill` (made on first use);
    every one must be acknowledged."""
    if prefix == "obj":
        c.aws("s3", "mb", "s3://fill")
    acked = {}
    for i in range(n):
        src = tmp_path / f"{prefix}{i}"
        data = os.urandom(size)
        src.write_bytes(data)
        c.aws("s3", "cp", str(src), f"s3://fill/{prefix}{i}")
        acked[f"{prefix}{i}"] = sha256(data)
        src.unlink()
    return acked


def check_all(c: Cluster, acked: dict):
    s3 = c.client()
    for key, digest in acked.items():
        body = s3.get_object(Bucket="fill", Key=key)["Body"].read()
        assert sha256(body) == digest, f"{key} does not read back"


def check_with_each_node_down(c: Cluster, victims, acked: dict):
    for victim in victims:
        victim.kill()
        time.sleep(0.3)
        check_all(c, acked)
        victim.start()
        c.wait_gateway_sees_nodes(4)


def test_a_full_node_is_written_around_and_nothing_acknowledged_is_lost(small_fs_cluster, tmp_path):
    c = small_fs_cluster(gateway_args=["--reserve-bytes", "4MiB", "--reserve-percent", "0"]).start()
    small = c.nodes[0]
    # 24 × 12 MiB is ~96 MiB of shards per node at 3+1: twice what node 0 can hold.
    acked = upload_until_full(c, tmp_path, 24, 12 * MiB)
    check_all(c, acked)
    st = os.statvfs(small.data_dir)
    free = st.f_bavail * st.f_frsize
    assert free < 16 * MiB, f"node 0 never filled ({free} bytes free): the test proves nothing"
    # A full node is not chosen: more uploads leave its shard count alone.
    before = shard_count(small)
    more = upload_until_full(c, tmp_path, 3, 12 * MiB, prefix="more")
    assert shard_count(small) == before, "the full node still got shards"
    acked.update(more)
    # Every acknowledged object survives the loss of any one other node.
    check_with_each_node_down(c, c.nodes[1:], acked)


def test_a_node_lying_about_its_free_space_fills_mid_write_without_losing_data(small_fs_cluster, tmp_path):
    # Node 0 claims a terabyte free, so the gateway keeps choosing it; its shard writes
    # then fail part way with ENOSPC. Each such segment is written again around it, and
    # the client sees no error.
    c = small_fs_cluster(gateway_args=["--reserve-bytes", "4MiB", "--reserve-percent", "0"])
    c.start()
    liar = c.nodes[0]
    env = liar.env()
    env["CAIRN_NODE_FAULTS"] = f"report-free={1 << 40}"
    liar.env = lambda: env
    liar.stop()
    liar.start()
    c.wait_gateway_sees_nodes(4)
    acked = upload_until_full(c, tmp_path, 16, 12 * MiB)
    st = os.statvfs(liar.data_dir)
    assert st.f_bavail * st.f_frsize < 8 * MiB, "node 0 never filled: the test proves nothing"
    rewrites = c.gateway.metrics().get("cairn_segment_rewrites_total")
    assert rewrites, "no segment was written around the full node (cairn_segment_rewrites_total absent or 0)"
    check_all(c, acked)
    # Full redundancy: any one other node may go.
    check_with_each_node_down(c, c.nodes[1:], acked)


def test_a_full_cluster_answers_507_at_once_and_keeps_what_it_stored(cluster_factory):
    c = cluster_factory(
        node_args=["--capacity", "24MiB"],
        gateway_args=["--reserve-bytes", "1MiB", "--reserve-percent", "0"],
    )
    s3 = c.client(retries=None)
    s3.create_bucket(Bucket="fill")
    acked = {}
    refusal = None
    for i in range(40):
        data = os.urandom(4 * MiB)
        started = time.monotonic()
        try:
            s3.put_object(Bucket="fill", Key=f"obj{i}", Body=data)
        except Exception as e:  # noqa: BLE001 - the refusal is what the test waits for
            refusal = (e, time.monotonic() - started)
            break
        acked[f"obj{i}"] = sha256(data)
    assert refusal is not None, "40 × 4 MiB fit in 4 × 24 MiB: the test proves nothing"
    err, seconds = refusal
    resp = getattr(err, "response", {})
    assert resp.get("ResponseMetadata", {}).get("HTTPStatusCode") == 507, err
    assert resp.get("Error", {}).get("Code") == "InsufficientStorage", err
    assert seconds < 10, f"the full cluster took {seconds:.1f} s to say so"
    assert len(acked) >= 10
    for key, digest in acked.items():
        assert sha256(s3.get_object(Bucket="fill", Key=key)["Body"].read()) == digest, key
