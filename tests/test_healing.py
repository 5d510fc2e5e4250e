"""Healing (issue 4): repair back to full redundancy after a node is lost or its disk is
replaced, scrub + repair of a flipped byte, garbage collection of orphan shards, and the
catalog rebuilt from the nodes after the gateway's metadata is lost.

Each test has its own cluster. The decisive check after a repair is always the same: kill
one more node and read everything back, which only works if every object was back at full
redundancy (4 nodes, EC 3+1: after losing one node, 3+1 objects are one loss from gone).
"""

import json
import os
import shutil
import subprocess
import time

import pytest

from harness.data import MiB, sha256
from harness.procs import binary
from harness.shards import ShardFormatError, read_shard
from harness.wait import wait_for

SIZES = [0, 1, 1000, 3 * MiB + 17, 7 * MiB + 5]


def fill(s3, bucket, sizes=SIZES, prefix="obj"):
    objs = {}
    for size in sizes:
        key = f"{prefix}/{size}"
        objs[key] = os.urandom(size)
        s3.put_object(Bucket=bucket, Key=key, Body=objs[key], Metadata={"size": str(size)})
    return objs


def multipart(s3, bucket, key, parts=3, part_size=5 * MiB):
    up = s3.create_multipart_upload(Bucket=bucket, Key=key)
    data, done = b"", []
    for n in range(1, parts + 1):
        chunk = os.urandom(part_size if n < parts else part_size // 2 + 3)
        r = s3.upload_part(Bucket=bucket, Key=key, UploadId=up["UploadId"], PartNumber=n, Body=chunk)
        done.append({"PartNumber": n, "ETag": r["ETag"]})
        data += chunk
    s3.complete_multipart_upload(
        Bucket=bucket, Key=key, UploadId=up["UploadId"], MultipartUpload={"Parts": done}
    )
    return data


def check_all(s3, bucket, objs, why=""):
    for key, data in objs.items():
        body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        assert len(body) == len(data) and sha256(body) == sha256(data), f"{key}: wrong bytes {why}"
    listed = {o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])}
    assert listed == set(objs), why


def segments_of(objs, multipart_keys=()):
    """Segments the objects occupy: one per single PUT, one per part."""
    return len(objs) - len(multipart_keys) + 3 * len(multipart_keys)


def live_shards(cluster, bucket):
    alive = [n for n in cluster.nodes if n.alive]
    return cluster.shard_files(bucket=bucket, nodes=alive)


def assert_fully_redundant_on_disk(cluster, bucket, keys):
    """Every key's shards on the live nodes form complete segments of k+m shards on
    distinct nodes, with no other shard of that key anywhere (no duplicates, no orphans)."""
    groups = {}
    for s in live_shards(cluster, bucket):
        groups.setdefault((s.key, s.object_id, s.segment), []).append(s)
    seen_keys = {}
    for (key, oid, seg), shards in groups.items():
        assert key in keys, f"shards of {key!r} (deleted or never committed) still on disk"
        k, m = shards[0].k, shards[0].m
        assert m == cluster.m, f"{key} segment {seg} written with parity {m}"
        assert sorted(s.shard_index for s in shards) == list(range(k + m)), (
            f"{key} segment {seg}: shard indexes {sorted(s.shard_index for s in shards)}, want 0..{k + m}"
        )
        assert len({s.node for s in shards}) == k + m, f"{key} segment {seg}: two shards on one node"
        seen_keys.setdefault(key, set()).add(oid)
    for key in keys:
        assert len(seen_keys.get(key, ())) == 1, f"{key}: object versions on disk {seen_keys.get(key)}"


