"""Xet-stored LFS objects, as lfs reads them: a file uploaded through Xet is stored once, as chunks
in xorbs; it is not copied into the blob store. `xet_store` finds its reconstruction for
bastion.lfs.content (registered there when this module is imported), which makes the link check
every reader goes through; each term's decoded length is checked as it is read, so a damaged xorb
is an error, never a silently wrong file.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from bastion.hub import Hub
from bastion.lfs.content import register_store
from bastion.storage.regions import DEFAULT_REGION
from bastion.xet.hashing import hash_to_hex
from bastion.xet.models import XetFile
from bastion.xet.reconstruction import XorbLayout, iter_file_bytes, plan_reconstruction
from bastion.xet.service import load_xorbs, region_segments, xorb_store
from bastion.xet.shard import FileSegment


@dataclass(frozen=True)
class XetObject:
    """An LFS object stored as Xet chunks: its size and how to read any byte range of it."""

    hub: Hub
    size: int
    segments: Sequence[FileSegment]
    layouts: dict[bytes, XorbLayout]
    region: str = DEFAULT_REGION  # whose xorb store holds its chunks

    def iter_bytes(self, start: int = 0, end: int | None = None) -> Iterator[bytes]:
        """Bytes [start, end) of the file."""
        end = self.size if end is None else min(end, self.size)
        if end <= start:
            return iter(())
        plan = plan_reconstruction(self.segments, self.layouts.__getitem__, (start, end))
        store = xorb_store(self.hub, self.region)
        return _coalesced(iter_file_bytes(plan, lambda h, a, b: store.read_xorb(hash_to_hex(h), a, b)))


def _coalesced(pieces: Iterator[bytes], size: int = 4 << 20) -> Iterator[bytes]:
    """Chunks (about 64 KiB each) joined into blocks of about `size`: a streamed response moves each
    block through a worker thread and the server once, not each chunk."""
    batch: list[bytes] = []
    held = 0
    for piece in pieces:
        batch.append(piece)
        held += len(piece)
        if held >= size:
            yield b"".join(batch)
            batch, held = [], 0
    if batch:
        yield b"".join(batch)


def xet_store(hub: Hub, session: Session, oid: str, region: str = DEFAULT_REGION) -> XetObject | None:
    """The Xet reconstruction of object `oid` (the caller made the link check), or None when it is not
    stored as Xet chunks or a xorb it needs was collected."""
    row = session.scalar(select(XetFile).where(XetFile.sha256 == oid).limit(1))
    if row is None:
        return None
    segments = region_segments(hub, region, row)
    xorbs = load_xorbs(session, {hash_to_hex(s.xorb_hash) for s in segments})
    if any(s.xorb_hash not in xorbs for s in segments):
        return None  # a xorb it needs was collected: nothing to read
    store = xorb_store(hub, region)
    if any(not store.has_xorb(hash_to_hex(s.xorb_hash)) for s in segments[:1]):
        return None  # not held in this region
    return XetObject(hub, int(row.size), segments, {h: x.layout for h, x in xorbs.items()}, region)


register_store(xet_store)
