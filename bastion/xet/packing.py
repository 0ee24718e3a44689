"""Turn plain file bytes into Xet objects: chunks packed into xorbs plus the file's shard entry.

This is how a file that arrived by LFS or git becomes downloadable by Xet clients: the server does
the client's upload steps itself (upload-protocol.md steps 1, 3 and 5).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass

from bastion.xet.chunking import Chunker
from bastion.xet.hashing import file_hash, verification_range_hash
from bastion.xet.shard import FileEntry, FileSegment, XorbEntry, sha256_field
from bastion.xet.xorb import CompressionScheme, Xorb, XorbBuilder


@dataclass(frozen=True)
class PackedFile:
    file: FileEntry
    xorbs: tuple[tuple[bytes, Xorb], ...]  # (serialized bytes, description), in file order

    @property
    def xorb_entries(self) -> tuple[XorbEntry, ...]:
        """CAS info blocks for the new xorbs, as a shard registering them lists them."""
        return tuple(XorbEntry.from_chunk_list(x.hash, x.chunk_list(), len(b)) for b, x in self.xorbs)


def pack_file(blocks: Iterable[bytes], scheme: CompressionScheme | None = CompressionScheme.LZ4) -> PackedFile:
    """Chunk a stream of blocks, pack the chunks into xorbs, and describe the file.

    Each xorb becomes one term covering all its chunks, with its verification hash and the file's
    sha256 (shard.md: required for Git-backed repos). No deduplication is attempted here.
    """
    chunker = Chunker()
    builder = XorbBuilder(scheme)
    sha = hashlib.sha256()
    xorbs: list[tuple[bytes, Xorb]] = []

    def close() -> None:
        if len(builder):
            xorbs.append(builder.finish())

    def add(chunk: bytes) -> None:
        if not builder.add(chunk):
            close()
            builder.add(chunk)

    for block in blocks:
        sha.update(block)
        for chunk in chunker.feed(block):
            add(chunk)
    for chunk in chunker.finish():
        add(chunk)
    close()
    segments = tuple(FileSegment(x.hash, x.unpacked_length, 0, x.num_chunks) for _, x in xorbs)
    proofs = tuple(verification_range_hash(c.hash for c in x.chunks) for _, x in xorbs)
    all_chunks = [pair for _, x in xorbs for pair in x.chunk_list()]
    entry = FileEntry(file_hash(all_chunks), segments, proofs, sha256_field(sha.digest()))
    return PackedFile(entry, tuple(xorbs))
