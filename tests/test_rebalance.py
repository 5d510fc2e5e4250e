"""Placement by capacity, and rebalance after a node joins.

Shards go to nodes in proportion to their capacity (weighted rendezvous hashing). A node
that joins (here: one that was away while everything was written) receives the shards
placement now gives it, copied from the nodes that leave those segments; the old copies
are deleted once the records point to the new ones. Nothing is unreadable meanwhile, and
afterwards any one node may die.
"""

import os
import time

import json

from harness.data import MiB, sha256
from harness.wait import wait_for


def shard_count(node) -> int:
    return sum(len([f for f in files if f != "manifest"]) for _d, _s, files in os.walk(node.data_dir / "shards"))


def big_capacity_seen(c, big) -> bool:
    status, body = c.gateway.admin_get("/_cairn/nodes")
    if status != 200:
        return False
    return any(n["addr"] == big.addr and n.get("capacity_bytes") == 32 << 30 for n in json.loads(body))


def test_shards_follow_capacity(cluster_factory):
    # One big node among four small ones, 2+1: it should be in nearly every segment.
    c = cluster_factory(
        nodes=5,
        ec="2+1",
        gateway_args=["--reserve-bytes", "1MiB", "--reserve-percent", "0", "--rebalance-rate", "0"],
        node_args=["--capacity", "2GiB"],
    )
    big = c.nodes[0]
    argv = big.argv()
    big.argv = lambda: [a if a != "2GiB" else "32GiB" for a in argv]
    big.stop()
    big.start()
    c.wait_gateway_sees_nodes(5)
    wait_for(lambda: big_capacity_seen(c, big), timeout=30, what="the gateway knows the big node's capacity")
    s3 = c.client()
    s3.create_bucket(Bucket="weights")
    for i in range(60):
        s3.put_object(Bucket="weights", Key=f"o{i}", Body=os.urandom(1000 + i))
    counts = [shard_count(n) for n in c.nodes]
    # Weights 32:2:2:2:2, three of five per segment: the big node wins a place in
    # almost every segment, each small one in about half.
    assert counts[0] >= 55, counts
    assert all(n < counts[0] * 0.8 for n in counts[1:]), counts


def cluster_with_a_late_node(cluster_factory):
    """Four nodes, 2+1, rebalancing fast; the fourth is away until the test starts it."""
    c = cluster_factory(nodes=4, ec="2+1", gateway_args=["--rebalance-rate", "64MiB"])
    late = c.nodes[3]
    late.kill()
    wait_for(lambda: c.gateway_node_count() == 3, timeout=30, what="gateway sees 3 nodes up")
    return c, late


def survives_each_node_loss(c, read_all):
    """`read_all` (which asserts what it reads) passes with each node down in turn."""
    for victim in c.nodes:
        victim.kill()
        time.sleep(0.3)
        read_all(f"with {victim.name} down")
        victim.start()
        c.wait_gateway_sees_nodes(4)


def test_a_joining_node_gets_its_share_and_nothing_is_lost(cluster_factory):
    c, late = cluster_with_a_late_node(cluster_factory)
    s3 = c.client()
    s3.create_bucket(Bucket="rebal")
    data = {}
    for i in range(12):
        body = os.urandom(3 * MiB + i)
        s3.put_object(Bucket="rebal", Key=f"o{i}", Body=body)
        data[f"o{i}"] = sha256(body)
    assert shard_count(late) == 0
    segments = 12
    late.start()
    c.wait_gateway_sees_nodes(4)
    # Each segment wants the late node with probability 3/4: some must move to it, and
    # the copies they leave behind are deleted (3 shards per segment in all).
    wait_for(
        lambda: shard_count(late) >= 4 and sum(shard_count(n) for n in c.nodes) == 3 * segments,
        timeout=90,
        what="shards moved to the joining node and old copies deleted",
    )
    assert c.gateway.metrics().value("cairn_rebalance_shards_total") >= 4

    def read_all(when):
        for key, digest in data.items():
            assert sha256(s3.get_object(Bucket="rebal", Key=key)["Body"].read()) == digest, f"{key} {when}"

    read_all("with every node up")
    survives_each_node_loss(c, read_all)


def test_parts_of_an_upload_in_progress_move_too(cluster_factory):
    # Parts written while a node was away follow placement once it is back, before the
    # upload completes; the completed object then reads back and survives any one loss.
    c, late = cluster_with_a_late_node(cluster_factory)
    s3 = c.client()
    s3.create_bucket(Bucket="rebalmp")
    up = s3.create_multipart_upload(Bucket="rebalmp", Key="mp")["UploadId"]
    parts, bodies = [], []
    for n in range(1, 9):
        body = os.urandom(5 * MiB + n)
        bodies.append(body)
        etag = s3.upload_part(Bucket="rebalmp", Key="mp", UploadId=up, PartNumber=n, Body=body)["ETag"]
        parts.append({"PartNumber": n, "ETag": etag})
    assert shard_count(late) == 0
    late.start()
    c.wait_gateway_sees_nodes(4)
    # 8 parts of 3 shards each; each part wants the late node with probability 3/4.
    wait_for(
        lambda: shard_count(late) >= 2 and sum(shard_count(n) for n in c.nodes) == 3 * len(parts),
        timeout=90,
        what="shards of the open upload's parts moved to the joining node, old copies deleted",
    )
    s3.complete_multipart_upload(Bucket="rebalmp", Key="mp", UploadId=up, MultipartUpload={"Parts": parts})
    want = sha256(b"".join(bodies))

    def read_all(when):
        assert sha256(s3.get_object(Bucket="rebalmp", Key="mp")["Body"].read()) == want, when

    read_all("with every node up")
    survives_each_node_loss(c, read_all)
