"""A hostile device on the LAN, speaking S3 (issue 21): every x-amz-* header must be
signed, the credential scope's region must be the gateway's, user metadata is limited to
2 KB, CreateBucket's body is validated, version ids are refused (Cairn keeps no versions),
open multipart uploads per bucket are capped, and failed authentications are counted,
logged once per source per minute and slowed per source.

Raw requests come from the independent signer in harness/sigv4.py, so that a header can
be added after signing, as an attacker on the path would.
"""

from __future__ import annotations

import hashlib
import time

import pytest

from harness import sigv4
from harness.exposition import Exposition
from harness.s3client import make_client
from harness.s3util import new_bucket_name, s3_error

OTHER_REGION = "eu-test-1"


def _send(cluster, method, path, body=b"", headers=None, unsigned=None, region="us-east-1",
          payload_hash=None, secret=None, access_key=None, sign_content_sha256=True):
    """A header-signed request; `unsigned` headers are added after signing."""
    url = cluster.endpoint + path
    ph = payload_hash if payload_hash is not None else hashlib.sha256(body).hexdigest()
    h = sigv4.sign_headers(
        method, url, access_key or cluster.access_key, secret or cluster.secret_key,
        region=region, payload_hash=ph, headers=headers, sign_content_sha256=sign_content_sha256,
    )
    h.update(unsigned or {})
    return sigv4.request(method, url, headers=h, body=body if method in ("PUT", "POST") else None)


def _not_signed(r, name):
    assert (r.status, r.error_code) == (403, "AccessDenied"), (r.status, r.body[:400])
    assert r.error.get("Message") == "There were headers present in the request which were not signed", r.body
    assert name in r.error.get("HeadersNotSigned", "").split(","), r.body


@pytest.fixture
def objs(cairn_cluster, bucket):
    s3 = cairn_cluster.client()
    s3.put_object(Bucket=bucket, Key="secret", Body=b"the secret source")
    s3.put_object(Bucket=bucket, Key="dst", Body=b"original")
    return s3, bucket


# --- unsigned x-amz-* headers ------------------------------------------------------------


def test_unsigned_copy_source_does_not_turn_a_put_into_a_copy(cairn_cluster, objs):
    s3, b = objs
    r = _send(cairn_cluster, "PUT", sigv4.s3_path(b, "dst"), body=b"put body",
              unsigned={"x-amz-copy-source": f"/{b}/secret"})
    _not_signed(r, "x-amz-copy-source")
    assert s3.get_object(Bucket=b, Key="dst")["Body"].read() == b"original"
    # The same header signed is a copy.
    r = _send(cairn_cluster, "PUT", sigv4.s3_path(b, "dst"), headers={"x-amz-copy-source": f"/{b}/secret"})
    assert r.status == 200, r.body[:400]
    assert s3.get_object(Bucket=b, Key="dst")["Body"].read() == b"the secret source"


@pytest.mark.parametrize("name,value", [
    ("x-amz-meta-owner", "mallory"),
    ("x-amz-storage-class", "STANDARD"),
    ("x-amz-checksum-crc32", "AAAAAA=="),
    ("x-amz-metadata-directive", "REPLACE"),
])
def test_unsigned_amz_header_is_refused_and_nothing_stored(cairn_cluster, objs, name, value):
    s3, b = objs
    r = _send(cairn_cluster, "PUT", sigv4.s3_path(b, "new"), body=b"data", unsigned={name: value})
    _not_signed(r, name)
    with s3_error("404", 404):
        s3.head_object(Bucket=b, Key="new")
    if name != "x-amz-checksum-crc32":  # signed, that one is checked against the body
        r = _send(cairn_cluster, "PUT", sigv4.s3_path(b, "new"), body=b"data", headers={name: value})
        assert r.status == 200, r.body[:400]
        assert s3.get_object(Bucket=b, Key="new")["Body"].read() == b"data"
    if name == "x-amz-meta-owner":
        assert s3.head_object(Bucket=b, Key="new")["Metadata"] == {"owner": value}


def test_unsigned_meta_on_a_signed_read_is_refused(cairn_cluster, objs):
    _, b = objs
    r = _send(cairn_cluster, "GET", sigv4.s3_path(b, "secret"), unsigned={"x-amz-meta-a": "1", "X-Amz-Foo": "2"})
    _not_signed(r, "x-amz-meta-a")
    assert "x-amz-foo" in r.error["HeadersNotSigned"].split(","), r.body


