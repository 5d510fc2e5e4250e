"""Multipart uploads, copies, batch deletes and conditional requests, driven by boto3."""

from __future__ import annotations

import hashlib
import os

import pytest
from boto3.s3.transfer import TransferConfig
from botocore.exceptions import ClientError

MiB = 1024 * 1024


def code(e: ClientError) -> str:
    return e.response["Error"]["Code"]


def status(e: ClientError) -> int:
    return e.response["ResponseMetadata"]["HTTPStatusCode"]


@pytest.fixture(scope="module")
def eleven_mib(tmp_path_factory):
    data = os.urandom(11 * MiB + 123)
    path = tmp_path_factory.mktemp("mp") / "f"
    path.write_bytes(data)
    return path, data


@pytest.mark.parametrize("alg", ["CRC32", "CRC32C", "SHA1", "SHA256", "CRC64NVME"])
def test_upload_file_multipart_with_each_checksum(cairn_cluster, bucket, eleven_mib, tmp_path, alg):
    s3 = cairn_cluster.client()
    path, data = eleven_mib
    cfg = TransferConfig(multipart_threshold=5 * MiB, multipart_chunksize=5 * MiB, max_concurrency=4)
    s3.upload_file(str(path), bucket, "mp", ExtraArgs={"ChecksumAlgorithm": alg}, Config=cfg)
    head = s3.head_object(Bucket=bucket, Key="mp", ChecksumMode="ENABLED")
    assert head["ContentLength"] == len(data)
    assert head["ETag"].strip('"').endswith("-3")
    assert head[f"Checksum{alg}"]
    assert head["ChecksumType"] == ("FULL_OBJECT" if alg == "CRC64NVME" else "COMPOSITE")
    out = tmp_path / "out"
    s3.download_file(bucket, "mp", str(out))
    assert hashlib.sha256(out.read_bytes()).digest() == hashlib.sha256(data).digest()
    # Each part can be read on its own.
    p2 = s3.get_object(Bucket=bucket, Key="mp", PartNumber=2)
    assert p2["PartsCount"] == 3
    assert p2["Body"].read() == data[5 * MiB : 10 * MiB]
    with pytest.raises(ClientError) as e:
        s3.get_object(Bucket=bucket, Key="mp", PartNumber=4)
    assert code(e.value) == "InvalidPartNumber"


def test_complete_validates_the_part_list_and_is_idempotent(cairn_cluster, bucket):
    s3 = cairn_cluster.client()
    up = s3.create_multipart_upload(Bucket=bucket, Key="k")["UploadId"]
    a, b, small = os.urandom(5 * MiB), os.urandom(5 * MiB), os.urandom(1000)
    e1 = s3.upload_part(Bucket=bucket, Key="k", UploadId=up, PartNumber=1, Body=a)["ETag"]
    e2 = s3.upload_part(Bucket=bucket, Key="k", UploadId=up, PartNumber=2, Body=small)["ETag"]
    e3 = s3.upload_part(Bucket=bucket, Key="k", UploadId=up, PartNumber=3, Body=b)["ETag"]
    # Re-uploading a part number replaces it.
    e2 = s3.upload_part(Bucket=bucket, Key="k", UploadId=up, PartNumber=2, Body=b)["ETag"]
    parts = s3.list_parts(Bucket=bucket, Key="k", UploadId=up)["Parts"]
    assert [(p["PartNumber"], p["Size"]) for p in parts] == [(1, 5 * MiB), (2, 5 * MiB), (3, 5 * MiB)]
    assert [u["UploadId"] for u in s3.list_multipart_uploads(Bucket=bucket)["Uploads"]] == [up]

    def complete(part_list):
        return s3.complete_multipart_upload(
            Bucket=bucket, Key="k", UploadId=up, MultipartUpload={"Parts": part_list}
        )

    with pytest.raises(ClientError) as e:
        complete([{"PartNumber": 2, "ETag": e2}, {"PartNumber": 1, "ETag": e1}])
    assert code(e.value) == "InvalidPartOrder"
    with pytest.raises(ClientError) as e:
        complete([{"PartNumber": 1, "ETag": e1}, {"PartNumber": 3, "ETag": '"' + "0" * 32 + '"'}])
    assert code(e.value) == "InvalidPart"
    with pytest.raises(ClientError) as e:
        s3.get_object(Bucket=bucket, Key="k")
    assert code(e.value) == "NoSuchKey", "parts of an unfinished upload must not be visible"

    done = complete([{"PartNumber": 1, "ETag": e1}, {"PartNumber": 3, "ETag": e3}])
    md5s = b"".join(hashlib.md5(x).digest() for x in (a, b))
    assert done["ETag"] == f'"{hashlib.md5(md5s).hexdigest()}-2"'
    again = complete([{"PartNumber": 1, "ETag": e1}, {"PartNumber": 3, "ETag": e3}])
    assert again["ETag"] == done["ETag"]
    assert s3.get_object(Bucket=bucket, Key="k")["Body"].read() == a + b
    assert "Uploads" not in s3.list_multipart_uploads(Bucket=bucket)


