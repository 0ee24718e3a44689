"""Xorbs: parse and fully validate uploaded xorbs, decode chunk ranges, and serialize xorbs.

Format: xorb.md (chunk header, None/LZ4/ByteGrouping4LZ4); limits: xorb.md (64 MiB serialized)
and deduplication.md (8,192 chunks); the optional trailing footer is xet-core's XorbObjectInfo.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from enum import IntEnum

import lz4.frame

from bastion.xet.chunking import MAX_CHUNK_SIZE
from bastion.xet.errors import XorbFormatError
from bastion.xet.hashing import HASH_LEN, chunk_hash, hash_to_hex, xorb_hash

CHUNK_HEADER_LEN = 8
CHUNK_HEADER_VERSION = 0
# xorb.md: "The CAS server will reject Xorb uploads that exceed the 64 MiB serialized size limit."
MAX_XORB_BYTES = 64 * 1024 * 1024
# deduplication.md "Xorbs": "Maximum chunks: 8,192 chunks per xorb".
MAX_XORB_CHUNKS = 8 * 1024
# An incompressible chunk SHOULD be stored raw (xorb.md), so a payload is normally <= the chunk;
# the reference reader tolerates up to twice MAX_CHUNK_SIZE and so do we, and not a byte more.
MAX_COMPRESSED_CHUNK = 2 * MAX_CHUNK_SIZE

# The optional footer ("XorbObjectInfo" in xet-core xorb_object_format.rs). Uploads from hf_xet
# omit it ("XORBs are sent without footer"), but a footer-carrying xorb is valid and must verify.
FOOTER_IDENT = b"XETBLOB"
_FOOTER_IDENT_HASHES = b"XBLBHSH"
_FOOTER_IDENT_BOUNDARIES = b"XBLBBND"
_FOOTER_VERSION_V0 = 0
_FOOTER_VERSION_V1 = 1
_FOOTER_HASHES_VERSION = 0
_FOOTER_BOUNDARIES_VERSION = 1
_FOOTER_BUFFER_LEN = 16

_U32 = struct.Struct("<I")


class CompressionScheme(IntEnum):
    """xorb.md "Chunk Compression Schemes"."""

    NONE = 0
    LZ4 = 1
    BG4_LZ4 = 2


@dataclass(frozen=True)
class XorbChunk:
    """One chunk as laid out in a serialized xorb."""

    hash: bytes
    offset: int  # where the chunk header starts in the serialized xorb
    length: int  # header + compressed payload
    uncompressed_size: int
    scheme: CompressionScheme

    @property
    def end(self) -> int:
        return self.offset + self.length


@dataclass(frozen=True)
class Xorb:
    """A validated xorb: its hash recomputed from its chunks, and where every chunk lies."""

    hash: bytes
    chunks: tuple[XorbChunk, ...]
    content_length: int  # bytes of chunk data; a footer, if any, starts here
    serialized_length: int
    has_footer: bool

    @property
    def hex(self) -> str:
        return hash_to_hex(self.hash)

    @property
    def num_chunks(self) -> int:
        return len(self.chunks)

    @property
    def unpacked_length(self) -> int:
        return sum(c.uncompressed_size for c in self.chunks)

    def chunk_list(self) -> list[tuple[bytes, int]]:
        """(chunk hash, length) per chunk: what the xorb, file and range hashes are computed over."""
        return [(c.hash, c.uncompressed_size) for c in self.chunks]

    def byte_range(self, start: int, end: int) -> tuple[int, int]:
        """Serialized byte span ``[first, last)`` holding chunks ``[start, end)``."""
        if not 0 <= start < end <= len(self.chunks):
            raise ValueError(f"chunk range [{start}, {end}) is outside a xorb of {len(self.chunks)} chunks")
        return self.chunks[start].offset, self.chunks[end - 1].end


# --- chunk encoding ----------------------------------------------------------------------------


def bg4_split(data: bytes | bytearray | memoryview) -> bytes:
    """xorb.md "Byte Grouping Phase": byte i goes to group i % 4; groups are concatenated.

    With a length that is not a multiple of 4 the first ``len % 4`` groups get one extra byte,
    which is exactly what the stride slices ``data[k::4]`` produce.
    """
    b = bytes(data)
    return b[0::4] + b[1::4] + b[2::4] + b[3::4]


def bg4_regroup(grouped: bytes | bytearray | memoryview) -> bytes:
    """Inverse of ``bg4_split``."""
    n = len(grouped)
    quarter, rem = divmod(n, 4)
    out = bytearray(n)
    pos = 0
    for k in range(4):
        size = quarter + (1 if k < rem else 0)
        out[k::4] = grouped[pos : pos + size]
        pos += size
    return bytes(out)


def _lz4_compress(data: bytes) -> bytes:
    # xet-core writes one standard LZ4 *frame* per chunk (lz4_flex FrameEncoder), not a raw block.
    return lz4.frame.compress(data)


def _lz4_decompress(payload: bytes | memoryview, limit: int) -> bytes:
    decoder = lz4.frame.LZ4FrameDecompressor()
    try:
        # max_length caps the output so a crafted frame cannot expand past the declared size.
        out = decoder.decompress(bytes(payload), max_length=limit + 1)
    except RuntimeError as exc:
        raise ValueError(f"invalid LZ4 frame ({exc})") from exc
    if len(out) > limit:
        raise ValueError("decompresses to more bytes than the header's uncompressed size")
    if not decoder.eof or decoder.unused_data:
        raise ValueError("LZ4 frame is truncated or followed by extra bytes")
    return out


def compress_chunk(data: bytes, scheme: CompressionScheme | None = None) -> tuple[CompressionScheme, bytes]:
    """Compress one chunk; ``None`` picks the smallest of LZ4 and BG4-LZ4 (xorb.md "Brute Force").

    Falls back to storing raw bytes when compression does not help (xorb.md: SHOULD).
    """
    if scheme is None:
        options = [
            (CompressionScheme.LZ4, _lz4_compress(data)),
            (CompressionScheme.BG4_LZ4, _lz4_compress(bg4_split(data))),
        ]
        scheme, payload = min(options, key=lambda o: len(o[1]))
    elif scheme is CompressionScheme.NONE:
        payload = data
    elif scheme is CompressionScheme.LZ4:
        payload = _lz4_compress(data)
    else:
        payload = _lz4_compress(bg4_split(data))
    if len(payload) >= len(data):
        return CompressionScheme.NONE, data
    return scheme, payload


def encode_chunk(data: bytes | bytearray | memoryview, scheme: CompressionScheme | None = None) -> bytes:
    """Header + payload of one chunk (xorb.md "Chunk Header Layout")."""
    raw = bytes(data)
    if len(raw) > MAX_CHUNK_SIZE:
        raise ValueError(f"a chunk holds at most {MAX_CHUNK_SIZE} bytes, got {len(raw)}")
    used, payload = compress_chunk(raw, scheme)
    header = bytes([CHUNK_HEADER_VERSION]) + len(payload).to_bytes(3, "little")
    header += bytes([used]) + len(raw).to_bytes(3, "little")
    return header + payload


def _decode_at(buf: memoryview, pos: int, index: int) -> tuple[bytes, int, CompressionScheme]:
    """Decode the chunk whose header is at ``pos``: (data, serialized length, scheme)."""

    def bad(reason: str) -> XorbFormatError:
        return XorbFormatError(f"chunk {index} at byte {pos}: {reason}")

    if len(buf) - pos < CHUNK_HEADER_LEN:
        raise bad(f"truncated header ({len(buf) - pos} of {CHUNK_HEADER_LEN} bytes)")
    header = buf[pos : pos + CHUNK_HEADER_LEN]
    if header[0] != CHUNK_HEADER_VERSION:
        raise bad(f"unsupported chunk header version {header[0]}")
    compressed = int.from_bytes(header[1:4], "little")
    try:
        scheme = CompressionScheme(header[4])
    except ValueError:
        raise bad(f"unknown compression scheme {header[4]}") from None
    size = int.from_bytes(header[5:8], "little")
    if size > MAX_CHUNK_SIZE:
        raise bad(f"uncompressed size {size} exceeds the {MAX_CHUNK_SIZE}-byte chunk limit")
    if compressed > MAX_COMPRESSED_CHUNK:
        raise bad(f"compressed size {compressed} exceeds {MAX_COMPRESSED_CHUNK} bytes")
    start = pos + CHUNK_HEADER_LEN
    if len(buf) - start < compressed:
        raise bad(f"truncated payload ({len(buf) - start} of {compressed} bytes)")
    payload = buf[start : start + compressed]
    try:
        if scheme is CompressionScheme.NONE:
            if compressed != size:
                raise ValueError(f"uncompressed chunk of {compressed} bytes declares {size}")
            data = bytes(payload)
        elif scheme is CompressionScheme.LZ4:
            data = _lz4_decompress(payload, size)
        else:
            data = bg4_regroup(_lz4_decompress(payload, size))
    except ValueError as exc:
        raise bad(str(exc)) from None
    if len(data) != size:
        raise bad(f"decompresses to {len(data)} bytes, header says {size}")
    return data, CHUNK_HEADER_LEN + compressed, scheme


def iter_decoded_chunks(data: bytes | bytearray | memoryview) -> Iterator[bytes]:
    """Decode consecutive serialized chunks, e.g. a byte range fetched for a reconstruction term."""
    buf = memoryview(data).cast("B")
    pos = 0
    index = 0
    while pos < len(buf):
        chunk, used, _ = _decode_at(buf, pos, index)
        yield chunk
        pos += used
        index += 1


def decode_complete_chunks(buf: memoryview, first_index: int = 0) -> tuple[list[bytes], int]:
    """Decode the whole chunks at the start of ``buf`` (a window of a longer chunk sequence):
    (chunks, bytes used). A chunk cut off by the window's end is left for the next window."""
    out: list[bytes] = []
    pos = 0
    while len(buf) - pos >= CHUNK_HEADER_LEN:
        compressed = int.from_bytes(buf[pos + 1 : pos + 4], "little")
        if compressed <= MAX_COMPRESSED_CHUNK and len(buf) - pos - CHUNK_HEADER_LEN < compressed:
            break  # its payload continues in the next window (an oversized one is refused by _decode_at)
        chunk, used, _ = _decode_at(buf, pos, first_index + len(out))
        out.append(chunk)
        pos += used
    return out, pos


