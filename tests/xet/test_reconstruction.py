"""Reconstruction plans: terms, Range narrowing, merged fetch ranges, JSON shapes, reassembly."""

from __future__ import annotations

import random

import pytest

from bastion.errors import BadRequest
from bastion.xet.errors import XetRangeNotSatisfiable
from bastion.xet.hashing import hash_to_hex
from bastion.xet.reconstruction import (
    FetchRange,
    XorbLayout,
    format_byte_ranges,
    iter_file_bytes,
    parse_byte_ranges,
    parse_range_header,
    plan_reconstruction,
)
from bastion.xet.shard import FileSegment
from bastion.xet.xorb import CompressionScheme, serialize_xorb


@pytest.fixture
def store() -> dict:
    """Two xorbs of 6 and 3 chunks with uneven sizes, and a file that uses xorb A twice."""
    rng = random.Random(11)
    a_chunks = [rng.randbytes(n) for n in (1000, 2000, 1500, 3000, 500, 2500)]
    b_chunks = [rng.randbytes(n) for n in (700, 800, 900)]
    a_body, a = serialize_xorb(a_chunks, CompressionScheme.NONE)
    b_body, b = serialize_xorb(b_chunks, CompressionScheme.LZ4)
    segments = [
        FileSegment(a.hash, 1000 + 2000 + 1500, 0, 3),  # A[0, 3)
        FileSegment(b.hash, 2400, 0, 3),  # B[0, 3)
        FileSegment(a.hash, 1500 + 3000 + 500, 2, 5),  # A[2, 5): overlaps the first term
    ]
    data = b"".join(a_chunks[0:3] + b_chunks + a_chunks[2:5])
    return {
        "segments": segments,
        "data": data,
        "layouts": {a.hash: XorbLayout.from_xorb(a), b.hash: XorbLayout.from_xorb(b)},
        "bodies": {a.hash: a_body, b.hash: b_body},
        "a": a,
        "b": b,
    }


def test_full_file_plan(store: dict) -> None:
    plan = plan_reconstruction(store["segments"], store["layouts"])
    a, b = store["a"], store["b"]
    assert plan.file_size == len(store["data"]) and plan.offset_into_first_range == 0
    assert [(t.chunk_start, t.chunk_end, t.unpacked_length) for t in plan.terms] == [
        (0, 3, 4500),
        (0, 3, 2400),
        (2, 5, 5000),
    ]
    # A's two terms [0,3) and [2,5) overlap: one fetch range covers chunks [0,5).
    assert plan.fetch[a.hash] == (FetchRange(0, 5, 0, a.chunks[4].end),)
    assert plan.fetch[b.hash] == (FetchRange(0, 3, 0, b.content_length),)


def test_json_shapes(store: dict) -> None:
    plan = plan_reconstruction(store["segments"], store["layouts"])
    a = store["a"]
    v1 = plan.to_v1(lambda h, r: f"https://cas/{hash_to_hex(h)}?{r.http_range}")
    assert set(v1) == {"offset_into_first_range", "terms", "fetch_info"}
    assert v1["terms"][0] == {"hash": a.hex, "unpacked_length": 4500, "range": {"start": 0, "end": 3}}
    assert v1["fetch_info"][a.hex] == [
        {
            "range": {"start": 0, "end": 5},
            "url": f"https://cas/{a.hex}?0-{a.chunks[4].end - 1}",
            "url_range": {"start": 0, "end": a.chunks[4].end - 1},
        }
    ]
    v2 = plan.to_v2(lambda h, rs: "u:" + format_byte_ranges(rs))
    assert set(v2) == {"offset_into_first_range", "terms", "xorbs"}
    assert v2["xorbs"][a.hex] == [
        {
            "url": f"u:bytes=0-{a.chunks[4].end - 1}",
            "ranges": [{"chunks": {"start": 0, "end": 5}, "bytes": {"start": 0, "end": a.chunks[4].end - 1}}],
        }
    ]


def test_disjoint_ranges_of_one_xorb_stay_separate_and_can_be_split() -> None:
    _, x = serialize_xorb([bytes([i]) * 100 for i in range(6)], CompressionScheme.NONE)
    segments = [FileSegment(x.hash, 100, 0, 1), FileSegment(x.hash, 100, 4, 5)]
    plan = plan_reconstruction(segments, {x.hash: XorbLayout.from_xorb(x)})
    assert [(r.chunk_start, r.chunk_end) for r in plan.fetch[x.hash]] == [(0, 1), (4, 5)]
    v2 = plan.to_v2(lambda h, rs: format_byte_ranges(rs), max_ranges_per_url=1)
    assert [e["url"] for e in v2["xorbs"][x.hex]] == ["bytes=0-107", f"bytes={4 * 108}-{5 * 108 - 1}"]
    assert parse_byte_ranges("bytes=0-107,432-539") == [(0, 108), (432, 540)]


