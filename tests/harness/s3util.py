"""Small helpers for asserting on S3 responses and errors."""

from __future__ import annotations

import contextlib
import hashlib
import secrets

import pytest
from botocore.exceptions import ClientError


@contextlib.contextmanager
def s3_error(code: str | tuple, status: int):
    """Asserts the block raises a botocore ClientError with this S3 error code and HTTP status.

    `code` may be a tuple of acceptable codes. For HEAD requests (no body) botocore reports
    the status as the code, so pass e.g. "404".
    """
    with pytest.raises(ClientError) as ei:
        yield ei
    resp = ei.value.response
    got_code = resp.get("Error", {}).get("Code")
    got_status = resp.get("ResponseMetadata", {}).get("HTTPStatusCode")
    codes = code if isinstance(code, tuple) else (code,)
    assert (got_code in codes, got_status) == (True, status), (
        f"expected {codes} / HTTP {status}, got {got_code!r} / HTTP {got_status}: {resp.get('Error')}"
    )


def status(resp) -> int:
    return resp["ResponseMetadata"]["HTTPStatusCode"]


def headers(resp) -> dict:
    return resp["ResponseMetadata"]["HTTPHeaders"]


def quoted_md5(data: bytes) -> str:
    return '"' + hashlib.md5(data).hexdigest() + '"'


def list_all_v2(client, **kw) -> tuple[list[str], list[str], int]:
    """All keys and common prefixes by following continuation tokens; also the page count."""
    keys, prefixes, pages = [], [], 0
    token = None
    while True:
        args = dict(kw)
        if token:
            args["ContinuationToken"] = token
        page = client.list_objects_v2(**args)
        pages += 1
        keys += [o["Key"] for o in page.get("Contents", [])]
        prefixes += [p["Prefix"] for p in page.get("CommonPrefixes", [])]
        if not page["IsTruncated"]:
            assert "NextContinuationToken" not in page
            return keys, prefixes, pages
        token = page["NextContinuationToken"]
        assert token, "IsTruncated without NextContinuationToken"
        assert pages < 10_000, "listing does not end"


def new_bucket_name(prefix: str = "t") -> str:
    return f"{prefix}-{secrets.token_hex(6)}"


def empty_and_delete_bucket(client, name: str):
    """Best-effort removal of a bucket and everything in it."""
    try:
        token = None
        while True:
            kw = {"Bucket": name}
            if token:
                kw["ContinuationToken"] = token
            page = client.list_objects_v2(**kw)
            for o in page.get("Contents", []):
                client.delete_object(Bucket=name, Key=o["Key"])
            if not page.get("IsTruncated"):
                break
            token = page.get("NextContinuationToken")
        client.delete_bucket(Bucket=name)
    except Exception:
        pass  # the cluster goes away with the module anyway
