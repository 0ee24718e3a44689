"""Shards (shard.md): parse, serialize, and verify uploaded shards against the stored xorbs.

A shard lists file reconstructions (file info section) and xorb chunk listings (CAS info section);
clients upload them to register files (api.md §4), and the server returns them for dedupe (§2).

Over 500 lines on purpose: one binary format (parse, serialize, verify), laid out section by section
as shard.md specifies it.
"""

from __future__ import annotations

import struct
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from bastion.xet.errors import ShardFormatError
from bastion.xet.hashing import (
    HASH_LEN,
    ZERO_HASH,
    file_hash,
    hash_to_hex,
    hex_to_hash,
    hmac_chunk_hash,
    verification_range_hash,
)

# shard.md "Constants" and the tag bytes of xet-core metadata_shard/shard_format.rs.
SHARD_HEADER_TAG = b"HFRepoMetaData\x00" + bytes(
    [85, 105, 103, 69, 106, 123, 129, 87, 131, 165, 189, 217, 92, 205, 209, 74, 169]
)
SHARD_HEADER_VERSION = 2
SHARD_FOOTER_VERSION = 1
HEADER_LEN = 48
ENTRY_LEN = 48
FOOTER_LEN = 200
# upload-protocol.md: a shard over 64 MiB MUST be split; deduplication.md: "Maximum size: 64MB".
MAX_SHARD_BYTES = 64 * 1024 * 1024

FILE_FLAG_WITH_VERIFICATION = 1 << 31
FILE_FLAG_WITH_METADATA_EXT = 1 << 30
# xet-core xorb_structs.rs: chunk entry flag marking a chunk the client queried for global dedupe.
CHUNK_FLAG_GLOBAL_DEDUP = 1 << 31

_BOOKEND = b"\xff" * HASH_LEN + bytes(16)
_HEADER = struct.Struct("<32sQQ")
_FILE_HEADER = struct.Struct("<32sIIQ")
_SEGMENT = struct.Struct("<32sIIII")
_HASH_PAD16 = struct.Struct("<32s16x")
_XORB_HEADER = struct.Struct("<32sIIII")
_CHUNK = struct.Struct("<32sIIII")
_FOOTER = struct.Struct("<9Q32sQQ6QQQQQ")
_LOOKUP = struct.Struct("<QI")
_CHUNK_LOOKUP = struct.Struct("<QII")


@dataclass(frozen=True)
class FileSegment:
    """One term of a file reconstruction (shard.md FileDataSequenceEntry): chunks [start, end)."""

    xorb_hash: bytes
    unpacked_bytes: int
    chunk_start: int
    chunk_end: int
    flags: int = 0


@dataclass(frozen=True)
class FileEntry:
    """A file info block: the file hash, its terms, a verification hash per term, its sha256."""

    file_hash: bytes
    segments: tuple[FileSegment, ...]
    verification: tuple[bytes, ...] | None = None
    sha256: bytes | None = None  # raw field bytes; see sha256_field and sha256_hex

    @property
    def size(self) -> int:
        return sum(s.unpacked_bytes for s in self.segments)

    @property
    def sha256_hex(self) -> str | None:
        """The file's sha256 as usual hex (the LFS oid), or None without the metadata extension."""
        return None if self.sha256 is None else hash_to_hex(self.sha256)

    @property
    def flags(self) -> int:
        flags = FILE_FLAG_WITH_VERIFICATION if self.verification is not None else 0
        return flags | (FILE_FLAG_WITH_METADATA_EXT if self.sha256 is not None else 0)


def sha256_field(digest: bytes) -> bytes:
    """The FileMetadataExt bytes for a sha256 digest.

    xet-core stores the digest as one of its hashes (``Sha256::from_be_bytes``), so the field holds
    the digest in the protocol's hash byte order: its ``hash_to_hex`` is the familiar hex digest.
    hf_xet 1.8.0 uploads it this way; a plain digest in the field would read back scrambled.
    """
    if len(digest) != HASH_LEN:
        raise ValueError("a sha256 digest is 32 bytes")
    return hex_to_hash(digest.hex())


