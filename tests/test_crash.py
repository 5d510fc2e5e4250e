"""kill -9 in the middle of things (issue 4): the gateway mid-PUT, mid-multipart and during
CompleteMultipartUpload; a node mid-upload and mid-download; the gateway and a node together.

Kill points are made deterministic by sending request bodies by hand (`InflightPut`): the
body is held back part-way, the test waits until every storage node is writing a temp shard
file with body data in it (so the bytes went through the gateway to the nodes), and only
then sends SIGKILL. After restarts every test checks precisely: each acknowledged object
reads back by sha256, the interrupted key is absent (or still holds its old content), the
listing holds exactly the acknowledged keys with their sizes, the client's retry succeeds,
and no temp shard is left behind on the nodes.
"""

from __future__ import annotations

import os
import socket
import time

import pytest
from botocore.exceptions import ClientError

from harness import sigv4
from harness.cluster import Cluster
from harness.data import MiB, sha256
from harness.faults import (
    InflightPut,
    assert_absent,
    check_exact,
    committed_shards,
    put_all,
    retry_lands_around,
    tmp_files,
    upload_reaching,
    wait_no_tmp,
    wait_nodes_receiving,
)
from harness.s3util import quoted_md5, s3_error
from harness.wait import wait_for

# Statuses an S3 client retries by itself (botocore's standard mode: 500, 502, 503, 504).
RETRYABLE = (500, 502, 503, 504)


@pytest.fixture
def fresh_cluster(cluster_factory):
    """4 nodes, EC 3+1, probed every 200 ms so restarts are noticed quickly."""
    return cluster_factory(gateway_args=["--heartbeat-ms", "200"])


# ---------------------------------------------------------------------------------------
# helpers


def restart_gateway(c: Cluster, nodes_up: int | None = None):
    c.gateway.start()
    c.wait_gateway_sees_nodes(c.n_nodes if nodes_up is None else nodes_up)
    return c.client()


def assert_cut_off(put: InflightPut, refusals: tuple[int, ...] = ()):
    """The gateway was killed while `put`'s body was still held back, so it could not have
    finished the request: the client gets no answer (the connection breaks), or one of
    `refusals` when a failure before the kill may have been answered; never a 2xx."""
    r = put.outcome_after_gateway_kill()
    assert r is None or r.status in refusals, (
        f"the gateway answered {r.status} {r.error_code} to an upload it was killed in the middle of: "
        f"{r.body[:300]!r}"
    )


# ---------------------------------------------------------------------------------------
# the gateway


def test_gateway_killed_mid_put(fresh_cluster):
    c = fresh_cluster
    s3 = c.client()
    s3.create_bucket(Bucket="bkt")
    acked = {f"obj/{n}": os.urandom(n) for n in (0, 1, 1000, 3 * MiB + 17, 5 * MiB)}
    put_all(s3, "bkt", acked)
    old = os.urandom(4 * MiB + 1)
    s3.put_object(Bucket="bkt", Key="over", Body=old)

    new = InflightPut(c, "bkt", "new", os.urandom(16 * MiB))
    over = InflightPut(c, "bkt", "over", os.urandom(12 * MiB))
    new.send(7 * MiB)
    over.send(7 * MiB + 5)
    wait_nodes_receiving(c.nodes, per_node=2)  # both uploads are streaming to every node
    # acknowledged a moment before the kill: the catalog flush must have made it durable
    last = os.urandom(100_000)
    s3.put_object(Bucket="bkt", Key="last", Body=last)
    acked["last"] = last
    c.gateway.kill()
    assert_cut_off(new)
    assert_cut_off(over)
    wait_no_tmp(c.nodes)  # the nodes dropped the half-written shards

    s3 = restart_gateway(c)
    assert_absent(s3, "bkt", "new")
    g = s3.get_object(Bucket="bkt", Key="over")
    assert g["ETag"] == quoted_md5(old) and g["Body"].read() == old, "interrupted overwrite changed the object"
    check_exact(s3, "bkt", {**acked, "over": old}, "after gateway SIGKILL mid-PUT")

    # the client's retry succeeds
    retry = {"new": new.data, "over": over.data}
    put_all(s3, "bkt", retry)
    check_exact(s3, "bkt", {**acked, **retry}, "after the retries")
    for key, data in retry.items():
        k, m, _ = committed_shards(c, "bkt", key, len(data))
        assert (k, m) == (c.k, c.m)


