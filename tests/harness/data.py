"""Test data: deterministic-size random payloads and streaming hashes."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

MiB = 1024 * 1024
CHUNK = 4 * MiB


def write_random_file(path: Path, size: int, chunk: int = CHUNK) -> str:
    """Writes `size` random bytes to `path` in chunks; returns their sha256 hex."""
    h = hashlib.sha256()
    with open(path, "wb") as f:
        left = size
        while left > 0:
            b = os.urandom(min(chunk, left))
            h.update(b)
            f.write(b)
            left -= len(b)
    return h.hexdigest()


def sha256_file(path: Path, chunk: int = CHUNK) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(chunk)
            if not b:
                return h.hexdigest()
            h.update(b)


def md5_file(path: Path, chunk: int = CHUNK) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        while True:
            b = f.read(chunk)
            if not b:
                return h.hexdigest()
            h.update(b)


def sha256_stream(body, chunk: int = MiB) -> tuple[str, int]:
    """(sha256 hex, byte count) of a botocore StreamingBody, read in chunks."""
    h = hashlib.sha256()
    n = 0
    for b in body.iter_chunks(chunk):
        h.update(b)
        n += len(b)
    return h.hexdigest(), n


def sha256(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def md5(b: bytes) -> str:
    return hashlib.md5(b).hexdigest()


def read_file_range(path: Path, start: int, length: int) -> bytes:
    with open(path, "rb") as f:
        f.seek(start)
        return f.read(length)