def test_content_sha256_must_be_signed(cairn_cluster, objs):
    s3, b = objs
    r = _send(cairn_cluster, "PUT", sigv4.s3_path(b, "dst"), body=b"sneaky", sign_content_sha256=False)
    _not_signed(r, "x-amz-content-sha256")
    assert s3.get_object(Bucket=b, Key="dst")["Body"].read() == b"original"
    # Unsigned headers that are not x-amz-* are honoured, as S3 does.
    r = _send(cairn_cluster, "PUT", sigv4.s3_path(b, "typed"), body=b"t", unsigned={"Content-Type": "text/x-test"})
    assert r.status == 200, r.body[:400]
    assert s3.head_object(Bucket=b, Key="typed")["ContentType"] == "text/x-test"


def test_unsigned_amz_header_on_a_presigned_url_is_refused(cairn_cluster, objs):
    s3, b = objs
    url = sigv4.presign_url("PUT", cairn_cluster.endpoint + sigv4.s3_path(b, "dst"),
                            cairn_cluster.access_key, cairn_cluster.secret_key)
    r = sigv4.request("PUT", url, headers={"x-amz-copy-source": f"/{b}/secret"}, body=b"")
    _not_signed(r, "x-amz-copy-source")
    r = sigv4.request("PUT", url, headers={"x-amz-meta-owner": "mallory"}, body=b"via url")
    _not_signed(r, "x-amz-meta-owner")
    assert s3.get_object(Bucket=b, Key="dst")["Body"].read() == b"original"
    # The same URL with no extra header works (boto3's presigned URLs sign only host).
    r = sigv4.request("PUT", url, body=b"via url")
    assert r.status == 200, r.body[:400]
    assert s3.get_object(Bucket=b, Key="dst")["Body"].read() == b"via url"


# --- region ------------------------------------------------------------------------------


def test_wrong_region_is_authorization_header_malformed(cairn_cluster, objs):
    s3, b = objs
    r = _send(cairn_cluster, "PUT", sigv4.s3_path(b, "dst"), body=b"x", region="us-west-2")
    assert (r.status, r.error_code) == (400, "AuthorizationHeaderMalformed"), r.body[:400]
    assert r.error.get("Region") == "us-east-1", r.body
    assert "'us-west-2' is wrong; expecting 'us-east-1'" in r.error["Message"], r.body
    # boto3 set up for another region follows the <Region> of that error and signs again.
    other = make_client(cairn_cluster.endpoint, cairn_cluster.access_key, cairn_cluster.secret_key,
                        region_name="eu-central-1")
    assert other.get_object(Bucket=b, Key="secret")["Body"].read() == b"the secret source"
    url = sigv4.presign_url("GET", cairn_cluster.endpoint + sigv4.s3_path(b, "secret"),
                            cairn_cluster.access_key, cairn_cluster.secret_key, region="us-west-2")
    r = sigv4.request("GET", url)
    assert (r.status, r.error_code) == (400, "AuthorizationQueryParametersError"), r.body[:400]
    assert r.error.get("Region") == "us-east-1", r.body
    assert s3.get_object(Bucket=b, Key="dst")["Body"].read() == b"original"


# --- user metadata -----------------------------------------------------------------------


def test_user_metadata_over_2kb_is_refused(cairn_cluster, objs):
    s3, b = objs
    # Name "ab" (2 bytes) + value: 2048 bytes in all is the most S3 accepts.
    s3.put_object(Bucket=b, Key="meta-ok", Body=b"x", Metadata={"ab": "v" * 2046})
    assert s3.head_object(Bucket=b, Key="meta-ok")["Metadata"]["ab"] == "v" * 2046
    too_big = {"ab": "v" * 1000, "cd": "w" * 1045}  # 2 + 1000 + 2 + 1045 = 2049
    with s3_error("MetadataTooLarge", 400):
        s3.put_object(Bucket=b, Key="meta-big", Body=b"x", Metadata=too_big)
    with s3_error("404", 404):
        s3.head_object(Bucket=b, Key="meta-big")
    with s3_error("MetadataTooLarge", 400):
        s3.create_multipart_upload(Bucket=b, Key="meta-big", Metadata=too_big)
    assert not s3.list_multipart_uploads(Bucket=b).get("Uploads")
    with s3_error("MetadataTooLarge", 400):
        s3.copy_object(Bucket=b, Key="meta-big", CopySource={"Bucket": b, "Key": "secret"},
                       MetadataDirective="REPLACE", Metadata=too_big)
    with s3_error("404", 404):
        s3.head_object(Bucket=b, Key="meta-big")
    up = s3.create_multipart_upload(Bucket=b, Key="mp-ok", Metadata={"ab": "v" * 2046})
    s3.abort_multipart_upload(Bucket=b, Key="mp-ok", UploadId=up["UploadId"])
    s3.copy_object(Bucket=b, Key="copy-ok", CopySource={"Bucket": b, "Key": "secret"},
                   MetadataDirective="REPLACE", Metadata={"ab": "v" * 2046})