@dataclass(frozen=True)
class XorbChunkEntry:
    """A chunk of a xorb as listed in the CAS info section; offsets are *uncompressed* bytes."""

    chunk_hash: bytes
    byte_range_start: int
    unpacked_bytes: int
    flags: int = 0


@dataclass(frozen=True)
class XorbEntry:
    """A CAS info block: a xorb and its chunks, in order."""

    xorb_hash: bytes
    chunks: tuple[XorbChunkEntry, ...]
    num_bytes_in_xorb: int
    num_bytes_on_disk: int = 0
    flags: int = 0

    @classmethod
    def from_chunk_list(cls, xorb_hash: bytes, chunks: Sequence[tuple[bytes, int]], on_disk: int = 0) -> XorbEntry:
        """Build the listing of a xorb from its (chunk hash, length) list."""
        entries = []
        offset = 0
        for h, n in chunks:
            entries.append(XorbChunkEntry(h, offset, n))
            offset += n
        return cls(xorb_hash, tuple(entries), offset, on_disk)


@dataclass(frozen=True)
class ShardFooter:
    """shard.md "Footer"; the reserved areas hold xet-core's lookup-table offsets and byte totals."""

    file_info_offset: int
    cas_info_offset: int
    file_lookup_offset: int
    file_lookup_num_entry: int
    cas_lookup_offset: int
    cas_lookup_num_entry: int
    chunk_lookup_offset: int
    chunk_lookup_num_entry: int
    chunk_hash_hmac_key: bytes
    shard_creation_timestamp: int
    shard_key_expiry: int
    stored_bytes_on_disk: int
    materialized_bytes: int
    stored_bytes: int
    footer_offset: int


@dataclass(frozen=True)
class Shard:
    files: tuple[FileEntry, ...]
    xorbs: tuple[XorbEntry, ...]
    footer: ShardFooter | None = None

    @property
    def hmac_key(self) -> bytes | None:
        """The key chunk hashes are protected with, when the footer carries a non-zero one."""
        if self.footer is None or self.footer.chunk_hash_hmac_key == ZERO_HASH:
            return None
        return self.footer.chunk_hash_hmac_key

    def referenced_xorbs(self) -> set[bytes]:
        """Every xorb the shard names: all must exist before it is accepted (upload-protocol.md)."""
        refs = {s.xorb_hash for f in self.files for s in f.segments}
        refs.update(x.xorb_hash for x in self.xorbs)
        return refs


# --- parsing -----------------------------------------------------------------------------------


class _Cursor:
    def __init__(self, buf: memoryview) -> None:
        self.buf = buf
        self.pos = 0

    def need(self, n: int, what: str) -> None:
        if self.pos + n > len(self.buf):
            raise ShardFormatError(
                f"shard truncated: {what} needs {n} bytes at offset {self.pos}, {len(self.buf) - self.pos} remain"
            )

    def read(self, st: struct.Struct, what: str) -> tuple:
        self.need(st.size, what)
        out = st.unpack_from(self.buf, self.pos)
        self.pos += st.size
        return out

    def is_bookend(self) -> bool:
        return bytes(self.buf[self.pos : self.pos + ENTRY_LEN]) == _BOOKEND


def parse_shard(data: bytes | bytearray | memoryview, *, max_bytes: int = MAX_SHARD_BYTES) -> Shard:
    """Parse a shard, checking its structure (tag, versions, counts, bookends, footer offsets).

    Hash contents are checked by ``verify_upload_shard`` against the stored xorbs. Entry counts
    are bounded by the bytes actually present before anything is allocated for them.
    """
    buf = memoryview(data).cast("B")
    if len(buf) > max_bytes:
        raise ShardFormatError(f"shard is {len(buf)} bytes; the limit is {max_bytes}")
    cur = _Cursor(buf)
    tag, version, footer_size = cur.read(_HEADER, "header")
    if tag != SHARD_HEADER_TAG:
        raise ShardFormatError("not a shard: wrong header tag")
    if version != SHARD_HEADER_VERSION:
        raise ShardFormatError(f"unsupported shard header version {version} (expected {SHARD_HEADER_VERSION})")
    if footer_size not in (0, FOOTER_LEN):
        raise ShardFormatError(f"footer_size is {footer_size}; it is 0 (omitted) or {FOOTER_LEN}")
    body_end = len(buf) - footer_size
    if body_end < HEADER_LEN:
        raise ShardFormatError("shard truncated: shorter than its header and footer")
    body = _Cursor(buf[:body_end])
    body.pos = HEADER_LEN
    files = _parse_file_section(body)
    cas_info_offset = body.pos
    xorbs = _parse_xorb_section(body)
    sections_end = body.pos
    footer = None
    if footer_size:
        footer = _parse_footer(buf, body_end, cas_info_offset, sections_end, files, xorbs)
    elif sections_end != body_end:
        raise ShardFormatError(f"{body_end - sections_end} unexpected bytes after the CAS info section")
    return Shard(tuple(files), tuple(xorbs), footer)


