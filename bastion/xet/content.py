"""The bytes of an LFS object, wherever they are stored: the blob store, or only as Xet chunks.

A file uploaded through Xet is stored once, as chunks in xorbs; it is not copied into the blob
store. Every reader that needs its bytes (a `resolve` or `git lfs pull` download, the scanners,
push protection) reconstructs them from the xorbs here; each term's decoded length is checked
as it is read, so a damaged xorb is an error, never a silently wrong file.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from fastapi import Request, Response
from fastapi.responses import StreamingResponse
from sqlalchemy import select

from bastion.api.ranges import StoredFileResponse, parse_range
from bastion.db import transaction
from bastion.hub import Hub
from bastion.xet.hashing import hash_to_hex
from bastion.xet.models import XetFile
from bastion.xet.reconstruction import XorbLayout, iter_file_bytes, plan_reconstruction
from bastion.xet.service import load_xorbs, unpack_segments, xorb_store
from bastion.xet.shard import FileSegment


@dataclass(frozen=True)
class XetObject:
    """An LFS object stored as Xet chunks: its size and how to read any byte range of it."""

    hub: Hub
    size: int
    segments: Sequence[FileSegment]
    layouts: dict[bytes, XorbLayout]

    def iter_bytes(self, start: int = 0, end: int | None = None) -> Iterator[bytes]:
        """Bytes [start, end) of the file."""
        end = self.size if end is None else min(end, self.size)
        if end <= start:
            return iter(())
        plan = plan_reconstruction(self.segments, self.layouts.__getitem__, (start, end))
        store = xorb_store(self.hub)
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


def find_xet_object(hub: Hub, oid: str) -> XetObject | None:
    """The Xet reconstruction of LFS object `oid`, when it has a complete one; None otherwise."""
    with transaction(hub.sessions, readonly=True) as session:
        row = session.scalar(select(XetFile).where(XetFile.sha256 == oid).limit(1))
        if row is None:
            return None
        segments = unpack_segments(row.segments)
        xorbs = load_xorbs(session, {hash_to_hex(s.xorb_hash) for s in segments})
        size = int(row.size)
    if any(s.xorb_hash not in xorbs for s in segments):
        return None  # a xorb it needs was collected: nothing to read
    return XetObject(hub, size, segments, {h: x.layout for h, x in xorbs.items()})


def iter_object(hub: Hub, oid: str, limit: int | None = None) -> Iterator[bytes] | None:
    """The object's bytes (the first `limit` of them), or None when it is stored nowhere."""
    path = hub.blobs.local_path(oid)
    if path is not None:
        return _iter_path(path, limit)
    xet = find_xet_object(hub, oid)
    if xet is None:
        return None
    return xet.iter_bytes(0, limit)


def _iter_path(path: Path, limit: int | None) -> Iterator[bytes]:
    left = limit
    with path.open("rb") as fh:
        while left is None or left > 0:
            block = fh.read(1 << 20 if left is None else min(1 << 20, left))
            if not block:
                return
            if left is not None:
                left -= len(block)
            yield block


@contextmanager
def object_path(hub: Hub, oid: str) -> Iterator[Path | None]:
    """A file with the object's bytes: its blob-store file, or a temporary file its Xet chunks are
    reconstructed into for as long as the caller reads it (scanners read files); None if missing."""
    path = hub.blobs.local_path(oid)
    if path is not None:
        yield path
        return
    xet = find_xet_object(hub, oid)
    if xet is None:
        yield None
        return
    hub.settings.tmp_dir.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=hub.settings.tmp_dir, prefix="xet-read-")
    try:
        with os.fdopen(fd, "wb") as fh:
            for piece in xet.iter_bytes():
                fh.write(piece)
        yield Path(name)
    finally:
        os.unlink(name)


def object_response(hub: Hub, oid: str, request: Request, headers: dict[str, str]) -> Response | None:
    """A download of the object, honouring HEAD and a single Range: a file response from the blob
    store, or its Xet reconstruction streamed. None when the object is stored nowhere."""
    path = hub.blobs.local_path(oid)
    if path is not None:
        # StoredFileResponse answers HEAD and honours Range (206/416).
        return StoredFileResponse(path, headers=headers, media_type="application/octet-stream",
                                  content_disposition_type="inline")
    xet = find_xet_object(hub, oid)
    if xet is None:
        return None
    headers = {**headers, "Accept-Ranges": "bytes"}
    status, start, end = 200, 0, xet.size
    rng = parse_range(request.headers.get("range"), xet.size)
    if rng is not None:
        start, end, status = rng[0], rng[1] + 1, 206
        headers["Content-Range"] = f"bytes {start}-{end - 1}/{xet.size}"
    headers["Content-Length"] = str(end - start)
    if request.method == "HEAD":
        return Response(status_code=status, headers=headers, media_type="application/octet-stream")
    return StreamingResponse(xet.iter_bytes(start, end), status_code=status, headers=headers,
                             media_type="application/octet-stream")
