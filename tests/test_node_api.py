"""The storage node's internal API (common/src/protocol.rs): only holders of the cluster
secret may read or write shards; a corrupt block is never served."""

import json
import os
import secrets
import time

import pytest

from harness.data import MiB
from harness.exposition import Exposition
from harness.nodeapi import credential, prove
from harness.servers import admin_token


@pytest.fixture(scope="module")
def stored(cairn_cluster):
    s3 = cairn_cluster.client()
    b = "nodeapi-" + os.urandom(4).hex()
    s3.create_bucket(Bucket=b)
    data = os.urandom(3 * MiB + 17)
    s3.put_object(Bucket=b, Key="obj", Body=data)
    shards = cairn_cluster.shard_files(bucket=b, key="obj")
    assert shards
    return b, data, shards


def refused(r):
    return r.status in (401, 403)


def test_health_is_open_and_metrics_need_the_admin_token(cairn_cluster):
    token = admin_token(cairn_cluster.cluster_secret)
    for n in cairn_cluster.nodes:
        r = n.api().call("GET", "/health", sign=False)
        assert r.status == 200 and r.body.strip() == b"ok", r.body
        r = n.api().call("GET", "/metrics", sign=False)
        assert r.status == 403, r.status
        r = n.api().call("GET", "/metrics", sign=False, headers={"Authorization": "Bearer wrong"})
        assert r.status == 403, r.status
        r = n.api().call("GET", "/metrics", sign=False, headers={"Authorization": f"Bearer {token}"})
        assert r.status == 200, r.status
        Exposition.parse(r.body.decode()).require("cairn_node_shards_stored", "cairn_node_bytes_written_total")


def test_requests_without_credential_are_refused(cairn_cluster, stored):
    _, _, shards = stored
    s = shards[0]
    node = cairn_cluster.nodes[s.node]
    api = node.api()
    for method, path in [
        ("GET", "/v1/objects"),
        ("GET", f"/v1/shards/{s.object_id}/{s.segment}/{s.shard_index}?from=0&count=1"),
        ("GET", f"/v1/shards/{s.object_id}/{s.segment}/{s.shard_index}/header"),
        ("GET", "/v1/info?challenge=x"),
    ]:
        r = api.call(method, path, sign=False)
        assert refused(r), (method, path, r.status, r.body[:200])


def test_wrong_secret_and_stale_dates_are_refused(cairn_cluster, stored):
    _, _, shards = stored
    s = shards[0]
    api = cairn_cluster.nodes[s.node].api()
    path = f"/v1/shards/{s.object_id}/{s.segment}/{s.shard_index}?from=0&count=1"
    assert refused(api.call("GET", path, secret="not-the-cluster-secret"))
    assert refused(api.call("GET", path, date=int(time.time()) - 3600))
    assert refused(api.call("GET", path, date=int(time.time()) + 3600))
    # a valid credential for another path
    other = credential(cairn_cluster.cluster_secret, "GET", "/v1/objects", api.node_id)
    assert refused(api.call("GET", path, sign=False, headers=other))
    assert api.call("GET", "/v1/objects", sign=False, headers=other).status == 200
    # the right tag
    r = api.call("GET", path)
    assert r.status == 200, (r.status, r.body[:200])


def test_unauthenticated_writes_and_deletes_change_nothing(cairn_cluster, stored):
    b, data, shards = stored
    s = shards[0]
    node = cairn_cluster.nodes[s.node]
    api = node.api()
    fake_oid = secrets.token_hex(16)
    r = api.call("PUT", f"/v1/shards/{fake_oid}/0/0", body=b"CRNS" + os.urandom(200), sign=False)
    assert refused(r), r.status
    r = api.call("PUT", f"/v1/shards/{fake_oid}/0/0", body=b"CRNS" + os.urandom(200), secret="wrong")
    assert refused(r), r.status
    assert not (node.data_dir / "shards" / fake_oid[:2] / fake_oid).exists()
    before = s.path.read_bytes()
    r = api.call("DELETE", f"/v1/objects/{s.object_id}", sign=False)
    assert refused(r), r.status
    r = api.call("DELETE", f"/v1/objects/{s.object_id}", secret="wrong")
    assert refused(r), r.status
    assert s.path.read_bytes() == before
    assert cairn_cluster.client().get_object(Bucket=b, Key="obj")["Body"].read() == data


def test_signed_requests_work(cairn_cluster, stored):
    _, _, shards = stored
    for s in shards:
        api = cairn_cluster.nodes[s.node].api()
        r = api.call("GET", "/v1/objects")
        assert r.status == 200, r.body[:200]
        assert s.object_id in json.loads(r.body)["objects"]
        r = api.call("GET", f"/v1/shards/{s.object_id}/{s.segment}/{s.shard_index}/header")
        assert r.status == 200
        assert r.body == s.path.read_bytes()[: s.header_len]
        r = api.call("GET", f"/v1/shards/{s.object_id}/{s.segment}/{s.shard_index}?from=0&count={s.stripes}")
        assert r.status == 200
        assert r.body == s.path.read_bytes()[s.header_len :], "block stream differs from the file's block area"


def test_info_proves_the_secret(cairn_cluster):
    for n in cairn_cluster.nodes:
        ch = secrets.token_hex(8)
        r = n.api().call("GET", f"/v1/info?challenge={ch}")
        assert r.status == 200, r.body[:200]
        info = json.loads(r.body)
        assert info["seen_at"] == n.addr, "the address the probe arrived on"
        assert info["proof"] == prove(cairn_cluster.cluster_secret, ch, info["node_id"], info["seen_at"])
        assert len(info["node_id"]) == 32
        assert info["capacity_bytes"] >= info["free_bytes"] > 0
    ids = {json.loads(n.api().call("GET", "/v1/info?challenge=x").body)["node_id"] for n in cairn_cluster.nodes}
    assert len(ids) == len(cairn_cluster.nodes), "nodes share an id"


def test_node_refuses_to_serve_a_corrupt_block(cairn_cluster, stored):
    b, data, shards = stored
    s = [x for x in shards if x.is_data][0]
    api = cairn_cluster.nodes[s.node].api()
    path = f"/v1/shards/{s.object_id}/{s.segment}/{s.shard_index}?from=1&count=1"
    good = api.call("GET", path)
    assert good.status == 200
    s.flip_byte(1, offset_in_block=3)
    r = api.call("GET", path)
    assert r.status == 409, (r.status, r.body[:200])
    assert r.headers.get("x-cairn-error") == "corrupt-block"
    # block 0 is still fine and still served
    r0 = api.call("GET", f"/v1/shards/{s.object_id}/{s.segment}/{s.shard_index}?from=0&count=1")
    assert r0.status == 200
    # and the gateway still returns the right bytes
    assert cairn_cluster.client().get_object(Bucket=b, Key="obj")["Body"].read() == data


def test_unknown_shard_is_404(cairn_cluster):
    api = cairn_cluster.nodes[0].api()
    r = api.call("GET", f"/v1/shards/{secrets.token_hex(16)}/0/0?from=0&count=1")
    assert r.status == 404
    assert r.headers.get("x-cairn-error") == "no-such-shard"