def _parse_file_section(cur: _Cursor) -> list[FileEntry]:
    files: list[FileEntry] = []
    while True:
        cur.need(ENTRY_LEN, "file info entry or bookend")
        if cur.is_bookend():
            cur.pos += ENTRY_LEN
            return files
        at = cur.pos
        fhash, flags, n, _ = cur.read(_FILE_HEADER, "file header")
        if flags & ~(FILE_FLAG_WITH_VERIFICATION | FILE_FLAG_WITH_METADATA_EXT):
            raise ShardFormatError(f"file {hash_to_hex(fhash)} at offset {at}: unknown flags {flags:#x}")
        with_verification = bool(flags & FILE_FLAG_WITH_VERIFICATION)
        with_ext = bool(flags & FILE_FLAG_WITH_METADATA_EXT)
        entries = n * (2 if with_verification else 1) + (1 if with_ext else 0)
        cur.need(entries * ENTRY_LEN, f"the {entries} entries of file {hash_to_hex(fhash)}")
        segments = tuple(
            FileSegment(h, size, start, end, fl)
            for h, fl, size, start, end in (cur.read(_SEGMENT, "segment") for _ in range(n))
        )
        verification = None
        if with_verification:
            verification = tuple(cur.read(_HASH_PAD16, "verification entry")[0] for _ in range(n))
        sha256 = cur.read(_HASH_PAD16, "metadata extension")[0] if with_ext else None
        files.append(FileEntry(fhash, segments, verification, sha256))


def _parse_xorb_section(cur: _Cursor) -> list[XorbEntry]:
    xorbs: list[XorbEntry] = []
    while True:
        cur.need(ENTRY_LEN, "CAS info entry or bookend")
        if cur.is_bookend():
            cur.pos += ENTRY_LEN
            return xorbs
        xhash, flags, n, in_xorb, on_disk = cur.read(_XORB_HEADER, "CAS header")
        cur.need(n * ENTRY_LEN, f"the {n} chunk entries of xorb {hash_to_hex(xhash)}")
        chunks = tuple(
            XorbChunkEntry(h, start, size, fl)
            for h, start, size, fl, _ in (cur.read(_CHUNK, "chunk entry") for _ in range(n))
        )
        xorbs.append(XorbEntry(xhash, chunks, in_xorb, on_disk, flags))


