"""Xorbs: round trips for every compression scheme, and a precise rejection for each corruption."""

from __future__ import annotations

import random

import lz4.frame
import pytest

from bastion.xet.chunking import iter_chunks
from bastion.xet.errors import XorbFormatError
from bastion.xet.hashing import chunk_hash, hash_to_hex, xorb_hash
from bastion.xet.xorb import (
    CHUNK_HEADER_LEN,
    CompressionScheme,
    XorbBuilder,
    bg4_regroup,
    bg4_split,
    decode_chunks,
    encode_chunk,
    parse_xorb,
    serialize_xorb,
)


def make_chunks(seed: int = 0) -> list[bytes]:
    rng = random.Random(seed)
    floats = bytes(b for _ in range(20_000) for b in (rng.randrange(256), 0x3F, 0x80, 0x00))
    data = rng.randbytes(200_000) + bytes(150_000) + floats + b"tail"
    return [bytes(c) for c in iter_chunks(data)]


@pytest.mark.parametrize("n", [0, 1, 2, 3, 4, 5, 7, 8, 1001])
def test_bg4_split_and_regroup(n: int) -> None:
    data = bytes(range(256)) * 4
    data = data[:n]
    grouped = bg4_split(data)
    assert bg4_regroup(grouped) == data
    if n == 7:  # xorb.md: the remainder goes one byte each to the first groups
        assert grouped == bytes([0, 4, 1, 5, 2, 6, 3])


@pytest.mark.parametrize("scheme", [None, *CompressionScheme])
@pytest.mark.parametrize("with_footer", [False, True])
def test_round_trip(scheme: CompressionScheme | None, with_footer: bool) -> None:
    chunks = make_chunks()
    body, described = serialize_xorb(chunks, scheme, with_footer=with_footer)
    parsed = parse_xorb(body, described.hash)
    assert parsed == described
    assert parsed.hash == xorb_hash([(chunk_hash(c), len(c)) for c in chunks])
    assert parsed.has_footer is with_footer
    assert decode_chunks(body[: parsed.content_length]) == chunks
    first, last = parsed.byte_range(1, 3)
    assert decode_chunks(body[first:last]) == chunks[1:3]


def test_auto_scheme_picks_bg4_for_float_like_data_and_none_for_noise() -> None:
    rng = random.Random(5)
    floats = bytes(b for _ in range(10_000) for b in (rng.randrange(256), rng.randrange(4), 0x80, 0x3F))
    assert encode_chunk(floats, None)[4] == CompressionScheme.BG4_LZ4
    assert encode_chunk(rng.randbytes(5000), None)[4] == CompressionScheme.NONE


def test_builder_respects_the_chunk_limit() -> None:
    builder = XorbBuilder(CompressionScheme.NONE)
    for _ in range(8192):
        assert builder.add(b"x")
    assert not builder.add(b"x")
    body, xorb = builder.finish()
    assert xorb.num_chunks == 8192 and len(builder) == 0
    with pytest.raises(XorbFormatError, match="more than 100 chunks"):
        parse_xorb(body, max_chunks=100)


def reject(body: bytes, match: str, expected: bytes | None = None, **limits: int) -> None:
    with pytest.raises(XorbFormatError, match=match):
        parse_xorb(body, expected, **limits)


@pytest.fixture
def xorb() -> tuple[bytes, bytes]:
    body, described = serialize_xorb(make_chunks(), CompressionScheme.LZ4)
    return body, described.hash


def test_wrong_claimed_hash(xorb: tuple[bytes, bytes]) -> None:
    body, h = xorb
    other = bytes([h[0] ^ 1]) + h[1:]
    reject(body, f"uploaded as {hash_to_hex(other)}, its chunks hash to {hash_to_hex(h)}", other)


def test_flipped_byte_in_raw_chunk_changes_the_hash(xorb: tuple[bytes, bytes]) -> None:
    body, h = xorb
    raw = serialize_xorb([b"a" * 1000, b"b" * 1000], CompressionScheme.NONE)
    flipped = bytearray(raw[0])
    flipped[CHUNK_HEADER_LEN + 10] ^= 0xFF
    reject(bytes(flipped), "hash mismatch", raw[1].hash)


def test_flipped_byte_in_compressed_payload(xorb: tuple[bytes, bytes]) -> None:
    body, h = xorb
    for offset in (CHUNK_HEADER_LEN + 20, len(body) // 2, len(body) - 3):
        damaged = bytearray(body)
        damaged[offset] ^= 0x55
        with pytest.raises(XorbFormatError):
            parse_xorb(bytes(damaged), h)


def test_truncated(xorb: tuple[bytes, bytes]) -> None:
    body, h = xorb
    reject(body[:5], "chunk 0 at byte 0: truncated header")
    reject(body[:-1], "truncated payload|LZ4")
    reject(b"", "empty")


def test_oversize_and_header_limits(xorb: tuple[bytes, bytes]) -> None:
    body, h = xorb
    reject(body, "limit is 1000", max_bytes=1000)
    header = bytes([0]) + (10).to_bytes(3, "little") + bytes([0]) + (200_000).to_bytes(3, "little")
    reject(header + bytes(10), "exceeds the 131072-byte chunk limit")
    big = bytes([0]) + (300_000).to_bytes(3, "little") + bytes([1]) + (10).to_bytes(3, "little")
    reject(big, "compressed size 300000 exceeds")


def test_bad_version_scheme_and_length_lies() -> None:
    payload = b"z" * 100
    reject(bytes([1]) + (100).to_bytes(3, "little") + bytes([0]) + (100).to_bytes(3, "little") + payload, "version 1")
    reject(bytes([0]) + (100).to_bytes(3, "little") + bytes([9]) + (100).to_bytes(3, "little") + payload, "scheme 9")
    reject(bytes([0]) + (100).to_bytes(3, "little") + bytes([0]) + (99).to_bytes(3, "little") + payload, "declares 99")
    frame = lz4.frame.compress(bytes(5000))  # claims 100 bytes, expands to 5000: refused while decoding
    header = bytes([0]) + len(frame).to_bytes(3, "little") + bytes([1]) + (100).to_bytes(3, "little")
    reject(header + frame, "more bytes than the header")
    short = lz4.frame.compress(bytes(50))
    header = bytes([0]) + len(short).to_bytes(3, "little") + bytes([1]) + (100).to_bytes(3, "little")
    reject(header + short, "decompresses to 50 bytes, header says 100")
    header = bytes([0]) + (len(short) + 3).to_bytes(3, "little") + bytes([1]) + (50).to_bytes(3, "little")
    reject(header + short + b"xyz", "extra bytes")


def test_footer_must_agree_with_the_chunks() -> None:
    chunks = make_chunks()
    body, described = serialize_xorb(chunks, with_footer=True)
    footer_at = described.content_length
    # Corrupt the footer's copy of chunk 0's hash (right after ident+version+hash+section header).
    at = footer_at + 8 + 32 + 8 + 4
    damaged = bytearray(body)
    damaged[at] ^= 1
    reject(bytes(damaged), "chunk 0 hash does not match")
    damaged = bytearray(body)
    damaged[footer_at + 8] ^= 1  # the footer's xorb hash
    reject(bytes(damaged), "footer claims hash")
    reject(body[:-1], "footer")
    reject(body + b"\x00", "footer")
