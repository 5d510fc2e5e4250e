"""Client for a storage node's internal API (common/src/protocol.rs, common/src/auth.rs).

Every `/v1/` request carries `x-cairn-date` (unix seconds), `x-cairn-nonce` (32 random hex
digits), `x-cairn-node` (the node's id, or `-` for `GET /v1/info`), `x-cairn-body` (empty,
the hex SHA-256 of the body, or `shard`) and `x-cairn-auth` = hex HMAC-SHA256 under the
cluster secret of "CAIRN-HMAC-2\\n" + method + "\\n" + path_and_query + "\\n" + date +
"\\n" + nonce + "\\n" + node + "\\n" + body.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets as _secrets
import time

from .sigv4 import Response, request

ANY_NODE = "-"
BODY_SHARD = "shard"


def _mac(secret: str | bytes, *parts: bytes) -> str:
    if isinstance(secret, str):
        secret = secret.encode()
    return hmac.new(secret, b"\n".join(parts), hashlib.sha256).hexdigest()


def hmac_tag(
    secret: str | bytes,
    method: str,
    path_and_query: str,
    date: int,
    nonce: str,
    node: str,
    body: str,
) -> str:
    return _mac(
        secret,
        b"CAIRN-HMAC-2",
        method.encode(),
        path_and_query.encode(),
        str(date).encode(),
        nonce.encode(),
        node.encode(),
        body.encode(),
    )


def credential(
    secret: str | bytes,
    method: str,
    path_and_query: str,
    node: str,
    body: str = "",
    date: int | None = None,
    nonce: str | None = None,
) -> dict:
    """The credential headers of one request."""
    d = int(time.time()) if date is None else date
    n = nonce or _secrets.token_hex(16)
    return {
        "x-cairn-date": str(d),
        "x-cairn-nonce": n,
        "x-cairn-node": node,
        "x-cairn-body": body,
        "x-cairn-auth": hmac_tag(secret, method, path_and_query, d, n, node, body),
    }


def body_claim(body: bytes | None, shard: bool = False) -> str:
    """`x-cairn-body` for `body`: `shard` for a shard file, else its SHA-256 (empty: none)."""
    if shard:
        return BODY_SHARD
    return hashlib.sha256(body).hexdigest() if body else ""


def prove(secret: str | bytes, challenge: str, node: str, seen_at: str) -> str:
    """What a node answers in `NodeInfo.proof` for `GET /v1/info?challenge=C`."""
    return _mac(secret, b"CAIRN-PROVE-2", challenge.encode(), node.encode(), seen_at.encode())


class NodeClient:
    def __init__(self, addr: str, secret: str | None):
        self.addr = addr
        self.secret = secret
        self._node_id: str | None = None

    @property
    def node_id(self) -> str:
        """The node's id, asked once (the id every signed request names)."""
        if self._node_id is None:
            r = self.call("GET", "/v1/info?challenge=id", node=ANY_NODE)
            assert r.status == 200, f"node info: {r.status} {r.body[:200]!r}"
            self._node_id = json.loads(r.body)["node_id"]
        return self._node_id

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
        node: str | None = None,
        nonce: str | None = None,
        claim: str | None = None,
    ) -> Response:
        """A request; signed unless `sign` is false. A shard PUT claims `shard` as its
        body; `node`, `nonce` and `claim` override what is signed."""
        hdrs = dict(headers or {})
        if sign:
            if node is None:
                node = ANY_NODE if path_and_query.startswith("/v1/info") else self.node_id
            if claim is None:
                shard = method == "PUT" and path_and_query.startswith("/v1/shards/")
                claim = body_claim(body, shard)
            hdrs.update(
                credential(secret or self.secret, method, path_and_query, node, claim, date, nonce)
            )
        return request(method, f"http://{self.addr}{path_and_query}", headers=hdrs, body=body, timeout=timeout)
