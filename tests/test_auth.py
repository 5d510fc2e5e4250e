"""SigV4: wrong credentials, anonymous requests, presigned URLs (fetched with curl), expiry,
skewed clocks, payload hashes."""

import datetime as dt
import hashlib
import os
import shutil
import subprocess
import time

import pytest
from botocore import UNSIGNED
from botocore.config import Config

from harness import sigv4
from harness.data import MiB
from harness.s3client import make_client
from harness.s3util import s3_error

pytestmark = pytest.mark.skipif(shutil.which("curl") is None, reason="curl missing (tests/run.sh installs it)")


def curl(url: str, out=None, method: str | None = None, upload=None) -> tuple[int, bytes]:
    """(HTTP status, body) of `curl URL`; the body is read from `out` when given."""
    argv = ["curl", "-sS", "--noproxy", "*", "-w", "%{http_code}", "-o", str(out) if out else "-"]
    if method:
        argv += ["-X", method]
    if upload:
        argv += ["-T", str(upload)]
    argv.append(url)
    r = subprocess.run(argv, capture_output=True, timeout=120)
    assert r.returncode == 0, r.stderr.decode()
    code = int(r.stdout[-3:])
    body = open(out, "rb").read() if out else r.stdout[:-3]
    return code, body


def code_of(body: bytes) -> str | None:
    return sigv4.parse_error(body).get("Code")


@pytest.fixture(scope="module")
def obj(cairn_cluster):
    s3 = cairn_cluster.client()
    b = "auth-" + os.urandom(4).hex()
    s3.create_bucket(Bucket=b)
    data = os.urandom(3 * MiB + 17)
    s3.put_object(Bucket=b, Key="secret/model.bin", Body=data)
    return b, "secret/model.bin", data


# --- wrong credentials ------------------------------------------------------------------


def test_wrong_access_key_is_invalid_access_key_id(cairn_cluster, obj):
    b, k, _ = obj
    bad = make_client(cairn_cluster.endpoint, "AKIDOESNOTEXIST00000", cairn_cluster.secret_key, retries=1)
    with s3_error("InvalidAccessKeyId", 403):
        bad.list_buckets()
    with s3_error("InvalidAccessKeyId", 403):
        bad.get_object(Bucket=b, Key=k)
    with s3_error("InvalidAccessKeyId", 403):
        bad.put_object(Bucket=b, Key="intruder", Body=b"x")
    with s3_error("InvalidAccessKeyId", 403):
        bad.list_objects_v2(Bucket=b)
    with s3_error("403", 403):
        bad.head_object(Bucket=b, Key=k)
    good = cairn_cluster.client()
    with s3_error("404", 404):
        good.head_object(Bucket=b, Key="intruder")


def test_wrong_secret_is_signature_does_not_match(cairn_cluster, obj):
    b, k, _ = obj
    bad = make_client(cairn_cluster.endpoint, cairn_cluster.access_key, "not-the-secret-" + "x" * 25, retries=1)
    with s3_error("SignatureDoesNotMatch", 403):
        bad.list_buckets()
    with s3_error("SignatureDoesNotMatch", 403):
        bad.get_object(Bucket=b, Key=k)
    with s3_error("SignatureDoesNotMatch", 403):
        bad.put_object(Bucket=b, Key="intruder2", Body=b"x")
    with s3_error("SignatureDoesNotMatch", 403):
        bad.create_bucket(Bucket="intruder-bucket")
    with s3_error("SignatureDoesNotMatch", 403):
        bad.delete_object(Bucket=b, Key=k)
    good = cairn_cluster.client()
    with s3_error("404", 404):
        good.head_object(Bucket=b, Key="intruder2")
    with s3_error("404", 404):
        good.head_bucket(Bucket="intruder-bucket")
    assert good.get_object(Bucket=b, Key=k)["ContentLength"] == 3 * MiB + 17


