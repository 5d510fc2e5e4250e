"""ListObjectsV2 and ListObjects (V1): prefix, delimiter, max-keys, pagination, start-after,
encoding-type=url."""

import os
from urllib.parse import unquote_plus

import pytest

from harness.s3util import list_all_v2, quoted_md5

KEYS = [
    "a.txt",
    "b/1.txt",
    "b/2.txt",
    "b/c/3.txt",
    "b/c/4.txt",
    "b/d/5.txt",
    "c d/e f.txt",
    "d+e/plus.txt",
    "e/",
    "z.txt",
    "ü/unicode.txt",
] + [f"p/key-{i:02d}" for i in range(25)]


def utf8_sorted(keys):
    return sorted(keys, key=lambda k: k.encode())


@pytest.fixture(scope="module")
def listed(cairn_cluster):
    s3 = cairn_cluster.client()
    name = "list-" + os.urandom(4).hex()
    s3.create_bucket(Bucket=name)
    for k in KEYS:
        s3.put_object(Bucket=name, Key=k, Body=k.encode())
    return s3, name


def test_v2_lists_everything_in_order(listed):
    s3, b = listed
    r = s3.list_objects_v2(Bucket=b)
    assert r["IsTruncated"] is False
    assert r["KeyCount"] == len(KEYS)
    assert [o["Key"] for o in r["Contents"]] == utf8_sorted(KEYS)
    for o in r["Contents"]:
        assert o["Size"] == len(o["Key"].encode())
        assert o["ETag"] == quoted_md5(o["Key"].encode())
        assert o["LastModified"] is not None


def test_v2_prefix(listed):
    s3, b = listed
    r = s3.list_objects_v2(Bucket=b, Prefix="b/")
    assert [o["Key"] for o in r["Contents"]] == ["b/1.txt", "b/2.txt", "b/c/3.txt", "b/c/4.txt", "b/d/5.txt"]
    assert r["Prefix"] == "b/"
    r = s3.list_objects_v2(Bucket=b, Prefix="b/c")
    assert [o["Key"] for o in r["Contents"]] == ["b/c/3.txt", "b/c/4.txt"]
    r = s3.list_objects_v2(Bucket=b, Prefix="nothing-here")
    assert r["KeyCount"] == 0
    assert "Contents" not in r


def test_v2_delimiter_at_root(listed):
    s3, b = listed
    r = s3.list_objects_v2(Bucket=b, Delimiter="/")
    assert [o["Key"] for o in r["Contents"]] == ["a.txt", "z.txt"]
    assert [p["Prefix"] for p in r["CommonPrefixes"]] == utf8_sorted(["b/", "c d/", "d+e/", "e/", "p/", "ü/"])
    assert r["Delimiter"] == "/"
    assert r["KeyCount"] == 2 + 6


def test_v2_delimiter_under_prefix(listed):
    s3, b = listed
    r = s3.list_objects_v2(Bucket=b, Prefix="b/", Delimiter="/")
    assert [o["Key"] for o in r["Contents"]] == ["b/1.txt", "b/2.txt"]
    assert [p["Prefix"] for p in r["CommonPrefixes"]] == ["b/c/", "b/d/"]
    # a "directory marker" key equal to the prefix is listed as a key
    r = s3.list_objects_v2(Bucket=b, Prefix="e/", Delimiter="/")
    assert [o["Key"] for o in r["Contents"]] == ["e/"]
    assert "CommonPrefixes" not in r


def test_v2_other_delimiter(listed):
    s3, b = listed
    r = s3.list_objects_v2(Bucket=b, Prefix="p/key-", Delimiter="1")
    keys = [o["Key"] for o in r["Contents"]]
    prefixes = [p["Prefix"] for p in r["CommonPrefixes"]]
    assert prefixes == ["p/key-01", "p/key-1", "p/key-21"]
    assert keys == [f"p/key-{i:02d}" for i in [0, 2, 3, 4, 5, 6, 7, 8, 9, 20, 22, 23, 24]]


