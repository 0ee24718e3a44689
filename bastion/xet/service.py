"""The Xet CAS service: xorb and shard uploads, dedupe answers, reconstructions, garbage collection.

Tenant isolation: a repo may reference (in shards), learn about (dedupe) and read (reconstructions)
only xorbs and files it proved it holds -- RepoXetXorb and RepoLfsObject -- never hashes alone.
"""

from __future__ import annotations

import hashlib
import logging
import os
import struct
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import delete, exists, func, select, update
from sqlalchemy import inspect as sa_inspect
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from bastion import audit
from bastion.audit.actions import AuditAction
from bastion.db import transaction, utcnow
from bastion.errors import NotFound, PayloadTooLarge
from bastion.hub import Hub
from bastion.lfs.audit_events import object_stored
from bastion.lfs.models import LfsObject, RepoLfsObject
from bastion.lfs.service import link_object
from bastion.repos.models import Repo
from bastion.repos.service import repo_region
from bastion.storage.regions import DEFAULT_REGION, region_of_key
from bastion.xet.errors import InvalidHash, ShardFormatError
from bastion.xet.hashing import HASH_LEN, hash_to_hex, hex_to_hash, is_global_dedup_eligible
from bastion.xet.models import RepoXetShard, RepoXetXorb, XetDedupeChunk, XetFile, XetFileXorb, XetXorb
from bastion.xet.reconstruction import (
    Reconstruction,
    XorbLayout,
    iter_file_bytes,
    parse_range_header,
    plan_reconstruction,
)
from bastion.xet.shard import FileEntry, FileSegment, XorbEntry, dedupe_shard, parse_shard, verify_upload_shard
from bastion.xet.store import XorbStore
from bastion.xet.xorb import Xorb, parse_xorb

log = logging.getLogger("bastion.xet")

_CHUNK = struct.Struct("<32sII")  # chunk hash, uncompressed size, serialized end offset
_SEGMENT = struct.Struct("<32sIII")  # xorb hash, unpacked bytes, chunk start, chunk end
DEDUPE_MAX_HITS = 4  # xorbs (and files) matched per dedupe query
DEDUPE_WINDOW = 16  # neighbouring xorbs (in file order) sent along with a match: about 1 GiB each side
DEDUPE_MAX_XORBS = 40  # xorbs described per dedupe answer (each lists all its chunks, 48 bytes apiece)
DEDUPE_KEY_TTL_SECONDS = 24 * 3600


def xorb_store(hub: Hub, region: str = DEFAULT_REGION) -> XorbStore:
    """A region's Xet stores: its xorbs and shards (on local disk: the region's xet/xorbs, xet/shards).
    The oid -> Xet file hash records (derived hashes, no content) are the default region's, as the
    database's rows are."""
    return XorbStore(hub.object_store("xet/xorbs", region), hub.object_store("xet/shards", region),
                     hub.object_store("xet/by-oid", DEFAULT_REGION), hub.object_store("xet/files", region))


def region_segments(hub: Hub, region: str, row: XetFile) -> tuple[FileSegment, ...]:
    """A registered file's segments as its bytes are held in `region`: the region's own record (written by
    each shard upload there) or, without one, the database's registration."""
    packed = xorb_store(hub, region).file_segments(row.file_hash)
    return unpack_segments(packed if packed is not None else row.segments)


# ---- packing of stored layouts ----------------------------------------------------------------

@dataclass(frozen=True)
class StoredXorb:
    hash: bytes
    size: int
    chunk_hashes: tuple[bytes, ...]
    layout: XorbLayout

    def chunk_list(self) -> list[tuple[bytes, int]]:
        return list(zip(self.chunk_hashes, self.layout.chunk_sizes, strict=True))

    @classmethod
    def from_row(cls, row: XetXorb) -> StoredXorb:
        items = list(_CHUNK.iter_unpack(row.layout))
        layout = XorbLayout(tuple(e for _, _, e in items), tuple(n for _, n, _ in items))
        return cls(hex_to_hash(row.hash), row.size, tuple(h for h, _, _ in items), layout)


def pack_layout(xorb: Xorb) -> bytes:
    return b"".join(_CHUNK.pack(c.hash, c.uncompressed_size, c.end) for c in xorb.chunks)