def decode_chunks(data: bytes | bytearray | memoryview) -> list[bytes]:
    """All chunks of a serialized chunk sequence (no footer), decompressed."""
    return list(iter_decoded_chunks(data))


# --- whole xorbs -------------------------------------------------------------------------------


def parse_xorb(
    data: bytes | bytearray | memoryview,
    expected_hash: bytes | None = None,
    *,
    max_bytes: int = MAX_XORB_BYTES,
    max_chunks: int = MAX_XORB_CHUNKS,
) -> Xorb:
    """Validate a serialized xorb completely and describe it.

    Every chunk is decompressed and re-hashed, the xorb hash recomputed and compared with
    ``expected_hash`` (the hash in the upload path, api.md §3), sizes and limits enforced, and a
    footer, when present, must agree with the chunks in every field. Raises ``XorbFormatError``.
    """
    buf = memoryview(data).cast("B")
    total = len(buf)
    if total > max_bytes:
        raise XorbFormatError(f"xorb is {total} bytes; the limit is {max_bytes}")
    if total == 0:
        raise XorbFormatError("xorb is empty")
    chunks: list[XorbChunk] = []
    pos = 0
    while pos < total:
        # A chunk header starts with version 0, so the footer's ASCII ident cannot be mistaken
        # for one (xet-core's parse_chunk_header relies on the same fact).
        if buf[pos : pos + len(FOOTER_IDENT)] == FOOTER_IDENT:
            break
        if len(chunks) == max_chunks:
            raise XorbFormatError(f"xorb has more than {max_chunks} chunks")
        chunk, used, scheme = _decode_at(buf, pos, len(chunks))
        chunks.append(XorbChunk(chunk_hash(chunk), pos, used, len(chunk), scheme))
        pos += used
    if not chunks:
        raise XorbFormatError("xorb contains no chunks")
    content_length = pos
    computed = xorb_hash([(c.hash, c.uncompressed_size) for c in chunks])
    has_footer = pos < total
    if has_footer:
        _check_footer(buf[pos:], chunks, computed)
    if expected_hash is not None and computed != expected_hash:
        raise XorbFormatError(
            f"xorb hash mismatch: uploaded as {hash_to_hex(expected_hash)}, its chunks hash to {hash_to_hex(computed)}"
        )
    return Xorb(computed, tuple(chunks), content_length, total, has_footer)


