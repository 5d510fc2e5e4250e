"""GetObject with Range: 206 with the right Content-Range and bytes, 416 when unsatisfiable.

Objects span several 3 MiB stripes of 1 MiB blocks, so the ranges cross block and stripe
boundaries of the erasure layout.
"""

import os
import random

import pytest

from harness.data import MiB
from harness.s3util import headers, s3_error, status

SIZE = 7 * MiB + 5  # 3 stripes, the last one short and not block-aligned


@pytest.fixture(scope="module")
def ranged(cairn_cluster):
    s3 = cairn_cluster.client()
    name = "ranges-" + os.urandom(4).hex()
    s3.create_bucket(Bucket=name)
    data = os.urandom(SIZE)
    s3.put_object(Bucket=name, Key="obj", Body=data)
    small = b"0123456789"
    s3.put_object(Bucket=name, Key="ten", Body=small)
    s3.put_object(Bucket=name, Key="empty", Body=b"")
    return s3, name, data


def get_range(s3, bucket, key, spec):
    r = s3.get_object(Bucket=bucket, Key=key, Range=spec)
    return r, r["Body"].read()


def check_206(r, body, data, first, last):
    assert status(r) == 206, status(r)
    assert r["ContentRange"] == f"bytes {first}-{last}/{len(data)}"
    assert r["ContentLength"] == last - first + 1
    assert body == data[first : last + 1]


CASES = [
    ("bytes=0-0", 0, 0),
    ("bytes=0-99", 0, 99),
    ("bytes=1000-2000", 1000, 2000),
    # across the first block boundary (block 0 -> block 1 of stripe 0)
    (f"bytes={MiB - 3}-{MiB + 3}", MiB - 3, MiB + 3),
    # across the first stripe boundary
    (f"bytes={3 * MiB - 2}-{3 * MiB + 1}", 3 * MiB - 2, 3 * MiB + 1),
    # exactly one stripe
    (f"bytes={3 * MiB}-{6 * MiB - 1}", 3 * MiB, 6 * MiB - 1),
    # into the short last stripe
    (f"bytes={6 * MiB + 100}-{SIZE - 1}", 6 * MiB + 100, SIZE - 1),
    # open-ended and suffix ranges
    (f"bytes={SIZE - 10}-", SIZE - 10, SIZE - 1),
    ("bytes=5000000-", 5000000, SIZE - 1),
    ("bytes=-1", SIZE - 1, SIZE - 1),
    ("bytes=-500", SIZE - 500, SIZE - 1),
    (f"bytes=-{2 * MiB + 7}", SIZE - (2 * MiB + 7), SIZE - 1),
    # end beyond the object is clamped
    (f"bytes={SIZE - 3}-{SIZE + 1000}", SIZE - 3, SIZE - 1),
    # whole object as a range
    ("bytes=0-", 0, SIZE - 1),
    (f"bytes=-{SIZE + 50}", 0, SIZE - 1),
]


@pytest.mark.parametrize("spec,first,last", CASES, ids=[c[0] for c in CASES])
def test_range(ranged, spec, first, last):
    s3, bucket, data = ranged
    r, body = get_range(s3, bucket, "obj", spec)
    check_206(r, body, data, first, last)
    assert headers(r).get("accept-ranges", "bytes") == "bytes"


def test_random_ranges(ranged):
    s3, bucket, data = ranged
    rnd = random.Random(1234)
    for _ in range(25):
        a = rnd.randrange(SIZE)
        b = min(SIZE - 1, a + rnd.choice([0, 1, 17, 4096, MiB, 3 * MiB + 1, rnd.randrange(SIZE)]))
        r, body = get_range(s3, bucket, "obj", f"bytes={a}-{b}")
        check_206(r, body, data, a, b)


@pytest.mark.parametrize("spec", [f"bytes={SIZE}-", f"bytes={SIZE + 10}-{SIZE + 20}", "bytes=-0"])
def test_unsatisfiable_range(ranged, spec):
    s3, bucket, _ = ranged
    with s3_error("InvalidRange", 416) as ei:
        s3.get_object(Bucket=bucket, Key="obj", Range=spec)
    assert headers(ei.value.response).get("content-range") in (None, f"bytes */{SIZE}")


def test_range_on_small_object(ranged):
    s3, bucket, _ = ranged
    data = b"0123456789"
    for spec, first, last in [
        ("bytes=0-0", 0, 0),
        ("bytes=3-6", 3, 6),
        ("bytes=-3", 7, 9),
        ("bytes=8-", 8, 9),
        ("bytes=5-100", 5, 9),
        ("bytes=-100", 0, 9),
    ]:
        r, body = get_range(s3, bucket, "ten", spec)
        check_206(r, body, data, first, last)
    with s3_error("InvalidRange", 416):
        s3.get_object(Bucket=bucket, Key="ten", Range="bytes=10-")


def test_range_on_empty_object_is_unsatisfiable(ranged):
    s3, bucket, _ = ranged
    with s3_error("InvalidRange", 416):
        s3.get_object(Bucket=bucket, Key="empty", Range="bytes=0-0")


def test_range_on_missing_key(ranged):
    s3, bucket, _ = ranged
    with s3_error("NoSuchKey", 404):
        s3.get_object(Bucket=bucket, Key="missing", Range="bytes=0-10")


@pytest.mark.parametrize("spec", ["bytes=abc", "bytes=5-2", "items=0-5"])
def test_malformed_range_is_ignored(ranged, spec):
    """S3 ignores a Range header it cannot parse and sends the whole object with 200."""
    s3, bucket, _ = ranged
    r = s3.get_object(Bucket=bucket, Key="ten", Range=spec)
    assert status(r) == 200
    assert r["Body"].read() == b"0123456789"