def wait_fully_redundant_on_disk(cluster, bucket, keys, timeout=30):
    """`assert_fully_redundant_on_disk`, once the replaced shards are gone: the gateway
    deletes them in the background, after reads in flight finish."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return assert_fully_redundant_on_disk(cluster, bucket, keys)
        except AssertionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.25)


def wait_repaired(cluster, segments, timeout=90):
    def repaired():
        m = cluster.gateway.metrics()
        return (
            m.value("cairn_repair_segments_total", result="ok") >= segments
            and m.value("cairn_repair_queue_segments") == 0
        )

    wait_for(
        repaired,
        timeout=timeout,
        what=f"{segments} segments repaired",
    )


def test_lost_node_is_repaired_then_another_node_can_die(cluster_factory):
    c = cluster_factory(gateway_args=["--repair-after", "2s", "--gc-grace", "1h"])
    s3 = c.client(retries=None)
    s3.create_bucket(Bucket="bkt")
    objs = fill(s3, "bkt")
    objs["mp/a"] = multipart(s3, "bkt", "mp/a")
    assert c.gateway.metrics().value("cairn_repair_segments_total", result="ok") == 0
    lost = c.nodes[1]
    lost.kill()
    wait_repaired(c, segments_of(objs, ["mp/a"]))
    check_all(s3, "bkt", objs, why="after repair")
    wait_fully_redundant_on_disk(c, "bkt", set(objs))
    # Repaired onto the 3 survivors: 2+1 with the same parity, never less.
    assert {(s.k, s.m) for s in live_shards(c, "bkt")} == {(2, 1)}
    assert c.gateway.metrics().value("cairn_repair_bytes_total") >= sum(len(d) for d in objs.values())
    c.nodes[3].kill()
    check_all(s3, "bkt", objs, why="after repair and a second node loss")


def test_node_back_within_grace_is_not_repaired(cluster_factory):
    c = cluster_factory(gateway_args=["--repair-after", "1h"])
    s3 = c.client(retries=None)
    s3.create_bucket(Bucket="bkt")
    objs = fill(s3, "bkt", sizes=[1000, 3 * MiB])
    before = {s.path for s in c.shard_files(bucket="bkt")}
    c.nodes[0].kill()
    time.sleep(3)
    c.nodes[0].start()
    c.wait_gateway_sees_nodes(4)
    assert c.gateway.metrics().total("cairn_repair_segments_total") == 0
    assert {s.path for s in c.shard_files(bucket="bkt")} == before, "a reboot moved shards"
    check_all(s3, "bkt", objs)


def test_replaced_disk_is_refilled_at_once_then_another_node_can_die(cluster_factory):
    # A long grace period: a new identity at an old address must not wait for it.
    c = cluster_factory(gateway_args=["--repair-after", "1h"])
    s3 = c.client(retries=None)
    s3.create_bucket(Bucket="bkt")
    objs = fill(s3, "bkt")
    objs["mp/a"] = multipart(s3, "bkt", "mp/a")
    victim = c.nodes[2]
    old_id = (victim.data_dir / "node_id").read_text().strip()
    victim.kill()
    shutil.rmtree(victim.data_dir)
    victim.data_dir.mkdir()
    victim.start()  # same address, empty disk, new node id
    assert (victim.data_dir / "node_id").read_text().strip() != old_id
    wait_repaired(c, segments_of(objs, ["mp/a"]), timeout=60)
    wait_fully_redundant_on_disk(c, "bkt", set(objs))
    # Back at full width over the 4 nodes, the new disk included.
    assert {(s.k, s.m) for s in live_shards(c, "bkt")} == {(3, 1)}
    assert any(s.node == victim.index for s in live_shards(c, "bkt"))
    c.nodes[0].kill()
    check_all(s3, "bkt", objs, why="after refill and another node loss")


def test_flipped_byte_is_found_by_scrub_and_repaired(cluster_factory):
    c = cluster_factory(
        gateway_args=["--repair-after", "2s"],
        node_args=["--scrub-every", "1s", "--scrub-rate", "256MiB"],
    )
    s3 = c.client()
    s3.create_bucket(Bucket="bkt")
    objs = fill(s3, "bkt", sizes=[3 * MiB + 17])
    (key,) = objs
    victim = [s for s in c.shard_files(bucket="bkt", key=key) if s.shard_index == 1][0]
    victim.flip_byte(0)
    with pytest.raises(ShardFormatError):
        read_shard(victim.path).read_block(0)  # the harness sees the damage too
    # No read touches the object: only the scrub can find it.
    wait_repaired(c, 1, timeout=60)
    wait_for(lambda: not victim.path.exists(), timeout=30, what="the corrupt shard file deleted")
    wait_fully_redundant_on_disk(c, "bkt", set(objs))
    for s in c.shard_files(bucket="bkt"):
        for b in range(s.stripes):
            s.read_block(b)  # verifies every block's crc32c
    c.nodes[victim.node].kill()
    check_all(s3, "bkt", objs, why="after scrub repair with the once-corrupt node killed")


def test_bad_middle_block_found_by_a_read_is_repaired_then_another_node_can_die(cluster_factory):
    # Scrub off (its default first pass is a day away): only the GET can find the damage.
    # The node aborts the shard stream part way (the block is in the middle), so the
    # gateway sees a broken stream, not a 409: the node itself must report the shard.
    c = cluster_factory(gateway_args=["--repair-after", "2s"])
    s3 = c.client()
    s3.create_bucket(Bucket="bkt")
    objs = fill(s3, "bkt", sizes=[7 * MiB + 5])
    (key,) = objs
    shards = c.shard_files(bucket="bkt", key=key)
    (segment,) = {s.segment for s in shards}
    victim = [s for s in shards if s.is_data][0]
    assert victim.stripes == 3
    victim.flip_byte(1)  # the middle block
    with pytest.raises(ShardFormatError):
        victim.read_block(1)
    victim.read_block(0)

    check_all(s3, "bkt", objs, why="rebuilt from parity around the bad middle block")
    wait_repaired(c, 1, timeout=60)
    wait_for(
        lambda: {s.segment for s in c.shard_files(bucket="bkt", key=key)} not in ({segment}, set()),
        timeout=30,
        what="the object's shards moved to a fresh segment",
    )
    wait_for(lambda: not victim.path.exists(), timeout=30, what="the corrupt shard file deleted")
    wait_fully_redundant_on_disk(c, "bkt", set(objs))
    assert segment not in {s.segment for s in c.shard_files(bucket="bkt", key=key)}
    for s in c.shard_files(bucket="bkt"):
        for b in range(s.stripes):
            s.read_block(b)
    # A shard deleted with its segment is not reported bad.
    victim_node = c.nodes[victim.node]
    wait_for(
        lambda: json.loads(victim_node.api().call("GET", "/v1/info?challenge=x").body)["bad_shards"] == [],
        timeout=30,
        what="the repaired shard dropped from the node's bad list",
    )
    other = next(n for n in c.nodes if n.index != victim.node)
    other.kill()
    check_all(s3, "bkt", objs, why="after read-found repair with another node killed")


def test_orphans_are_collected_and_nothing_live_is(cluster_factory):
    c = cluster_factory(gateway_args=["--repair-after", "1h", "--gc-grace", "1s"])
    s3 = c.client(retries=None)
    s3.create_bucket(Bucket="bkt")
    objs = fill(s3, "bkt", sizes=[1000, 3 * MiB + 17])
    objs["mp/live"] = multipart(s3, "bkt", "mp/live")
    s3.put_object(Bucket="bkt", Key="doomed", Body=os.urandom(2 * MiB))
    over = os.urandom(100_000)
    s3.put_object(Bucket="bkt", Key="overwritten", Body=os.urandom(50_000))
    # An upload with parts, to be aborted while a node is down.
    up = s3.create_multipart_upload(Bucket="bkt", Key="mp/aborted")
    s3.upload_part(Bucket="bkt", Key="mp/aborted", UploadId=up["UploadId"], PartNumber=1, Body=os.urandom(MiB))
    down = c.nodes[3]
    down.kill()
    c.wait_gateway_sees_nodes(3)
    # Deletes, an overwrite and an abort that node 3 misses: its copies become orphans.
    s3.delete_object(Bucket="bkt", Key="doomed")
    s3.put_object(Bucket="bkt", Key="overwritten", Body=over)
    objs["overwritten"] = over
    s3.abort_multipart_upload(Bucket="bkt", Key="mp/aborted", UploadId=up["UploadId"])
    stale = [s for s in down.shard_files() if s.key in ("doomed", "overwritten", "mp/aborted")]
    assert stale, "node 3 should hold shards of the deleted, overwritten and aborted objects"
    down.start()
    c.wait_gateway_sees_nodes(4)
    wait_for(
        lambda: not any(s.path.exists() for s in stale)
        and c.gateway.metrics().value("cairn_gc_objects_deleted_total") >= 1,
        timeout=60,
        what="orphans collected and counted",
    )
    # Live data untouched: every object reads back, and every live key still has all its shards.
    check_all(s3, "bkt", objs, why="after GC")
    # (one version of "overwritten" only: the one written 2+1 while node 3 was down)
    wait_fully_redundant_on_disk(c, "bkt", set(objs))
    assert not [s for s in c.shard_files(bucket="bkt") if s.key in ("doomed", "mp/aborted")]


def test_stale_copies_are_reconciled_when_a_lost_node_returns(cluster_factory):
    c = cluster_factory(gateway_args=["--repair-after", "2s", "--gc-grace", "1s"])
    s3 = c.client(retries=None)
    s3.create_bucket(Bucket="bkt")
    objs = fill(s3, "bkt", sizes=[1000, 3 * MiB + 17])
    lost = c.nodes[0]
    lost.kill()
    wait_repaired(c, len(objs))
    stale = lost.shard_files()
    assert stale
    lost.start()  # comes back with shards repair already replaced
    c.wait_gateway_sees_nodes(4)
    wait_for(lambda: not any(s.path.exists() for s in stale), timeout=60, what="stale copies deleted")
    check_all(s3, "bkt", objs)
    wait_fully_redundant_on_disk(c, "bkt", set(objs))


def rebuild_catalog(c, meta, *extra):
    env = c.base_env()
    env["CAIRN_CLUSTER_SECRET"] = c.cluster_secret
    argv = [
        str(binary("cairn-gateway")),
        "rebuild-catalog",
        "--meta",
        str(meta),
        "--nodes",
        ",".join(n.addr for n in c.nodes),
        "--wait",
        "1s",
        *extra,
    ]
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)


def test_catalog_rebuilt_from_nodes_after_meta_is_lost(cluster_factory):
    c = cluster_factory(gateway_args=["--repair-after", "2s"])
    s3 = c.client(retries=None)
    for b in ("one", "two", "empty", "dropped"):
        s3.create_bucket(Bucket=b)
    s3.delete_bucket(Bucket="dropped")
    objs = fill(s3, "one")
    objs["mp/a"] = multipart(s3, "one", "mp/a")
    s3.put_object(Bucket="one", Key="over", Body=b"first version")
    time.sleep(0.01)
    s3.put_object(Bucket="one", Key="over", Body=b"second version", ContentType="text/plain",
                  Metadata={"step": "42"})
    objs["over"] = b"second version"
    s3.put_object(Bucket="one", Key="gone", Body=os.urandom(4000))
    s3.delete_object(Bucket="one", Key="gone")
    up = s3.create_multipart_upload(Bucket="one", Key="never")
    s3.upload_part(Bucket="one", Key="never", UploadId=up["UploadId"], PartNumber=1, Body=os.urandom(MiB))
    two = {"x/y": os.urandom(12345)}
    s3.put_object(Bucket="two", Key="x/y", Body=two["x/y"])
    heads = {k: s3.head_object(Bucket="one", Key=k) for k in objs}

    # The coordinator's disk dies; one node is down too while we rebuild.
    c.gateway.kill()
    shutil.rmtree(c.gateway.meta_dir)
    c.nodes[1].kill()
    new_meta = c.root / "meta-rebuilt"
    r = rebuild_catalog(c, new_meta)
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"{len(objs) + 1} objects restored" in r.stdout, r.stdout
    # A second rebuild into a non-empty catalog is refused rather than merged.
    again = rebuild_catalog(c, new_meta)
    assert again.returncode != 0 and "already holds a catalog" in again.stderr

    c.gateway.meta_dir = new_meta
    c.gateway.start()
    c.nodes[1].start()
    c.wait_gateway_sees_nodes(4)
    assert {b["Name"] for b in s3.list_buckets()["Buckets"]} == {"one", "two", "empty"}
    check_all(s3, "one", objs, why="after rebuild")
    check_all(s3, "two", two, why="after rebuild")
    for k, h in heads.items():
        got = s3.head_object(Bucket="one", Key=k)
        for field in ("ETag", "ContentLength", "ContentType", "Metadata"):
            assert got[field] == h[field], f"{k} {field} after rebuild"
    assert s3.list_multipart_uploads(Bucket="one").get("Uploads", []) == []
    # The rebuilt catalog is a working one: writes, overwrites and repair go on.
    s3.put_object(Bucket="one", Key="after", Body=b"new")
    assert s3.get_object(Bucket="one", Key="after")["Body"].read() == b"new"


def test_parts_of_an_upload_in_progress_are_repaired(cluster_factory):
    c = cluster_factory(gateway_args=["--repair-after", "2s"])
    s3 = c.client(retries=None)
    s3.create_bucket(Bucket="bkt")
    up = s3.create_multipart_upload(Bucket="bkt", Key="ckpt")
    chunks = [os.urandom(5 * MiB), os.urandom(MiB + 7)]
    etags = [
        s3.upload_part(Bucket="bkt", Key="ckpt", UploadId=up["UploadId"], PartNumber=n + 1, Body=b)["ETag"]
        for n, b in enumerate(chunks)
    ]
    c.nodes[2].kill()
    wait_repaired(c, len(chunks))
    s3.complete_multipart_upload(
        Bucket="bkt", Key="ckpt", UploadId=up["UploadId"],
        MultipartUpload={"Parts": [{"PartNumber": n + 1, "ETag": e} for n, e in enumerate(etags)]},
    )
    c.nodes[0].kill()
    check_all(s3, "bkt", {"ckpt": b"".join(chunks)}, why="parts repaired before completion, then a second loss")


def node_ids(cluster):
    """{node addr: id} from the gateway's node list."""
    status, body = cluster.gateway.admin_get("/_cairn/nodes")
    assert status == 200
    return {n["addr"]: n["id"] for n in json.loads(body)}


