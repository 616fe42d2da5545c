"""fs-verity file digests: what the build bakes into the loader for the kernel and each module,
and what the loader computes at boot (loader/src/verity.rs) and hands over. Debian's
`fsverity digest FILE` (package fsverity) prints the same value.

The format (Linux, Documentation/filesystems/fsverity.rst): the file in 4 KiB blocks, the last
zero-padded; the SHA-256 of each; those hashes packed into 4 KiB blocks (zero-padded) and hashed
again, level by level, until one hash is left: the root (all zeros for an empty file). The digest
is the SHA-256 of the 256-byte fsverity_descriptor: version 1, hash algorithm 1 (SHA-256), log2
block size 12, no salt, the file size (little-endian u64) and the root.
"""

from __future__ import annotations

import hashlib
import struct
from typing import BinaryIO

BLOCK = 4096


def _pack(hashes: list[bytes]) -> list[bytes]:
    """One tree level: hashes packed into zero-padded blocks, each block hashed."""
    blob = b"".join(hashes)
    return [hashlib.sha256(blob[i:i + BLOCK].ljust(BLOCK, b"\0")).digest() for i in range(0, len(blob), BLOCK)]


def stream_digest(f: BinaryIO) -> tuple[bytes, int]:
    """The fs-verity digest of a file read in pieces, and its size."""
    level: list[bytes] = []
    size = 0
    while block := f.read(BLOCK):
        size += len(block)
        level.append(hashlib.sha256(block.ljust(BLOCK, b"\0")).digest())
        if len(block) < BLOCK:
            break
    while len(level) > 1:
        level = _pack(level)
    root = level[0] if level else bytes(32)
    descriptor = struct.pack("<BBBBIQ", 1, 1, 12, 0, 0, size) + root.ljust(64, b"\0") + bytes(32 + 144)
    return hashlib.sha256(descriptor).digest(), size


def digest(data: bytes) -> bytes:
    import io

    return stream_digest(io.BytesIO(data))[0]


def file_digest(path: str) -> tuple[bytes, int]:
    with open(path, "rb") as f:
        return stream_digest(f)