def _list_upload_ids(s3, bucket):
    return [u["UploadId"] for u in s3.list_multipart_uploads(Bucket=bucket).get("Uploads", [])]


def _parts(s3, bucket, key, upload_id):
    return [(p["PartNumber"], p["ETag"], p["Size"]) for p in s3.list_parts(Bucket=bucket, Key=key, UploadId=upload_id).get("Parts", [])]


def test_gateway_killed_between_and_mid_multipart_parts(fresh_cluster):
    c = fresh_cluster
    s3 = c.client()
    s3.create_bucket(Bucket="bkt")
    acked = {"keep": os.urandom(2 * MiB + 3)}
    put_all(s3, "bkt", acked)

    # upload A: part 1 acknowledged, part 2 in flight when the gateway dies
    a = s3.create_multipart_upload(Bucket="bkt", Key="mp")["UploadId"]
    p1 = os.urandom(5 * MiB + 3)
    e1 = s3.upload_part(Bucket="bkt", Key="mp", UploadId=a, PartNumber=1, Body=p1)["ETag"]
    # upload B: killed between parts (nothing in flight for it), aborted after the restart
    b = s3.create_multipart_upload(Bucket="bkt", Key="gone")["UploadId"]
    s3.upload_part(Bucket="bkt", Key="gone", UploadId=b, PartNumber=1, Body=os.urandom(MiB))

    p2 = InflightPut(c, "bkt", "mp", os.urandom(12 * MiB), query=f"partNumber=2&uploadId={a}")
    p2.send(7 * MiB)
    wait_nodes_receiving(c.nodes)
    c.gateway.kill()
    assert_cut_off(p2)
    wait_no_tmp(c.nodes)

    s3 = restart_gateway(c)
    assert sorted(_list_upload_ids(s3, "bkt")) == sorted([a, b])
    assert _parts(s3, "bkt", "mp", a) == [(1, e1, len(p1))], "parts after the crash"
    assert_absent(s3, "bkt", "mp")
    assert_absent(s3, "bkt", "gone")
    check_exact(s3, "bkt", acked, "after gateway SIGKILL mid-part")

    # B can be aborted; A continues: the interrupted part again, one more, Complete
    s3.abort_multipart_upload(Bucket="bkt", Key="gone", UploadId=b)
    with s3_error("NoSuchUpload", 404):
        s3.list_parts(Bucket="bkt", Key="gone", UploadId=b)
    e2 = s3.upload_part(Bucket="bkt", Key="mp", UploadId=a, PartNumber=2, Body=p2.data)["ETag"]
    p3 = os.urandom(MiB + 1)
    e3 = s3.upload_part(Bucket="bkt", Key="mp", UploadId=a, PartNumber=3, Body=p3)["ETag"]
    assert_absent(s3, "bkt", "mp")  # nothing visible before Complete
    parts = [{"PartNumber": n, "ETag": e} for n, e in ((1, e1), (2, e2), (3, e3))]
    s3.complete_multipart_upload(Bucket="bkt", Key="mp", UploadId=a, MultipartUpload={"Parts": parts})
    assert _list_upload_ids(s3, "bkt") == []
    check_exact(s3, "bkt", {**acked, "mp": p1 + p2.data + p3}, "after completing the continued upload")


def _complete_body(parts) -> bytes:
    xml = "<CompleteMultipartUpload>"
    for n, etag in parts:
        xml += f"<Part><PartNumber>{n}</PartNumber><ETag>{etag}</ETag></Part>"
    return (xml + "</CompleteMultipartUpload>").encode()


