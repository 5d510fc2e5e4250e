"""Reading Cairn shard files from a node's data dir (format of common/src/shard.rs).

```
header   magic "CRNS" | version u8 | reserved u8 | header_len u16
         object_id [16] | segment u32 | shard_index u8 | k u8 | m u8 | reserved u8
         block_size u32 | segment_len u64
         bucket_len u16 | bucket | key_len u16 | key
         header_crc32c u32 | header_tag [16]     (all integers little-endian)
blocks   block 0 data | crc32c u32 | tag [16] | block 1 data | crc32c u32 | tag [16] | ...
```

Version 1 files have no tags. The tags are keyed with the cluster secret: tests can
rewrite data with a valid crc32c (as anyone could) but not make a valid tag.

Every block is `block_size` bytes except in the last stripe, whose blocks are
`ceil(rest / k)` bytes. Shard files live at `DIR/shards/<oid[0..2]>/<oid>/<segment>.<index>`.
"""

from __future__ import annotations

import os
import re
import struct
from dataclasses import dataclass
from pathlib import Path

MAGIC = b"CRNS"
CRC_LEN = 4
TAG_LEN = 16
FIXED_HEADER_LEN = 4 + 1 + 1 + 2 + 16 + 4 + 1 + 1 + 1 + 1 + 4 + 8
MAX_HEADER_LEN = 4096
SHARD_NAME = re.compile(r"^(\d+)\.(\d+)$")


def _make_crc32c_table():
    poly = 0x82F63B78
    table = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ poly if c & 1 else c >> 1
        table.append(c)
    return table


_CRC32C_TABLE = _make_crc32c_table()


def crc32c(data: bytes) -> int:
    """crc32c (Castagnoli); fast through awscrt when it is installed."""
    try:
        from awscrt import checksums  # type: ignore

        return checksums.crc32c(data)
    except ImportError:  # pragma: no cover - awscrt is in requirements.txt
        crc = 0xFFFFFFFF
        for b in data:
            crc = _CRC32C_TABLE[(crc ^ b) & 0xFF] ^ (crc >> 8)
        return crc ^ 0xFFFFFFFF


class ShardFormatError(Exception):
    pass