def pack_segments(segments: Sequence[FileSegment]) -> bytes:
    return b"".join(_SEGMENT.pack(s.xorb_hash, s.unpacked_bytes, s.chunk_start, s.chunk_end) for s in segments)


def unpack_segments(data: bytes) -> tuple[FileSegment, ...]:
    return tuple(FileSegment(h, n, a, b) for h, n, a, b in _SEGMENT.iter_unpack(data))


def load_xorbs(session: Session, hexes: Iterable[str], repo_id: int | None = None) -> dict[bytes, StoredXorb]:
    """Stored xorbs by hash; with `repo_id`, only those that repo is linked to."""
    wanted = sorted(set(hexes))
    out: dict[bytes, StoredXorb] = {}
    for i in range(0, len(wanted), 500):
        q = select(XetXorb).where(XetXorb.hash.in_(wanted[i:i + 500]))
        if repo_id is not None:
            q = q.join(RepoXetXorb, RepoXetXorb.xorb_hash == XetXorb.hash).where(RepoXetXorb.repo_id == repo_id)
        for row in session.scalars(q):
            stored = StoredXorb.from_row(row)
            out[stored.hash] = stored
    return out


def _insert_ignore(session: Session, obj: object) -> None:
    """Insert unless the row exists (idempotent under concurrent uploads of the same content, and for
    a row this session already holds, such as two files of one shard starting with the same chunk)."""
    key = sa_inspect(type(obj)).primary_key_from_instance(obj)
    if session.get(type(obj), tuple(key)) is not None:
        return
    try:
        with session.begin_nested():
            session.add(obj)
    except IntegrityError:
        pass


# ---- xorbs ------------------------------------------------------------------------------------

def upload_xorb(hub: Hub, repo_id: int, hash_hex: str, body: bytes | bytearray) -> bool:
    """Validate a xorb completely (every chunk decoded and re-hashed, the xorb hash recomputed and
    compared with the one it was uploaded as), store it once, link it to the repo.

    Returns whether it was newly stored (api.md `was_inserted`). Raises XorbFormatError (400).
    """
    limit = hub.settings.xet_max_xorb_bytes
    if len(body) > limit:
        raise PayloadTooLarge(f"xorb is {len(body)} bytes; the limit is {limit}")
    xorb = parse_xorb(body, hex_to_hash(hash_hex), max_bytes=limit)
    key = xorb.hex
    # Stored in the repo's region: deduplication never crosses regions (a xorb another region holds
    # is stored again here; a repo learns about and references only xorbs it uploaded itself).
    store = xorb_store(hub, repo_region(hub, repo_id))
    inserted = store.put_xorb(key, body)
    with transaction(hub.sessions) as session:
        row = session.get(XetXorb, key)
        if row is None:
            _insert_ignore(session, XetXorb(hash=key, size=len(body), num_chunks=xorb.num_chunks,
                                            unpacked_size=xorb.unpacked_length, layout=pack_layout(xorb)))
            # deduplication.md: clients query eligible chunks (and a file's first chunk, indexed when
            # a shard registers the file); a xorb's first chunk is usually some file's first chunk.
            eligible = {c.hash for i, c in enumerate(xorb.chunks) if i == 0 or is_global_dedup_eligible(c.hash)}
            for h in eligible:
                _insert_ignore(session, XetDedupeChunk(chunk_hash=hash_to_hex(h), xorb_hash=key))
        else:
            row.last_used_at = utcnow()
        # Possession proved: these bytes hash to the xorb, whoever stored it first.
        _insert_ignore(session, RepoXetXorb(repo_id=repo_id, xorb_hash=key))
        _audit_xorb(session, repo_id, key, len(body), xorb.num_chunks, inserted)
    # A concurrent GC may have moved the file away between our write and the commit: put it back.
    if not store.has_xorb(key):
        store.put_xorb(key, body)
    log.info("xet xorb upload repo=%d xorb=%s bytes=%d chunks=%d inserted=%s", repo_id, key, len(body),
             xorb.num_chunks, inserted)
    return inserted


