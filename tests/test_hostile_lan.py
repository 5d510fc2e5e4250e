"""A hostile device on the LAN between the gateway and the storage nodes (issue 21).

It can see node traffic, resend what it saw with other bytes, rewrite a shard on a node's
disk (with block checksums it recomputes, as anyone can), and relay a gateway's probe to a
real node to pass as one. None of it may make the gateway serve a byte it did not write
or admit a node that is not one.
"""

from __future__ import annotations

import os
import re
import socket
import struct
import threading
import time

from harness.net import free_port
from harness.nodeapi import NodeClient
from harness.shards import crc32c
from harness.sigv4 import request
from harness.tcpproxy import TcpProxy
from harness.wait import wait_for

ETH_P_ALL = 0x0003


class LoopbackSniffer:
    """Collects the TCP payload sent to `port` on loopback (an AF_PACKET socket: what a
    device on the wire sees), per connection and in sequence order."""

    def __init__(self, port: int):
        self.port = port
        self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.ntohs(ETH_P_ALL))
        self.sock.bind(("lo", 0))
        self.sock.settimeout(0.2)
        self.segments: dict[int, dict[int, bytes]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        while not self._stop.is_set():
            try:
                frame = self.sock.recv(262144)
            except socket.timeout:
                continue
            except OSError:
                return
            if len(frame) < 14 + 20 or struct.unpack_from("!H", frame, 12)[0] != 0x0800:
                continue
            ip = frame[14:]
            ihl = (ip[0] & 0x0F) * 4
            if ip[9] != 6:  # TCP
                continue
            total = struct.unpack_from("!H", ip, 2)[0]
            tcp = ip[ihl:total]
            sport, dport, seq = struct.unpack_from("!HHI", tcp, 0)
            if dport != self.port:
                continue
            payload = tcp[(tcp[12] >> 4) * 4 :]
            if payload:
                self.segments.setdefault(sport, {})[seq] = payload

    def stop(self):
        self._stop.set()
        self._thread.join(2)
        self.sock.close()

    def streams(self) -> list[bytes]:
        out = []
        for segs in self.segments.values():
            data = b""
            for seq in sorted(segs):
                data += segs[seq]
            out.append(data)
        return out

    def requests(self, method: str, path_re: str) -> list[tuple[str, dict, bytes]]:
        """Complete requests seen: (request line, headers, body)."""
        found = []
        for stream in self.streams():
            for m in re.finditer(rb"(?m)^([A-Z]+) (\S+) HTTP/1\.1\r\n", stream):
                head_end = stream.find(b"\r\n\r\n", m.start())
                if head_end < 0:
                    continue
                lines = stream[m.start() : head_end].decode("latin-1").split("\r\n")
                headers = {}
                for line in lines[1:]:
                    k, _, v = line.partition(":")
                    headers[k.strip().lower()] = v.strip()
                n = int(headers.get("content-length", "0"))
                body = stream[head_end + 4 : head_end + 4 + n]
                if m.group(1).decode() == method and re.fullmatch(path_re, m.group(2).decode()) and len(body) == n:
                    found.append((m.group(2).decode(), headers, body))
        return found


def _credential_headers(headers: dict) -> dict:
    return {k: v for k, v in headers.items() if k.startswith("x-cairn-")}


def _forge_first_block(shard_file: bytes, header_len: int, block_len: int) -> bytes:
    """The shard file with block 0's data changed and its crc32c made valid again."""
    data = bytearray(shard_file[header_len : header_len + block_len])
    data[0] ^= 0xFF
    return (
        shard_file[:header_len]
        + bytes(data)
        + struct.pack("<I", crc32c(bytes(data)))
        + shard_file[header_len + block_len + 4 :]
    )


def test_a_captured_shard_upload_cannot_be_replayed_altered_or_redirected(cairn_cluster):
    s3 = cairn_cluster.client()
    bucket = "lan-replay"
    s3.create_bucket(Bucket=bucket)
    victim = cairn_cluster.nodes[0]
    port = int(victim.addr.rsplit(":", 1)[1])
    sniffer = LoopbackSniffer(port)
    try:
        # Small object: shards go as plain PUTs with their body.
        data = os.urandom(40_000)
        s3.put_object(Bucket=bucket, Key="obj", Body=data)
        captured = wait_for(
            lambda: sniffer.requests("PUT", r"/v1/shards/[0-9a-f]{32}/\d+/\d+"),
            timeout=10,
            what="a shard upload on the wire",
        )
    finally:
        sniffer.stop()
    path, headers, body = captured[0]
    cred = _credential_headers(headers)
    assert {"x-cairn-nonce", "x-cairn-node", "x-cairn-body", "x-cairn-auth"} <= set(cred), cred
    shard = next(s for s in cairn_cluster.shard_files(bucket=bucket, key="obj") if path.endswith(f"/{s.segment}/{s.shard_index}"))
    before = shard.path.read_bytes()
    assert before == body, "the captured body is the stored shard"

    # Replayed as it was, or with a forged body (a valid crc32c, no valid tag): refused.
    forged = _forge_first_block(body, shard.header_len, shard.block_len(0))
    for attempt in (body, forged):
        r = request("PUT", f"http://{victim.addr}{path}", headers=cred, body=attempt)
        assert r.status == 403, (r.status, r.body[:200])
    assert shard.path.read_bytes() == before

    # Sent to another node: refused (it names the node it was meant for).
    other = cairn_cluster.nodes[1]
    r = request("PUT", f"http://{other.addr}{path}", headers=cred, body=body)
    assert r.status == 403, (r.status, r.body[:200])

    # A fresh, validly signed upload (what a compromised gateway key could send) of the
    # forged shard is refused too: its tags do not check out.
    api = NodeClient(victim.addr, cairn_cluster.cluster_secret)
    fake = path.rsplit("/", 3)
    fake_path = f"/v1/shards/{fake[1]}/{int(fake[2]) + 1000}/{fake[3]}"
    r = api.call("PUT", fake_path, body=forged)
    assert r.status == 400, (r.status, r.body[:200])
    assert s3.get_object(Bucket=bucket, Key="obj")["Body"].read() == data


def test_a_shard_rewritten_on_disk_with_valid_checksums_is_never_served(fresh_cluster):
    c = fresh_cluster
    s3 = c.client()
    s3.create_bucket(Bucket="lan-disk")
    data = os.urandom(3 * 1024 * 1024 + 4321)
    s3.put_object(Bucket="lan-disk", Key="obj", Body=data)
    shards = c.shard_files(bucket="lan-disk", key="obj")
    target = next(s for s in shards if s.is_data)
    forged = bytes(b ^ 0x5A for b in target.read_block(0))
    target.rewrite_block(0, forged)
    assert target.read_block(0) == forged, "the forged block passes its crc32c"

    # Every GET returns the bytes that were written, never the forged ones.
    for _ in range(3):
        assert s3.get_object(Bucket="lan-disk", Key="obj")["Body"].read() == data
    # The forged shard was reported and repaired: re-striped, the forged file deleted.
    wait_for(lambda: not target.path.exists(), timeout=60, what="the forged shard replaced by repair")
    assert s3.get_object(Bucket="lan-disk", Key="obj")["Body"].read() == data
    # A downgrade is no way around it: the shard rewritten as a well-formed format 1
    # file (no tags, valid crc32c everywhere) with forged data.
    fresh = c.shard_files(bucket="lan-disk", key="obj")
    victim = next(s for s in fresh if s.is_data)
    victim.path.write_bytes(_as_untagged(victim, forge=True))
    for _ in range(2):
        assert s3.get_object(Bucket="lan-disk", Key="obj")["Body"].read() == data


def _as_untagged(shard, forge: bool) -> bytes:
    """`shard` rewritten in format 1: header without its tag, blocks without theirs."""
    raw = shard.path.read_bytes()
    hlen = shard.header_len
    body = bytearray(raw[: hlen - 16 - 4])
    body[4] = 1
    struct.pack_into("<H", body, 6, hlen - 16)
    out = bytes(body) + struct.pack("<I", crc32c(bytes(body)))
    for s in range(shard.stripes):
        data = shard.read_block(s)
        if forge:
            data = bytes(b ^ 0x33 for b in data)
        out += data + struct.pack("<I", crc32c(data))
    return out


def test_a_relay_of_a_real_nodes_proof_is_not_admitted(cluster_factory):
    # The relay's port is given to the gateway as one more node address; it forwards
    # to node 0 once the cluster is up.
    relay = TcpProxy("127.0.0.1", 1, free_port()).start()
    relay_addr = f"127.0.0.1:{relay.port}"
    try:
        c = cluster_factory(gateway_args=["--nodes", relay_addr, "--heartbeat-ms", "200"])
        host, port = c.nodes[0].addr.rsplit(":", 1)
        relay.upstream = (host, int(port))
        # Several heartbeats: the relay is probed, answers with node 0's proof.
        seen = relay.accepted
        wait_for(lambda: relay.accepted > seen, timeout=10, what="the gateway probing the relay")
        time.sleep(2)
        view = c.gateway_view()
        assert view is not None
        assert relay_addr not in view, view
        assert view.get(c.nodes[0].addr) == "up", view
        s3 = c.client()
        s3.create_bucket(Bucket="lan-relay")
        s3.put_object(Bucket="lan-relay", Key="k", Body=b"x" * 5000)
        assert s3.get_object(Bucket="lan-relay", Key="k")["Body"].read() == b"x" * 5000
    finally:
        relay.stop()
