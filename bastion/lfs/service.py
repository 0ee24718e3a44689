"""LFS uploads: batch decisions, pre-signed basic and multipart uploads, verification.

An object is linked to a repo only after bytes that hash to its oid arrived for that repo:
knowing a sha256 never lets anyone reference a file they do not have.
"""

from __future__ import annotations

import hashlib
import math
import os
import re
import secrets
import threading
import time
from collections.abc import AsyncIterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from bastion.authz import capability
from bastion.db import after_commit, transaction, utcnow
from bastion.errors import BadRequest, Conflict, NotFound
from bastion.hub import Hub
from bastion.lfs import allowance
from bastion.lfs.audit_events import object_stored
from bastion.lfs.models import LfsMultipartPart, LfsMultipartUpload, LfsObject, RepoLfsObject
from bastion.repos.models import Repo
from bastion.repos.service import incarnation, repo_region
from bastion.storage import BlobMismatch

OID_RE = re.compile(r"^[0-9a-f]{64}\Z")
UPLOAD_PURPOSE = "lfs-upload"
PART_PURPOSE = "lfs-part"
COMPLETE_PURPOSE = "lfs-complete"
MAX_BATCH_OBJECTS = 1000


@dataclass(frozen=True)
class BatchObject:
    oid: str
    size: int


def parse_objects(raw: object) -> list[BatchObject]:
    if not isinstance(raw, list) or not raw:
        raise BadRequest("'objects' must be a non-empty list")
    if len(raw) > MAX_BATCH_OBJECTS:
        raise BadRequest(f"At most {MAX_BATCH_OBJECTS} objects per batch request")
    out = []
    for item in raw:
        if not isinstance(item, dict):
            raise BadRequest("Each object must be a JSON object with 'oid' and 'size'")
        oid, size = item.get("oid"), item.get("size")
        if not isinstance(oid, str) or not OID_RE.match(oid):
            raise BadRequest(f"Invalid oid {oid!r}: expected 64 lowercase hex characters (sha256)")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise BadRequest(f"Invalid size {size!r} for object {oid}")
        out.append(BatchObject(oid, size))
    return out


def linked_objects(session: Session, repo_id: int, oids: list[str]) -> dict[str, int]:
    return dict(session.execute(
        select(LfsObject.oid, LfsObject.size).join(RepoLfsObject, RepoLfsObject.oid == LfsObject.oid)
        .where(RepoLfsObject.repo_id == repo_id, LfsObject.oid.in_(oids))).all())


def use_linked_objects(session: Session, repo_id: int, oids: list[str]) -> dict[str, int]:
    """linked_objects() for a commit or push about to reference them: their links are marked used
    first, so storage GC (which deletes only links unused for its grace period, conditionally) can
    never remove one between this check and the ref update. On PostgreSQL a link GC deleted first is
    simply not found here (the commit is refused, nothing is lost)."""
    if oids:
        session.execute(update(RepoLfsObject).where(RepoLfsObject.repo_id == repo_id, RepoLfsObject.oid.in_(oids))
                        .values(last_used_at=utcnow()))
    return linked_objects(session, repo_id, oids)


def link_object(session: Session, repo_id: int, oid: str, size: int) -> None:
    """Record that `repo_id` holds the verified object `oid` (idempotent under races). Both rows are
    marked used: storage GC's conditional deletes then leave them (and the bytes) alone."""
    now = utcnow()
    if session.execute(update(LfsObject).where(LfsObject.oid == oid).values(last_used_at=now)).rowcount == 0:
        try:
            with session.begin_nested():
                session.add(LfsObject(oid=oid, size=size, last_used_at=now))
        except IntegrityError:
            pass
    if session.execute(update(RepoLfsObject).where(RepoLfsObject.repo_id == repo_id, RepoLfsObject.oid == oid)
                       .values(last_used_at=now)).rowcount == 0:
        try:
            with session.begin_nested():
                session.add(RepoLfsObject(repo_id=repo_id, oid=oid, last_used_at=now))
        except IntegrityError:
            pass


