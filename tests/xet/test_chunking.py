"""Content-defined chunking: the spec's pseudocode, size bounds, streaming and edit locality."""

from __future__ import annotations

import random
import time

import pytest

from bastion.xet._gear_table import GEAR_TABLE
from bastion.xet.chunking import (
    MASK,
    MAX_CHUNK_SIZE,
    MIN_CHUNK_SIZE,
    Chunker,
    chunk_boundaries,
    chunk_stream,
    iter_chunks,
)


def spec_boundaries(data: bytes) -> list[int]:
    """chunking.md "Pseudocode", transcribed literally (slow; the reference for small inputs)."""
    if len(data) < MIN_CHUNK_SIZE:
        return [len(data)] if data else []
    h = 0
    start = 0
    ends = []
    for i, b in enumerate(data):
        h = ((h << 1) + GEAR_TABLE[b]) & (2**64 - 1)
        size = i + 1 - start
        if size < MIN_CHUNK_SIZE:
            continue
        if size >= MAX_CHUNK_SIZE or (h & MASK) == 0:
            ends.append(i + 1)
            start = i + 1
            h = 0
    if start < len(data):
        ends.append(len(data))
    return ends


def sample(seed: int, size: int, zero_fraction: float = 0.0) -> bytes:
    rng = random.Random(seed)
    zeros = int(size * zero_fraction)
    return rng.randbytes(size - zeros) + bytes(zeros)


def test_gear_table_is_rust_gearhash_default() -> None:
    assert len(GEAR_TABLE) == 256
    assert GEAR_TABLE[0] == 0xB088D3A9E840F559 and GEAR_TABLE[255] == 0x63C7A906C1DD187B


@pytest.mark.parametrize(
    ("size", "zeros"), [(0, 0), (1, 0), (8191, 0), (8192, 0), (9000, 0), (400_000, 0), (600_000, 0.6)]
)
def test_matches_spec_pseudocode(size: int, zeros: float) -> None:
    data = sample(size, size, zeros)
    assert chunk_boundaries(data) == spec_boundaries(data)


def test_size_bounds_and_forced_boundaries() -> None:
    data = sample(1, 3_000_000, 0.3)  # a long zero run never matches the mask: forced cuts
    ends = chunk_boundaries(data)
    sizes = [b - a for a, b in zip([0, *ends[:-1]], ends, strict=True)]
    assert ends[-1] == len(data)
    assert all(MIN_CHUNK_SIZE <= s <= MAX_CHUNK_SIZE for s in sizes[:-1])
    assert 0 < sizes[-1] <= MAX_CHUNK_SIZE
    assert sizes.count(MAX_CHUNK_SIZE) >= 6
    assert chunk_boundaries(data) == ends  # deterministic


@pytest.mark.parametrize("block", [1000, 65_536, 300_001])
def test_streaming_equals_one_shot(block: int) -> None:
    data = sample(2, 1_200_000)
    pieces = [data[i : i + block] for i in range(0, len(data), block)]
    streamed = list(chunk_stream(pieces))
    assert [bytes(c) for c in iter_chunks(data)] == streamed
    chunker = Chunker()
    assert chunker.finish() == []


def test_an_insertion_only_changes_nearby_chunks() -> None:
    data = sample(3, 2_000_000)
    edited = data[:1_000_000] + b"inserted bytes" + data[1_000_000:]
    before = {bytes(c) for c in iter_chunks(data)}
    after = [bytes(c) for c in iter_chunks(edited)]
    changed = [c for c in after if c not in before]
    assert 1 <= len(changed) <= 3
    assert sum(len(c) for c in changed) < 3 * MAX_CHUNK_SIZE


def test_throughput(capsys: pytest.CaptureFixture[str]) -> None:
    data = sample(4, 32 * 1024 * 1024)
    t0 = time.perf_counter()
    ends = chunk_boundaries(data)
    rate = len(data) / (time.perf_counter() - t0) / 1e6
    with capsys.disabled():
        print(f"\nchunking: {rate:.0f} MB/s, mean chunk {len(data) // len(ends)} bytes")
    assert rate > 5
    assert 40_000 < len(data) / len(ends) < 90_000