def _parse_footer(
    buf: memoryview,
    body_end: int,
    cas_info_offset: int,
    sections_end: int,
    files: list[FileEntry],
    xorbs: list[XorbEntry],
) -> ShardFooter:
    v = _FOOTER.unpack_from(buf, body_end)
    if v[0] != SHARD_FOOTER_VERSION:
        raise ShardFormatError(f"unsupported shard footer version {v[0]}")
    footer = ShardFooter(
        file_info_offset=v[1],
        cas_info_offset=v[2],
        file_lookup_offset=v[3],
        file_lookup_num_entry=v[4],
        cas_lookup_offset=v[5],
        cas_lookup_num_entry=v[6],
        chunk_lookup_offset=v[7],
        chunk_lookup_num_entry=v[8],
        chunk_hash_hmac_key=v[9],
        shard_creation_timestamp=v[10],
        shard_key_expiry=v[11],
        stored_bytes_on_disk=v[18],
        materialized_bytes=v[19],
        stored_bytes=v[20],
        footer_offset=v[21],
    )
    # shard.md "Error Handling": check that offsets are within bounds; here they must match the
    # layout exactly, since lookup tables sit between the CAS info section and the footer.
    expected = [
        ("file_info_offset", footer.file_info_offset, HEADER_LEN),
        ("cas_info_offset", footer.cas_info_offset, cas_info_offset),
        ("file_lookup_offset", footer.file_lookup_offset, sections_end),
        (
            "cas_lookup_offset",
            footer.cas_lookup_offset,
            footer.file_lookup_offset + _LOOKUP.size * footer.file_lookup_num_entry,
        ),
        (
            "chunk_lookup_offset",
            footer.chunk_lookup_offset,
            footer.cas_lookup_offset + _LOOKUP.size * footer.cas_lookup_num_entry,
        ),
        (
            "footer_offset",
            footer.footer_offset,
            footer.chunk_lookup_offset + _CHUNK_LOOKUP.size * footer.chunk_lookup_num_entry,
        ),
        ("footer position", body_end, footer.footer_offset),
    ]
    for name, got, want in expected:
        if got != want:
            raise ShardFormatError(f"shard footer: {name} is {got}, the layout puts it at {want}")
    _check_lookups(buf, footer, files, xorbs)
    return footer


def _truncate(h: bytes) -> int:
    # xet-core utils.rs truncate_hash: the hash's first u64 (little-endian).
    return int.from_bytes(h[:8], "little")


def _file_index(files: Sequence[FileEntry]) -> dict[int, bytes]:
    index = {}
    pos = 0
    for f in files:
        index[pos] = f.file_hash
        n = len(f.segments)
        pos += 1 + n + (n if f.verification is not None else 0) + (1 if f.sha256 is not None else 0)
    return index


def _xorb_index(xorbs: Sequence[XorbEntry]) -> dict[int, XorbEntry]:
    index = {}
    pos = 0
    for x in xorbs:
        index[pos] = x
        pos += 1 + len(x.chunks)
    return index


def _check_lookups(buf: memoryview, footer: ShardFooter, files: list[FileEntry], xorbs: list[XorbEntry]) -> None:
    file_at = _file_index(files)
    xorb_at = _xorb_index(xorbs)
    tables = [
        ("file", footer.file_lookup_offset, footer.file_lookup_num_entry, _LOOKUP, len(files)),
        ("CAS", footer.cas_lookup_offset, footer.cas_lookup_num_entry, _LOOKUP, len(xorbs)),
        (
            "chunk",
            footer.chunk_lookup_offset,
            footer.chunk_lookup_num_entry,
            _CHUNK_LOOKUP,
            sum(len(x.chunks) for x in xorbs),
        ),
    ]
    for name, offset, count, st, expected_count in tables:
        if count != expected_count:
            raise ShardFormatError(f"shard footer: {name} lookup has {count} entries, expected {expected_count}")
        previous = -1
        for i in range(count):
            row = st.unpack_from(buf, offset + i * st.size)
            key = row[0]
            if key < previous:
                raise ShardFormatError(f"shard {name} lookup table is not sorted")
            previous = key
            if name == "file":
                target = file_at.get(row[1])
            elif name == "CAS":
                entry = xorb_at.get(row[1])
                target = entry.xorb_hash if entry else None
            else:
                entry = xorb_at.get(row[1])
                target = entry.chunks[row[2]].chunk_hash if entry and row[2] < len(entry.chunks) else None
            if target is None or _truncate(target) != key:
                raise ShardFormatError(f"shard {name} lookup entry {i} points at the wrong entry")


# --- serialization -----------------------------------------------------------------------------