def test_anonymous_requests_are_access_denied(cairn_cluster, obj):
    b, k, _ = obj
    ep = cairn_cluster.endpoint
    for method, path, body in [
        ("GET", "/", None),
        ("GET", sigv4.s3_path(b), None),
        ("GET", sigv4.s3_path(b, k), None),
        ("PUT", sigv4.s3_path(b, "anon"), b"anonymous data"),
        ("PUT", sigv4.s3_path("anon-bucket"), None),
        ("DELETE", sigv4.s3_path(b, k), None),
    ]:
        r = sigv4.request(method, ep + path, body=body)
        assert r.status == 403, (method, path, r.status, r.body[:300])
        assert r.error_code == "AccessDenied", (method, path, r.body[:300])
        assert r.error.get("Message"), r.body
    anon = make_client(ep, "x", "y", retries=1, signature_version=UNSIGNED)
    with s3_error("AccessDenied", 403):
        anon.get_object(Bucket=b, Key=k)
    good = cairn_cluster.client()
    with s3_error("404", 404):
        good.head_object(Bucket=b, Key="anon")
    assert good.get_object(Bucket=b, Key=k)["ContentLength"] == 3 * MiB + 17


def test_error_xml_shape(cairn_cluster, obj):
    b, _, _ = obj
    r = sigv4.request("GET", cairn_cluster.endpoint + sigv4.s3_path(b, "nope"))
    assert r.status == 403
    assert r.headers.get("content-type", "").startswith(("application/xml", "text/xml")), r.headers
    err = r.error
    assert set(err) >= {"Code", "Message"}, err
    assert err.get("RequestId") is not None or "x-amz-request-id" in r.headers


# --- presigned URLs -----------------------------------------------------------------------


def test_presigned_get_with_curl(cairn_cluster, obj, tmp_path):
    b, k, data = obj
    url = cairn_cluster.client().generate_presigned_url(
        "get_object", Params={"Bucket": b, "Key": k}, ExpiresIn=300
    )
    assert "X-Amz-Signature=" in url and url.startswith(cairn_cluster.endpoint + "/")
    code, body = curl(url, out=tmp_path / "dl")
    assert code == 200, body[:500]
    assert hashlib.sha256(body).digest() == hashlib.sha256(data).digest()


def test_presigned_get_of_odd_key(cairn_cluster, bucket, tmp_path):
    s3 = cairn_cluster.client()
    key = "dir with space/ünï+cødé&x=y.bin"
    s3.put_object(Bucket=bucket, Key=key, Body=b"odd key content")
    url = s3.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": key}, ExpiresIn=60)
    code, body = curl(url, out=tmp_path / "odd")
    assert (code, body) == (200, b"odd key content")


def test_presigned_get_with_range_header_via_curl(cairn_cluster, obj, tmp_path):
    b, k, data = obj
    url = cairn_cluster.client().generate_presigned_url("get_object", Params={"Bucket": b, "Key": k}, ExpiresIn=60)
    r = subprocess.run(
        ["curl", "-sS", "--noproxy", "*", "-r", "100-199", "-o", str(tmp_path / "part"), "-w", "%{http_code}", url],
        capture_output=True,
        timeout=60,
    )
    assert r.stdout == b"206", r.stdout
    assert (tmp_path / "part").read_bytes() == data[100:200]


def test_presigned_put_with_curl(cairn_cluster, bucket, tmp_path):
    s3 = cairn_cluster.client()
    src = tmp_path / "up.bin"
    payload = os.urandom(MiB + 3)
    src.write_bytes(payload)
    url = s3.generate_presigned_url("put_object", Params={"Bucket": bucket, "Key": "via-curl"}, ExpiresIn=60)
    code, body = curl(url, upload=src)
    assert code == 200, body[:500]
    assert s3.get_object(Bucket=bucket, Key="via-curl")["Body"].read() == payload


def test_expired_presigned_url_is_access_denied(cairn_cluster, obj):
    b, k, _ = obj
    url = cairn_cluster.client().generate_presigned_url("get_object", Params={"Bucket": b, "Key": k}, ExpiresIn=1)
    time.sleep(2.2)
    code, body = curl(url)
    assert code == 403, body[:300]
    assert code_of(body) == "AccessDenied", body[:500]