def test_range_narrows_first_and_last_terms(store: dict) -> None:
    # Bytes [3500, 5000): from inside A chunk 2 (starts at 3000) to inside B chunk 0 (4500..5200).
    plan = plan_reconstruction(store["segments"], store["layouts"], (3500, 5000))
    assert plan.offset_into_first_range == 500
    assert [(t.chunk_start, t.chunk_end, t.unpacked_length) for t in plan.terms] == [(2, 3, 1500), (0, 1, 700)]
    assert plan.fetch[store["a"].hash] == (FetchRange(2, 3, store["a"].chunks[2].offset, store["a"].chunks[2].end),)


def test_iter_file_bytes_for_every_kind_of_range(store: dict) -> None:
    data, bodies = store["data"], store["bodies"]

    def read(h: bytes, start: int, end: int) -> bytes:
        return bodies[h][start:end]

    rng = random.Random(3)
    cases = [(0, len(data)), (0, 1), (len(data) - 1, len(data)), (4499, 4501), (1000, 3000), (6899, 6901)]
    cases += [tuple(sorted(rng.sample(range(len(data) + 1), 2))) for _ in range(40)]
    for start, end in cases:
        if start == end:
            continue
        plan = plan_reconstruction(store["segments"], store["layouts"], (start, end))
        assert b"".join(iter_file_bytes(plan, read)) == data[start:end], (start, end)
        # Read in windows smaller than a chunk, and ones that end inside a chunk header or payload.
        for window in (5, 37, 1000):
            assert b"".join(iter_file_bytes(plan, read, window)) == data[start:end], (start, end, window)


def test_reading_a_term_holds_one_window_not_the_whole_term(store: dict) -> None:
    bodies, asked = store["bodies"], []

    def read(h: bytes, start: int, end: int) -> bytes:
        asked.append(end - start)
        return bodies[h][start:end]

    plan = plan_reconstruction(store["segments"], store["layouts"])
    assert b"".join(iter_file_bytes(plan, read, 300)) == store["data"]
    assert max(asked) == 300 and len(asked) > len(plan.terms)


def test_corrupt_storage_is_noticed(store: dict) -> None:
    plan = plan_reconstruction(store["segments"], store["layouts"])
    b = store["b"]
    with pytest.raises(ValueError):
        b"".join(iter_file_bytes(plan, lambda h, s, e: store["bodies"][h][s:e] if h != b.hash else b""))
    # Stored bytes cut short inside a chunk: the partial chunk is never passed off as file bytes.
    short = {h: body[:-3] if h == b.hash else body for h, body in store["bodies"].items()}
    with pytest.raises(ValueError):
        b"".join(iter_file_bytes(plan, lambda h, s, e: short[h][s:e], 64))


def test_range_header() -> None:
    assert parse_range_header(None, 100) is None
    assert parse_range_header("bytes=0-99", 100) == (0, 100)
    assert parse_range_header("bytes=10-1000", 100) == (10, 100)  # clamped, not an error
    assert parse_range_header("bytes=90-", 100) == (90, 100)
    assert parse_range_header("bytes=-30", 100) == (70, 100)
    assert parse_range_header("bytes=0-", 0) == (0, 0)
    with pytest.raises(XetRangeNotSatisfiable) as exc:
        parse_range_header("bytes=100-200", 100)
    assert exc.value.status == 416
    for bad in ("bytes=5-1", "items=0-1", "bytes=0-1,5-6", "bytes=-"):
        with pytest.raises(BadRequest):
            parse_range_header(bad, 100)


def test_layout_mismatch_is_an_error(store: dict) -> None:
    seg = store["segments"][0]
    with pytest.raises(ValueError, match="declares"):
        plan_reconstruction([FileSegment(seg.xorb_hash, 1, 0, 3)], store["layouts"])
    with pytest.raises(ValueError, match="outside"):
        plan_reconstruction([FileSegment(seg.xorb_hash, 1, 5, 9)], store["layouts"])


def test_empty_file() -> None:
    plan = plan_reconstruction([], {}, parse_range_header("bytes=0-", 0))
    assert plan.to_v1(lambda h, r: "") == {"offset_into_first_range": 0, "terms": [], "fetch_info": {}}
