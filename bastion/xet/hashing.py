"""Xet hashes: chunk, xorb (merkle tree), file, term-verification and HMAC'd chunk hashes.

Also the one hash <-> string conversion the protocol uses everywhere (api.md "Converting Hashes to
Strings"). Hashes are raw 32-byte ``bytes`` inside Bastion; only URLs, JSON and logs see hex.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence

from blake3 import blake3

from bastion.xet.errors import InvalidHash

HASH_LEN = 32
ZERO_HASH = bytes(HASH_LEN)

# hashing.md "Chunk Hashes": DATA_KEY.
DATA_KEY = bytes(
    [102, 151, 245, 119, 91, 149, 80, 222, 49, 53, 203, 172, 165, 151, 24, 28,
     157, 228, 33, 16, 155, 235, 43, 88, 180, 208, 176, 75, 147, 173, 242, 41]
)  # fmt: skip
# hashing.md "Xorb Hashes": INTERNAL_NODE_KEY.
INTERNAL_NODE_KEY = bytes(
    [1, 126, 197, 199, 165, 71, 41, 150, 253, 148, 102, 102, 180, 138, 2, 230,
     93, 221, 83, 111, 55, 199, 109, 210, 248, 99, 82, 230, 74, 83, 113, 63]
)  # fmt: skip
# hashing.md "Term Verification Hashes": VERIFICATION_KEY.
VERIFICATION_KEY = bytes(
    [127, 24, 87, 214, 206, 86, 237, 102, 18, 127, 249, 19, 231, 165, 195, 243,
     164, 205, 38, 213, 181, 219, 73, 230, 65, 36, 152, 127, 40, 251, 148, 195]
)  # fmt: skip

# The merkle tree's shape (xet-core merklehash/aggregated_hashes.rs, which hashing.md cites as the
# reference): a node closes after a child whose hash % 4 == 0, never with fewer than 3 children
# (unless fewer remain) and never with more than 9.
_MEAN_BRANCHING = 4
_MAX_GROUP = 2 * _MEAN_BRANCHING + 1

_HEX_DIGITS = frozenset("0123456789abcdefABCDEF")
_FOUR_U64_LE = struct.Struct("<4Q")
_FOUR_U64_BE = struct.Struct(">4Q")

ChunkList = Sequence[tuple[bytes, int]]
"""(chunk hash, uncompressed chunk length) in order: what xorb and file hashes are computed over."""


def hash_to_hex(h: bytes) -> str:
    """The protocol's string form of a hash (api.md): each 8-byte group read as a little-endian u64.

    So bytes 0..31 print as ``0706050403020100 0f0e...``, not as a plain hex dump.
    """
    if len(h) != HASH_LEN:
        raise ValueError(f"a Xet hash is {HASH_LEN} bytes, got {len(h)}")
    # Reversing each 8-byte group is the same as printing 4 little-endian u64s zero-padded to 16.
    return _FOUR_U64_BE.pack(*_FOUR_U64_LE.unpack(h)).hex()


def hex_to_hash(s: str) -> bytes:
    """Parse the protocol's hash string (the inverse of ``hash_to_hex``); raises ``InvalidHash``."""
    if len(s) != 2 * HASH_LEN or not _HEX_DIGITS.issuperset(s):
        raise InvalidHash(f"invalid Xet hash {s[:80]!r}: expected 64 hexadecimal characters")
    return _FOUR_U64_LE.pack(*_FOUR_U64_BE.unpack(bytes.fromhex(s)))


def keyed_hash(key: bytes, data: bytes | bytearray | memoryview) -> bytes:
    """blake3 keyed hash (32-byte key, 32-byte digest): every Xet hash is one of these."""
    return blake3(data, key=key).digest()


def chunk_hash(data: bytes | bytearray | memoryview) -> bytes:
    """Hash of one chunk's uncompressed bytes (hashing.md "Chunk Hashes")."""
    return blake3(data, key=DATA_KEY).digest()


def _merged_node(group: ChunkList) -> tuple[bytes, int]:
    # hashing.md: one line per child, "{hash string} : {length}\n", keyed with INTERNAL_NODE_KEY;
    # the hash string is the api.md form (xet-core formats the node's u64s little-endian).
    text = "".join(f"{hash_to_hex(h)} : {n}\n" for h, n in group)
    return keyed_hash(INTERNAL_NODE_KEY, text.encode("ascii")), sum(n for _, n in group)


def _next_cut(nodes: ChunkList, start: int) -> int:
    remaining = len(nodes) - start
    if remaining <= 2:
        return len(nodes)
    end = start + min(_MAX_GROUP, remaining)
    for i in range(start + 2, end):
        # "hash % 4" in xet-core is the last 8 bytes read as a little-endian u64, modulo 4.
        if int.from_bytes(nodes[i][0][24:32], "little") % _MEAN_BRANCHING == 0:
            return i + 1
    return end


def merkle_root(chunks: ChunkList) -> bytes:
    """Root of the Xet merkle tree over (hash, length) leaves; all zeros for no leaves."""
    if not chunks:
        return ZERO_HASH
    level: list[tuple[bytes, int]] = list(chunks)
    while len(level) > 1:
        merged: list[tuple[bytes, int]] = []
        i = 0
        while i < len(level):
            cut = _next_cut(level, i)
            merged.append(_merged_node(level[i:cut]))
            i = cut
        level = merged
    return level[0][0]


def xorb_hash(chunks: ChunkList) -> bytes:
    """Xorb hash: the merkle root over its chunks (hashing.md "Xorb Hashes")."""
    return merkle_root(chunks)


def file_hash(chunks: ChunkList, salt: bytes = ZERO_HASH) -> bytes:
    """File hash: the merkle root keyed-hashed once more with a zero key (hashing.md "File Hashes").

    An empty file hashes to all zeros, as in the reference implementation (no root to re-hash).
    """
    if len(salt) != HASH_LEN:
        raise ValueError("the file hash salt is 32 bytes")
    if not chunks:
        return ZERO_HASH
    return keyed_hash(salt, merkle_root(chunks))


def verification_range_hash(chunk_hashes: Iterable[bytes]) -> bytes:
    """Term verification hash over a term's chunk hashes (hashing.md "Term Verification Hashes")."""
    return keyed_hash(VERIFICATION_KEY, b"".join(chunk_hashes))


def hmac_chunk_hash(h: bytes, key: bytes) -> bytes:
    """A chunk hash as published in a global-dedupe shard: blake3 keyed with the shard's HMAC key.

    shard.md "HMAC Key Protection"; xet-core's ``DataHash::hmac`` is this keyed hash.
    """
    return keyed_hash(key, h)


def is_global_dedup_eligible(h: bytes) -> bool:
    """deduplication.md "Eligibility Criteria": last 8 bytes as little-endian u64, % 1024 == 0."""
    return int.from_bytes(h[24:32], "little") % 1024 == 0