def test_v2_max_keys_and_continuation(listed):
    s3, b = listed
    first = s3.list_objects_v2(Bucket=b, Prefix="p/", MaxKeys=7)
    assert first["IsTruncated"] is True
    assert first["KeyCount"] == 7
    assert first["MaxKeys"] == 7
    assert [o["Key"] for o in first["Contents"]] == [f"p/key-{i:02d}" for i in range(7)]
    keys, prefixes, pages = list_all_v2(s3, Bucket=b, Prefix="p/", MaxKeys=7)
    assert keys == [f"p/key-{i:02d}" for i in range(25)]
    assert prefixes == []
    assert pages == 4


def test_v2_pagination_with_delimiter_has_no_duplicates(listed):
    s3, b = listed
    want_keys = ["a.txt", "z.txt"]
    want_prefixes = utf8_sorted(["b/", "c d/", "d+e/", "e/", "p/", "ü/"])
    for max_keys in (1, 2, 3):
        keys, prefixes, pages = list_all_v2(s3, Bucket=b, Delimiter="/", MaxKeys=max_keys)
        assert keys == want_keys, max_keys
        assert prefixes == want_prefixes, max_keys
        full = -(-(len(want_keys) + len(want_prefixes)) // max_keys)
        assert pages in (full, full + 1), (max_keys, pages)


def test_v2_paginator_matches_single_listing(listed):
    s3, b = listed
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=b, PaginationConfig={"PageSize": 4})
    keys = [o["Key"] for p in pages for o in p.get("Contents", [])]
    assert keys == utf8_sorted(KEYS)


def test_v2_start_after(listed):
    s3, b = listed
    r = s3.list_objects_v2(Bucket=b, Prefix="p/", StartAfter="p/key-20")
    assert [o["Key"] for o in r["Contents"]] == [f"p/key-{i:02d}" for i in range(21, 25)]
    assert r["StartAfter"] == "p/key-20"
    # start-after a key that does not exist
    r = s3.list_objects_v2(Bucket=b, StartAfter="b/c/zzz")
    assert [o["Key"] for o in r["Contents"]][0] == "b/d/5.txt"
    # start-after with pagination
    keys, _, _ = list_all_v2(s3, Bucket=b, Prefix="p/", StartAfter="p/key-09", MaxKeys=4)
    assert keys == [f"p/key-{i:02d}" for i in range(10, 25)]


def test_v2_empty_bucket(cairn_cluster, bucket):
    s3 = cairn_cluster.client()
    r = s3.list_objects_v2(Bucket=bucket)
    assert r["KeyCount"] == 0
    assert r["IsTruncated"] is False
    assert "Contents" not in r
    assert r["Name"] == bucket


def test_v2_encoding_type_url(listed):
    s3, b = listed
    # An explicit EncodingType makes botocore hand back the raw (encoded) values.
    r = s3.list_objects_v2(Bucket=b, EncodingType="url")
    assert r.get("EncodingType") == "url"
    raw = [o["Key"] for o in r["Contents"]]
    assert [unquote_plus(k) for k in raw] == utf8_sorted(KEYS)
    enc = dict(zip(utf8_sorted(KEYS), raw))
    assert " " not in enc["c d/e f.txt"]
    assert "ü" not in enc["ü/unicode.txt"]
    assert enc["d+e/plus.txt"] != "d+e/plus.txt"  # a literal '+' must be escaped (%2B)
    assert enc["a.txt"] == "a.txt"

    r = s3.list_objects_v2(Bucket=b, EncodingType="url", Delimiter="/")
    prefixes = [p["Prefix"] for p in r["CommonPrefixes"]]
    assert [unquote_plus(p) for p in prefixes] == utf8_sorted(["b/", "c d/", "d+e/", "e/", "p/", "ü/"])
    assert "c d/" not in prefixes