def upload_batch(hub: Hub, session: Session, repo: Repo, user_id: int, objects: list[BatchObject],
                 transfers: list[str], base_url: str, auth_header: str | None, *, holder: dict[str, Any],
                 contributor: bool = False) -> dict[str, Any]:
    """Upload actions for the objects this repo does not hold yet. `contributor`: the uploader cannot write to
    the repo (pull-request content): the objects handed actions are charged to their daily allowance first
    (bastion.lfs.allowance; a 429 and nothing handed out past it). `holder`: the credential the upload URLs are
    bound to (bastion.api.auth.credential_claims), re-established at each use."""
    settings = hub.settings
    have = linked_objects(session, repo.id, [o.oid for o in objects])
    if contributor:
        allowance.charge(session, settings.contribution_upload_bytes_per_day, user_id, repo.id,
                         [(o.oid, o.size) for o in objects
                          if o.oid not in have and o.size <= settings.max_lfs_object_size])
    use_multipart = "multipart" in transfers
    out: list[dict[str, Any]] = []
    chosen = "basic"
    for obj in objects:
        if obj.size > settings.max_lfs_object_size:
            out.append({"oid": obj.oid, "size": obj.size,
                        "error": {"code": 422, "message": f"Object is larger than the "
                                                         f"{settings.max_lfs_object_size}-byte limit"}})
            continue
        if obj.oid in have:
            if have[obj.oid] != obj.size:
                out.append({"oid": obj.oid, "size": obj.size,
                            "error": {"code": 422, "message": f"Size mismatch: the stored object has "
                                                             f"{have[obj.oid]} bytes"}})
            else:
                out.append({"oid": obj.oid, "size": obj.size})
            continue
        verify = {"href": f"{base_url}/{_lfs_base(repo)}/info/lfs/objects/verify"}
        if auth_header:
            verify["header"] = {"Authorization": auth_header}
        if use_multipart and obj.size > settings.multipart_threshold:
            chosen = "multipart"
            action = _start_multipart(hub, session, repo, user_id, obj, base_url, holder)
        else:
            claims = {**holder, "repo_id": repo.id, "inc": incarnation(repo.storage_key), "oid": obj.oid,
                      "size": obj.size, "user_id": user_id}
            token = capability.sign(settings.secret_key, UPLOAD_PURPOSE, claims, settings.upload_url_ttl_seconds)
            action = {"href": f"{base_url}/api/lfs/upload/{token}"}
        out.append({"oid": obj.oid, "size": obj.size, "authenticated": True,
                    "actions": {"upload": action, "verify": verify}})
    return {"transfer": chosen, "objects": out, "hash_algo": "sha256"}


def _lfs_base(repo: Repo) -> str:
    prefix = {"model": "", "dataset": "datasets/", "space": "spaces/"}[repo.type]
    return f"{prefix}{repo.repo_id}.git"


# A multipart upload whose URLs expired can never complete. Its staging file (possibly many GB, sparse
# or not) and its row are removed by the next multipart start after a grace hour, at most every
# ABANDONED_SWEEP_EVERY seconds per process.
ABANDONED_SWEEP_EVERY = 600.0
_last_sweep = [0.0]


def sweep_abandoned_multipart(hub: Hub, session: Session, now: float | None = None) -> list[str]:
    """Drop multipart uploads older than their URLs' lifetime plus an hour; returns the upload ids."""
    now = time.time() if now is None else now
    cutoff = now - hub.settings.upload_url_ttl_seconds - 3600
    stale = list(session.scalars(select(LfsMultipartUpload.id).where(
        LfsMultipartUpload.created_at < datetime.fromtimestamp(cutoff, UTC))))
    if stale:
        session.execute(delete(LfsMultipartUpload).where(LfsMultipartUpload.id.in_(stale)))
    gone: list[Path] = []
    staged = [p for region in sorted(hub.regions) for p in _multipart_dir(hub, region).glob("*")]
    for path in staged:
        try:
            # Parts update the file's mtime: an old file belongs to an upload no one can finish
            # (expired, or its repo deleted with the row).
            if path.stat().st_mtime < cutoff:
                gone.append(path)
        except FileNotFoundError:
            continue
    after_commit(session, lambda: [p.unlink(missing_ok=True) for p in gone])
    return stale


def _multipart_dir(hub: Hub, region: str) -> Path:
    return hub.staging_dir(region) / "multipart"


def _start_multipart(hub: Hub, session: Session, repo: Repo, user_id: int, obj: BatchObject,
                     base_url: str, holder: dict[str, Any]) -> dict[str, Any]:
    settings = hub.settings
    if time.monotonic() - _last_sweep[0] > ABANDONED_SWEEP_EVERY:
        _last_sweep[0] = time.monotonic()
        sweep_abandoned_multipart(hub, session)
    chunk = settings.multipart_chunk_size
    parts = max(1, math.ceil(obj.size / chunk))
    upload_id = secrets.token_hex(16)
    staging_dir = _multipart_dir(hub, repo.region)  # parts are staged in the repository's region
    staging_dir.mkdir(parents=True, exist_ok=True)
    staging = staging_dir / upload_id
    with staging.open("wb") as fh:
        fh.truncate(obj.size)  # sparse: parts are written in place at their offsets
    session.add(LfsMultipartUpload(id=upload_id, repo_id=repo.id, oid=obj.oid, size=obj.size, chunk_size=chunk,
                                   staging_path=str(staging), user_id=user_id))
    ttl = settings.upload_url_ttl_seconds
    header: dict[str, str] = {"chunk_size": str(chunk)}
    base_claims = {**holder, "repo_id": repo.id, "inc": incarnation(repo.storage_key), "oid": obj.oid,
                   "size": obj.size, "upload": upload_id}
    for n in range(1, parts + 1):
        token = capability.sign(settings.secret_key, PART_PURPOSE, dict(base_claims, part=n), ttl)
        header[str(n)] = f"{base_url}/api/lfs/multipart/{token}"
    token = capability.sign(settings.secret_key, COMPLETE_PURPOSE, dict(base_claims, user_id=user_id), ttl)
    return {"href": f"{base_url}/api/lfs/complete/{token}", "header": header}