class _Reader:
    def __init__(self, buf: memoryview) -> None:
        self.buf = buf
        self.pos = 0

    def take(self, n: int, what: str) -> memoryview:
        if n < 0 or self.pos + n > len(self.buf):
            raise XorbFormatError(f"xorb footer truncated while reading {what}")
        out = self.buf[self.pos : self.pos + n]
        self.pos += n
        return out

    def u8(self, what: str) -> int:
        return self.take(1, what)[0]

    def u32(self, what: str) -> int:
        return int(_U32.unpack(self.take(4, what))[0])

    def u32s(self, n: int, what: str) -> list[int]:
        return list(struct.unpack(f"<{n}I", self.take(4 * n, what)))


def _check_footer(footer: memoryview, chunks: list[XorbChunk], computed: bytes) -> None:
    if len(footer) < 4:
        raise XorbFormatError("xorb footer truncated")
    info_length = int(_U32.unpack(footer[-4:])[0])
    # The trailing u32 gives the footer's length, itself excluded (xet-core XorbObject::deserialize).
    if info_length != len(footer) - 4:
        raise XorbFormatError(f"xorb footer length field says {info_length} bytes, {len(footer) - 4} follow the chunks")
    r = _Reader(footer[:-4])
    n = len(chunks)
    r.take(len(FOOTER_IDENT), "ident")
    version = r.u8("version")
    stated_hash = bytes(r.take(HASH_LEN, "xorb hash"))
    if version == _FOOTER_VERSION_V1:
        hashes_start = r.pos
        if bytes(r.take(7, "hash section ident")) != _FOOTER_IDENT_HASHES:
            raise XorbFormatError("xorb footer: bad hash section ident")
        if r.u8("hash section version") != _FOOTER_HASHES_VERSION:
            raise XorbFormatError("xorb footer: unsupported hash section version")
        n_hashes = r.u32("chunk count")
        if n_hashes != n:
            raise XorbFormatError(f"xorb footer lists {n_hashes} chunk hashes for {n} chunks")
        hashes = [bytes(r.take(HASH_LEN, "chunk hashes")) for _ in range(n)]
        boundaries_start = r.pos
        if bytes(r.take(7, "boundary section ident")) != _FOOTER_IDENT_BOUNDARIES:
            raise XorbFormatError("xorb footer: bad boundary section ident")
        if r.u8("boundary section version") != _FOOTER_BOUNDARIES_VERSION:
            raise XorbFormatError("xorb footer: unsupported boundary section version")
        if r.u32("chunk count") != n:
            raise XorbFormatError("xorb footer: inconsistent chunk counts")
        boundaries = r.u32s(n, "chunk boundaries")
        unpacked = r.u32s(n, "unpacked offsets")
        if r.u32("chunk count") != n:
            raise XorbFormatError("xorb footer: inconsistent chunk counts")
        hashes_from_end = r.u32("hash section offset")
        boundaries_from_end = r.u32("boundary section offset")
        r.take(_FOOTER_BUFFER_LEN, "reserved buffer")
        if hashes_from_end != r.pos - hashes_start or boundaries_from_end != r.pos - boundaries_start:
            raise XorbFormatError("xorb footer: section offsets do not match its layout")
    elif version == _FOOTER_VERSION_V0:
        if r.u32("chunk count") != n:
            raise XorbFormatError("xorb footer: chunk count does not match the chunks")
        boundaries = r.u32s(n, "chunk boundaries")
        hashes = [bytes(r.take(HASH_LEN, "chunk hashes")) for _ in range(n)]
        unpacked = None
        r.take(_FOOTER_BUFFER_LEN, "reserved buffer")
    else:
        raise XorbFormatError(f"xorb footer: unsupported version {version}")
    if r.pos != len(r.buf):
        raise XorbFormatError("xorb footer: unexpected bytes after the footer")
    if stated_hash != computed:
        raise XorbFormatError(
            f"xorb footer claims hash {hash_to_hex(stated_hash)}, chunks hash to {hash_to_hex(computed)}"
        )
    running = 0
    for i, c in enumerate(chunks):
        running += c.uncompressed_size
        if hashes[i] != c.hash:
            raise XorbFormatError(f"xorb footer: chunk {i} hash does not match the chunk's data")
        if boundaries[i] != c.end:
            raise XorbFormatError(f"xorb footer: chunk {i} boundary {boundaries[i]} != actual {c.end}")
        if unpacked is not None and unpacked[i] != running:
            raise XorbFormatError(f"xorb footer: chunk {i} unpacked offset {unpacked[i]} != {running}")


