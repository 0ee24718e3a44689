"""The bytes of an LFS object, for one repository, wherever they are stored.

Content-addressed reads need a link (docs/architecture.md, invariant 7): every reader that needs an
object's bytes for a repo -- a `resolve` or `git lfs pull` download, the scanners, push protection --
gets them here, and here only when that repo holds a proven link to the object (`repo_lfs_objects`:
its bytes were uploaded to that repo, or copied from one the same principal could read). Knowing a
sha256, or a pointer naming one, grants nothing.

An object is a file of the blob store, or is held by a store registered in `object_stores` by a
feature above this one: Xet (bastion.xet.content) registers the reconstruction of a file stored only
as chunks in xorbs. The registry is lfs's, so lfs reads Xet-stored objects without importing Xet.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Protocol

from fastapi import Request, Response
from fastapi.responses import StreamingResponse
from sqlalchemy import exists, select
from sqlalchemy.orm import Session

from bastion.api.ranges import StoredFileResponse, parse_range
from bastion.db import transaction
from bastion.errors import EntryNotFound
from bastion.hub import Hub
from bastion.lfs.models import RepoLfsObject
from bastion.lfs.service import use_linked_objects
from bastion.repos import objects as repo_objects
from bastion.repos.models import Repo
from bastion.repos.service import repo_region
from bastion.storage import StoredBlobObject
from bastion.storage.regions import DEFAULT_REGION, region_of_key


class ObjectNotLinked(EntryNotFound):
    """The repository holds no proven link to the object its pointer names: for that repository the
    object does not exist (404), whoever else stores it."""


# A scan job whose repository was deleted after it was queued still scans the object for the
# repositories that hold it: reading it needs a link from any repository that still exists.
ANY_HOLDER = None


class StoredObject(Protocol):
    """An object held outside the blob store: its size and any byte range of it."""

    size: int

    def iter_bytes(self, start: int = 0, end: int | None = None) -> Iterator[bytes]: ...


# Stores consulted, in order, for an object the blob store does not hold: (hub, session, oid, region) ->
# the object held in that region, or None. Registered once per process by the feature that owns the
# store (bastion.xet.content, imported by the app factory, the workers and the storage commands).
ObjectStore = Callable[[Hub, Session, str, str], StoredObject | None]
object_stores: list[ObjectStore] = []


def register_store(store: ObjectStore) -> None:
    if store not in object_stores:
        object_stores.append(store)


def holds_link(session: Session, repo_id: int | None, oid: str) -> bool:
    """Whether `repo_id` holds a proven link to object `oid` (ANY_HOLDER: whether any existing repository
    does). The one check every reader of an object's bytes makes."""
    q = select(RepoLfsObject.oid).where(RepoLfsObject.oid == oid)
    if repo_id is ANY_HOLDER:
        q = q.where(exists().where(Repo.id == RepoLfsObject.repo_id))
    else:
        q = q.where(RepoLfsObject.repo_id == repo_id)
    return session.scalar(q.limit(1)) is not None


def _holder_regions(hub: Hub, session: Session, repo_id: int | None, oid: str) -> list[str]:
    """The regions to read the object from: the repository's (its bytes live only there), or for
    ANY_HOLDER those of every repository holding a link."""
    if repo_id is not ANY_HOLDER:
        return [repo_region(hub, repo_id, session)]
    keys = session.scalars(select(Repo.storage_key).join(RepoLfsObject, RepoLfsObject.repo_id == Repo.id)
                           .where(RepoLfsObject.oid == oid))
    return sorted({region_of_key(k) for k in keys})


