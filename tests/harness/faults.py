"""Helpers for tests that break things mid-request: uploads sent by hand so a fault lands
at a known point, and exact checks of what survived (objects, listings, shard sets, temp
files on the nodes)."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

from harness import sigv4
from harness.cluster import Cluster
from harness.data import MiB, sha256
from harness.s3util import quoted_md5, s3_error


class InflightPut:
    """A PUT (or UploadPart) whose body is sent by hand: the head now, the body in pieces.

    UNSIGNED-PAYLOAD with a Content-Length, as SDKs send over TLS; the gateway cannot
    complete the request before the last byte, so holding bytes back pins the kill point.
    """

    def __init__(self, cluster: Cluster, bucket: str, key: str, data: bytes, query: str = ""):
        url = cluster.endpoint + sigv4.s3_path(bucket, key) + (f"?{query}" if query else "")
        self.data = data
        self.sent = 0
        self.sock = sigv4.raw_put_start(url, cluster.access_key, cluster.secret_key, len(data))

    def send(self, n: int):
        chunk = self.data[self.sent : self.sent + n]
        self.sock.sendall(chunk)
        self.sent += len(chunk)

    def finish(self, timeout: float = 30) -> sigv4.Response | None:
        """Sends the rest of the body (from a thread: the gateway may answer early) and reads
        the response; None if the connection broke without one."""

        def rest():
            try:
                self.sock.sendall(self.data[self.sent :])
            except OSError:
                pass  # the gateway answered early and closed: the response tells why

        t = threading.Thread(target=rest, daemon=True)
        t.start()
        try:
            return sigv4.read_raw_response(self.sock, timeout=timeout)
        except (OSError, ValueError, http_errors()):
            return None
        finally:
            t.join(timeout)
            self.sock.close()

    def outcome_after_gateway_kill(self) -> sigv4.Response | None:
        """The answer the client got once the gateway died under it, None when the
        connection broke without one. Never a 2xx (checked here)."""
        try:
            r = sigv4.read_raw_response(self.sock, timeout=10)
        except (OSError, ValueError, http_errors()):
            return None
        finally:
            self.sock.close()
        assert not 200 <= r.status < 300, f"an interrupted upload was acknowledged: {r.status} {r.body[:300]!r}"
        return r


def http_errors():
    import http.client

    return http.client.HTTPException


def tmp_files(node) -> list[Path]:
    d = node.data_dir / "tmp"
    try:
        return [p for p in d.iterdir() if p.is_file() and p.name != "node_id"]
    except FileNotFoundError:
        return []


def _has_body_data(path: Path) -> bool:
    """True once a temp shard file holds block data: the file is preallocated (zeros), the
    header is < 512 bytes, and random data is never 4 KiB of zeros."""
    try:
        with open(path, "rb") as f:
            f.seek(512)
            return any(f.read(4096))
    except OSError:
        return False


def wait_nodes_receiving(nodes, per_node: int = 1, timeout: float = 20):
    """Waits until each node writes at least `per_node` temp shard files holding body data.

    Nodes write shard data in 2 MiB O_DIRECT steps and the gateway sends whole stripes of
    k x 1 MiB blocks, so send at least 3 stripes' worth (7 MiB with EC 3+1) of each upload
    before waiting: less may sit in a node's buffer, never reaching the file."""
    deadline = time.monotonic() + timeout
    while True:
        counts = {n.name: sum(1 for p in tmp_files(n) if _has_body_data(p)) for n in nodes}
        if all(c >= per_node for c in counts.values()):
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"nodes not receiving shard data after {timeout}s: {counts}")
        time.sleep(0.01)


def wait_no_tmp(nodes, timeout: float = 10):
    """A shard write cut off anywhere leaves no temp file behind (nor a visible shard)."""
    deadline = time.monotonic() + timeout
    while True:
        left = {n.name: [p.name for p in tmp_files(n)] for n in nodes}
        if not any(left.values()):
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"temp shard files left behind: {left}")
        time.sleep(0.05)


