"""Bucket operations: ListBuckets, CreateBucket, HeadBucket, DeleteBucket and their errors."""

import datetime as dt

import pytest

from harness.s3util import new_bucket_name, s3_error, status


def test_create_list_head_delete(s3):
    name = new_bucket_name("life")
    r = s3.create_bucket(Bucket=name)
    assert status(r) == 200

    listed = s3.list_buckets()
    by_name = {b["Name"]: b for b in listed["Buckets"]}
    assert name in by_name
    created = by_name[name]["CreationDate"]
    now = dt.datetime.now(dt.timezone.utc)
    assert abs((now - created).total_seconds()) < 300, created

    assert status(s3.head_bucket(Bucket=name)) == 200

    r = s3.delete_bucket(Bucket=name)
    assert status(r) == 204
    with s3_error("404", 404):
        s3.head_bucket(Bucket=name)
    assert name not in [b["Name"] for b in s3.list_buckets()["Buckets"]]


def test_list_buckets_shows_all_of_them_sorted(s3):
    names = [new_bucket_name("many") for _ in range(4)]
    for n in names:
        s3.create_bucket(Bucket=n)
    try:
        listed = [b["Name"] for b in s3.list_buckets()["Buckets"]]
        for n in names:
            assert n in listed
        assert listed == sorted(listed)
    finally:
        for n in names:
            s3.delete_bucket(Bucket=n)


def test_create_existing_bucket_is_already_owned(s3, bucket):
    with s3_error("BucketAlreadyOwnedByYou", 409):
        s3.create_bucket(Bucket=bucket)
    # and the bucket is still there, with its objects
    s3.put_object(Bucket=bucket, Key="k", Body=b"v")
    assert s3.get_object(Bucket=bucket, Key="k")["Body"].read() == b"v"


@pytest.mark.parametrize(
    "name",
    [
        "ab",  # too short
        "a" * 64,  # too long
        "UpperCase",
        "under_score",
        "-leading-dash",
        "trailing-dash-",
        "double..dot",
        "192.168.10.1",  # looks like an IP address
        ".leading-dot",
    ],
)
def test_invalid_bucket_name(s3, name):
    with s3_error("InvalidBucketName", 400):
        s3.create_bucket(Bucket=name)


@pytest.mark.parametrize("name", ["abc", "a" * 63, "with.dots.ok", "0-digits-9"])
def test_valid_bucket_names(s3, name):
    try:
        s3.create_bucket(Bucket=name)
        assert status(s3.head_bucket(Bucket=name)) == 200
    finally:
        try:
            s3.delete_bucket(Bucket=name)
        except Exception:
            pass


def test_head_missing_bucket_is_404(s3):
    with s3_error("404", 404):
        s3.head_bucket(Bucket=new_bucket_name("missing"))


def test_delete_missing_bucket_is_no_such_bucket(s3):
    with s3_error("NoSuchBucket", 404):
        s3.delete_bucket(Bucket=new_bucket_name("missing"))


def test_delete_non_empty_bucket_refused(s3, bucket):
    s3.put_object(Bucket=bucket, Key="keep/me", Body=b"x")
    with s3_error("BucketNotEmpty", 409):
        s3.delete_bucket(Bucket=bucket)
    # nothing was lost
    assert s3.get_object(Bucket=bucket, Key="keep/me")["Body"].read() == b"x"
    assert status(s3.head_bucket(Bucket=bucket)) == 200
    # once empty it can go
    s3.delete_object(Bucket=bucket, Key="keep/me")
    assert status(s3.delete_bucket(Bucket=bucket)) == 204


def test_operations_on_missing_bucket(s3):
    name = new_bucket_name("gone")
    with s3_error("NoSuchBucket", 404):
        s3.put_object(Bucket=name, Key="k", Body=b"x")
    with s3_error("NoSuchBucket", 404):
        s3.get_object(Bucket=name, Key="k")
    with s3_error("NoSuchBucket", 404):
        s3.list_objects_v2(Bucket=name)
    with s3_error("NoSuchBucket", 404):
        s3.list_objects(Bucket=name)
    with s3_error("404", 404):
        s3.head_object(Bucket=name, Key="k")


def test_recreate_after_delete_starts_empty(s3):
    name = new_bucket_name("again")
    s3.create_bucket(Bucket=name)
    s3.put_object(Bucket=name, Key="old", Body=b"1")
    s3.delete_object(Bucket=name, Key="old")
    s3.delete_bucket(Bucket=name)
    s3.create_bucket(Bucket=name)
    try:
        assert s3.list_objects_v2(Bucket=name)["KeyCount"] == 0
        with s3_error("NoSuchKey", 404):
            s3.get_object(Bucket=name, Key="old")
    finally:
        s3.delete_bucket(Bucket=name)