def _footer_v1(xorb: Xorb) -> bytes:
    n = xorb.num_chunks
    hashes = _FOOTER_IDENT_HASHES + bytes([_FOOTER_HASHES_VERSION]) + _U32.pack(n)
    hashes += b"".join(c.hash for c in xorb.chunks)
    running = 0
    unpacked = []
    for c in xorb.chunks:
        running += c.uncompressed_size
        unpacked.append(running)
    bounds = _FOOTER_IDENT_BOUNDARIES + bytes([_FOOTER_BOUNDARIES_VERSION]) + _U32.pack(n)
    bounds += struct.pack(f"<{n}I", *(c.end for c in xorb.chunks)) + struct.pack(f"<{n}I", *unpacked)
    tail_len = 3 * 4 + _FOOTER_BUFFER_LEN
    tail = struct.pack("<3I", n, len(hashes) + len(bounds) + tail_len, len(bounds) + tail_len)
    tail += bytes(_FOOTER_BUFFER_LEN)
    info = FOOTER_IDENT + bytes([_FOOTER_VERSION_V1]) + xorb.hash + hashes + bounds + tail
    return info + _U32.pack(len(info))


class XorbBuilder:
    """Accumulates encoded chunks until the next one would break a xorb limit."""

    def __init__(self, scheme: CompressionScheme | None = CompressionScheme.LZ4) -> None:
        self.scheme = scheme
        self._parts: list[bytes] = []
        self._chunks: list[XorbChunk] = []
        self._size = 0

    def __len__(self) -> int:
        return len(self._chunks)

    def add(self, data: bytes | bytearray | memoryview) -> bool:
        """Append a chunk; False (nothing appended) when it would exceed 64 MiB or 8,192 chunks."""
        encoded = encode_chunk(data, self.scheme)
        if len(self._chunks) == MAX_XORB_CHUNKS or self._size + len(encoded) > MAX_XORB_BYTES:
            return False
        self._chunks.append(
            XorbChunk(chunk_hash(data), self._size, len(encoded), len(data), CompressionScheme(encoded[4]))
        )
        self._parts.append(encoded)
        self._size += len(encoded)
        return True

    def finish(self, *, with_footer: bool = False) -> tuple[bytes, Xorb]:
        """The serialized xorb and its description; the builder is then empty again."""
        if not self._chunks:
            raise ValueError("a xorb holds at least one chunk")
        chunks = tuple(self._chunks)
        h = xorb_hash([(c.hash, c.uncompressed_size) for c in chunks])
        body = b"".join(self._parts)
        xorb = Xorb(h, chunks, self._size, self._size, False)
        if with_footer:
            body += _footer_v1(xorb)
            xorb = Xorb(h, chunks, self._size, len(body), True)
        self._parts, self._chunks, self._size = [], [], 0
        return body, xorb


def serialize_xorb(
    chunks: Sequence[bytes | bytearray | memoryview],
    scheme: CompressionScheme | None = CompressionScheme.LZ4,
    *,
    with_footer: bool = False,
) -> tuple[bytes, Xorb]:
    """Serialize chunks into one xorb; returns its bytes and their description (hash, offsets).

    ``scheme=None`` tries every scheme per chunk and keeps the smallest. Without a footer the
    result is what a client uploads (api.md §3 body); with one it is xet-core's stored layout.
    Raises ``ValueError`` if the chunks do not fit in one xorb.
    """
    builder = XorbBuilder(scheme)
    for data in chunks:
        if not builder.add(data):
            raise ValueError(f"chunks exceed one xorb ({MAX_XORB_BYTES} bytes, {MAX_XORB_CHUNKS} chunks)")
    return builder.finish(with_footer=with_footer)