def serialize_shard(
    files: Iterable[FileEntry] = (),
    xorbs: Iterable[XorbEntry] = (),
    *,
    with_footer: bool = True,
    hmac_key: bytes | None = None,
    creation_timestamp: int | None = None,
    key_expiry: int | None = None,
) -> bytes:
    """Serialize a shard; ``with_footer=False`` gives the upload body (shard.md "Shard Upload").

    With ``hmac_key`` every chunk hash in the CAS info section (and the chunk lookup table) is
    replaced by its keyed hash, as global-dedupe responses require (shard.md "HMAC Key Protection").
    """
    files = list(files)
    xorbs = list(xorbs)
    if hmac_key is not None:
        if len(hmac_key) != HASH_LEN or hmac_key == ZERO_HASH:
            raise ValueError("an HMAC key is 32 bytes and not all zeros")
        xorbs = [_protect(x, hmac_key) for x in xorbs]
    out = bytearray(_HEADER.pack(SHARD_HEADER_TAG, SHARD_HEADER_VERSION, FOOTER_LEN if with_footer else 0))
    for f in files:
        if f.verification is not None and len(f.verification) != len(f.segments):
            raise ValueError("a file has exactly one verification hash per segment")
        out += _FILE_HEADER.pack(f.file_hash, f.flags, len(f.segments), 0)
        for s in f.segments:
            out += _SEGMENT.pack(s.xorb_hash, s.flags, s.unpacked_bytes, s.chunk_start, s.chunk_end)
        for v in f.verification or ():
            out += _HASH_PAD16.pack(v)
        if f.sha256 is not None:
            out += _HASH_PAD16.pack(f.sha256)
    out += _BOOKEND
    cas_info_offset = len(out)
    for x in xorbs:
        out += _XORB_HEADER.pack(x.xorb_hash, x.flags, len(x.chunks), x.num_bytes_in_xorb, x.num_bytes_on_disk)
        for c in x.chunks:
            out += _CHUNK.pack(c.chunk_hash, c.byte_range_start, c.unpacked_bytes, c.flags, 0)
    out += _BOOKEND
    if not with_footer:
        return bytes(out)

    file_lookup_offset = len(out)
    file_rows = sorted((_truncate(h), i) for i, h in _file_index(files).items())
    for key, i in file_rows:
        out += _LOOKUP.pack(key, i)
    cas_lookup_offset = len(out)
    xorb_at = _xorb_index(xorbs)
    for key, i in sorted((_truncate(x.xorb_hash), i) for i, x in xorb_at.items()):
        out += _LOOKUP.pack(key, i)
    chunk_lookup_offset = len(out)
    chunk_rows = sorted((_truncate(c.chunk_hash), i, j) for i, x in xorb_at.items() for j, c in enumerate(x.chunks))
    for row in chunk_rows:
        out += _CHUNK_LOOKUP.pack(*row)
    footer_offset = len(out)
    out += _FOOTER.pack(
        SHARD_FOOTER_VERSION,
        HEADER_LEN,
        cas_info_offset,
        file_lookup_offset,
        len(file_rows),
        cas_lookup_offset,
        len(xorb_at),
        chunk_lookup_offset,
        len(chunk_rows),
        hmac_key or ZERO_HASH,
        int(time.time()) if creation_timestamp is None else creation_timestamp,
        2**64 - 1 if key_expiry is None else key_expiry,  # xet-core's default: never expires
        0,
        0,
        0,
        0,
        0,
        0,
        sum(x.num_bytes_on_disk for x in xorbs),
        sum(f.size for f in files),
        sum(x.num_bytes_in_xorb for x in xorbs),
        footer_offset,
    )
    return bytes(out)


def _protect(x: XorbEntry, key: bytes) -> XorbEntry:
    chunks = tuple(
        XorbChunkEntry(hmac_chunk_hash(c.chunk_hash, key), c.byte_range_start, c.unpacked_bytes, c.flags)
        for c in x.chunks
    )
    return XorbEntry(x.xorb_hash, chunks, x.num_bytes_in_xorb, x.num_bytes_on_disk, x.flags)


def dedupe_shard(xorbs: Iterable[XorbEntry], hmac_key: bytes, key_expiry: int) -> bytes:
    """A global-dedupe response (api.md §2): no files, the xorbs' chunk hashes HMAC-protected."""
    return serialize_shard((), xorbs, hmac_key=hmac_key, key_expiry=key_expiry)


# --- verification of uploads -------------------------------------------------------------------

XorbChunksLookup = Callable[[bytes], Sequence[tuple[bytes, int]] | None]
"""Given a xorb hash, the stored xorb's (chunk hash, length) list, or None if it is not stored
(or, at the service's discretion, not referenceable by this uploader)."""