def test_backdated_presigned_url_is_access_denied(cairn_cluster, obj):
    b, k, _ = obj
    url = sigv4.presign_url(
        "GET",
        cairn_cluster.endpoint + sigv4.s3_path(b, k),
        cairn_cluster.access_key,
        cairn_cluster.secret_key,
        expires=60,
        when=dt.datetime.now(dt.timezone.utc) - dt.timedelta(minutes=10),
    )
    code, body = curl(url)
    assert (code, code_of(body)) == (403, "AccessDenied"), body[:500]


def test_own_presigner_agrees_with_gateway(cairn_cluster, obj):
    """Our independent signer (used for the negative cases) produces URLs the gateway accepts."""
    b, k, data = obj
    url = sigv4.presign_url(
        "GET", cairn_cluster.endpoint + sigv4.s3_path(b, k), cairn_cluster.access_key, cairn_cluster.secret_key
    )
    r = sigv4.request("GET", url)
    assert r.status == 200, r.body[:300]
    assert r.body == data


def test_tampered_presigned_url_is_refused(cairn_cluster, obj):
    b, k, _ = obj
    s3 = cairn_cluster.client()
    url = s3.generate_presigned_url("get_object", Params={"Bucket": b, "Key": k}, ExpiresIn=300)
    sig = url[-1]
    bad_sig = url[:-1] + ("0" if sig != "0" else "1")
    code, body = curl(bad_sig)
    assert (code, code_of(body)) == (403, "SignatureDoesNotMatch"), body[:500]
    # the same signature for another object
    s3.put_object(Bucket=b, Key="secret/other.bin", Body=b"other")
    other = url.replace("/secret/model.bin?", "/secret/other.bin?")
    assert other != url
    code, body = curl(other)
    assert (code, code_of(body)) == (403, "SignatureDoesNotMatch"), body[:500]
    # a longer expiry than was signed
    longer = url.replace("X-Amz-Expires=300", "X-Amz-Expires=3000")
    code, body = curl(longer)
    assert (code, code_of(body)) == (403, "SignatureDoesNotMatch"), body[:500]


def test_presigned_url_with_unknown_key_id(cairn_cluster, obj):
    b, k, _ = obj
    url = sigv4.presign_url("GET", cairn_cluster.endpoint + sigv4.s3_path(b, k), "AKIDUNKNOWN000000000", "whatever")
    code, body = curl(url)
    assert (code, code_of(body)) == (403, "InvalidAccessKeyId"), body[:500]


# --- header signatures: time, payload hash -------------------------------------------------


def _signed(cluster, method, path, body=b"", payload_hash=None, when=None, headers=None):
    url = cluster.endpoint + path
    ph = payload_hash if payload_hash is not None else hashlib.sha256(body or b"").hexdigest()
    h = sigv4.sign_headers(
        method, url, cluster.access_key, cluster.secret_key, payload_hash=ph, when=when, headers=headers
    )
    return sigv4.request(method, url, headers=h, body=body if method in ("PUT", "POST") else None)


def test_own_signer_agrees_with_gateway(cairn_cluster, obj):
    b, k, data = obj
    r = _signed(cairn_cluster, "GET", sigv4.s3_path(b, k))
    assert r.status == 200, r.body[:300]
    assert r.body == data


def test_skewed_clock_is_refused(cairn_cluster, obj):
    b, k, _ = obj
    for skew in (dt.timedelta(hours=-1), dt.timedelta(hours=1)):
        r = _signed(cairn_cluster, "GET", sigv4.s3_path(b, k), when=dt.datetime.now(dt.timezone.utc) + skew)
        assert r.status == 403, (skew, r.status, r.body[:300])
        assert r.error_code == "RequestTimeTooSkewed", r.body[:500]


