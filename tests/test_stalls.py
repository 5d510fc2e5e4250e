"""Peers that go silent without closing their connection: a storage node frozen mid-upload
or mid-download (SIGSTOP: its kernel still holds the connection open, as for a node whose
disk hangs; a powered-off Pi is the same, minus the ACKs), and an S3 client that stops
sending half way, or stops reading a download. Nothing may wait on them forever.

The cluster runs with short timeouts (gateway `--node-timeout 2s --client-timeout 2s`,
nodes `--idle-timeout 3s`). Each test checks what the user sees (a retryable 503 the
client's retry turns into success, a rebuilt read, a 400 RequestTimeout) and that nothing
is left behind: no visible partial object, no temp shard on any node once it runs again.
"""

from __future__ import annotations

import os
import signal
import socket
import time
from urllib.parse import urlsplit

import pytest

from harness import sigv4
from harness.data import MiB, sha256
from harness.s3util import quoted_md5
from harness.faults import (
    InflightPut,
    check_exact,
    committed_shards,
    put_all,
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
    # The other shards kept streaming; once the frozen node's transfer timed out the
    # segment was written again around it, so the client sees no error: the object is
    # stored on the three live nodes, with the same parity.
    assert r.status == 200, (r.status, r.body[:300])
    assert r.headers.get("etag") == quoted_md5(put.data)
    k, m, shards = committed_shards(c, "bkt", "k", len(put.data))
    assert (k, m) == (c.k - 1, c.m), f"written as {k}+{m} with one node frozen"
    assert victim.index not in {sh.node for sh in shards}
    acked["k"] = put.data
    check_exact(s3, "bkt", acked, "with the node frozen")

    # Thawed, the node drops the upload it was left with (its own idle timeout), rejoins,
    # and everything still reads back.
    thaw(victim)
    wait_no_tmp(c.nodes, timeout=15)
    c.wait_gateway_sees_nodes(c.n_nodes)
    check_exact(s3, "bkt", acked, "after the node thawed")


def test_node_frozen_mid_download(stall_cluster):
    c = stall_cluster
    s3 = c.client()
    s3.create_bucket(Bucket="bkt")
    data = os.urandom(96 * MiB + 11)
    s3.put_object(Bucket="bkt", Key="big", Body=data)
    _, _, shards = committed_shards(c, "bkt", "big", len(data))
    victim = c.nodes[next(s.node for s in shards if s.shard_index == 0)]
    before = c.gateway.metrics().value("cairn_degraded_reads_total")

    body = s3.get_object(Bucket="bkt", Key="big")["Body"]
    head = body.read(2 * MiB)
    freeze(victim)  # a data shard's node stops sending while the GET streams
    started = time.monotonic()
    rest = body.read()
    print(f"GET finished {time.monotonic() - started:.1f}s after the freeze")
    got = head + rest
    assert len(got) == len(data) and sha256(got) == sha256(data), "wrong bytes after a node froze mid-read"
    after = c.gateway.metrics().value("cairn_degraded_reads_total")
    assert after > before, f"the frozen node was not read around (cairn_degraded_reads_total stayed at {after})"
    thaw(victim)
    c.wait_gateway_sees_nodes(c.n_nodes)
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
    assert c.gateway.metrics().value("cairn_s3_requests_total", operation="PutObject", status="400") >= 1


def test_client_stops_reading_mid_download(stall_cluster):
    c = stall_cluster
    s3 = c.client()
    s3.create_bucket(Bucket="bkt")
    data = os.urandom(64 * MiB)
    s3.put_object(Bucket="bkt", Key="big", Body=data)
    assert c.shard_files(bucket="bkt", key="big")

    # A GET by hand on a socket with a small receive buffer: read the head and 1 MiB,
    # then stop reading with the connection open.
    url = c.endpoint + sigv4.s3_path("bkt", "big")
    parts = urlsplit(url)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
    sock.settimeout(ANSWER_WITHIN)
    sock.connect((parts.hostname, parts.port))
    hdrs = sigv4.sign_headers("GET", url, c.access_key, c.secret_key)
    head = f"GET {parts.path} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
    head += "".join(f"{k}: {v}\r\n" for k, v in hdrs.items()) + "\r\n"
    sock.sendall(head.encode())
    got = b""
    while b"\r\n\r\n" not in got or len(got) < MiB:
        chunk = sock.recv(65536)
        assert chunk, "connection closed before the body"
        got += chunk
    assert got.startswith(b"HTTP/1.1 200 "), got[:200]
    time.sleep(8)  # silent for four client timeouts

    # The gateway gave up on us: the rest of the body never comes, the connection ends.
    started = time.monotonic()
    try:
        while True:
            chunk = sock.recv(1 << 20)
            if not chunk:
                break
            got += chunk
    except ConnectionResetError:
        pass
    print(f"stalled download: {len(got)} of {len(data)} body bytes, ended {time.monotonic() - started:.1f}s after reading again")
    assert len(got) < len(data), "the whole object came: the stalled connection was kept"

    # And it let go of the object (with our socket still open): a delete frees its shards
    # at once, where a read still in progress would hold them.
    s3.delete_object(Bucket="bkt", Key="big")
    deadline = time.monotonic() + 15
    while c.shard_files(bucket="bkt", key="big"):
        assert time.monotonic() < deadline, "the deleted object's shards are still held"
        time.sleep(0.1)
    sock.close()