def _audit_xorb(session: Session, repo_id: int, key: str, size: int, chunks: int, inserted: bool) -> None:
    repo = session.get(Repo, repo_id)
    if repo is not None:
        audit.record(session, AuditAction.XET_UPLOAD, target=("repo", f"{repo.type}/{repo.repo_id}"),
                     namespace=repo.namespace,
                     details={"xorb": key, "size": size, "chunks": chunks, "new": inserted})


def xorb_size_for_repo(hub: Hub, repo_id: int, hash_hex: str) -> int:
    key = hash_to_hex(hex_to_hash(hash_hex))
    with transaction(hub.sessions) as session:
        size = session.scalar(select(XetXorb.size).join(RepoXetXorb, RepoXetXorb.xorb_hash == XetXorb.hash)
                              .where(XetXorb.hash == key, RepoXetXorb.repo_id == repo_id))
    if size is None:
        raise NotFound("Xorb not found")
    return int(size)


# ---- shards -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class RegisteredFile:
    file_hash: str
    sha256: str
    size: int


def upload_shard(hub: Hub, repo_id: int, body: bytes | bytearray) -> list[RegisteredFile]:
    """Verify an upload shard against the xorbs this repo holds, reconstruct each new file once to
    recompute its sha256 (nothing is copied: the file is stored once, as chunks), register it and link
    its sha256 to the repo, so the `lfsFile` commit line the client sends next passes the commit
    path's checks. Readers get its bytes through bastion.lfs.content (Xet registers its store there).

    Three short transactions, so a slow reconstruction never holds the database write lock.
    """
    limit = hub.settings.xet_max_shard_bytes
    if len(body) > limit:
        raise PayloadTooLarge(f"shard is {len(body)} bytes; the limit is {limit}")
    try:
        return _upload_shard(hub, repo_id, body, limit)
    except ShardFormatError as exc:
        # What the client sent and why it was refused: the one clue to an upload that fails on one
        # machine and not another (the client's local caches decide what a shard references).
        log.warning("xet shard refused repo=%d bytes=%d sha256=%s: %s", repo_id, len(body),
                    hashlib.sha256(body).hexdigest(), exc)
        raise


def _upload_shard(hub: Hub, repo_id: int, body: bytes | bytearray, limit: int) -> list[RegisteredFile]:
    shard = parse_shard(body, max_bytes=limit)
    region = repo_region(hub, repo_id)
    referenced = {hash_to_hex(h) for h in shard.referenced_xorbs()}
    file_keys = [hash_to_hex(f.file_hash) for f in shard.files]
    with transaction(hub.sessions) as session:
        usable = load_xorbs(session, referenced, repo_id)
        known = dict(session.execute(select(XetFile.file_hash, XetFile.sha256)
                                     .where(XetFile.file_hash.in_(file_keys))).tuples().all())

    def lookup(h: bytes) -> list[tuple[bytes, int]] | None:
        # A xorb this repo never uploaded reads as missing: its existence is not revealed either.
        stored = usable.get(h)
        return stored.chunk_list() if stored is not None else None

    check = verify_upload_shard(shard, lookup)
    registered: list[tuple[FileEntry, str]] = []
    for entry in check.files:
        key = hash_to_hex(entry.file_hash)
        claimed = entry.sha256_hex
        if entry.size > hub.settings.max_lfs_object_size:
            raise PayloadTooLarge(f"file {key} is {entry.size} bytes; the limit is "
                                  f"{hub.settings.max_lfs_object_size}")
        if key in known:
            # Same file hash = same chunks = same bytes: the sha256 we computed before still holds.
            if claimed != known[key]:
                raise ShardFormatError(f"file {key}: its sha256 metadata does not match its content")
            registered.append((entry, known[key]))
            continue
        _verify_sha256(hub, entry, usable, claimed, region)
        registered.append((entry, claimed or ""))

    out: list[RegisteredFile] = []
    with transaction(hub.sessions) as session:
        # Mark the xorbs used first, and see that all are still there: garbage collection deletes only
        # xorbs unused for its grace period, re-checked in its DELETE, so either it removed one before
        # this (the upload must be retried) or it now leaves them all alone.
        touched = session.execute(update(XetXorb).where(XetXorb.hash.in_(referenced))
                                  .values(last_used_at=utcnow())).rowcount
        if touched != len(referenced):
            raise ShardFormatError("a xorb this shard references was removed meanwhile; upload it again")
        for entry, sha in registered:
            key = hash_to_hex(entry.file_hash)
            # The object first (GC removing it at this moment is waited for), then the registration,
            # re-inserted if that GC took it with the object.
            link_object(session, repo_id, sha, entry.size)
            object_stored(session, repo_id, sha, entry.size, "xet", xet_file=key)
            _insert_ignore(session, XetFile(file_hash=key, sha256=sha, size=entry.size,
                                            segments=pack_segments(entry.segments)))
            for xh in {hash_to_hex(s.xorb_hash) for s in entry.segments}:
                _insert_ignore(session, XetFileXorb(file_hash=key, xorb_hash=xh))
            first = entry.segments[0]
            first_chunk = usable[first.xorb_hash].chunk_hashes[first.chunk_start]
            _insert_ignore(session, XetDedupeChunk(chunk_hash=hash_to_hex(first_chunk),
                                                   xorb_hash=hash_to_hex(first.xorb_hash)))
            out.append(RegisteredFile(key, sha, entry.size))
        # The shard is the repository's (moved with it to another region; swept per region by GC).
        _insert_ignore(session, RepoXetShard(repo_id=repo_id, shard_hash=hashlib.sha256(body).hexdigest()))
    store = xorb_store(hub, region)
    for entry, _sha in registered:  # the segments of this upload, readable from this region's xorbs
        store.put_file_segments(hash_to_hex(entry.file_hash), pack_segments(entry.segments))
    for f in out:
        store.index_file(f.sha256, f.file_hash)
    store.put_shard(body)
    log.info("xet shard upload repo=%d files=%d xorbs=%d", repo_id, len(out), len(referenced))
    return out