# --- CreateBucket body -------------------------------------------------------------------


def _create_bucket_raw(cluster, name, body: bytes):
    return _send(cluster, "PUT", sigv4.s3_path(name), body=body)


def _conf(constraint: str) -> bytes:
    return (
        '<CreateBucketConfiguration xmlns="http://s3.amazonaws.com/doc/2006-03-01/">'
        f"<LocationConstraint>{constraint}</LocationConstraint></CreateBucketConfiguration>"
    ).encode()


def test_create_bucket_body_is_validated(cairn_cluster):
    s3 = cairn_cluster.client()
    cases = [
        (b"<CreateBucketConfiguration><LocationConstraint>", 400, "MalformedXML"),
        (b"this is not xml", 400, "MalformedXML"),
        (b"<Nope><LocationConstraint>us-east-1</LocationConstraint></Nope>", 400, "MalformedXML"),
        (_conf("eu-west-1"), 400, "IllegalLocationConstraintException"),
        (_conf("atlantis"), 400, "InvalidLocationConstraint"),
        (b"<CreateBucketConfiguration>" + b" " * 20_000 + b"</CreateBucketConfiguration>", 400, None),
    ]
    for body, status, code in cases:
        name = new_bucket_name("cb")
        r = _create_bucket_raw(cairn_cluster, name, body)
        assert r.status == status, (body[:60], r.status, r.body[:300])
        if code:
            assert r.error_code == code, (body[:60], r.body[:300])
        with s3_error("404", 404):
            s3.head_bucket(Bucket=name)
    with s3_error("IllegalLocationConstraintException", 400):
        s3.create_bucket(Bucket=new_bucket_name("cb"), CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    for body in (b"", _conf("us-east-1"), _conf(""), b"<CreateBucketConfiguration/>"):
        name = new_bucket_name("cb")
        r = _create_bucket_raw(cairn_cluster, name, body)
        assert r.status == 200, (body, r.body[:300])
        s3.head_bucket(Bucket=name)
        s3.delete_bucket(Bucket=name)


# --- version ids -------------------------------------------------------------------------


def test_version_ids_are_refused(cairn_cluster, objs):
    s3, b = objs
    with s3_error("InvalidArgument", 400):
        s3.copy_object(Bucket=b, Key="dst", CopySource={"Bucket": b, "Key": "secret", "VersionId": "3HL4kqtJlcpXroDTDmJ.rmSpXd3dIbrHY"})
    assert s3.get_object(Bucket=b, Key="dst")["Body"].read() == b"original"
    with s3_error("InvalidArgument", 400):
        s3.get_object(Bucket=b, Key="secret", VersionId="abc")
    with s3_error("400", 400):
        s3.head_object(Bucket=b, Key="secret", VersionId="abc")
    with s3_error("InvalidArgument", 400):
        s3.delete_object(Bucket=b, Key="secret", VersionId="abc")
    res = s3.delete_objects(Bucket=b, Delete={"Objects": [{"Key": "secret", "VersionId": "abc"}]})
    assert [e["Code"] for e in res.get("Errors", [])] == ["InvalidArgument"], res
    assert s3.get_object(Bucket=b, Key="secret")["Body"].read() == b"the secret source"
    # "null" is the version id of every object in an unversioned bucket.
    assert s3.get_object(Bucket=b, Key="secret", VersionId="null")["Body"].read() == b"the secret source"
    s3.copy_object(Bucket=b, Key="dst", CopySource={"Bucket": b, "Key": "secret", "VersionId": "null"})
    assert s3.get_object(Bucket=b, Key="dst")["Body"].read() == b"the secret source"


# --- a gateway with its own region and a small upload cap ---------------------------------


@pytest.fixture(scope="module")
def capped(tmp_path_factory):
    from harness.cluster import Cluster

    c = Cluster(tmp_path_factory.mktemp("capped"),
                gateway_args=["--region", OTHER_REGION, "--max-uploads-per-bucket", "3"]).start()
    yield c
    c.close()


def test_region_is_the_gateways_own(capped):
    ours = make_client(capped.endpoint, capped.access_key, capped.secret_key, region_name=OTHER_REGION)
    b = new_bucket_name()
    ours.create_bucket(Bucket=b, CreateBucketConfiguration={"LocationConstraint": OTHER_REGION})
    ours.put_object(Bucket=b, Key="k", Body=b"v")
    r = _send(capped, "GET", sigv4.s3_path(b, "k"), region="us-east-1")
    assert (r.status, r.error_code, r.error.get("Region")) == (400, "AuthorizationHeaderMalformed", OTHER_REGION), r.body
    r = _send(capped, "GET", sigv4.s3_path(b, "k"), region=OTHER_REGION)
    assert (r.status, r.body) == (200, b"v")
    with s3_error("IllegalLocationConstraintException", 400):
        ours.create_bucket(Bucket=new_bucket_name(), CreateBucketConfiguration={"LocationConstraint": "us-west-2"})


def test_open_uploads_per_bucket_are_capped(capped):
    s3 = make_client(capped.endpoint, capped.access_key, capped.secret_key, region_name=OTHER_REGION)
    b, other = new_bucket_name(), new_bucket_name()
    s3.create_bucket(Bucket=b)
    s3.create_bucket(Bucket=other)
    ids = [s3.create_multipart_upload(Bucket=b, Key=f"k{i}")["UploadId"] for i in range(3)]
    with s3_error("InvalidRequest", 400) as ei:
        s3.create_multipart_upload(Bucket=b, Key="k3")
    assert "3 multipart uploads" in ei.value.response["Error"]["Message"]
    assert len(s3.list_multipart_uploads(Bucket=b)["Uploads"]) == 3
    # Another bucket has its own count; ending an upload frees a slot.
    s3.abort_multipart_upload(Bucket=other, Key="x", UploadId=s3.create_multipart_upload(Bucket=other, Key="x")["UploadId"])
    s3.abort_multipart_upload(Bucket=b, Key="k0", UploadId=ids[0])
    up = s3.create_multipart_upload(Bucket=b, Key="k3")["UploadId"]
    part = s3.upload_part(Bucket=b, Key="k3", UploadId=up, PartNumber=1, Body=b"last part")
    s3.complete_multipart_upload(Bucket=b, Key="k3", UploadId=up,
                                 MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": part["ETag"]}]})
    assert s3.get_object(Bucket=b, Key="k3")["Body"].read() == b"last part"
    s3.create_multipart_upload(Bucket=b, Key="k4")
    with s3_error("InvalidRequest", 400):
        s3.create_multipart_upload(Bucket=b, Key="k5")


# --- failed authentications ----------------------------------------------------------------


def test_failed_authentications_are_counted_logged_and_slowed(cluster_factory):
    c = cluster_factory()
    s3 = c.client()
    b = new_bucket_name()
    s3.create_bucket(Bucket=b)
    s3.put_object(Bucket=b, Key="k", Body=b"v")
    path = sigv4.s3_path(b, "k")
    # Bad requests, one at a time, from 127.0.0.1: the first ones are answered at once,
    # later ones late, by a delay that grows (a sleep: it can only make a request slower).
    took = []
    while len(took) < 70:
        t0 = time.monotonic()
        r = _send(c, "GET", path, secret="not-the-secret")
        took.append(time.monotonic() - t0)
        assert (r.status, r.error_code) == (403, "SignatureDoesNotMatch"), r.body[:300]
        if took[-1] >= 0.9:
            break
    delayed = [i for i, t in enumerate(took) if t >= 0.2]
    assert delayed, f"no failure was slowed: {took}"
    assert 45 <= delayed[0] <= 55, f"slowing started at failure {delayed[0] + 1}: {took}"
    assert took[-1] >= 0.9, took
    # A valid request from the same source is not slowed.
    t0 = time.monotonic()
    assert s3.get_object(Bucket=b, Key="k")["Body"].read() == b"v"
    assert time.monotonic() - t0 < took[-1] / 2
    # An invented key is labelled as one value, whatever it is.
    r = _send(c, "GET", path, access_key="AKIDINVENTED0001")
    assert r.error_code == "InvalidAccessKeyId"
    text = c.gateway.metrics_text()
    m = Exposition.parse(text)
    assert m.value("cairn_auth_failures_total", key=c.access_key, source="127.0.0.1") == len(took)
    assert m.value("cairn_auth_failures_total", key="unknown", source="127.0.0.1") == 1
    assert "AKIDINVENTED0001" not in text
    # Logged once for the source within the minute, however many failures.
    lines = [ln for ln in c.gateway.log_path.read_text(errors="replace").splitlines()
             if "authentication failed" in ln]
    assert len(lines) == 1, lines
    assert "127.0.0.1" in lines[0], lines
