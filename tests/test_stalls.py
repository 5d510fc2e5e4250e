"""Peers that go silent without closing their connection: a storage node frozen mid-upload
or mid-download (SIGSTOP: its kernel still holds the connection open, as for a node whose
disk hangs; a powered-off Pi is the same, minus the ACKs), and an S3 client that stops
sending half way. Nothing may wait on them forever.

The cluster runs with short timeouts (gateway `--node-timeout 2s --client-timeout 2s`,
nodes `--idle-timeout 3s`). Each test checks what the user sees (a retryable 503 the
client's retry turns into success, a rebuilt read, a 400 RequestTimeout) and that nothing
is left behind: no visible partial object, no temp shard on any node once it runs again.
"""

from __future__ import annotations

import os
import signal
import time

import pytest

from harness import sigv4
from harness.cluster import gateway_metric as metric
from harness.data import MiB, sha256
from harness.faults import (
    InflightPut,
    assert_absent,
    check_exact,
    committed_shards,
    put_all,
    retry_lands_around,
    upload_reaching,
    wait_no_tmp,
    wait_nodes_receiving,
)

# Bounds on how long a stalled request may take to end: the timeouts are 2-3 s, so these
# only fail when the stall is never detected (a hang), not on a slow machine.
ANSWER_WITHIN = 30


@pytest.fixture
def stall_cluster(cluster_factory):
    c = cluster_factory(
        gateway_args=["--heartbeat-ms", "200", "--node-timeout", "2s", "--client-timeout", "2s"],
        node_args=["--idle-timeout", "3s"],
    )
    yield c
    for n in c.nodes:  # never leave a stopped process behind
        if n.alive:
            os.kill(n.pid, signal.SIGCONT)


def freeze(node):
    os.kill(node.pid, signal.SIGSTOP)


def thaw(node):
    os.kill(node.pid, signal.SIGCONT)


def test_node_frozen_mid_upload(stall_cluster):
    c = stall_cluster
    victim = c.nodes[1]
    s3, acked, put = upload_reaching(c, victim)
    freeze(victim)
    started = time.monotonic()
    r = put.finish(timeout=ANSWER_WITHIN)
    waited = time.monotonic() - started
    print(f"node frozen mid-upload: gateway answered {r and (r.status, r.error_code)} after {waited:.1f}s")
    assert r is not None, "the upload hung on the frozen node"
    assert r.status == 503 and r.error_code == "ServiceUnavailable", (r.status, r.body[:300])
    assert_absent(s3, "bkt", "k")

    # The client's retry lands on the three live nodes, with the same parity.
    retry_lands_around(c, put, victim)
    acked["k"] = put.data
    check_exact(s3, "bkt", acked, "with the node frozen")

    # Thawed, the node drops the upload it was left with (its own idle timeout), rejoins,
    # and everything still reads back.
    thaw(victim)
    wait_no_tmp(c.nodes, timeout=15)
    assert c.wait_gateway_sees_nodes(c.n_nodes)
    check_exact(s3, "bkt", acked, "after the node thawed")


def test_node_frozen_mid_download(stall_cluster):
    c = stall_cluster
    s3 = c.client()
    s3.create_bucket(Bucket="bkt")
    data = os.urandom(96 * MiB + 11)
    s3.put_object(Bucket="bkt", Key="big", Body=data)
    _, _, shards = committed_shards(c, "bkt", "big", len(data))
    victim = c.nodes[next(s.node for s in shards if s.shard_index == 0)]
    before = metric(c, "cairn_degraded_reads_total")

    body = s3.get_object(Bucket="bkt", Key="big")["Body"]
    head = body.read(2 * MiB)
    freeze(victim)  # a data shard's node stops sending while the GET streams
    started = time.monotonic()
    rest = body.read()
    print(f"GET finished {time.monotonic() - started:.1f}s after the freeze")
    got = head + rest
    assert len(got) == len(data) and sha256(got) == sha256(data), "wrong bytes after a node froze mid-read"
    assert metric(c, "cairn_degraded_reads_total") > before, "the frozen node was not read around"
    thaw(victim)
    assert c.wait_gateway_sees_nodes(c.n_nodes)
    assert sha256(s3.get_object(Bucket="bkt", Key="big")["Body"].read()) == sha256(data)


def test_client_gone_silent_mid_upload(stall_cluster):
    c = stall_cluster
    s3 = c.client()
    s3.create_bucket(Bucket="bkt")
    acked = {"old": os.urandom(MiB)}
    put_all(s3, "bkt", acked)

    # Half of an overwrite of "old", then nothing (the connection stays open).
    put = InflightPut(c, "bkt", "old", os.urandom(16 * MiB))
    put.send(7 * MiB)
    wait_nodes_receiving(c.nodes)
    started = time.monotonic()
    r = sigv4.read_raw_response(put.sock, timeout=ANSWER_WITHIN)
    put.sock.close()
    print(f"silent client: {r.status} {r.error_code} after {time.monotonic() - started:.1f}s")
    assert (r.status, r.error_code) == (400, "RequestTimeout"), r.body[:300]
    # The old version stands, and the nodes dropped the half-sent shards.
    check_exact(s3, "bkt", acked, "after the stalled overwrite")
    wait_no_tmp(c.nodes)
    assert metric(c, "cairn_s3_requests_total", operation="PutObject", status="400") >= 1