def test_small_clock_difference_is_accepted(cairn_cluster, obj):
    b, k, data = obj
    r = _signed(cairn_cluster, "GET", sigv4.s3_path(b, k), when=dt.datetime.now(dt.timezone.utc) - dt.timedelta(minutes=2))
    assert r.status == 200, r.body[:300]


def test_unsigned_payload_put(cairn_cluster, bucket):
    body = os.urandom(100_000)
    r = _signed(cairn_cluster, "PUT", sigv4.s3_path(bucket, "unsigned"), body=body, payload_hash=sigv4.UNSIGNED)
    assert r.status == 200, r.body[:300]
    assert r.headers["etag"] == '"' + hashlib.md5(body).hexdigest() + '"'
    assert cairn_cluster.client().get_object(Bucket=bucket, Key="unsigned")["Body"].read() == body


def test_signed_payload_put(cairn_cluster, bucket):
    body = os.urandom(2 * MiB + 1)
    r = _signed(cairn_cluster, "PUT", sigv4.s3_path(bucket, "signed"), body=body)
    assert r.status == 200, r.body[:300]
    assert cairn_cluster.client().get_object(Bucket=bucket, Key="signed")["Body"].read() == body


@pytest.mark.parametrize("size", [10, 3 * MiB + 17])
def test_signed_payload_hash_mismatch_is_refused_and_not_stored(cairn_cluster, bucket, size):
    body = os.urandom(size)
    lie = hashlib.sha256(body[:-1] + bytes([body[-1] ^ 1])).hexdigest()
    r = _signed(cairn_cluster, "PUT", sigv4.s3_path(bucket, "liar"), body=body, payload_hash=lie)
    assert r.status == 400, (r.status, r.body[:300])
    assert r.error_code == "XAmzContentSHA256Mismatch", r.body[:500]
    s3 = cairn_cluster.client()
    with s3_error("404", 404):
        s3.head_object(Bucket=bucket, Key="liar")
    assert s3.list_objects_v2(Bucket=bucket, Prefix="liar")["KeyCount"] == 0


def test_signed_payload_mismatch_keeps_old_version(cairn_cluster, bucket):
    s3 = cairn_cluster.client()
    s3.put_object(Bucket=bucket, Key="v", Body=b"old version")
    body = b"new version"
    r = _signed(cairn_cluster, "PUT", sigv4.s3_path(bucket, "v"), body=body, payload_hash=hashlib.sha256(b"x").hexdigest())
    assert r.status == 400
    assert s3.get_object(Bucket=bucket, Key="v")["Body"].read() == b"old version"


def test_unsigned_header_tampering_is_detected(cairn_cluster, obj):
    """Changing a signed header after signing breaks the signature."""
    b, k, _ = obj
    url = cairn_cluster.endpoint + sigv4.s3_path(b, k)
    h = sigv4.sign_headers(
        "GET", url, cairn_cluster.access_key, cairn_cluster.secret_key,
        payload_hash=sigv4.EMPTY_SHA256, headers={"x-amz-meta-color": "blue"},
    )
    h["x-amz-meta-color"] = "red"
    r = sigv4.request("GET", url, headers=h)
    assert (r.status, r.error_code) == (403, "SignatureDoesNotMatch"), r.body[:300]


def test_health_needs_no_auth_but_s3_does(cairn_cluster):
    r = sigv4.request("GET", cairn_cluster.endpoint + "/_cairn/health")
    assert r.status == 200
    r = sigv4.request("GET", cairn_cluster.endpoint + "/")
    assert r.status == 403


def test_boto3_with_config_object(cairn_cluster, obj):
    """Plain boto3 client built the way a user would (Config with path style)."""
    import boto3

    b, k, data = obj
    s3 = boto3.client(
        "s3",
        endpoint_url=cairn_cluster.endpoint,
        aws_access_key_id=cairn_cluster.access_key,
        aws_secret_access_key=cairn_cluster.secret_key,
        region_name="us-east-1",
        config=Config(s3={"addressing_style": "path"}),
    )
    assert s3.get_object(Bucket=b, Key=k)["Body"].read() == data
