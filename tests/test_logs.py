"""Logs (issue #6): JSON lines, one request id from the S3 response through the gateway's log
to the storage nodes' logs, and repeated errors rate-limited with a count of what was held back.

Every test starts its own cluster with `CAIRN_LOG_FORMAT=json` and reads the processes' log
files (stderr), as a log shipper would.
"""

from __future__ import annotations

import json
import math
import os
import re
import time
import urllib.error
import urllib.request

import pytest
from botocore.exceptions import ClientError

from harness.data import sha256
from harness.wait import wait_for

JSON_LOGS = {"CAIRN_LOG_FORMAT": "json", "CAIRN_LOG": "info"}


def records(server) -> list[dict]:
    """The JSON log lines of a node or the gateway (harness banners and the like skipped)."""
    out = []
    for line in server.log_path.read_text(errors="replace").splitlines():
        if line.startswith("{"):
            out.append(json.loads(line))  # a line that starts like JSON must be JSON
    return out


def rid(rec: dict) -> str | None:
    """The request id a log line belongs to: its span's, or its own field."""
    return (rec.get("span") or {}).get("request_id") or rec.get("fields", {}).get("request_id")


def message(rec: dict) -> str:
    return rec.get("fields", {}).get("message", "")


def request_id_of(resp: dict) -> str:
    meta = resp["ResponseMetadata"]
    header = meta["HTTPHeaders"].get("x-amz-request-id")
    assert header and meta["RequestId"] == header, meta
    assert re.fullmatch(r"[0-9A-F]{16}", header), header
    return header


def test_every_line_is_json_and_a_request_id_ties_gateway_and_node_logs(cluster_factory):
    c = cluster_factory(extra_env=JSON_LOGS)
    s3 = c.client()
    s3.create_bucket(Bucket="logs")
    data = os.urandom(300_000)

    put_id = request_id_of(s3.put_object(Bucket="logs", Key="ckpt", Body=data))
    got = s3.get_object(Bucket="logs", Key="ckpt")
    assert sha256(got["Body"].read()) == sha256(data)
    get_id = request_id_of(got)
    del_id = request_id_of(s3.delete_object(Bucket="logs", Key="ckpt"))
    assert len({put_id, get_id, del_id}) == 3

    # An error response names the same id in its header and its XML body.
    url = s3.generate_presigned_url("get_object", Params={"Bucket": "logs", "Key": "missing"})
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(url, timeout=10)
    assert e.value.code == 404
    err_id = e.value.headers["x-amz-request-id"]
    body = e.value.read().decode()
    assert re.fullmatch(r"[0-9A-F]{16}", err_id or "") and f"<RequestId>{err_id}</RequestId>" in body, body

    # The gateway logs each request once, in a span holding its id.
    def gateway_lines():
        by_id = {}
        for r in records(c.gateway):
            if message(r) == "request":
                by_id.setdefault(rid(r), []).append(r)
        return by_id if {put_id, get_id, del_id} <= by_id.keys() else None

    by_id = wait_for(gateway_lines, timeout=10, what="gateway request lines")
    for want_id, op, status in [(put_id, "PutObject", "200"), (get_id, "GetObject", "200"), (del_id, "DeleteObject", "204")]:
        [line] = by_id[want_id]
        assert line["fields"]["operation"] == op and line["fields"]["status"] == status, line
        assert line["span"]["request_id"] == want_id and line["span"]["path"] == "/logs/ckpt", line

    # Every node got a shard of the 3+1 PUT, the GET read the 3 data shards, and the
    # DELETE's background shard deletes went to all four: each node logged its calls in a
    # span with the S3 request's id.
    def node_calls():
        calls = {}  # request id -> [(node, method, status)]
        for n in c.nodes:
            for r in records(n):
                if message(r) == "call" and rid(r) in (put_id, get_id, del_id):
                    calls.setdefault(rid(r), []).append((n.index, r["span"]["method"], r["fields"]["status"], r["span"]["path"]))
        shard_puts = [c for c in calls.get(put_id, []) if c[3].startswith("/v1/shards/")]
        done = (
            len(shard_puts) == 4
            and len(calls.get(get_id, [])) >= 3
            and len(calls.get(del_id, [])) == 4
        )
        return calls if done else None

    calls = wait_for(node_calls, timeout=10, what="node call lines with the S3 request ids")
    # The PUT wrote a shard to every node, then the object's manifest (at least m+1 copies).
    shard_puts = [x for x in calls[put_id] if x[3].startswith("/v1/shards/")]
    manifest_puts = [x for x in calls[put_id] if x[3].endswith("/manifest")]
    assert sorted(n for n, *_ in shard_puts) == [0, 1, 2, 3], calls[put_id]
    assert len(manifest_puts) >= 2 and len(shard_puts) + len(manifest_puts) == len(calls[put_id]), calls[put_id]
    assert all(m == "PUT" and s == 201 for _, m, s, _ in calls[put_id]), calls[put_id]
    assert len({n for n, *_ in calls[get_id]}) == 3, calls[get_id]
    assert all(m == "GET" and s == 200 and p.startswith("/v1/shards/") for _, m, s, p in calls[get_id]), calls[get_id]
    assert sorted(n for n, *_ in calls[del_id]) == [0, 1, 2, 3], calls[del_id]
    assert all(m == "DELETE" and p.startswith("/v1/objects/") for _, m, _, p in calls[del_id]), calls[del_id]

    # Heartbeat probes and GC listings are not S3 requests: they carry no id, and at info
    # they leave no line. Every call line there is belongs to an S3 request (these three,
    # and the CreateBucket that stored its bucket markers).
    for n in c.nodes:
        for r in records(n):
            if message(r) == "call":
                assert rid(r) is not None, r