def _raw_complete_start(c: Cluster, key: str, upload_id: str, body: bytes) -> socket.socket:
    url = c.endpoint + sigv4.s3_path("bkt", key) + f"?uploadId={upload_id}"
    hdrs = {"content-length": str(len(body)), "content-type": "application/xml"}
    signed = sigv4.sign_headers("POST", url, c.access_key, c.secret_key, headers=hdrs)
    sock = socket.create_connection(("127.0.0.1", c.gateway.port), timeout=30)
    head = f"POST {sigv4.s3_path('bkt', key)}?uploadId={upload_id} HTTP/1.1\r\nHost: {c.gateway.addr}\r\n"
    head += "".join(f"{k}: {v}\r\n" for k, v in signed.items()) + "\r\n"
    sock.sendall(head.encode())
    return sock


def test_gateway_killed_during_complete_multipart_upload(fresh_cluster):
    c = fresh_cluster
    s3 = c.client()
    s3.create_bucket(Bucket="bkt")
    acked: dict[str, bytes] = {}
    outcomes = {}  # by delay
    # delay HALF_BODY: the Complete body is cut in half (the gateway is waiting for the rest);
    # delays >= 0: the whole request is sent and the gateway dies that many seconds later,
    # racing the commit; whichever way it lands, the state must be one of the two clean ones.
    HALF_BODY = -1
    for i, delay in enumerate((HALF_BODY, 0, 0.002, 0.01, 0.05)):
        key = f"mp{i}"
        up = s3.create_multipart_upload(Bucket="bkt", Key=key)["UploadId"]
        datas = [os.urandom(5 * MiB + i), os.urandom(MiB + 7)]
        etags = [
            s3.upload_part(Bucket="bkt", Key=key, UploadId=up, PartNumber=n + 1, Body=d)["ETag"]
            for n, d in enumerate(datas)
        ]
        body = _complete_body(list(zip((1, 2), etags)))
        sock = _raw_complete_start(c, key, up, body)
        if delay == HALF_BODY:
            sock.sendall(body[: len(body) // 2])
            time.sleep(0.2)
        else:
            sock.sendall(body)
            time.sleep(delay)
        c.gateway.kill()
        sock.close()
        s3 = restart_gateway(c)

        listed_uploads = _list_upload_ids(s3, "bkt")
        try:
            h = s3.head_object(Bucket="bkt", Key=key)
        except ClientError as e:
            assert e.response["ResponseMetadata"]["HTTPStatusCode"] == 404, e.response
            h = None
        if h is None:
            # not committed: the upload and its parts are intact, no object is visible
            outcomes[delay] = "not committed"
            assert up in listed_uploads
            assert _parts(s3, "bkt", key, up) == [(1, etags[0], len(datas[0])), (2, etags[1], len(datas[1]))]
            check_exact(s3, "bkt", acked, f"(delay {delay}) before the retry")
        else:
            # committed: whole, and the upload is gone
            outcomes[delay] = "committed"
            assert up not in listed_uploads, "completed upload still listed"
            assert h["ContentLength"] == sum(map(len, datas))
            assert sha256(s3.get_object(Bucket="bkt", Key=key)["Body"].read()) == sha256(b"".join(datas))
        # the client's retry of Complete succeeds either way, with the same answer
        r = s3.complete_multipart_upload(
            Bucket="bkt", Key=key, UploadId=up,
            MultipartUpload={"Parts": [{"PartNumber": n, "ETag": e} for n, e in zip((1, 2), etags)]},
        )
        assert r["ETag"].strip('"').endswith("-2")
        acked[key] = b"".join(datas)
        assert up not in _list_upload_ids(s3, "bkt")
        check_exact(s3, "bkt", acked, f"after Complete retried (delay {delay})")
    # a Complete whose body never arrived whole cannot have committed
    assert outcomes[HALF_BODY] == "not committed", f"outcome by kill delay: {outcomes}"


# ---------------------------------------------------------------------------------------
# storage nodes


def test_node_killed_mid_upload(fresh_cluster):
    c = fresh_cluster
    victim = c.nodes[1]
    s3, acked, put = upload_reaching(c, victim)
    victim.kill()
    r = put.finish()
    assert r is not None, "the gateway dropped the connection instead of answering"
    if 200 <= r.status < 300:
        # acknowledged: only with full redundancy, on live nodes
        k, m, shards = committed_shards(c, "bkt", "k", len(put.data))
        assert m == c.m, f"acknowledged ({r.status}) with {m} parity shards, not {c.m}"
        assert victim.index not in {s.node for s in shards}, f"acknowledged ({r.status}) with a shard on the killed node"
        acked["k"] = put.data
    else:
        assert r.status in RETRYABLE, (r.status, r.body[:300])
        assert r.error_code in ("ServiceUnavailable", "SlowDown", "InternalError"), r.body[:300]
        assert_absent(s3, "bkt", "k")
        shards = retry_lands_around(c, put, victim)
        acked["k"] = put.data
    check_exact(s3, "bkt", acked, "with the node down")
    wait_no_tmp([n for n in c.nodes if n is not victim])
    victim.start()
    c.wait_gateway_sees_nodes(c.n_nodes)
    assert tmp_files(victim) == [], "the restarted node kept its half-written shard"
    check_exact(s3, "bkt", acked, "after the node came back")
    # the surviving object still survives the loss of any other single node
    for s in shards:
        other = c.nodes[s.node]
        other.kill()
        g = s3.get_object(Bucket="bkt", Key="k")["Body"].read()
        assert sha256(g) == sha256(put.data), f"lost with {other.name} down"
        other.start()
        c.wait_gateway_sees_nodes(c.n_nodes)


def test_node_killed_mid_download(fresh_cluster):
    c = fresh_cluster
    s3 = c.client()
    s3.create_bucket(Bucket="bkt")
    data = os.urandom(96 * MiB + 11)
    s3.put_object(Bucket="bkt", Key="big", Body=data)
    _, _, shards = committed_shards(c, "bkt", "big", len(data))
    victim = c.nodes[next(s.node for s in shards if s.shard_index == 0)]
    before = c.gateway.metrics().value("cairn_degraded_reads_total")

    g = s3.get_object(Bucket="bkt", Key="big")
    body = g["Body"]
    head = body.read(2 * MiB)
    assert len(head) == 2 * MiB
    victim.kill()  # a data shard's node dies while the GET streams
    rest = body.read()
    got = head + rest
    assert len(got) == len(data) and sha256(got) == sha256(data), "GET returned wrong bytes after a node died mid-read"
    after = c.gateway.metrics().value("cairn_degraded_reads_total")
    assert after > before, f"the kill did not land mid-read: cairn_degraded_reads_total stayed at {after}"
    # and a fresh GET with the node still down
    assert sha256(s3.get_object(Bucket="bkt", Key="big")["Body"].read()) == sha256(data)


# ---------------------------------------------------------------------------------------
# both


def test_gateway_and_node_killed_together_mid_upload(fresh_cluster):
    c = fresh_cluster
    s3 = c.client()
    s3.create_bucket(Bucket="bkt")
    acked = {f"obj/{n}": os.urandom(n) for n in (1, 2 * MiB + 5, 7 * MiB)}
    put_all(s3, "bkt", acked)
    old = os.urandom(MiB)
    s3.put_object(Bucket="bkt", Key="over", Body=old)
    acked["over"] = old
    victim = c.nodes[2]

    new = InflightPut(c, "bkt", "new", os.urandom(16 * MiB))
    over = InflightPut(c, "bkt", "over", os.urandom(12 * MiB))
    new.send(7 * MiB)
    over.send(7 * MiB)
    wait_nodes_receiving(c.nodes, per_node=2)
    victim.kill()
    c.gateway.kill()
    # the node's failure may reach the gateway first: a retryable refusal is allowed
    assert_cut_off(new, RETRYABLE)
    assert_cut_off(over, RETRYABLE)

    # gateway back first, the node still down: acknowledged data reads back degraded
    s3 = restart_gateway(c, nodes_up=c.n_nodes - 1)
    assert_absent(s3, "bkt", "new")
    check_exact(s3, "bkt", acked, "gateway restarted, node still down")
    victim.start()
    c.wait_gateway_sees_nodes(c.n_nodes)
    wait_no_tmp(c.nodes)
    check_exact(s3, "bkt", acked, "both restarted")
    put_all(s3, "bkt", {"new": new.data, "over": over.data})
    acked.update(new=new.data, over=over.data)
    check_exact(s3, "bkt", acked, "after the retries")
    for key in ("new", "over"):
        k, m, _ = committed_shards(c, "bkt", key, len(acked[key]))
        assert (k, m) == (c.k, c.m)


# ---------------------------------------------------------------------------------------
# what a crash leaves behind


def test_orphans_of_a_gateway_crash_are_collected(cluster_factory):
    """The gateway dies (CAIRN_FAILPOINT) at the one point where a crash leaves durable data
    nobody refers to: every shard of a PUT / of a part is on disk, the catalog does not
    know it yet. After the restart nothing of it is visible, the retries succeed, and GC
    deletes exactly those shards."""
    c = cluster_factory(gateway_args=["--heartbeat-ms", "200", "--gc-grace", "2s"])
    s3 = c.client()
    s3.create_bucket(Bucket="bkt")
    acked = {"keep": os.urandom(3 * MiB + 5)}
    put_all(s3, "bkt", acked)
    up = s3.create_multipart_upload(Bucket="bkt", Key="mp")["UploadId"]
    p1 = os.urandom(5 * MiB + 1)
    e1 = s3.upload_part(Bucket="bkt", Key="mp", UploadId=up, PartNumber=1, Body=p1)["ETag"]
    live = {s.path for s in c.shard_files(bucket="bkt")}

    c.gateway.stop()
    c.extra_env["CAIRN_FAILPOINT"] = "segment-durable"
    new = os.urandom(4 * MiB + 3)
    p2 = os.urandom(5 * MiB + 7)
    for what in ("put", "part"):
        restart_gateway(c)  # and wait until it sees every node: a full-width write
        if what == "put":
            attempt = InflightPut(c, "bkt", "new", new)
        else:
            attempt = InflightPut(c, "bkt", "mp", p2, query=f"partNumber=2&uploadId={up}")
        r = attempt.finish()
        assert r is None or not 200 <= r.status < 300, f"{what} acknowledged across a crash"
        wait_for(lambda: not c.gateway.alive, timeout=30, every=0.05, what=f"the gateway to abort at the failpoint ({what})")
    del c.extra_env["CAIRN_FAILPOINT"]

    orphans = {s.path: s for s in c.shard_files(bucket="bkt") if s.path not in live}
    by_key = {}
    for s in orphans.values():
        by_key.setdefault(s.key, set()).add(s.shard_index)
    # both writes were complete on disk: k+m shards each, the leftovers a crash makes
    assert by_key == {"new": set(range(c.k + c.m)), "mp": set(range(c.k + c.m))}, by_key
    assert all((s.k, s.m) == (c.k, c.m) for s in orphans.values())
    wait_no_tmp(c.nodes)

    s3 = restart_gateway(c)
    assert_absent(s3, "bkt", "new")
    assert _parts(s3, "bkt", "mp", up) == [(1, e1, len(p1))], "a crashed part became visible"
    check_exact(s3, "bkt", acked, "after the crashes")
    wait_for(lambda: not any(p.exists() for p in orphans), what="the crash's orphans collected")
    # one unreferenced object directory per node for the PUT, k+m single shards for the part
    m = c.gateway.metrics()
    assert m.value("cairn_gc_objects_deleted_total") >= c.k + c.m
    assert m.value("cairn_gc_shards_deleted_total") >= c.k + c.m
    assert all(p.exists() for p in live), "GC deleted a live shard"

    # the clients' retries succeed
    put_all(s3, "bkt", {"new": new})
    e2 = s3.upload_part(Bucket="bkt", Key="mp", UploadId=up, PartNumber=2, Body=p2)["ETag"]
    parts = [{"PartNumber": 1, "ETag": e1}, {"PartNumber": 2, "ETag": e2}]
    s3.complete_multipart_upload(Bucket="bkt", Key="mp", UploadId=up, MultipartUpload={"Parts": parts})
    check_exact(s3, "bkt", {**acked, "new": new, "mp": p1 + p2}, "after the retries")