def declare_gone(cluster, node_id, auth=True, secret=None):
    """`DELETE /_cairn/nodes/{id}` with curl's own SigV4 signer, as the README shows."""
    argv = ["curl", "-sS", "-X", "DELETE", "-w", "\n%{http_code}"]
    if auth:
        key = f"{cluster.access_key}:{secret or cluster.secret_key}"
        argv += ["--aws-sigv4", f"aws:amz:{cluster.region}:s3", "--user", key]
    out = subprocess.run(
        argv + [f"{cluster.endpoint}/_cairn/nodes/{node_id}"],
        capture_output=True, text=True, timeout=30, check=True,
    ).stdout
    body, _, status = out.rpartition("\n")
    return int(status), body


def test_node_declared_gone_is_drained_at_once_and_stays_gone(cluster_factory):
    c = cluster_factory(gateway_args=["--repair-after", "1h", "--gc-grace", "1h"])
    s3 = c.client(retries=None)
    s3.create_bucket(Bucket="bkt")
    objs = fill(s3, "bkt")
    objs["mp/a"] = multipart(s3, "bkt", "mp/a")
    victim = c.nodes[0]
    vid = node_ids(c)[victim.addr]

    # Only a caller with the S3 credentials may declare a node gone.
    status, body = declare_gone(c, vid, auth=False)
    assert status == 403 and "<Code>AccessDenied</Code>" in body, body
    status, body = declare_gone(c, vid, secret="wrong-secret")
    assert status == 403 and "<Code>SignatureDoesNotMatch</Code>" in body, body
    status, body = declare_gone(c, "not-a-node-id")
    assert status == 400 and "<Code>InvalidArgument</Code>" in body, body
    assert c.gateway_view()[victim.addr] == "up"
    assert c.gateway.metrics().total("cairn_repair_segments_total") == 0

    status, body = declare_gone(c, vid)
    assert status == 200 and json.loads(body) == {"id": vid, "newly_declared": True}, body
    # Drained now, not after --repair-after (1h), while the node is still up: read from it
    # and written onto the three others, 2+1 with the same parity.
    wait_repaired(c, segments_of(objs, ["mp/a"]))
    assert c.gateway_view()[victim.addr] == "gone"
    check_all(s3, "bkt", objs, why="after draining a node declared gone")
    # the old shards go once the reads above are done with them
    wait_for(lambda: not c.shard_files(bucket="bkt", nodes=[victim]), what="the drained node emptied")
    wait_fully_redundant_on_disk(c, "bkt", set(objs))
    assert {(s.k, s.m) for s in live_shards(c, "bkt")} == {(2, 1)}

    # It gets no new shards, also after a gateway restart (the catalog keeps the verdict).
    c.gateway.stop()
    c.gateway.start()
    c.wait_gateway_sees_nodes(c.n_nodes - 1)
    assert c.gateway_view()[victim.addr] == "gone"
    status, body = declare_gone(c, vid)
    assert status == 200 and json.loads(body)["newly_declared"] is False, body
    s3 = c.client(retries=None)
    objs["after"] = os.urandom(2 * MiB + 1)
    s3.put_object(Bucket="bkt", Key="after", Body=objs["after"])
    assert len(c.shard_files(bucket="bkt", key="after")) == 3
    assert not c.shard_files(bucket="bkt", nodes=[victim])

    # The drained node can be unplugged, and one more node can die.
    victim.kill()
    c.nodes[2].kill()
    check_all(s3, "bkt", objs, why="with the drained node and one more node gone")