def limited(recs: list[dict], msg: str) -> list[dict]:
    """Lines of one rate-limited site: its own lines and the leftover-count lines."""
    return [r for r in recs if message(r) in (msg, f"{msg} (repeats suppressed)")]


def accounted(lines: list[dict]) -> int:
    """Events a rate-limited site saw: lines logged plus the repeats they say were held back."""
    own = [r for r in lines if not message(r).endswith("(repeats suppressed)")]
    return len(own) + sum(int(r["fields"]["suppressed"]) for r in lines)


@pytest.mark.timeout(180)
def test_repeated_errors_are_logged_once_per_interval_with_a_count(cluster_factory):
    interval = 1.5
    c = cluster_factory(extra_env={**JSON_LOGS, "CAIRN_LOG_REPEAT_INTERVAL": f"{interval}s"})
    s3 = c.client()
    s3.create_bucket(Bucket="flood")
    data = os.urandom(100_000)  # one stripe: one attempt on each shard per read
    s3.put_object(Bucket="flood", Key="k", Body=data)
    by_index = {sf.shard_index: sf for sf in c.shard_files(bucket="flood", key="k")}
    assert sorted(by_index) == [0, 1, 2, 3]

    def holder(index):
        return next(n for n in c.nodes if n.data_dir in by_index[index].path.parents)

    # 1. The node holding data shard 0 dies: every read still succeeds from parity, and
    #    every read fails to open shard 0 — one "shard unavailable" event per GET.
    holder(0).kill()
    reads, t0 = 0, time.monotonic()
    while time.monotonic() - t0 < 4 * interval or reads < 30:
        assert s3.get_object(Bucket="flood", Key="k")["Body"].read() == data
        reads += 1
    elapsed = time.monotonic() - t0
    msg = "shard unavailable, reading parity"

    # Every event is accounted for — logged or counted — once the leftover count is out.
    lines = wait_for(
        lambda: (lambda ls: ls if accounted(ls) >= reads else None)(limited(records(c.gateway), msg)),
        timeout=6 * interval,
        what=f"{reads} '{msg}' events accounted for in the gateway log",
    )
    assert accounted(lines) == reads, [r["fields"] for r in lines]
    logged = [r for r in lines if message(r) == msg]
    # At most one line per interval (plus the first) and the final leftover count.
    assert len(logged) <= math.ceil(elapsed / interval) + 1, [r["fields"] for r in lines]
    assert len(lines) < reads / 3, f"{len(lines)} lines for {reads} reads: not rate-limited"
    assert any(r["fields"]["suppressed"] > 0 for r in lines), [r["fields"] for r in lines]
    assert all("suppressed" in r["fields"] for r in lines)
    # The lines that were logged still say which request they belong to.
    assert all(rid(r) for r in logged), logged

    # 2. A second node dies: now reads fail (503), and each failure's warning is limited too.
    holder(1).kill()
    failures, t0 = 0, time.monotonic()
    while time.monotonic() - t0 < 3 * interval or failures < 20:
        with pytest.raises(ClientError) as e:
            s3.get_object(Bucket="flood", Key="k")
        assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 503
        failures += 1
    fail_msg = "request failed"
    fail_lines = wait_for(
        lambda: (lambda ls: ls if accounted(ls) >= failures else None)(limited(records(c.gateway), fail_msg)),
        timeout=6 * interval,
        what=f"{failures} '{fail_msg}' events accounted for",
    )
    assert accounted(fail_lines) == failures, [r["fields"] for r in fail_lines]
    assert len(fail_lines) < failures / 3, f"{len(fail_lines)} lines for {failures} failed reads"
    assert all(r["level"] == "WARN" for r in fail_lines)
