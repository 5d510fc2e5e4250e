"""What lands on the nodes' disks, and reads that survive damaged shard files.

Shard files: DIR/shards/<oid[0..2]>/<oid>/<segment>.<index>, a self-describing header then
blocks each followed by its crc32c (see tests/harness/shards.py and common/src/shard.rs).
"""

import os

import pytest

from harness.data import MiB, sha256
from harness.shards import ShardFormatError


def put(s3, bucket, key, size):
    data = os.urandom(size)
    s3.put_object(Bucket=bucket, Key=key, Body=data)
    return data


def shards_of(cluster, bucket, key):
    shards = cluster.shard_files(bucket=bucket, key=key)
    assert shards, f"no shard files for {bucket}/{key} under {[str(n.data_dir) for n in cluster.nodes]}"
    ids = {s.object_id for s in shards}
    assert len(ids) == 1, f"shards of several object versions for one PUT: {ids}"
    return sorted(shards, key=lambda s: (s.segment, s.shard_index))


def test_shard_bytes_on_disk_are_k_plus_m_over_k_of_the_data(cairn_cluster, s3, bucket):
    size = 48 * MiB + 12345
    put(s3, bucket, "large", size)
    shards = shards_of(cairn_cluster, bucket, "large")
    k, m = cairn_cluster.k, cairn_cluster.m
    assert len(shards) == k + m
    assert sorted(s.shard_index for s in shards) == list(range(k + m))
    assert len({s.node for s in shards}) == k + m, "two shards of one object on the same node"
    total = sum(s.size for s in shards)
    ideal = size * (k + m) / k
    assert ideal <= total <= ideal * 1.01 + 64 * 1024, (total, ideal, total / size)


def test_shard_headers_describe_the_object(cairn_cluster, s3, bucket):
    size = 7 * MiB + 5
    put(s3, bucket, "dir/model.safetensors", size)
    for s in shards_of(cairn_cluster, bucket, "dir/model.safetensors"):
        assert (s.k, s.m) == (cairn_cluster.k, cairn_cluster.m)
        assert s.segment == 0
        assert s.segment_len == size
        assert s.bucket == bucket and s.key == "dir/model.safetensors"
        assert s.block_size == MiB
        assert s.path.name == f"{s.segment}.{s.shard_index}"
        assert s.path.parent.name == s.object_id
        assert s.path.parent.parent.name == s.object_id[:2]
        assert s.size == s.expected_file_len, f"{s.path}: {s.size} bytes, layout says {s.expected_file_len}"


def test_every_block_has_a_valid_crc_and_data_shards_hold_the_object(cairn_cluster, s3, bucket):
    size = 7 * MiB + 5  # 3 stripes, the last one short
    data = put(s3, bucket, "layout", size)
    shards = shards_of(cairn_cluster, bucket, "layout")
    for s in shards:
        for b in range(s.stripes):
            s.read_block(b)  # raises on a bad crc
    data_shards = [s for s in shards if s.is_data]
    k = shards[0].k
    assert len(data_shards) == k
    rebuilt = bytearray()
    for stripe in range(shards[0].stripes):
        stripe_bytes = b"".join(d.read_block(stripe) for d in data_shards)
        rebuilt += stripe_bytes[: min(k * MiB, size - stripe * k * MiB)]
    assert sha256(bytes(rebuilt)) == sha256(data), "data shards are not the object's bytes in stripe order"


def test_small_object_costs_about_k_plus_m_over_k(cairn_cluster, s3, bucket):
    """A small object's last stripe is cut to ceil(len/k) bytes per block, not whole blocks."""
    put(s3, bucket, "small", 3000)
    shards = shards_of(cairn_cluster, bucket, "small")
    for s in shards:
        assert s.block_len(0) == 1000
    assert sum(s.size for s in shards) < 3000 * 4 / 3 + 4 * 512


def test_flipped_byte_in_a_data_shard_is_repaired_on_read(cairn_cluster, s3, bucket):
    """The issue's case: one byte flipped in one data shard file."""
    size = 7 * MiB + 5
    data = put(s3, bucket, "flip", size)
    shards = shards_of(cairn_cluster, bucket, "flip")
    d0 = [s for s in shards if s.is_data][0]
    d0.flip_byte(1, offset_in_block=4321)  # middle stripe
    with pytest.raises(ShardFormatError):
        d0.read_block(1)
    for _ in range(2):
        body = s3.get_object(Bucket=bucket, Key="flip")["Body"].read()
        assert len(body) == size
        assert sha256(body) == sha256(data), "wrong bytes after flipping one byte of a data shard"
    # ranged reads inside and around the damaged block
    r = s3.get_object(Bucket=bucket, Key="flip", Range=f"bytes={3 * MiB + 4000}-{3 * MiB + 5000}")
    assert r["Body"].read() == data[3 * MiB + 4000 : 3 * MiB + 5001]
    r = s3.get_object(Bucket=bucket, Key="flip", Range=f"bytes={3 * MiB - 10}-{4 * MiB + 9}")
    assert r["Body"].read() == data[3 * MiB - 10 : 4 * MiB + 10]