def put_all(s3, bucket: str, objs: dict[str, bytes]):
    for key, data in objs.items():
        r = s3.put_object(Bucket=bucket, Key=key, Body=data)
        assert r["ETag"] == quoted_md5(data)


def check_exact(s3, bucket: str, objs: dict[str, bytes], why: str):
    """Every object reads back by sha256, and the listing holds exactly these keys and sizes."""
    for key, data in objs.items():
        g = s3.get_object(Bucket=bucket, Key=key)
        body = g["Body"].read()
        assert (len(body), sha256(body)) == (len(data), sha256(data)), f"{key}: wrong bytes {why}"
    listed = {}
    token = None
    while True:
        kw = {"Bucket": bucket, **({"ContinuationToken": token} if token else {})}
        page = s3.list_objects_v2(**kw)
        listed.update({o["Key"]: o["Size"] for o in page.get("Contents", [])})
        if not page["IsTruncated"]:
            break
        token = page["NextContinuationToken"]
    assert listed == {k: len(v) for k, v in objs.items()}, f"listing {why}"


def assert_absent(s3, bucket: str, key: str):
    with s3_error("404", 404):
        s3.head_object(Bucket=bucket, Key=key)
    with s3_error("NoSuchKey", 404):
        s3.get_object(Bucket=bucket, Key=key)


def committed_shards(c: Cluster, bucket: str, key: str, size: int, timeout: float = 10):
    """The one complete shard set of bucket/key on disk (k+m files of one segment, distinct
    nodes, every block passing its crc32c). Shards of failed attempts (another segment
    number of the same version, or another version) may remain as orphans, but they never
    form a complete set: nothing was acknowledged with them. They are deleted in the
    background, hence the wait."""
    deadline = time.monotonic() + timeout
    while True:
        by_id: dict[tuple[str, int], list] = {}
        for s in c.shard_files(bucket=bucket, key=key):
            by_id.setdefault((s.object_id, s.segment), []).append(s)
        complete = [g for g in by_id.values() if len(g) == g[0].k + g[0].m]
        if len(complete) == 1 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert len(complete) == 1, {oid: [(s.node, s.shard_index) for s in g] for oid, g in by_id.items()}
    shards = complete[0]
    k, m = shards[0].k, shards[0].m
    assert {(s.k, s.m) for s in shards} == {(k, m)}
    assert sorted(s.shard_index for s in shards) == list(range(k + m))
    assert len({s.node for s in shards}) == k + m, "two shards of one object on the same node"
    for s in shards:
        assert s.segment_len == size
        assert s.size == s.expected_file_len
        for b in range(s.stripes):
            s.read_block(b)  # verifies the crc
    return k, m, shards


def upload_reaching(c: Cluster, victim, bucket: str = "bkt", key: str = "k"):
    """A new bucket holding one acknowledged object ("before"), and a 16 MiB PUT of `key`
    sent part way: far enough that `victim` is writing its shard. Returns the client, the
    acknowledged objects and the PUT in flight."""
    s3 = c.client()
    s3.create_bucket(Bucket=bucket)
    acked = {"before": os.urandom(3 * MiB + 1)}
    put_all(s3, bucket, acked)
    put = InflightPut(c, bucket, key, os.urandom(16 * MiB))
    put.send(7 * MiB)
    wait_nodes_receiving([victim])
    return s3, acked, put


def retry_lands_around(c: Cluster, put: InflightPut, victim, bucket: str = "bkt", key: str = "k"):
    """The client's retry of a PUT refused because `victim` failed: it succeeds on the
    other nodes, with fewer data shards and the same parity. Returns the shard set."""
    retry = c.client(retries=None)
    assert retry.put_object(Bucket=bucket, Key=key, Body=put.data)["ETag"] == quoted_md5(put.data)
    k, m, shards = committed_shards(c, bucket, key, len(put.data))
    assert (k, m) == (c.k - 1, c.m), f"written as {k}+{m} with one node failed"
    assert victim.index not in {s.node for s in shards}
    return shards
