"""200 MB objects, up and down, with boto3 and aws-cli; compared by sha256 without holding
the object in memory. Single PUTs only (multipart is issue 3)."""

import json

import pytest
from boto3.s3.transfer import TransferConfig

from harness.data import MiB, md5_file, read_file_range, sha256_file, sha256_stream

pytestmark = pytest.mark.big

NO_MULTIPART = TransferConfig(multipart_threshold=8 * 1024 * MiB, multipart_chunksize=8 * 1024 * MiB)


@pytest.fixture(scope="module")
def big_md5(big_file):
    return md5_file(big_file[0])


def test_boto3_put_object_get_object(s3, bucket, big_file, big_md5, tmp_path):
    path, size, digest = big_file
    with open(path, "rb") as f:
        r = s3.put_object(Bucket=bucket, Key="big.bin", Body=f)
    assert r["ETag"] == f'"{big_md5}"'
    assert s3.head_object(Bucket=bucket, Key="big.bin")["ContentLength"] == size

    g = s3.get_object(Bucket=bucket, Key="big.bin")
    assert g["ContentLength"] == size
    got, n = sha256_stream(g["Body"])
    assert (n, got) == (size, digest)

    # download_file: parallel ranged GETs of 8 MiB
    dst = tmp_path / "big.dl"
    s3.download_file(bucket, "big.bin", str(dst))
    assert sha256_file(dst) == digest
    dst.unlink()

    # ranges deep inside and at the end
    for start, length in [(size - 1, 1), (size - 5 * MiB - 3, 5 * MiB + 3), (size // 2 + 7, 2 * MiB)]:
        r = s3.get_object(Bucket=bucket, Key="big.bin", Range=f"bytes={start}-{start + length - 1}")
        assert r["Body"].read() == read_file_range(path, start, length)


def test_boto3_upload_file_single_put(s3, bucket, big_file, tmp_path):
    path, size, digest = big_file
    s3.upload_file(str(path), bucket, "up.bin", Config=NO_MULTIPART)
    got, n = sha256_stream(s3.get_object(Bucket=bucket, Key="up.bin")["Body"])
    assert (n, got) == (size, digest)


def test_awscli_s3api_put_and_s3_cp_down(cairn_cluster, bucket, big_file, big_md5, tmp_path):
    path, size, digest = big_file
    out = cairn_cluster.aws("s3api", "put-object", "--bucket", bucket, "--key", "cli.bin", "--body", path, "--output", "json")
    assert json.loads(out.stdout)["ETag"] == f'"{big_md5}"'
    dst = tmp_path / "cli.dl"
    cairn_cluster.aws("s3", "cp", f"s3://{bucket}/cli.bin", dst)  # ranged GETs
    assert dst.stat().st_size == size
    assert sha256_file(dst) == digest
    dst.unlink()
    out = cairn_cluster.aws("s3api", "get-object", "--bucket", bucket, "--key", "cli.bin", dst, "--output", "json")
    assert json.loads(out.stdout)["ContentLength"] == size
    assert sha256_file(dst) == digest


def test_awscli_s3_cp_up_single_put(cairn_cluster, bucket, big_file, tmp_path):
    """`aws s3 cp` of 200 MB with the multipart threshold raised above it (one PUT)."""
    path, size, digest = big_file
    cairn_cluster.aws("s3", "cp", path, f"s3://{bucket}/cp.bin", config_extra="multipart_threshold = 1GB")
    s3 = cairn_cluster.client()
    assert s3.head_object(Bucket=bucket, Key="cp.bin")["ContentLength"] == size
    got, n = sha256_stream(s3.get_object(Bucket=bucket, Key="cp.bin")["Body"])
    assert (n, got) == (size, digest)