def _verify_sha256(hub: Hub, entry: FileEntry, xorbs: dict[bytes, StoredXorb], claimed: str | None,
                   region: str) -> None:
    """Reconstruct the file once, without storing it, and check the sha256 the shard claims for it:
    that sha256 becomes the LFS oid the rest of Bastion trusts. The file stays stored once, as chunks."""
    if claimed is None:
        raise ShardFormatError(f"file {hash_to_hex(entry.file_hash)} has no sha256 metadata extension")
    plan = plan_reconstruction(entry.segments, lambda h: xorbs[h].layout)
    store = xorb_store(hub, region)
    sha = hashlib.sha256()
    for piece in iter_file_bytes(plan, lambda h, a, b: store.read_xorb(hash_to_hex(h), a, b)):
        sha.update(piece)
    if sha.hexdigest() != claimed:
        raise ShardFormatError(f"file {hash_to_hex(entry.file_hash)}: its sha256 metadata does not match its content")


# ---- dedupe -----------------------------------------------------------------------------------

def dedupe_query(hub: Hub, repo_id: int, chunk_hex: str) -> bytes | None:
    """A global-dedupe shard for a chunk (api.md §2) from xorbs this repo holds, or None (404)."""
    key = hash_to_hex(hex_to_hash(chunk_hex))
    with transaction(hub.sessions) as session:
        hits = list(session.scalars(
            select(XetDedupeChunk.xorb_hash)
            .join(RepoXetXorb, RepoXetXorb.xorb_hash == XetDedupeChunk.xorb_hash)
            .where(XetDedupeChunk.chunk_hash == key, RepoXetXorb.repo_id == repo_id)
            .limit(DEDUPE_MAX_HITS)))
        if not hits:
            return None
        hexes = _nearby_xorbs(session, repo_id, hits)
        xorbs = load_xorbs(session, hexes)
        # The client may now reference these xorbs in a shard: keep GC away from them for a while.
        session.execute(update(XetXorb).where(XetXorb.hash.in_(hexes)).values(last_used_at=utcnow()))
    entries = [XorbEntry.from_chunk_list(x.hash, x.chunk_list(), x.size) for x in xorbs.values()]
    return dedupe_shard(entries, os.urandom(HASH_LEN), int(time.time()) + DEDUPE_KEY_TTL_SECONDS)


