"""Byte-exact round trips of the sizes that matter for the erasure layout, with boto3 and
aws-cli. With EC 3+1 a stripe is 3 blocks of 1 MiB, so 3 MiB + 17 B is not stripe-aligned."""

import json
import os

import pytest
from boto3.s3.transfer import TransferConfig

from harness.data import MiB, sha256, sha256_file
from harness.s3util import quoted_md5

SIZES = [
    0,
    1,
    2,
    1000,
    MiB - 1,
    MiB,
    MiB + 1,
    3 * MiB - 1,
    3 * MiB,  # exactly one stripe
    3 * MiB + 17,  # one stripe and a short one
    6 * MiB + 2 * MiB // 3,  # two stripes and a partial one
]
IDS = [f"{s}B" for s in SIZES]
NO_MULTIPART = TransferConfig(multipart_threshold=8 * 1024 * MiB, multipart_chunksize=8 * 1024 * MiB)


@pytest.fixture(scope="module")
def payloads():
    return {s: os.urandom(s) for s in SIZES}


@pytest.mark.parametrize("size", SIZES, ids=IDS)
def test_boto3_put_get(s3, bucket, payloads, size):
    data = payloads[size]
    r = s3.put_object(Bucket=bucket, Key=f"obj-{size}", Body=data)
    assert r["ETag"] == quoted_md5(data)
    g = s3.get_object(Bucket=bucket, Key=f"obj-{size}")
    body = g["Body"].read()
    assert len(body) == size
    assert sha256(body) == sha256(data)
    assert g["ContentLength"] == size
    assert s3.head_object(Bucket=bucket, Key=f"obj-{size}")["ContentLength"] == size


@pytest.mark.parametrize("size", [0, 1, 3 * MiB + 17], ids=["0B", "1B", "3MiB+17B"])
def test_boto3_upload_download_file(s3, bucket, payloads, tmp_path, size):
    src = tmp_path / "src"
    src.write_bytes(payloads[size])
    s3.upload_file(str(src), bucket, "file", Config=NO_MULTIPART)
    dst = tmp_path / "dst"
    s3.download_file(bucket, "file", str(dst))
    assert dst.stat().st_size == size
    assert sha256_file(dst) == sha256(payloads[size])


def test_boto3_download_file_uses_ranged_gets(s3, bucket, tmp_path):
    """download_file splits objects above 8 MiB into parallel ranged GETs."""
    data = os.urandom(20 * MiB + 12345)
    s3.put_object(Bucket=bucket, Key="ranged", Body=data)
    dst = tmp_path / "ranged"
    s3.download_file(
        bucket, "ranged", str(dst), Config=TransferConfig(multipart_chunksize=3 * MiB + 1, max_concurrency=4)
    )
    assert sha256_file(dst) == sha256(data)


def test_boto3_streaming_body_from_file(s3, bucket, tmp_path, payloads):
    """put_object with an open file as body (botocore streams and hashes it)."""
    src = tmp_path / "f"
    src.write_bytes(payloads[3 * MiB + 17])
    with open(src, "rb") as f:
        s3.put_object(Bucket=bucket, Key="from-file", Body=f)
    assert s3.get_object(Bucket=bucket, Key="from-file")["Body"].read() == payloads[3 * MiB + 17]


@pytest.mark.parametrize("size", [0, 1, 3 * MiB + 17], ids=["0B", "1B", "3MiB+17B"])
def test_awscli_s3_cp_round_trip(cairn_cluster, bucket, payloads, tmp_path, size):
    src = tmp_path / "src.bin"
    src.write_bytes(payloads[size])
    cairn_cluster.aws("s3", "cp", src, f"s3://{bucket}/cli/{size}.bin")
    dst = tmp_path / "dst.bin"
    cairn_cluster.aws("s3", "cp", f"s3://{bucket}/cli/{size}.bin", dst)
    assert dst.stat().st_size == size
    assert sha256_file(dst) == sha256(payloads[size])


@pytest.mark.parametrize("size", [0, 1, 3 * MiB + 17], ids=["0B", "1B", "3MiB+17B"])
def test_awscli_s3api_put_get(cairn_cluster, bucket, payloads, tmp_path, size):
    src = tmp_path / "src.bin"
    src.write_bytes(payloads[size])
    out = cairn_cluster.aws(
        "s3api", "put-object", "--bucket", bucket, "--key", f"api/{size}", "--body", src, "--output", "json"
    )
    assert json.loads(out.stdout)["ETag"] == quoted_md5(payloads[size])
    dst = tmp_path / "dst.bin"
    out = cairn_cluster.aws(
        "s3api", "get-object", "--bucket", bucket, "--key", f"api/{size}", dst, "--output", "json"
    )
    meta = json.loads(out.stdout)
    assert meta["ContentLength"] == size
    assert meta["ETag"] == quoted_md5(payloads[size])
    assert sha256_file(dst) == sha256(payloads[size])


def test_objects_of_all_sizes_coexist(s3, bucket, payloads):
    """Everything written in one bucket reads back afterwards, in any order."""
    for size, data in payloads.items():
        s3.put_object(Bucket=bucket, Key=f"all/{size}", Body=data)
    for size in reversed(SIZES):
        assert s3.get_object(Bucket=bucket, Key=f"all/{size}")["Body"].read() == payloads[size]
    listed = {o["Key"]: o["Size"] for o in s3.list_objects_v2(Bucket=bucket, Prefix="all/")["Contents"]}
    assert listed == {f"all/{s}": s for s in SIZES}