def test_bad_blocks_in_several_data_shards_in_different_stripes(cairn_cluster, s3, bucket):
    """One bad block per stripe, each in a different data shard: every stripe still has k
    good blocks, so every stripe can be rebuilt. (Bit rot does not pick one shard.)"""
    size = 7 * MiB + 5
    data = put(s3, bucket, "rot", size)
    shards = shards_of(cairn_cluster, bucket, "rot")
    data_shards = [s for s in shards if s.is_data]
    damaged = []
    for stripe, s in enumerate(data_shards[: shards[0].stripes]):
        s.flip_byte(stripe, offset_in_block=min(4321, s.block_len(stripe) - 1))
        damaged.append((s.shard_index, stripe))
    body = s3.get_object(Bucket=bucket, Key="rot")["Body"].read()
    assert sha256(body) == sha256(data), f"wrong bytes with bad blocks {damaged}"


def test_flipped_first_byte_of_a_data_shard(cairn_cluster, s3, bucket):
    data = put(s3, bucket, "first", 3 * MiB + 17)
    d0 = [s for s in shards_of(cairn_cluster, bucket, "first") if s.is_data][0]
    d0.flip_byte(0, offset_in_block=0)
    assert sha256(s3.get_object(Bucket=bucket, Key="first")["Body"].read()) == sha256(data)


def test_damaged_crc_of_the_last_short_block(cairn_cluster, s3, bucket):
    data = put(s3, bucket, "lastcrc", 3 * MiB + 17)
    last = [s for s in shards_of(cairn_cluster, bucket, "lastcrc") if s.is_data][-1]
    b = last.stripes - 1
    pos = last.block_data_offset(b) + last.block_len(b)
    with open(last.path, "r+b") as f:
        f.seek(pos)
        c = f.read(1)
        f.seek(pos)
        f.write(bytes([c[0] ^ 0x01]))
    assert sha256(s3.get_object(Bucket=bucket, Key="lastcrc")["Body"].read()) == sha256(data)
    r = s3.get_object(Bucket=bucket, Key="lastcrc", Range="bytes=-17")
    assert r["Body"].read() == data[-17:]


def test_flipped_byte_in_parity_shard_does_not_matter(cairn_cluster, s3, bucket):
    data = put(s3, bucket, "parity", 3 * MiB + 17)
    p = [s for s in shards_of(cairn_cluster, bucket, "parity") if not s.is_data][0]
    p.flip_byte(0)
    assert s3.get_object(Bucket=bucket, Key="parity")["Body"].read() == data


def test_corrupt_shard_header_is_repaired_on_read(cairn_cluster, s3, bucket):
    data = put(s3, bucket, "hdr", 3 * MiB + 17)
    d0 = [s for s in shards_of(cairn_cluster, bucket, "hdr") if s.is_data][0]
    with open(d0.path, "r+b") as f:
        f.seek(d0.header_len - 6)  # inside the key name, before the header crc
        c = f.read(1)
        f.seek(d0.header_len - 6)
        f.write(bytes([c[0] ^ 0x20]))
    assert s3.get_object(Bucket=bucket, Key="hdr")["Body"].read() == data


def test_truncated_data_shard_is_repaired_on_read(cairn_cluster, s3, bucket):
    data = put(s3, bucket, "trunc", 7 * MiB + 5)
    d = [s for s in shards_of(cairn_cluster, bucket, "trunc") if s.is_data][1]
    with open(d.path, "r+b") as f:
        f.truncate(d.size - 1000)
    assert sha256(s3.get_object(Bucket=bucket, Key="trunc")["Body"].read()) == sha256(data)
    r = s3.get_object(Bucket=bucket, Key="trunc", Range=f"bytes={7 * MiB - 10}-")
    assert r["Body"].read() == data[7 * MiB - 10 :]


def test_missing_shard_file_is_repaired_on_read(cairn_cluster, s3, bucket):
    data = put(s3, bucket, "gone", 3 * MiB + 17)
    d = [s for s in shards_of(cairn_cluster, bucket, "gone") if s.is_data][0]
    d.path.unlink()
    assert s3.get_object(Bucket=bucket, Key="gone")["Body"].read() == data
