"""Object operations through boto3: headers, metadata, ETag, Content-MD5, errors, keys."""

import base64
import datetime as dt
import hashlib
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from harness.data import MiB
from harness.s3util import headers, quoted_md5, s3_error, status


def test_put_returns_quoted_md5_etag_everywhere(s3, bucket):
    data = os.urandom(3 * MiB + 17)
    r = s3.put_object(Bucket=bucket, Key="obj", Body=data)
    assert status(r) == 200
    etag = quoted_md5(data)
    assert r["ETag"] == etag
    h = s3.head_object(Bucket=bucket, Key="obj")
    assert h["ETag"] == etag
    assert h["ContentLength"] == len(data)
    g = s3.get_object(Bucket=bucket, Key="obj")
    assert g["ETag"] == etag
    assert g["ContentLength"] == len(data)
    assert g["Body"].read() == data
    listed = s3.list_objects_v2(Bucket=bucket)["Contents"]
    assert [(o["Key"], o["ETag"], o["Size"]) for o in listed] == [("obj", etag, len(data))]


def test_empty_object(s3, bucket):
    r = s3.put_object(Bucket=bucket, Key="empty", Body=b"")
    assert r["ETag"] == '"d41d8cd98f00b204e9800998ecf8427e"'
    h = s3.head_object(Bucket=bucket, Key="empty")
    assert h["ContentLength"] == 0
    g = s3.get_object(Bucket=bucket, Key="empty")
    assert g["ContentLength"] == 0
    assert g["Body"].read() == b""


def test_content_type_and_user_metadata_round_trip(s3, bucket):
    meta = {"framework": "torch", "step": "1200", "mixed-case-name": "Some Value"}
    s3.put_object(
        Bucket=bucket,
        Key="ckpt/model.safetensors",
        Body=b"weights",
        ContentType="application/x-safetensors",
        Metadata=meta,
    )
    for r in (
        s3.head_object(Bucket=bucket, Key="ckpt/model.safetensors"),
        s3.get_object(Bucket=bucket, Key="ckpt/model.safetensors"),
    ):
        assert r["ContentType"] == "application/x-safetensors"
        assert r["Metadata"] == {k.lower(): v for k, v in meta.items()}
        assert headers(r)["x-amz-meta-framework"] == "torch"


def test_metadata_is_replaced_on_overwrite(s3, bucket):
    s3.put_object(Bucket=bucket, Key="k", Body=b"1", Metadata={"a": "1"}, ContentType="text/plain")
    s3.put_object(Bucket=bucket, Key="k", Body=b"2", Metadata={"b": "2"}, ContentType="application/json")
    h = s3.head_object(Bucket=bucket, Key="k")
    assert h["Metadata"] == {"b": "2"}
    assert h["ContentType"] == "application/json"


def test_last_modified_present_and_recent(s3, bucket):
    before = dt.datetime.now(dt.timezone.utc).replace(microsecond=0) - dt.timedelta(seconds=2)
    s3.put_object(Bucket=bucket, Key="t", Body=b"x")
    after = dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=2)
    h = s3.head_object(Bucket=bucket, Key="t")
    g = s3.get_object(Bucket=bucket, Key="t")
    listed = s3.list_objects_v2(Bucket=bucket)["Contents"][0]
    for lm in (h["LastModified"], g["LastModified"], listed["LastModified"]):
        assert before <= lm <= after, (before, lm, after)
    assert "last-modified" in headers(h)
    # listing and HEAD agree to the second
    assert abs((h["LastModified"] - listed["LastModified"]).total_seconds()) < 1


def test_overwrite_returns_new_content(s3, bucket):
    first = os.urandom(5 * MiB + 1)
    second = os.urandom(1000)
    s3.put_object(Bucket=bucket, Key="ow", Body=first)
    assert s3.get_object(Bucket=bucket, Key="ow")["Body"].read() == first
    r = s3.put_object(Bucket=bucket, Key="ow", Body=second)
    assert r["ETag"] == quoted_md5(second)
    g = s3.get_object(Bucket=bucket, Key="ow")
    assert g["ContentLength"] == len(second)
    assert g["ETag"] == quoted_md5(second)
    assert g["Body"].read() == second
    listed = s3.list_objects_v2(Bucket=bucket)["Contents"]
    assert [(o["Key"], o["Size"]) for o in listed] == [("ow", len(second))]