def _nearby_xorbs(session: Session, repo_id: int, hits: list[str]) -> list[str]:
    """The hit xorbs plus their neighbours in the files that use them, this repo's only.

    deduplication.md: an answer should describe the chunks *near* the match. Only about one chunk
    in 1024 may be queried, so a 64 MiB xorb often has none: without its neighbours being sent
    along, a re-upload of an edited large file would resend such xorbs in full.
    """
    candidates: dict[str, None] = dict.fromkeys(hits)
    files = session.scalars(select(XetFile).join(XetFileXorb, XetFileXorb.file_hash == XetFile.file_hash)
                            .where(XetFileXorb.xorb_hash.in_(hits)).limit(DEDUPE_MAX_HITS))
    for f in files:
        order = list(dict.fromkeys(hash_to_hex(seg.xorb_hash) for seg in unpack_segments(f.segments)))
        for h in hits:
            if h in order:
                i = order.index(h)
                candidates.update(dict.fromkeys(order[max(0, i - DEDUPE_WINDOW):i + DEDUPE_WINDOW + 1]))
    allowed = set(session.scalars(select(RepoXetXorb.xorb_hash).where(
        RepoXetXorb.repo_id == repo_id, RepoXetXorb.xorb_hash.in_(list(candidates)))))
    return [h for h in candidates if h in allowed][:DEDUPE_MAX_XORBS]


# ---- reconstructions --------------------------------------------------------------------------

def reconstruction(hub: Hub, repo_id: int, file_hex: str, range_header: str | None) -> Reconstruction:
    """The plan for a file this repo holds (its sha256 is linked to the repo); NotFound otherwise."""
    key = hash_to_hex(hex_to_hash(file_hex))
    with transaction(hub.sessions) as session:
        row = session.scalar(select(XetFile).join(RepoLfsObject, RepoLfsObject.oid == XetFile.sha256)
                             .where(XetFile.file_hash == key, RepoLfsObject.repo_id == repo_id))
        if row is None:
            raise NotFound("File not found")
        segments = region_segments(hub, repo_region(hub, repo_id, session), row)
        xorbs = load_xorbs(session, {hash_to_hex(s.xorb_hash) for s in segments})
    byte_range = parse_range_header(range_header, row.size)
    log.info("xet reconstruction repo=%d file=%s range=%s", repo_id, key, range_header or "all")
    return plan_reconstruction(segments, lambda h: xorbs[h].layout, byte_range)


def file_oid(session: Session, file_hex: str) -> str | None:
    """The sha256 (LFS oid) of a registered Xet file; None for an unknown or malformed file hash."""
    try:
        key = hash_to_hex(hex_to_hash(file_hex))
    except InvalidHash:
        return None
    return session.scalar(select(XetFile.sha256).where(XetFile.file_hash == key))


def xet_hashes_for_oids(hub: Hub, oids: Sequence[str]) -> dict[str, str]:
    """sha256 oid -> Xet file hash, for the oids that have a Xet reconstruction (no database)."""
    store = xorb_store(hub)
    found = {oid: store.indexed_file(oid) for oid in set(oids)}
    return {oid: fh for oid, fh in found.items() if fh is not None}


def xet_hash_for_repo_file(session: Session, repo_id: int, oid: str) -> str | None:
    """The Xet file hash to advertise for an LFS file of a repo: only when this repo's CAS token
    can actually reconstruct it (the oid is linked to the repo and has a Xet file)."""
    return session.scalar(select(XetFile.file_hash).join(RepoLfsObject, RepoLfsObject.oid == XetFile.sha256)
                          .where(XetFile.sha256 == oid, RepoLfsObject.repo_id == repo_id).limit(1))


# ---- garbage collection -----------------------------------------------------------------------

def regions_needing_xorb(session: Session, xorb_hex: str) -> set[str]:
    """The regions whose repositories need a copy of a xorb: those that uploaded it, and those holding a
    Xet file whose registrations name it (a region's segment record may name another repository's
    xorbs of that region). A copy in any other region is garbage (moves and the GC's region sweep)."""
    holders = set(session.scalars(select(RepoXetXorb.repo_id).where(RepoXetXorb.xorb_hash == xorb_hex)))
    holders |= set(session.scalars(
        select(RepoLfsObject.repo_id).join(XetFile, XetFile.sha256 == RepoLfsObject.oid)
        .join(XetFileXorb, XetFileXorb.file_hash == XetFile.file_hash).where(XetFileXorb.xorb_hash == xorb_hex)))
    return _regions_of(session, holders)


