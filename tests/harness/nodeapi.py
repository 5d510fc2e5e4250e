"""Client for a storage node's internal API (common/src/protocol.rs, common/src/auth.rs).

Every `/v1/` request carries `x-cairn-date` (unix seconds) and `x-cairn-auth` = hex
HMAC-SHA256 under the cluster secret of "CAIRN-HMAC-1\\n" + method + "\\n" +
path_and_query + "\\n" + date.
"""

from __future__ import annotations

import hashlib
import hmac
import time

from .sigv4 import Response, request


def hmac_tag(secret: str | bytes, method: str, path_and_query: str, date: int) -> str:
    if isinstance(secret, str):
        secret = secret.encode()
    msg = b"CAIRN-HMAC-1\n" + method.encode() + b"\n" + path_and_query.encode() + b"\n" + str(date).encode()
    return hmac.new(secret, msg, hashlib.sha256).hexdigest()


def prove(secret: str | bytes, challenge: str) -> str:
    """What a node answers in `NodeInfo.proof` for `GET /v1/info?challenge=C`."""
    return hmac_tag(secret, "PROVE", challenge, 0)


class NodeClient:
    def __init__(self, addr: str, secret: str | None):
        self.addr = addr
        self.secret = secret

    def call(
        self,
        method: str,
        path_and_query: str,
        body: bytes | None = None,
        sign: bool = True,
        secret: str | None = None,
        date: int | None = None,
        headers: dict | None = None,
        timeout: float = 30,
    ) -> Response:
        hdrs = dict(headers or {})
        if sign:
            d = int(time.time()) if date is None else date
            hdrs["x-cairn-date"] = str(d)
            hdrs["x-cairn-auth"] = hmac_tag(secret or self.secret, method, path_and_query, d)
        return request(method, f"http://{self.addr}{path_and_query}", headers=hdrs, body=body, timeout=timeout)