def test_small_middle_part_is_entity_too_small_and_abort_frees_the_upload(cairn_cluster, bucket):
    s3 = cairn_cluster.client()
    up = s3.create_multipart_upload(Bucket=bucket, Key="s")["UploadId"]
    e1 = s3.upload_part(Bucket=bucket, Key="s", UploadId=up, PartNumber=1, Body=b"x" * 100)["ETag"]
    e2 = s3.upload_part(Bucket=bucket, Key="s", UploadId=up, PartNumber=2, Body=b"y" * 100)["ETag"]
    with pytest.raises(ClientError) as e:
        s3.complete_multipart_upload(
            Bucket=bucket, Key="s", UploadId=up,
            MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": e1}, {"PartNumber": 2, "ETag": e2}]},
        )
    assert code(e.value) == "EntityTooSmall"
    s3.abort_multipart_upload(Bucket=bucket, Key="s", UploadId=up)
    with pytest.raises(ClientError) as e:
        s3.list_parts(Bucket=bucket, Key="s", UploadId=up)
    assert code(e.value) == "NoSuchUpload"
    with pytest.raises(ClientError) as e:
        s3.upload_part(Bucket=bucket, Key="s", UploadId=up, PartNumber=3, Body=b"z")
    assert code(e.value) == "NoSuchUpload"


def test_conditional_reads_and_writes(cairn_cluster, bucket):
    s3 = cairn_cluster.client()
    etag = s3.put_object(Bucket=bucket, Key="c", Body=b"v1")["ETag"]
    with pytest.raises(ClientError) as e:
        s3.get_object(Bucket=bucket, Key="c", IfNoneMatch=etag)
    assert status(e.value) == 304
    with pytest.raises(ClientError) as e:
        s3.head_object(Bucket=bucket, Key="c", IfMatch='"0123"')
    assert status(e.value) == 412
    assert s3.get_object(Bucket=bucket, Key="c", IfMatch=etag)["Body"].read() == b"v1"
    lm = s3.head_object(Bucket=bucket, Key="c")["LastModified"]
    with pytest.raises(ClientError) as e:
        s3.get_object(Bucket=bucket, Key="c", IfModifiedSince=lm)
    assert status(e.value) == 304
    # Safe commits: If-None-Match: * only creates; If-Match only replaces that version.
    with pytest.raises(ClientError) as e:
        s3.put_object(Bucket=bucket, Key="c", Body=b"v2", IfNoneMatch="*")
    assert code(e.value) == "PreconditionFailed"
    s3.put_object(Bucket=bucket, Key="new", Body=b"n", IfNoneMatch="*")
    with pytest.raises(ClientError) as e:
        s3.put_object(Bucket=bucket, Key="c", Body=b"v2", IfMatch='"0123"')
    assert code(e.value) == "PreconditionFailed"
    s3.put_object(Bucket=bucket, Key="c", Body=b"v2", IfMatch=etag)
    assert s3.get_object(Bucket=bucket, Key="c")["Body"].read() == b"v2"


def test_copy_and_batch_delete(cairn_cluster, bucket):
    s3 = cairn_cluster.client()
    data = os.urandom(4 * MiB + 5)
    s3.put_object(Bucket=bucket, Key="src", Body=data, ContentType="text/x-a", Metadata={"m": "1"})
    r = s3.copy_object(Bucket=bucket, Key="dst", CopySource={"Bucket": bucket, "Key": "src"})
    assert r["CopyObjectResult"]["ETag"] == f'"{hashlib.md5(data).hexdigest()}"'
    got = s3.get_object(Bucket=bucket, Key="dst")
    assert got["Body"].read() == data and got["ContentType"] == "text/x-a" and got["Metadata"] == {"m": "1"}
    s3.copy_object(
        Bucket=bucket, Key="dst2", CopySource={"Bucket": bucket, "Key": "src"},
        MetadataDirective="REPLACE", ContentType="text/x-b", Metadata={"n": "2"},
    )
    h = s3.head_object(Bucket=bucket, Key="dst2")
    assert h["ContentType"] == "text/x-b" and h["Metadata"] == {"n": "2"}
    with pytest.raises(ClientError) as e:
        s3.copy_object(Bucket=bucket, Key="dst3", CopySource={"Bucket": bucket, "Key": "src"}, CopySourceIfMatch='"00"')
    assert code(e.value) == "PreconditionFailed"
    r = s3.delete_objects(
        Bucket=bucket, Delete={"Objects": [{"Key": "dst"}, {"Key": "dst2"}, {"Key": "missing"}]}
    )
    assert sorted(d["Key"] for d in r["Deleted"]) == ["dst", "dst2", "missing"]
    r = s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": "src"}], "Quiet": True})
    assert not r.get("Deleted")
    assert s3.list_objects_v2(Bucket=bucket)["KeyCount"] == 0