def regions_needing_shard(session: Session, shard_hex: str) -> set[str]:
    """The regions of the repositories that uploaded a shard."""
    return _regions_of(session, set(session.scalars(
        select(RepoXetShard.repo_id).where(RepoXetShard.shard_hash == shard_hex))))


def _regions_of(session: Session, repo_ids: set[int]) -> set[str]:
    if not repo_ids:
        return set()
    return {region_of_key(k) for k in session.scalars(select(Repo.storage_key).where(Repo.id.in_(repo_ids)))}


@dataclass
class GcResult:
    files_removed: int = 0
    xorbs_removed: int = 0
    bytes_freed: int = 0
    xorbs_kept: int = 0


def collect_garbage(hub: Hub, grace: timedelta, dry_run: bool = False,
                    on_progress: Callable[[str], None] | None = None) -> GcResult:
    """Delete xorbs that no registered file references and nobody used within `grace`.

    A file stays registered while its LFS object exists; bastion.objects.gc removes objects no ref of
    any repo reaches (with their files) and then calls this. Never deletes a referenced xorb: the
    DELETE itself re-checks references and last use (a shard upload marks its xorbs used before it
    registers files on them), and a xorb's file is removed only after a second check that no upload
    re-registered it meanwhile.
    """
    result = GcResult()
    cutoff = utcnow() - grace
    with transaction(hub.sessions) as session:
        orphans = session.execute(select(XetFile.file_hash, XetFile.sha256).where(
            ~exists().where(LfsObject.oid == XetFile.sha256))).all()
        orphan_files = [fh for fh, _ in orphans]
        result.files_removed = len(orphan_files)
        if orphan_files and not dry_run:
            for _, sha in orphans:
                xorb_store(hub).unindex_file(sha)
            for region in sorted(hub.regions):
                records = xorb_store(hub, region).files
                for fh in orphan_files:
                    if records is not None:
                        records.delete(fh)
            session.execute(delete(XetFileXorb).where(XetFileXorb.file_hash.in_(orphan_files)))
            session.execute(delete(XetFile).where(XetFile.file_hash.in_(orphan_files)))
        session.flush()
        collectable = (~exists().where(XetFileXorb.xorb_hash == XetXorb.hash)) & (XetXorb.last_used_at < cutoff)
        unreferenced = session.execute(select(XetXorb.hash, XetXorb.size).where(collectable)).all()
        total = int(session.scalar(select(func.count()).select_from(XetXorb)) or 0)
        if dry_run:
            session.rollback()
            result.xorbs_removed = len(unreferenced)
            result.bytes_freed = sum(int(size) for _, size in unreferenced)
            result.xorbs_kept = total - len(unreferenced)
            return result
        doomed: list[str] = []
        for i in range(0, len(unreferenced), 500):
            part = [h for h, _ in unreferenced[i:i + 500]]
            # Conditions re-checked by the DELETE: a xorb a shard upload just marked used is kept.
            gone = session.execute(delete(XetXorb).where(XetXorb.hash.in_(part), collectable)
                                   .returning(XetXorb.hash, XetXorb.size)).all()
            part = [h for h, _ in gone]
            result.bytes_freed += sum(int(size) for _, size in gone)
            if part:
                session.execute(delete(XetDedupeChunk).where(XetDedupeChunk.xorb_hash.in_(part)))
                session.execute(delete(RepoXetXorb).where(RepoXetXorb.xorb_hash.in_(part)))
            doomed += part
        result.xorbs_removed = len(doomed)
        result.xorbs_kept = total - len(doomed)
    stores = [xorb_store(hub, region) for region in sorted(hub.regions)]
    for h in doomed:
        for store in stores:  # every region holding a copy
            trash = store.trash_xorb(h)
            if trash is None:
                continue
            with transaction(hub.sessions) as session:
                revived = session.get(XetXorb, h) is not None
            if revived:
                store.restore_xorb(h, trash)  # re-uploaded meanwhile: same bytes, keep them
            else:
                trash.discard()
        if on_progress is not None:
            on_progress(h)
    log.info("xet gc: %d files, %d xorbs (%d bytes) removed", result.files_removed, result.xorbs_removed,
             result.bytes_freed)
    return result