def test_delete_object(s3, bucket):
    s3.put_object(Bucket=bucket, Key="gone", Body=b"bye")
    r = s3.delete_object(Bucket=bucket, Key="gone")
    assert status(r) == 204
    with s3_error("NoSuchKey", 404):
        s3.get_object(Bucket=bucket, Key="gone")
    with s3_error("404", 404):
        s3.head_object(Bucket=bucket, Key="gone")
    assert s3.list_objects_v2(Bucket=bucket).get("Contents", []) == []


def test_delete_missing_key_is_204(s3, bucket):
    r = s3.delete_object(Bucket=bucket, Key="never/existed")
    assert status(r) == 204


def test_missing_key_errors(s3, bucket):
    with s3_error("NoSuchKey", 404) as ei:
        s3.get_object(Bucket=bucket, Key="nope")
    err = ei.value.response["Error"]
    assert err.get("Message"), err
    with s3_error("404", 404):
        s3.head_object(Bucket=bucket, Key="nope")


def test_content_md5_checked(s3, bucket):
    data = b"checkpoint bytes" * 1000
    good = base64.b64encode(hashlib.md5(data).digest()).decode()
    bad = base64.b64encode(hashlib.md5(data + b"!").digest()).decode()
    r = s3.put_object(Bucket=bucket, Key="md5-ok", Body=data, ContentMD5=good)
    assert r["ETag"] == quoted_md5(data)
    with s3_error("BadDigest", 400):
        s3.put_object(Bucket=bucket, Key="md5-bad", Body=data, ContentMD5=bad)
    # nothing stored under the refused key
    with s3_error("404", 404):
        s3.head_object(Bucket=bucket, Key="md5-bad")


def test_content_md5_mismatch_keeps_the_old_object(s3, bucket):
    s3.put_object(Bucket=bucket, Key="k", Body=b"old")
    bad = base64.b64encode(hashlib.md5(b"other").digest()).decode()
    with s3_error("BadDigest", 400):
        s3.put_object(Bucket=bucket, Key="k", Body=b"new!", ContentMD5=bad)
    assert s3.get_object(Bucket=bucket, Key="k")["Body"].read() == b"old"


def test_malformed_content_md5_is_invalid_digest(s3, bucket):
    with s3_error("InvalidDigest", 400):
        s3.put_object(Bucket=bucket, Key="k", Body=b"data", ContentMD5="not-base64-md5")
    with s3_error("404", 404):
        s3.head_object(Bucket=bucket, Key="k")


SPECIAL_KEYS = [
    "plain.bin",
    "dir/sub dir/file with spaces.txt",
    "plus+sign&amp=eq?q#hash%pct.bin",
    "unicode/ünïcødé/模型.safetensors",
    "trailing-slash/",
    "a//double//slash",
    "~tilde!(paren)*star'quote,comma;semi:colon@at$dollar",
    "x" * 900,
]


def test_special_keys_round_trip(s3, bucket):
    for i, key in enumerate(SPECIAL_KEYS):
        s3.put_object(Bucket=bucket, Key=key, Body=f"value {i}".encode())
    for i, key in enumerate(SPECIAL_KEYS):
        assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == f"value {i}".encode(), key
        assert s3.head_object(Bucket=bucket, Key=key)["ContentLength"] == len(f"value {i}")
    listed = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]]
    assert listed == sorted(SPECIAL_KEYS, key=lambda k: k.encode())
    for key in SPECIAL_KEYS:
        assert status(s3.delete_object(Bucket=bucket, Key=key)) == 204
    assert s3.list_objects_v2(Bucket=bucket)["KeyCount"] == 0


