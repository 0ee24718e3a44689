"""File reconstruction: terms, Range handling and fetch ranges for the CAS reconstruction API.

Computes what ``GET /v1|v2/reconstructions/{file_id}`` returns (download-protocol.md,
api.md §1 and §10) from a file's segments and its xorbs' chunk layout, and reassembles file bytes.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from itertools import accumulate
from typing import Any

from bastion.errors import BadRequest
from bastion.xet.errors import XetRangeNotSatisfiable
from bastion.xet.hashing import hash_to_hex
from bastion.xet.shard import FileSegment
from bastion.xet.xorb import Xorb, decode_complete_chunks


@dataclass(frozen=True)
class XorbLayout:
    """Where each chunk of a stored xorb lies: serialized end offsets and uncompressed sizes."""

    chunk_ends: tuple[int, ...]
    chunk_sizes: tuple[int, ...]

    @classmethod
    def from_xorb(cls, xorb: Xorb) -> XorbLayout:
        return cls(tuple(c.end for c in xorb.chunks), tuple(c.uncompressed_size for c in xorb.chunks))

    @property
    def num_chunks(self) -> int:
        return len(self.chunk_ends)

    def byte_range(self, start: int, end: int) -> tuple[int, int]:
        """Serialized bytes ``[first, last)`` of chunks ``[start, end)``."""
        return (self.chunk_ends[start - 1] if start else 0), self.chunk_ends[end - 1]


@dataclass(frozen=True)
class Term:
    """A reconstruction term (download-protocol.md ``CASReconstructionTerm``)."""

    xorb_hash: bytes
    chunk_start: int
    chunk_end: int
    unpacked_length: int
    byte_start: int  # serialized span of the chunks, for reading them back
    byte_end: int


@dataclass(frozen=True)
class FetchRange:
    """A merged span of one xorb to download: chunks ``[chunk_start, chunk_end)``, bytes ``[start, end)``."""

    chunk_start: int
    chunk_end: int
    byte_start: int
    byte_end: int

    @property
    def http_range(self) -> str:
        """The span as an HTTP byte range spec (end inclusive), e.g. ``0-131071``."""
        return f"{self.byte_start}-{self.byte_end - 1}"


@dataclass(frozen=True)
class Reconstruction:
    file_size: int
    start: int  # requested file bytes [start, end)
    end: int
    offset_into_first_range: int
    terms: tuple[Term, ...]
    fetch: Mapping[bytes, tuple[FetchRange, ...]]

    def to_v1(self, url_for: Callable[[bytes, FetchRange], str]) -> dict[str, Any]:
        """``QueryReconstructionResponse`` of ``/v1/reconstructions``: one URL per fetch range.

        ``url_for(xorb_hash, fetch_range)`` returns a URL authorising exactly that byte range.
        """
        fetch_info = {
            hash_to_hex(h): [
                {
                    "range": _span(r.chunk_start, r.chunk_end),
                    "url": url_for(h, r),
                    "url_range": _span(r.byte_start, r.byte_end - 1),
                }
                for r in ranges
            ]
            for h, ranges in self.fetch.items()
        }
        return {
            "offset_into_first_range": self.offset_into_first_range,
            "terms": self._terms_json(),
            "fetch_info": fetch_info,
        }

    def to_v2(
        self, url_for: Callable[[bytes, Sequence[FetchRange]], str], *, max_ranges_per_url: int | None = None
    ) -> dict[str, Any]:
        """``QueryReconstructionResponse`` of ``/v2/reconstructions``: multi-range URLs per xorb.

        ``url_for(xorb_hash, ranges)`` returns a URL authorising exactly those ranges
        (download-protocol.md ``X-Xet-Signed-Range``); ``max_ranges_per_url`` splits long lists.
        """
        xorbs: dict[str, list[dict[str, Any]]] = {}
        for h, ranges in self.fetch.items():
            step = max_ranges_per_url or len(ranges)
            groups = [ranges[i : i + step] for i in range(0, len(ranges), step)]
            xorbs[hash_to_hex(h)] = [
                {
                    "url": url_for(h, g),
                    "ranges": [
                        {"chunks": _span(r.chunk_start, r.chunk_end), "bytes": _span(r.byte_start, r.byte_end - 1)}
                        for r in g
                    ],
                }
                for g in groups
            ]
        return {"offset_into_first_range": self.offset_into_first_range, "terms": self._terms_json(), "xorbs": xorbs}

    def _terms_json(self) -> list[dict[str, Any]]:
        return [
            {
                "hash": hash_to_hex(t.xorb_hash),
                "unpacked_length": t.unpacked_length,
                "range": _span(t.chunk_start, t.chunk_end),
            }
            for t in self.terms
        ]


def _span(start: int, end: int) -> dict[str, int]:
    return {"start": start, "end": end}


_RANGE = re.compile(r"bytes=(\d*)-(\d*)")


def parse_range_header(value: str | None, file_size: int) -> tuple[int, int] | None:
    """A reconstruction request's ``Range: bytes=start-end`` (end inclusive) as ``[start, end)``.

    ``None`` when there is no header. The end is clamped to the file ("the returned content will be
    shorter", download-protocol.md); a start at or past the end is 416 (api.md §1) -- except
    ``bytes=0-`` style requests on an empty file, which reconstruct to nothing. Suffix ranges
    (``bytes=-N``) are honoured; multiple ranges are not part of this API and are rejected.
    """
    if value is None:
        return None
    m = _RANGE.fullmatch(value.strip())
    if m is None or (m.group(1) == "" and m.group(2) == ""):
        raise BadRequest(f"unsupported Range header {value[:100]!r}; expected bytes=start-end")
    first, last = m.group(1), m.group(2)
    if first == "":
        start, end = max(0, file_size - int(last)), file_size
    else:
        start = int(first)
        end = file_size if last == "" else min(file_size, int(last) + 1)
        if last != "" and int(last) < start:
            raise BadRequest(f"invalid Range header {value[:100]!r}: end before start")
    if start >= file_size and not (file_size == 0 and start == 0):
        raise XetRangeNotSatisfiable(f"range starts at {start}, the file has {file_size} bytes")
    return start, end


LayoutLookup = Mapping[bytes, XorbLayout] | Callable[[bytes], XorbLayout]


def plan_reconstruction(
    segments: Sequence[FileSegment], layouts: LayoutLookup, byte_range: tuple[int, int] | None = None
) -> Reconstruction:
    """Terms and merged fetch ranges covering file bytes ``byte_range`` (``[start, end)``; default all).

    Like the reference server: terms outside the range are dropped, the first and last terms are
    narrowed to the chunks that hold requested bytes, ``offset_into_first_range`` is how many bytes
    of the first term's first chunk to skip, and per xorb the byte spans of all terms are sorted
    and merged when they overlap or touch, so a chunk used twice is downloaded once.
    """
    lookup = layouts.__getitem__ if isinstance(layouts, Mapping) else layouts
    file_size = sum(s.unpacked_bytes for s in segments)
    start, end = (0, file_size) if byte_range is None else byte_range
    if not 0 <= start <= end <= file_size:
        raise ValueError(f"byte range [{start}, {end}) is outside a file of {file_size} bytes")
    terms: list[Term] = []
    offset_into_first = 0
    pos = 0  # file offset of the current segment's first chunk
    for seg in segments:
        layout = lookup(seg.xorb_hash)
        if not 0 <= seg.chunk_start < seg.chunk_end <= layout.num_chunks:
            raise ValueError(
                f"segment chunks [{seg.chunk_start}, {seg.chunk_end}) outside xorb "
                f"{hash_to_hex(seg.xorb_hash)} of {layout.num_chunks} chunks"
            )
        sizes = layout.chunk_sizes[seg.chunk_start : seg.chunk_end]
        if sum(sizes) != seg.unpacked_bytes:
            raise ValueError(
                f"segment of xorb {hash_to_hex(seg.xorb_hash)} declares "
                f"{seg.unpacked_bytes} bytes, its chunks hold {sum(sizes)}"
            )
        seg_end = pos + seg.unpacked_bytes
        if seg_end > start and pos < end:
            # Chunk i of the segment covers file bytes [pos + before[i], pos + before[i + 1]).
            before = [0, *accumulate(sizes)]
            first = next(i for i in range(len(sizes)) if pos + before[i + 1] > start)
            last = next(i for i in range(len(sizes) - 1, -1, -1) if pos + before[i] < end)
            if not terms:
                offset_into_first = start - (pos + before[first])
            c0, c1 = seg.chunk_start + first, seg.chunk_start + last + 1
            b0, b1 = layout.byte_range(c0, c1)
            terms.append(Term(seg.xorb_hash, c0, c1, before[last + 1] - before[first], b0, b1))
        pos = seg_end
        if pos >= end:
            break
    return Reconstruction(file_size, start, end, offset_into_first, tuple(terms), _merge(terms))


def _merge(terms: Sequence[Term]) -> dict[bytes, tuple[FetchRange, ...]]:
    spans: dict[bytes, list[FetchRange]] = {}
    for t in terms:
        spans.setdefault(t.xorb_hash, []).append(FetchRange(t.chunk_start, t.chunk_end, t.byte_start, t.byte_end))
    merged: dict[bytes, tuple[FetchRange, ...]] = {}
    for h, ranges in spans.items():
        ranges.sort(key=lambda r: r.chunk_start)
        out = [ranges[0]]
        for r in ranges[1:]:
            cur = out[-1]
            if r.chunk_start <= cur.chunk_end:  # overlapping or adjacent chunk ranges
                out[-1] = FetchRange(
                    cur.chunk_start, max(cur.chunk_end, r.chunk_end), cur.byte_start, max(cur.byte_end, r.byte_end)
                )
            else:
                out.append(r)
        merged[h] = tuple(out)
    return merged


def format_byte_ranges(ranges: Sequence[FetchRange]) -> str:
    """The ``Range`` / ``X-Xet-Signed-Range`` value for fetch ranges: ``bytes=0-99,200-299``."""
    return "bytes=" + ",".join(r.http_range for r in ranges)


def parse_byte_ranges(value: str) -> list[tuple[int, int]]:
    """Parse ``bytes=a-b[,c-d...]`` (ends inclusive, explicit) into ``[start, end)`` pairs.

    For the xorb download route, which must serve exactly the ranges its URL was signed for.
    """
    if not value.startswith("bytes="):
        raise BadRequest(f"unsupported Range header {value[:100]!r}")
    out = []
    for part in value[len("bytes=") :].split(","):
        m = re.fullmatch(r"\s*(\d+)-(\d+)\s*", part)
        if m is None or int(m.group(2)) < int(m.group(1)):
            raise BadRequest(f"unsupported Range header {value[:100]!r}")
        out.append((int(m.group(1)), int(m.group(2)) + 1))
    return out


READ_WINDOW = 4 << 20  # serialized xorb bytes read at a time while reconstructing


def iter_file_bytes(recon: Reconstruction, read: Callable[[bytes, int, int], bytes],
                    window: int = READ_WINDOW) -> Iterator[bytes]:
    """Yield the requested file bytes by reading each term's chunks and decoding them.

    ``read(xorb_hash, start, end)`` returns serialized xorb bytes ``[start, end)`` from storage; a
    term is read ``window`` bytes at a time, so memory stays bounded whatever a xorb's size. Each
    term's chunk count and decoded length are checked against its ``unpacked_length``
    (download-protocol.md Step 3), so a damaged stored xorb surfaces as an error (ending the
    stream early) instead of a silently wrong file.
    """
    skip = recon.offset_into_first_range
    remaining = recon.end - recon.start
    for t in recon.terms:
        if remaining <= 0:
            break
        expected = t.chunk_end - t.chunk_start
        count = got = 0
        pending = b""
        pos = t.byte_start
        while pos < t.byte_end and remaining > 0:
            block = read(t.xorb_hash, pos, min(t.byte_end, pos + window))
            if not block:
                break
            pos += len(block)
            data = pending + block if pending else block
            chunks, used = decode_complete_chunks(memoryview(data), count)
            pending = data[used:]
            count += len(chunks)
            got += sum(len(c) for c in chunks)
            if count > expected or got > t.unpacked_length:
                break
            for c in chunks:
                if skip >= len(c):
                    skip -= len(c)
                    continue
                piece = c[skip : skip + remaining]
                skip = 0
                remaining -= len(piece)
                yield piece
                if remaining <= 0:
                    break
        if remaining > 0 and (pending or count != expected or got != t.unpacked_length):
            raise ValueError(
                f"stored xorb {hash_to_hex(t.xorb_hash)} chunks [{t.chunk_start}, "
                f"{t.chunk_end}) decode to {count} chunks and {got} bytes, expected {expected} and "
                f"{t.unpacked_length}"
            )