# In-order parts are hashed as they arrive (the client sends them sequentially), so completion
# need not re-read the file; any gap, a failed part, or another process falls back to hashing the
# whole file. Sound because each part is written by exactly one successful request (its claim).
_running: dict[str, tuple[Any, int]] = {}
_running_lock = threading.Lock()


def _claim_part(hub: Hub, upload_id: str, part: int) -> None:
    """Claim part `part` for this request: refused while another request writes it or once it has been
    received, so a part can never be rewritten behind the hash that completion trusts."""
    with transaction(hub.sessions) as session:
        try:
            with session.begin_nested():
                session.add(LfsMultipartPart(upload_id=upload_id, part=part, state="writing"))
        except IntegrityError:
            existing = session.get(LfsMultipartPart, (upload_id, part))
            if existing is None:
                raise NotFound("This multipart upload no longer exists") from None
            if existing.state == "done":
                raise Conflict(f"Part {part} of this upload has already been received; a received part cannot "
                               "be replaced (start a new upload to send other bytes)") from None
            raise Conflict(f"Part {part} of this upload is being received by another request") from None


def _settle_part(hub: Hub, upload_id: str, part: int, received: bool) -> None:
    """Mark a claimed part received, or release the claim of a failed write so it can be sent again."""
    with transaction(hub.sessions) as session:
        where = (LfsMultipartPart.upload_id == upload_id, LfsMultipartPart.part == part)
        if received:
            session.execute(update(LfsMultipartPart).where(*where).values(state="done"))
        else:
            session.execute(delete(LfsMultipartPart).where(*where, LfsMultipartPart.state == "writing"))


async def receive_part(hub: Hub, upload: LfsMultipartUpload, part: int, chunks: AsyncIterable[bytes]) -> str:
    """Write one part in place, streaming (constant memory); returns the part's ETag."""
    parts = max(1, math.ceil(upload.size / upload.chunk_size))
    if not 1 <= part <= parts:
        raise BadRequest(f"Part {part} out of range 1..{parts}")
    await run_in_threadpool(_claim_part, hub, upload.id, part)
    try:
        etag = await _write_part(upload, part, chunks)
    except BaseException:
        await run_in_threadpool(_settle_part, hub, upload.id, part, False)
        raise
    await run_in_threadpool(_settle_part, hub, upload.id, part, True)
    return etag


async def _write_part(upload: LfsMultipartUpload, part: int, chunks: AsyncIterable[bytes]) -> str:
    offset = (part - 1) * upload.chunk_size
    expected = min(upload.chunk_size, upload.size - offset)
    with _running_lock:
        hasher, next_offset = _running.get(upload.id, (None, 0))
        in_order = offset == next_offset
        if in_order:
            hasher = hasher or hashlib.sha256()
            # Claimed: restored only after this part was written whole, so a failed write leaves no
            # running hash (completion then hashes the file).
            _running.pop(upload.id, None)
    fd = os.open(upload.staging_path, os.O_WRONLY)
    received = 0
    try:
        async for chunk in chunks:
            if received + len(chunk) > expected:
                raise BadRequest(f"Part {part} is larger than its {expected} bytes")
            view = memoryview(chunk)
            pos = offset + received
            while view:
                n = os.pwrite(fd, view, pos)
                view, pos = view[n:], pos + n
            if in_order:
                hasher.update(chunk)  # type: ignore[union-attr]
            received += len(chunk)
    finally:
        os.close(fd)
    if received != expected:
        raise BadRequest(f"Part {part} must be exactly {expected} bytes, received {received}")
    if in_order:
        with _running_lock:
            _running[upload.id] = (hasher, offset + expected)
    # The client only echoes part ETags back; completion verifies the whole object's sha256.
    return f"{upload.id[:8]}-{part}-{expected}"


# A completion that started this long ago and never finished (its process died) may be taken over.
COMPLETION_TAKEOVER = timedelta(hours=1)


