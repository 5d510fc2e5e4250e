"""A small, independent AWS SigV4 signer and raw HTTP helpers.

boto3 always signs correctly and with the current time; the tests also need requests that
a normal SDK would never send: back-dated or skewed signatures, lying payload hashes,
truncated bodies, huge Content-Length without a body.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import hmac
import http.client
import socket
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from urllib.parse import quote, urlsplit, parse_qsl

EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
UNSIGNED = "UNSIGNED-PAYLOAD"


def _q(s: str) -> str:
    return quote(s, safe="-_.~")


def _canonical_query(query: str) -> str:
    pairs = parse_qsl(query, keep_blank_values=True)
    enc = sorted((_q(k), _q(v)) for k, v in pairs)
    return "&".join(f"{k}={v}" for k, v in enc)


def _signing_key(secret: str, datestamp: str, region: str, service: str) -> bytes:
    k = hmac.new(("AWS4" + secret).encode(), datestamp.encode(), hashlib.sha256).digest()
    for part in (region, service, "aws4_request"):
        k = hmac.new(k, part.encode(), hashlib.sha256).digest()
    return k


def _now() -> _dt.datetime:
    return _dt.datetime.now(_dt.timezone.utc)


def s3_path(bucket: str | None = None, key: str | None = None) -> str:
    """URI-encoded path-style path (keys keep their slashes)."""
    if not bucket:
        return "/"
    p = "/" + _q(bucket)
    if key is not None:
        p += "/" + quote(key, safe="-_.~/")
    return p


def sign_headers(
    method: str,
    url: str,
    access_key: str,
    secret_key: str,
    region: str = "us-east-1",
    payload_hash: str = UNSIGNED,
    headers: dict | None = None,
    when: _dt.datetime | None = None,
    service: str = "s3",
    sign_content_sha256: bool = True,
) -> dict:
    """Headers (including Authorization) for a header-signed request to `url`.

    `url` must already be URI-encoded (as from `s3_path`). With `sign_content_sha256`
    false, `x-amz-content-sha256` is sent but left out of SignedHeaders (the payload hash
    still ends the canonical request, as SigV4 wants).
    """
    when = when or _now()
    parts = urlsplit(url)
    amz_date = when.strftime("%Y%m%dT%H%M%SZ")
    datestamp = when.strftime("%Y%m%d")
    hdrs = {k.lower(): str(v) for k, v in (headers or {}).items()}
    hdrs["host"] = parts.netloc
    hdrs["x-amz-date"] = amz_date
    hdrs["x-amz-content-sha256"] = payload_hash
    signed = sorted(k for k in hdrs if sign_content_sha256 or k != "x-amz-content-sha256")
    canonical_headers = "".join(f"{k}:{' '.join(hdrs[k].strip().split())}\n" for k in signed)
    creq = "\n".join(
        [
            method,
            parts.path or "/",
            _canonical_query(parts.query),
            canonical_headers,
            ";".join(signed),
            payload_hash,
        ]
    )
    scope = f"{datestamp}/{region}/{service}/aws4_request"
    sts = "\n".join(["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(creq.encode()).hexdigest()])
    sig = hmac.new(_signing_key(secret_key, datestamp, region, service), sts.encode(), hashlib.sha256).hexdigest()
    out = {k: v for k, v in hdrs.items() if k != "host"}
    out["authorization"] = (
        f"AWS4-HMAC-SHA256 Credential={access_key}/{scope}, SignedHeaders={';'.join(signed)}, Signature={sig}"
    )
    return out


def presign_url(
    method: str,
    url: str,
    access_key: str,
    secret_key: str,
    region: str = "us-east-1",
    expires: int = 60,
    when: _dt.datetime | None = None,
    service: str = "s3",
) -> str:
    """A presigned (query-string signed) URL; `when` may be in the past to make it stale."""
    when = when or _now()
    parts = urlsplit(url)
    amz_date = when.strftime("%Y%m%dT%H%M%SZ")
    datestamp = when.strftime("%Y%m%d")
    scope = f"{datestamp}/{region}/{service}/aws4_request"
    q = parse_qsl(parts.query, keep_blank_values=True)
    q += [
        ("X-Amz-Algorithm", "AWS4-HMAC-SHA256"),
        ("X-Amz-Credential", f"{access_key}/{scope}"),
        ("X-Amz-Date", amz_date),
        ("X-Amz-Expires", str(expires)),
        ("X-Amz-SignedHeaders", "host"),
    ]
    query = "&".join(f"{_q(k)}={_q(v)}" for k, v in q)
    creq = "\n".join(
        [method, parts.path or "/", _canonical_query(query), f"host:{parts.netloc}\n", "host", UNSIGNED]
    )
    sts = "\n".join(["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(creq.encode()).hexdigest()])
    sig = hmac.new(_signing_key(secret_key, datestamp, region, service), sts.encode(), hashlib.sha256).hexdigest()
    return f"{parts.scheme}://{parts.netloc}{parts.path}?{query}&X-Amz-Signature={sig}"


@dataclass
class Response:
    status: int
    headers: dict
    body: bytes
    raw_headers: list = field(default_factory=list)

    @property
    def error_code(self) -> str | None:
        return parse_error(self.body).get("Code")

    @property
    def error(self) -> dict:
        return parse_error(self.body)


def parse_error(body: bytes) -> dict:
    """Fields of an S3 `<Error>` document ({} when the body is not one)."""
    try:
        root = ET.fromstring(body)
    except ET.ParseError:
        return {}
    tag = root.tag.split("}")[-1]
    if tag != "Error":
        return {}
    return {child.tag.split("}")[-1]: (child.text or "") for child in root}


def request(method: str, url: str, headers: dict | None = None, body: bytes | None = None, timeout: float = 30) -> Response:
    """One plain HTTP request (no proxies, no retries, no redirects)."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    try:
        path = parts.path or "/"
        if parts.query:
            path += "?" + parts.query
        conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
        hdrs = dict(headers or {})
        if not any(k.lower() == "host" for k in hdrs):
            hdrs["Host"] = parts.netloc
        if body is not None and not any(k.lower() == "content-length" for k in hdrs):
            hdrs["Content-Length"] = str(len(body))
        elif body is None and method in ("PUT", "POST") and not any(k.lower() == "content-length" for k in hdrs):
            hdrs["Content-Length"] = "0"
        for k, v in hdrs.items():
            conn.putheader(k, v)
        conn.endheaders(body)
        r = conn.getresponse()
        data = r.read()
        return Response(r.status, {k.lower(): v for k, v in r.getheaders()}, data, r.getheaders())
    finally:
        conn.close()