def test_parallel_puts_and_gets(s3, bucket):
    blobs = {f"par/{i:02d}": os.urandom(512 * 1024 + i * 7919) for i in range(12)}

    def put(item):
        k, v = item
        return s3.put_object(Bucket=bucket, Key=k, Body=v)["ETag"]

    with ThreadPoolExecutor(6) as ex:
        etags = list(ex.map(put, blobs.items()))
    assert etags == [quoted_md5(v) for v in blobs.values()]

    def get(k):
        return s3.get_object(Bucket=bucket, Key=k)["Body"].read()

    with ThreadPoolExecutor(6) as ex:
        got = list(ex.map(get, blobs))
    assert got == list(blobs.values())


def test_overwrite_is_atomic_for_readers(s3, bucket):
    """Readers racing with overwrites see the old or the new object, never a mix."""
    a = os.urandom(4 * MiB + 3)
    b = os.urandom(4 * MiB + 3)
    allowed = {hashlib.sha256(a).hexdigest(), hashlib.sha256(b).hexdigest()}
    s3.put_object(Bucket=bucket, Key="race", Body=a)
    stop = threading.Event()
    errors = []

    def writer():
        n = 0
        while not stop.is_set() and n < 20:
            s3.put_object(Bucket=bucket, Key="race", Body=b if n % 2 == 0 else a)
            n += 1

    def reader():
        seen = 0
        deadline = time.monotonic() + 20
        while not stop.is_set() and time.monotonic() < deadline:
            try:
                r = s3.get_object(Bucket=bucket, Key="race")
                body = r["Body"].read()
            except Exception as e:  # noqa: BLE001 - any error during the race is a failure
                errors.append(repr(e))
                return
            d = hashlib.sha256(body).hexdigest()
            if d not in allowed:
                errors.append(f"mixed/torn read: {len(body)} bytes, etag {r['ETag']}")
                return
            if r["ETag"] != quoted_md5(body):
                errors.append("ETag does not match the body read with it")
                return
            seen += 1
        return seen

    with ThreadPoolExecutor(3) as ex:
        w = ex.submit(writer)
        readers = [ex.submit(reader) for _ in range(2)]
        w.result(timeout=240)
        stop.set()
        counts = [r.result(timeout=60) for r in readers]
    assert not errors, errors
    assert all(c and c > 0 for c in counts), counts


def test_head_object_headers(s3, bucket):
    s3.put_object(Bucket=bucket, Key="h", Body=b"12345", ContentType="text/plain")
    h = s3.head_object(Bucket=bucket, Key="h")
    hdr = headers(h)
    assert hdr["content-length"] == "5"
    assert hdr["etag"] == quoted_md5(b"12345")
    assert hdr["content-type"] == "text/plain"
    assert "last-modified" in hdr
    assert status(h) == 200


@pytest.mark.parametrize("size", [1, 1023, MiB + 1])
def test_put_get_with_checksum_when_required(cairn_cluster, bucket, size):
    """An SDK configured to send no flexible checksum at all works the same."""
    c = cairn_cluster.client(request_checksum_calculation="when_required")
    data = os.urandom(size)
    assert c.put_object(Bucket=bucket, Key="nc", Body=data)["ETag"] == quoted_md5(data)
    assert c.get_object(Bucket=bucket, Key="nc")["Body"].read() == data


def test_put_after_an_empty_put_on_the_same_connection_does_not_stall(cairn_cluster, bucket):
    """botocore sends `Expect: 100-continue` on every PutObject. When the server answers a
    0-byte PUT at once (no 100 Continue) and keeps the connection, botocore keeps that
    response's status line around; the next PUT on the connection that does get a
    100 Continue then misreads its response and hangs until the read timeout. Real S3
    never triggers this; a fix on the server side is to send 100 Continue for empty bodies
    too, or `Connection: close` on a response to an Expect request that skipped it.
    Consecutive PUTs (no other request in between) is what `for f in files: put(f)` does."""
    import time

    s3 = cairn_cluster.client(read_timeout=10)
    sizes = [0, 1, 0, 0, 1000, 0, 2]
    blobs = {f"seq/{i}": os.urandom(size) for i, size in enumerate(sizes)}
    for key, data in blobs.items():
        t = time.monotonic()
        s3.put_object(Bucket=bucket, Key=key, Body=data)
        took = time.monotonic() - t
        assert took < 5, f"PUT of {len(data)} B right after another PUT took {took:.1f}s"
    for key, data in blobs.items():
        assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == data
