"""The bytes of an LFS object, for one repository, wherever they are stored: the blob store, or only
as Xet chunks.

Content-addressed reads need a link (docs/architecture.md, invariant 7): every reader that needs an
object's bytes for a repo -- a `resolve` or `git lfs pull` download, the scanners, push protection --
gets them here, and here only when that repo holds a proven link to the object (`repo_lfs_objects`:
its bytes were uploaded to that repo, or copied from one the same principal could read). Knowing a
sha256, or a pointer naming one, grants nothing.

A file uploaded through Xet is stored once, as chunks in xorbs; it is not copied into the blob
store. Its readers reconstruct it from the xorbs here; each term's decoded length is checked as it
is read, so a damaged xorb is an error, never a silently wrong file.
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
from sqlalchemy import exists, select
from sqlalchemy.orm import Session

from bastion.api.ranges import StoredFileResponse, parse_range
from bastion.db import transaction
from bastion.errors import EntryNotFound
from bastion.hub import Hub
from bastion.lfs.models import RepoLfsObject
from bastion.repos.models import Repo
from bastion.xet.hashing import hash_to_hex
from bastion.xet.models import XetFile
from bastion.xet.reconstruction import XorbLayout, iter_file_bytes, plan_reconstruction
from bastion.xet.service import load_xorbs, unpack_segments, xorb_store
from bastion.xet.shard import FileSegment


class ObjectNotLinked(EntryNotFound):
    """The repository holds no proven link to the object its pointer names: for that repository the
    object does not exist (404), whoever else stores it."""


# A scan job whose repository was deleted after it was queued still scans the object for the
# repositories that hold it: reading it needs a link from any repository that still exists.
ANY_HOLDER = None


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


def holds_link(session: Session, repo_id: int | None, oid: str) -> bool:
    """Whether `repo_id` holds a proven link to object `oid` (ANY_HOLDER: whether any existing repository
    does). The one check every reader of an object's bytes makes."""
    q = select(RepoLfsObject.oid).where(RepoLfsObject.oid == oid)
    if repo_id is ANY_HOLDER:
        q = q.where(exists().where(Repo.id == RepoLfsObject.repo_id))
    else:
        q = q.where(RepoLfsObject.repo_id == repo_id)
    return session.scalar(q.limit(1)) is not None


def _locate(hub: Hub, session: Session, repo_id: int | None, oid: str) -> Path | XetObject | None:
    """Where the object's bytes are, after the link check: a blob-store file, a Xet reconstruction, or
    None when it is linked but stored nowhere (collected, or its xorbs were). ObjectNotLinked when the
    repository holds no link to it."""
    if not holds_link(session, repo_id, oid):
        raise ObjectNotLinked(f"Object {oid} does not exist in this repository")
    path = hub.blobs.local_path(oid)
    if path is not None:
        return path
    row = session.scalar(select(XetFile).where(XetFile.sha256 == oid).limit(1))
    if row is None:
        return None
    segments = unpack_segments(row.segments)
    xorbs = load_xorbs(session, {hash_to_hex(s.xorb_hash) for s in segments})
    if any(s.xorb_hash not in xorbs for s in segments):
        return None  # a xorb it needs was collected: nothing to read
    return XetObject(hub, int(row.size), segments, {h: x.layout for h, x in xorbs.items()})


def locate(hub: Hub, repo_id: int | None, oid: str, session: Session | None = None) -> Path | XetObject | None:
    """_locate() in the caller's transaction, or in a read-only one of its own."""
    if session is not None:
        return _locate(hub, session, repo_id, oid)
    with transaction(hub.sessions, readonly=True) as own:
        return _locate(hub, own, repo_id, oid)


def iter_object(hub: Hub, repo_id: int, oid: str, limit: int | None = None,
                session: Session | None = None) -> Iterator[bytes] | None:
    """The bytes (the first `limit` of them) of object `oid` of repository `repo_id`; None when it is
    stored nowhere; ObjectNotLinked when the repository holds no link to it."""
    found = locate(hub, repo_id, oid, session)
    if found is None:
        return None
    if isinstance(found, Path):
        return _iter_path(found, limit)
    return found.iter_bytes(0, limit)


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
def as_file(hub: Hub, found: Path | XetObject) -> Iterator[Path]:
    """What locate() found as a file: its blob-store file, or a temporary file its Xet chunks are
    reconstructed into, removed when the caller is done."""
    if isinstance(found, Path):
        yield found
        return
    hub.settings.tmp_dir.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=hub.settings.tmp_dir, prefix="xet-read-")
    try:
        with os.fdopen(fd, "wb") as fh:
            for piece in found.iter_bytes():
                fh.write(piece)
        yield Path(name)
    finally:
        os.unlink(name)


def object_response(hub: Hub, repo_id: int, oid: str, request: Request, headers: dict[str, str]) -> Response | None:
    """A download of object `oid` of repository `repo_id`, honouring HEAD and a single Range: a file
    response from the blob store, or its Xet reconstruction streamed. None when it is stored nowhere;
    ObjectNotLinked (404) when the repository holds no link to it."""
    found = locate(hub, repo_id, oid)
    if found is None:
        return None
    if isinstance(found, Path):
        # StoredFileResponse answers HEAD and honours Range (206/416).
        return StoredFileResponse(found, headers=headers, media_type="application/octet-stream",
                                  content_disposition_type="inline")
    xet = found
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