@dataclass
class ShardCheck:
    """What an accepted upload shard registers: files (with sizes) and the xorbs they use."""

    files: list[FileEntry] = field(default_factory=list)
    xorbs: set[bytes] = field(default_factory=set)


def verify_upload_shard(shard: Shard, lookup: XorbChunksLookup, *, require_sha256: bool = True) -> ShardCheck:
    """Recompute everything a shard upload claims, from the xorbs already stored.

    - every referenced xorb exists (upload-protocol.md "Ordering and Concurrency");
    - every term's chunk range lies inside its xorb and its ``unpacked_segment_bytes`` add up;
    - every term has a verification entry equal to the range hash of its chunks (shard.md:
      "Verification Entries MUST be set for shard uploads") -- proof the uploader has the chunks;
    - every file hash equals the file hash recomputed from the referenced chunks;
    - every CAS info block matches the stored xorb chunk for chunk;
    - with ``require_sha256``, every file carries the sha256 extension Git-backed repos need.
    Raises ``ShardFormatError`` naming the file, term or xorb that fails.
    """
    if shard.hmac_key is not None:
        raise ShardFormatError("an uploaded shard cannot carry HMAC-protected chunk hashes")
    cache: dict[bytes, Sequence[tuple[bytes, int]]] = {}

    def chunks_of(xorb: bytes, context: str) -> Sequence[tuple[bytes, int]]:
        if xorb not in cache:
            found = lookup(xorb)
            if found is None:
                raise ShardFormatError(f"{context} references xorb {hash_to_hex(xorb)}, which does not exist")
            cache[xorb] = found
        return cache[xorb]

    check = ShardCheck()
    for f in shard.files:
        name = f"file {hash_to_hex(f.file_hash)}"
        if f.verification is None:
            raise ShardFormatError(f"{name} has no verification entries")
        if require_sha256 and f.sha256 is None:
            raise ShardFormatError(f"{name} has no sha256 metadata extension")
        all_chunks: list[tuple[bytes, int]] = []
        for i, (seg, proof) in enumerate(zip(f.segments, f.verification, strict=True)):
            term = f"{name} term {i}"
            chunks = chunks_of(seg.xorb_hash, term)
            if not 0 <= seg.chunk_start < seg.chunk_end <= len(chunks):
                raise ShardFormatError(
                    f"{term}: chunk range [{seg.chunk_start}, {seg.chunk_end}) is not inside "
                    f"xorb {hash_to_hex(seg.xorb_hash)} of {len(chunks)} chunks"
                )
            selected = chunks[seg.chunk_start : seg.chunk_end]
            size = sum(n for _, n in selected)
            if size != seg.unpacked_bytes:
                raise ShardFormatError(f"{term}: declares {seg.unpacked_bytes} bytes, its chunks hold {size}")
            if verification_range_hash(h for h, _ in selected) != proof:
                raise ShardFormatError(f"{term}: verification hash does not match the referenced chunks")
            all_chunks.extend(selected)
            check.xorbs.add(seg.xorb_hash)
        recomputed = file_hash(all_chunks)
        if recomputed != f.file_hash:
            raise ShardFormatError(f"{name}: its terms reconstruct a file hashing to {hash_to_hex(recomputed)}")
        check.files.append(f)
    for x in shard.xorbs:
        name = f"CAS info for xorb {hash_to_hex(x.xorb_hash)}"
        stored = chunks_of(x.xorb_hash, name)
        listed = [(c.chunk_hash, c.unpacked_bytes) for c in x.chunks]
        if listed != list(stored):
            raise ShardFormatError(f"{name} does not match the stored xorb's chunks")
        offset = 0
        for j, c in enumerate(x.chunks):
            if c.byte_range_start != offset:
                raise ShardFormatError(f"{name}: chunk {j} starts at {c.byte_range_start}, expected {offset}")
            offset += c.unpacked_bytes
        if x.num_bytes_in_xorb != offset:
            raise ShardFormatError(f"{name}: num_bytes_in_cas is {x.num_bytes_in_xorb}, chunks hold {offset}")
        check.xorbs.add(x.xorb_hash)
    return check