def _locate(hub: Hub, session: Session, repo_id: int | None, oid: str) -> Path | StoredObject | None:
    """Where the object's bytes are in the repository's region, after the link check: a blob-store
    file, an object a registered store holds, or None when it is linked but stored nowhere there
    (collected). ObjectNotLinked when the repository holds no link to it."""
    if not holds_link(session, repo_id, oid):
        raise ObjectNotLinked(f"Object {oid} does not exist in this repository")
    if not object_stores:
        # Never answer "stored nowhere" because a store was not registered in this process.
        raise RuntimeError("no object store registered beside the blob store (import bastion.xet.content)")
    for region in _holder_regions(hub, session, repo_id, oid):
        blobs = hub.blobs_in(region)
        path = blobs.local_path(oid)
        if path is not None:
            return path
        stored = blobs.stored_object(oid)  # a store without local files (S3): read by ranges
        if stored is not None:
            stored.region = region
            return stored
        for store in object_stores:
            found = store(hub, session, oid, region)
            if found is not None:
                return found
    return None


def locate(hub: Hub, repo_id: int | None, oid: str, session: Session | None = None) -> Path | StoredObject | None:
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
def as_file(hub: Hub, found: Path | StoredObject, region: str = DEFAULT_REGION) -> Iterator[Path]:
    """What locate() found as a file: its blob-store file, or a temporary file the stored object is
    written into (in the staging folder of `region`, the one the object lives in), removed when the
    caller is done."""
    if isinstance(found, Path):
        yield found
        return
    spool = hub.staging_dir(getattr(found, "region", None) or region)
    spool.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=spool, prefix="object-read-")
    try:
        with os.fdopen(fd, "wb") as fh:
            for piece in found.iter_bytes():
                fh.write(piece)
        yield Path(name)
    finally:
        os.unlink(name)


def object_response(hub: Hub, repo_id: int, oid: str, request: Request, headers: dict[str, str]) -> Response | None:
    """A download of object `oid` of repository `repo_id`, honouring HEAD and a single Range: a file
    response from the blob store, or the registered store's bytes streamed. None when it is stored nowhere;
    ObjectNotLinked (404) when the repository holds no link to it."""
    found = locate(hub, repo_id, oid)
    if found is None:
        return None
    if isinstance(found, Path):
        # StoredFileResponse answers HEAD and honours Range (206/416).
        return StoredFileResponse(found, headers=headers, media_type="application/octet-stream",
                                  content_disposition_type="inline")
    redirect = _presigned_redirect(hub, found, headers)
    if redirect is not None:
        return redirect
    stored: StoredObject = found
    headers = {**headers, "Accept-Ranges": "bytes"}
    status, start, end = 200, 0, stored.size
    rng = parse_range(request.headers.get("range"), stored.size)
    if rng is not None:
        start, end, status = rng[0], rng[1] + 1, 206
        headers["Content-Range"] = f"bytes {start}-{end - 1}/{stored.size}"
    headers["Content-Length"] = str(end - start)
    if request.method == "HEAD":
        return Response(status_code=status, headers=headers, media_type="application/octet-stream")
    return StreamingResponse(stored.iter_bytes(start, end), status_code=status, headers=headers,
                             media_type="application/octet-stream")


def _presigned_redirect(hub: Hub, found: StoredObject, headers: dict[str, str]) -> Response | None:
    """With BASTION_PRESIGNED_DOWNLOADS, a large object of an S3 store is served by a redirect to a
    short-lived pre-signed URL of that store. The caller decided authorization (and the download guards)
    already; the redirect is private to this request (`Cache-Control: private, no-store`), so no shared
    cache hands it to anyone else."""
    settings = hub.settings
    if not settings.presigned_downloads or not isinstance(found, StoredBlobObject) \
            or found.size < settings.presigned_download_min_bytes:
        return None
    presign = getattr(found.store, "presigned_url", None)
    if presign is None:
        return None
    url = presign(found.key, settings.presigned_url_ttl_seconds, headers.get("Content-Disposition"))
    return Response(status_code=302, headers={**headers, "Location": url, "Cache-Control": "private, no-store"})


class _Provider:
    """What bastion.repos.objects asks of lfs: the commit path's link check and downloads."""

    use_linked_objects = staticmethod(use_linked_objects)
    object_response = staticmethod(object_response)


repo_objects.provide(_Provider())