def test_v2_default_boto3_listing_decodes_keys(listed):
    # botocore asks for encoding-type=url on its own and decodes the answer
    s3, b = listed
    r = s3.list_objects_v2(Bucket=b, Prefix="c d/")
    assert [o["Key"] for o in r["Contents"]] == ["c d/e f.txt"]
    r = s3.list_objects_v2(Bucket=b, Prefix="ü/")
    assert [o["Key"] for o in r["Contents"]] == ["ü/unicode.txt"]


# --- V1 ---------------------------------------------------------------------------------


def test_v1_lists_everything(listed):
    s3, b = listed
    r = s3.list_objects(Bucket=b)
    assert r["IsTruncated"] is False
    assert [o["Key"] for o in r["Contents"]] == utf8_sorted(KEYS)
    for o in r["Contents"]:
        assert o["ETag"] == quoted_md5(o["Key"].encode())
        assert o["Size"] == len(o["Key"].encode())


def test_v1_prefix_and_delimiter(listed):
    s3, b = listed
    r = s3.list_objects(Bucket=b, Prefix="b/", Delimiter="/")
    assert [o["Key"] for o in r["Contents"]] == ["b/1.txt", "b/2.txt"]
    assert [p["Prefix"] for p in r["CommonPrefixes"]] == ["b/c/", "b/d/"]
    r = s3.list_objects(Bucket=b, Delimiter="/")
    assert [o["Key"] for o in r["Contents"]] == ["a.txt", "z.txt"]
    assert [p["Prefix"] for p in r["CommonPrefixes"]] == utf8_sorted(["b/", "c d/", "d+e/", "e/", "p/", "ü/"])


def test_v1_marker_pagination(listed):
    s3, b = listed
    r = s3.list_objects(Bucket=b, Prefix="p/", MaxKeys=10)
    assert r["IsTruncated"] is True
    assert r["MaxKeys"] == 10
    got = [o["Key"] for o in r["Contents"]]
    assert got == [f"p/key-{i:02d}" for i in range(10)]
    marker = r.get("NextMarker", got[-1])
    while r["IsTruncated"]:
        r = s3.list_objects(Bucket=b, Prefix="p/", MaxKeys=10, Marker=marker)
        page = [o["Key"] for o in r["Contents"]]
        got += page
        marker = r.get("NextMarker", page[-1] if page else marker)
    assert got == [f"p/key-{i:02d}" for i in range(25)]


def test_v1_marker_is_exclusive(listed):
    s3, b = listed
    r = s3.list_objects(Bucket=b, Prefix="p/", Marker="p/key-22")
    assert [o["Key"] for o in r["Contents"]] == ["p/key-23", "p/key-24"]
    assert r.get("Marker", "p/key-22") == "p/key-22"


def test_v1_pagination_with_delimiter_uses_next_marker(listed):
    s3, b = listed
    want = ["a.txt", "z.txt"], utf8_sorted(["b/", "c d/", "d+e/", "e/", "p/", "ü/"])
    keys, prefixes = [], []
    marker = None
    for _ in range(50):
        kw = dict(Bucket=b, Delimiter="/", MaxKeys=2)
        if marker:
            kw["Marker"] = marker
        r = s3.list_objects(**kw)
        keys += [o["Key"] for o in r.get("Contents", [])]
        prefixes += [p["Prefix"] for p in r.get("CommonPrefixes", [])]
        if not r["IsTruncated"]:
            break
        # S3 sends NextMarker when a delimiter is given
        assert r.get("NextMarker"), r
        marker = r["NextMarker"]
    assert (keys, prefixes) == want


def test_v1_paginator(listed):
    s3, b = listed
    pages = s3.get_paginator("list_objects").paginate(Bucket=b, PaginationConfig={"PageSize": 6})
    assert [o["Key"] for p in pages for o in p.get("Contents", [])] == utf8_sorted(KEYS)


def test_v1_encoding_type_url(listed):
    s3, b = listed
    r = s3.list_objects(Bucket=b, EncodingType="url", Prefix="c")
    assert r.get("EncodingType") == "url"
    raw = [o["Key"] for o in r["Contents"]]
    assert [unquote_plus(k) for k in raw] == ["c d/e f.txt"]
    assert raw != ["c d/e f.txt"]