@dataclass(frozen=True)
class Completing:
    """A multipart upload taken for completion (plain values: verified outside any transaction)."""

    id: str
    repo_id: int
    oid: str
    size: int
    staging_path: str
    user_id: int | None


def complete_multipart(hub: Hub, upload_id: str, parts_listed: int) -> None:
    """Verify the staged object (its sha256 and size), store it and link it to the repo, in three steps:
    the upload is taken (every part received, none in flight, no other completion under way), the bytes
    are verified and stored with no database transaction open (hashing or syncing gigabytes must not hold
    SQLite's write lock), then the object is linked and the upload forgotten."""
    with transaction(hub.sessions) as session:
        taken = _take_for_completion(session, upload_id, parts_listed)
    staged = hub.blobs_in(repo_region(hub, taken.repo_id)).staged_at(Path(taken.staging_path))
    with _running_lock:
        hasher, done = _running.pop(taken.id, (None, 0))
    if hasher is not None and done == taken.size:
        staged.hasher = hasher
    try:
        staged.commit(taken.oid, taken.size)  # the staged bytes are gone either way
    except BlobMismatch as exc:
        _forget_upload(hub, taken.id)
        raise BadRequest(f"Multipart upload rejected: {exc}") from None
    with transaction(hub.sessions) as session:
        link_object(session, taken.repo_id, taken.oid, taken.size)
        object_stored(session, taken.repo_id, taken.oid, taken.size, "multipart", taken.user_id)
        session.execute(delete(LfsMultipartUpload).where(LfsMultipartUpload.id == taken.id))


def _take_for_completion(session: Session, upload_id: str, parts_listed: int) -> Completing:
    # Locked: two completions of one upload are serialised; the second finds it taken (or gone).
    upload = session.scalar(select(LfsMultipartUpload).where(LfsMultipartUpload.id == upload_id).with_for_update())
    if upload is None or not Path(upload.staging_path).exists():
        raise NotFound("This multipart upload no longer exists; start a new one")
    parts = max(1, math.ceil(upload.size / upload.chunk_size))
    if parts_listed != parts:
        raise BadRequest(f"Expected {parts} parts, got {parts_listed}")
    received = set(session.scalars(select(LfsMultipartPart.part).where(LfsMultipartPart.upload_id == upload.id,
                                                                        LfsMultipartPart.state == "done")))
    if missing := [n for n in range(1, parts + 1) if n not in received]:
        shown = ", ".join(map(str, missing[:10])) + (" ..." if len(missing) > 10 else "")
        raise BadRequest(f"Multipart upload incomplete: part(s) {shown} of {parts} have not been received")
    now = utcnow()
    if upload.completing_at is not None and now - upload.completing_at < COMPLETION_TAKEOVER:
        raise Conflict("This multipart upload is being completed by another request")
    upload.completing_at = now
    return Completing(upload.id, upload.repo_id, upload.oid, upload.size, upload.staging_path, upload.user_id)


def _forget_upload(hub: Hub, upload_id: str) -> None:
    with transaction(hub.sessions) as session:
        session.execute(delete(LfsMultipartUpload).where(LfsMultipartUpload.id == upload_id))


def verify_object(session: Session, repo: Repo, oid: str, size: int) -> None:
    have = linked_objects(session, repo.id, [oid])
    if oid not in have:
        raise NotFound(f"Object {oid} has not been uploaded to this repository")
    if have[oid] != size:
        raise BadRequest(f"Object {oid} has {have[oid]} bytes, not {size}")


def download_batch(session: Session, repo: Repo, objects: list[BatchObject], base_url: str,
                   auth_header: str | None, blocked: dict[str, str] | None = None) -> dict[str, Any]:
    """Download actions point at the repo's own LFS object route (same origin, same credentials).
    `blocked`: oid -> why the caller may not download it now (repos.guards), answered per object."""
    have = linked_objects(session, repo.id, [o.oid for o in objects])
    out: list[dict[str, Any]] = []
    for obj in objects:
        if obj.oid not in have:
            out.append({"oid": obj.oid, "size": obj.size, "error": {"code": 404, "message": "Object does not exist"}})
            continue
        if blocked and obj.oid in blocked:
            out.append({"oid": obj.oid, "size": obj.size, "error": {"code": 403, "message": blocked[obj.oid]}})
            continue
        action: dict[str, Any] = {"href": f"{base_url}/{_lfs_base(repo)}/info/lfs/objects/{obj.oid}"}
        if auth_header:
            action["header"] = {"Authorization": auth_header}
        out.append({"oid": obj.oid, "size": have[obj.oid], "authenticated": True,
                    "actions": {"download": action}})
    return {"transfer": "basic", "objects": out, "hash_algo": "sha256"}