def read_raw_response(sock: socket.socket, timeout: float = 20) -> Response:
    """Reads one HTTP/1.1 response from a socket we wrote a request to by hand."""
    sock.settimeout(timeout)
    r = http.client.HTTPResponse(sock, method="PUT")
    r.begin()
    try:
        data = r.read()
    except (http.client.IncompleteRead, ConnectionError, socket.timeout):
        data = b""
    return Response(r.status, {k.lower(): v for k, v in r.getheaders()}, data, r.getheaders())


def raw_put_start(url: str, access_key: str, secret_key: str, content_length: int, region: str = "us-east-1",
                  extra_headers: dict | None = None) -> socket.socket:
    """Opens a connection and sends the head of an UNSIGNED-PAYLOAD PUT announcing
    `content_length` body bytes; the caller sends (part of) the body and reads or drops."""
    parts = urlsplit(url)
    hdrs = {"content-length": str(content_length)}
    hdrs.update({k.lower(): v for k, v in (extra_headers or {}).items()})
    signed = sign_headers("PUT", url, access_key, secret_key, region=region, payload_hash=UNSIGNED, headers=hdrs)
    sock = socket.create_connection((parts.hostname, parts.port), timeout=30)
    path = parts.path + (("?" + parts.query) if parts.query else "")
    head = f"PUT {path} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
    head += "".join(f"{k}: {v}\r\n" for k, v in signed.items())
    head += "\r\n"
    sock.sendall(head.encode())
    return sock