@dataclass
class ShardFile:
    """One shard file on disk, with its decoded header."""

    path: Path
    node: int  # index of the node in Cluster.nodes (-1 when unknown)
    object_id: str
    segment: int
    shard_index: int
    k: int
    m: int
    block_size: int
    segment_len: int
    bucket: str
    key: str
    header_len: int
    version: int = 2

    @property
    def is_data(self) -> bool:
        return self.shard_index < self.k

    @property
    def size(self) -> int:
        return self.path.stat().st_size

    # --- layout, mirroring common/src/shard.rs -------------------------------------------
    @property
    def stripe_data_len(self) -> int:
        return self.k * self.block_size

    @property
    def stripes(self) -> int:
        return -(-self.segment_len // self.stripe_data_len)

    def block_len(self, s: int) -> int:
        full = self.segment_len // self.stripe_data_len
        if s < full:
            return self.block_size
        rest = self.segment_len - full * self.stripe_data_len
        return -(-rest // self.k)

    @property
    def trailer_len(self) -> int:
        """Bytes after each block's data: crc32c, and the tag from version 2 on."""
        return CRC_LEN + (TAG_LEN if self.version >= 2 else 0)

    def block_file_offset(self, s: int) -> int:
        """Offset of block `s` inside the block area (after the header)."""
        full = self.segment_len // self.stripe_data_len
        full_len = self.block_size + self.trailer_len
        if s <= full:
            return s * full_len
        return full * full_len + self.block_len(full) + self.trailer_len

    @property
    def body_len(self) -> int:
        return self.block_file_offset(self.stripes)

    @property
    def expected_file_len(self) -> int:
        return self.header_len + self.body_len

    def block_data_offset(self, s: int) -> int:
        """Absolute file offset of the first data byte of block `s`."""
        return self.header_len + self.block_file_offset(s)

    def read_block(self, s: int, verify: bool = True) -> bytes:
        """Data of block `s` (without its crc); checks the crc when `verify`."""
        n = self.block_len(s)
        with open(self.path, "rb") as f:
            f.seek(self.block_data_offset(s))
            stored = f.read(n + CRC_LEN)
        if len(stored) != n + CRC_LEN:
            raise ShardFormatError(f"{self.path}: block {s} truncated")
        data, crc = stored[:n], struct.unpack("<I", stored[n : n + CRC_LEN])[0]
        if verify and crc32c(data) != crc:
            raise ShardFormatError(f"{self.path}: block {s} fails its crc32c")
        return data

    def flip_byte(self, s: int = 0, offset_in_block: int | None = None, mask: int = 0xFF) -> int:
        """XORs one data byte of block `s` (never the header or a crc); returns the file offset."""
        n = self.block_len(s)
        if n == 0:
            raise ValueError("empty block")
        if offset_in_block is None:
            offset_in_block = n // 2
        assert 0 <= offset_in_block < n
        pos = self.block_data_offset(s) + offset_in_block
        with open(self.path, "r+b") as f:
            f.seek(pos)
            b = f.read(1)
            f.seek(pos)
            f.write(bytes([b[0] ^ mask]))
            f.flush()
            os.fsync(f.fileno())
        return pos


    def rewrite_block(self, s: int, data: bytes) -> None:
        """Replaces the data of block `s` and gives it a valid crc32c, keeping its tag:
        what someone without the cluster secret can do to a stored shard."""
        assert len(data) == self.block_len(s)
        with open(self.path, "r+b") as f:
            f.seek(self.block_data_offset(s))
            f.write(data + struct.pack("<I", crc32c(data)))
            f.flush()
            os.fsync(f.fileno())


def parse_header(buf: bytes) -> dict:
    """Decodes and checks a complete shard header (`buf` may extend past it)."""
    if len(buf) < 8:
        raise ShardFormatError("truncated header")
    if buf[0:4] != MAGIC:
        raise ShardFormatError(f"bad magic {buf[0:4]!r}")
    version = buf[4]
    if version not in (1, 2):
        raise ShardFormatError(f"unsupported version {version}")
    tag = TAG_LEN if version >= 2 else 0
    hlen = struct.unpack_from("<H", buf, 6)[0]
    if not (FIXED_HEADER_LEN + 4 + CRC_LEN + tag <= hlen <= MAX_HEADER_LEN) or len(buf) < hlen:
        raise ShardFormatError(f"bad header length {hlen}")
    end = hlen - tag
    body, crc = buf[: end - CRC_LEN], struct.unpack_from("<I", buf, end - CRC_LEN)[0]
    if crc32c(body) != crc:
        raise ShardFormatError("header crc32c mismatch")
    pos = 8
    oid = body[pos : pos + 16].hex()
    pos += 16
    segment, shard_index, k, m, _r, block_size, segment_len = struct.unpack_from("<IBBBBIQ", body, pos)
    pos += 4 + 4 + 4 + 8
    (blen,) = struct.unpack_from("<H", body, pos)
    pos += 2
    bucket = body[pos : pos + blen].decode()
    pos += blen
    (klen,) = struct.unpack_from("<H", body, pos)
    pos += 2
    key = body[pos : pos + klen].decode()
    pos += klen
    if pos != len(body):
        raise ShardFormatError("trailing bytes in header")
    return dict(
        object_id=oid,
        segment=segment,
        shard_index=shard_index,
        k=k,
        m=m,
        block_size=block_size,
        segment_len=segment_len,
        bucket=bucket,
        key=key,
        header_len=hlen,
        version=version,
    )


def read_shard(path: Path, node: int = -1) -> ShardFile:
    with open(path, "rb") as f:
        head = f.read(MAX_HEADER_LEN)
    h = parse_header(head)
    return ShardFile(path=Path(path), node=node, **h)


def iter_shard_paths(data_dir: Path):
    """Every finished shard file under a node's data dir (temp files are skipped)."""
    root = Path(data_dir) / "shards"
    if not root.is_dir():
        return
    for prefix in sorted(root.iterdir()):
        if not prefix.is_dir():
            continue
        for obj in sorted(prefix.iterdir()):
            if not obj.is_dir():
                continue
            for f in sorted(obj.iterdir()):
                if f.is_file() and SHARD_NAME.match(f.name):
                    yield f
