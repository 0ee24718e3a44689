"""Storage garbage collection: free the bytes of large files that no ref of any repo reaches.

An object's bytes live in the LFS blob store, or as chunks in Xet xorbs (or both). They are kept
while some repository's refs (branches, tags, pull-request refs; their whole history) reach the
object through an LFS pointer, and for a grace period after anyone last uploaded or referenced it,
so uploads waiting for their commit, and commits being checked, are never touched.

Three steps, each safe against concurrent uploads and commits:
1. Per repo: links (RepoLfsObject) to objects no ref reaches and unused for the grace period are
   removed, by a DELETE that re-checks `last_used_at`; commits and pushes mark the links they
   reference as used before checking them (lfs.service.use_linked_objects), so a link is never
   removed under a commit that relies on it.
2. Objects no repo links any more and unused for the grace period are removed (row, Xet file
   registration, blob-store file). The file is moved aside first and put back if an upload touched
   it or registered the object again meanwhile.
3. Xet xorbs that no remaining file uses (xet.service.collect_garbage).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

import pygit2
from sqlalchemy import delete, exists, select
from sqlalchemy.orm import Session

from bastion.db import transaction, utcnow
from bastion.hub import Hub
from bastion.lfs.models import LfsObject, RepoLfsObject
from bastion.repos.models import Repo
from bastion.storage import BlobStore
from bastion.storage.gitstore import LFS_POINTER_MAX, parse_lfs_pointer
from bastion.storage.regions import region_of_key
from bastion.xet import service as xet
from bastion.xet.models import XetFile, XetFileXorb, XetXorb

log = logging.getLogger(__name__)
BATCH = 500


@dataclass
class StorageGcResult:
    links_removed: int = 0
    objects_removed: int = 0
    object_bytes_freed: int = 0
    region_copies_removed: int = 0  # copies in a region none of whose repos links them any more
    region_bytes_freed: int = 0
    xet: xet.GcResult | None = None


def reachable_lfs_oids(repo: pygit2.Repository) -> set[str]:
    """The LFS oids of every pointer in the history of every ref (each tree read once)."""
    tips: set[pygit2.Oid] = set()
    for name in repo.references:
        try:
            tips.add(repo.references[name].peel(pygit2.Commit).id)
        except (pygit2.GitError, pygit2.InvalidSpecError, KeyError, ValueError):
            continue  # a ref to something that is not a commit (or a broken one) holds no files
    oids: set[str] = set()
    seen_trees: set[pygit2.Oid] = set()
    seen_blobs: set[pygit2.Oid] = set()
    seen_commits: set[pygit2.Oid] = set()
    odb = repo.odb
    for tip in tips:
        if tip in seen_commits:
            continue
        walker = repo.walk(tip, pygit2.enums.SortMode.NONE)
        for hidden in seen_commits & tips:
            walker.hide(hidden)
        for commit in walker:
            if commit.id in seen_commits:
                continue
            seen_commits.add(commit.id)
            stack = [commit.tree_id]
            while stack:
                tree_id = stack.pop()
                if tree_id in seen_trees:
                    continue
                seen_trees.add(tree_id)
                for entry in repo[tree_id]:
                    if entry.type_str == "tree":
                        stack.append(entry.id)
                    elif entry.type_str == "blob" and entry.id not in seen_blobs:
                        seen_blobs.add(entry.id)
                        if odb.read_header(entry.id)[1] <= LFS_POINTER_MAX:
                            pointer = parse_lfs_pointer(repo[entry.id].data)
                            if pointer is not None:
                                oids.add(pointer.oid)
    return oids


def _unlink_unreachable(hub: Hub, cutoff: datetime, dry_run: bool) -> tuple[int, set[tuple[int, str]]]:
    """Remove (or, dry, list) the links no ref of their repo reaches; returns the count and, dry, the links."""
    with transaction(hub.sessions, readonly=True) as session:
        repos = session.execute(select(Repo.id, Repo.storage_key).order_by(Repo.id)).all()
    removed, would = 0, set()
    for repo_id, storage_key in repos:
        with transaction(hub.sessions, readonly=True) as session:
            stale = list(session.scalars(select(RepoLfsObject.oid).where(
                RepoLfsObject.repo_id == repo_id, RepoLfsObject.last_used_at < cutoff)))
        if not stale:
            continue
        try:
            reachable = reachable_lfs_oids(hub.git(storage_key).repo)
        except (pygit2.GitError, KeyError, OSError):
            log.warning("storage gc: repo %d (%s) unreadable; its links are kept", repo_id, storage_key)
            continue
        doomed = sorted(set(stale) - reachable)
        if dry_run:
            would.update((repo_id, oid) for oid in doomed)
            continue
        for i in range(0, len(doomed), BATCH):
            with transaction(hub.sessions) as session:
                removed += session.execute(delete(RepoLfsObject).where(
                    RepoLfsObject.repo_id == repo_id, RepoLfsObject.oid.in_(doomed[i:i + BATCH]),
                    RepoLfsObject.last_used_at < cutoff)).rowcount
    return (len(would) if dry_run else removed), would


def _remove_unlinked_objects(hub: Hub, cutoff: datetime, dry_run: bool,
                             unlinking: set[tuple[int, str]]) -> tuple[int, int]:
    """Remove objects no repo links and nobody used within the grace period; returns (count, bytes).
    Dry: count those whose links are all in `unlinking` (what step 1 would remove) as well."""
    unlinked = (~exists().where(RepoLfsObject.oid == LfsObject.oid)) & (LfsObject.last_used_at < cutoff)
    if dry_run:
        with transaction(hub.sessions, readonly=True) as session:
            stale = dict(session.execute(select(LfsObject.oid, LfsObject.size).where(
                LfsObject.last_used_at < cutoff)).tuples().all())
            still: set[str] = set()
            for repo_id, oid in session.execute(select(RepoLfsObject.repo_id, RepoLfsObject.oid)).tuples():
                if oid in stale and (repo_id, oid) not in unlinking:
                    still.add(oid)
        doomed = [size for oid, size in stale.items() if oid not in still]
        return len(doomed), sum(int(size) for size in doomed)
    with transaction(hub.sessions, readonly=True) as session:
        candidates = session.execute(select(LfsObject.oid, LfsObject.size).where(unlinked)).all()
    removed, freed = 0, 0
    store = xet.xorb_store(hub)
    oids = [oid for oid, _ in candidates]
    for i in range(0, len(oids), BATCH):
        with transaction(hub.sessions) as session:
            # The same conditions again, in the DELETE itself: an upload that linked or re-uploaded the
            # object meanwhile (it marks the row used) keeps it.
            gone = session.execute(delete(LfsObject).where(LfsObject.oid.in_(oids[i:i + BATCH]), unlinked)
                                   .returning(LfsObject.oid, LfsObject.size)).all()
            files = list(session.scalars(select(XetFile.file_hash).where(
                XetFile.sha256.in_([oid for oid, _ in gone]))))
            if files:
                session.execute(delete(XetFileXorb).where(XetFileXorb.file_hash.in_(files)))
                session.execute(delete(XetFile).where(XetFile.file_hash.in_(files)))
        for r in sorted(hub.regions):  # the files' segment records of every region
            records = xet.xorb_store(hub, r)
            for fh in files:
                if records.files is not None:
                    records.files.delete(fh)
        for oid, size in gone:
            store.unindex_file(oid)
            _discard_blob(hub, oid, cutoff)
            removed, freed = removed + 1, freed + int(size)
    return removed, freed


def _discard_blob(hub: Hub, oid: str, cutoff: datetime) -> None:
    """In every region: move the object's file aside, then delete it unless an upload touched it or
    registered the object again meanwhile (an upload of existing bytes refreshes the file's mtime)."""
    for region in sorted(hub.regions):
        _discard_in(hub, region, oid, cutoff, lambda session: session.get(LfsObject, oid) is not None)


def _discard_in(hub: Hub, region: str, oid: str, cutoff: datetime, again: Callable[[Session], bool]) -> bool:
    blobs = hub.blobs_in(region)
    trash = blobs.trash(oid)
    if trash is None:
        return False
    touched = trash.mtime >= cutoff.timestamp()
    with transaction(hub.sessions, readonly=True) as session:
        kept = touched or again(session)
    if kept:
        blobs.restore(oid, trash)
    else:
        trash.discard()
    return not kept


def _sweep_regions(hub: Hub, cutoff: datetime, dry_run: bool) -> tuple[int, int]:
    """With several regions: an object stored in a region that no repository of that region links any
    more (the repos there dropped it, or moved away) is removed from that region's store, as step 2
    removes an object no repository links at all. The same for a region's Xet xorbs (kept where a
    repository uploaded one, or holds a file it is part of, or it was used within the grace period) and
    shards (kept where a repository that uploaded one lives; shards uploaded before migration 0028 are
    linked to none). Returns (count, bytes)."""
    if len(hub.regions) < 2:
        return 0, 0
    removed = freed = 0
    for region in sorted(hub.regions):
        blobs = hub.blobs_in(region)
        for oid in list(blobs.stored_keys()):
            def linked_here(session: Session, oid: str = oid, region: str = region) -> bool:
                keys = session.scalars(select(Repo.storage_key).join(
                    RepoLfsObject, RepoLfsObject.repo_id == Repo.id).where(RepoLfsObject.oid == oid))
                return any(region_of_key(k) == region for k in keys)

            with transaction(hub.sessions, readonly=True) as session:
                if linked_here(session):
                    continue
            size = blobs.size(oid) or 0
            if dry_run or _discard_in(hub, region, oid, cutoff, linked_here):
                removed, freed = removed + 1, freed + size
        store = xet.xorb_store(hub, region)
        for kind, objects, needing in (("xorb", store.xorbs, xet.regions_needing_xorb),
                                       ("shard", store.shards, xet.regions_needing_shard)):
            for key in list(objects.stored_keys()):
                def needed_here(session: Session, key: str = key, region: str = region,
                                needing: Callable[[Session, str], set[str]] = needing, kind: str = kind) -> bool:
                    if region in needing(session, key):
                        return True
                    # A xorb uploaded or handed out (dedupe) within the grace period is kept.
                    used = session.scalar(select(XetXorb.last_used_at).where(XetXorb.hash == key)) \
                        if kind == "xorb" else None
                    return used is not None and used >= cutoff

                with transaction(hub.sessions, readonly=True) as session:
                    if needed_here(session):
                        continue
                size = objects.size(key) or 0
                if dry_run or _discard_key(objects, key, cutoff, hub, needed_here):
                    removed, freed = removed + 1, freed + size
    return removed, freed


def _discard_key(objects: BlobStore, key: str, cutoff: datetime, hub: Hub,
                 again: Callable[[Session], bool]) -> bool:
    """Move a region's copy aside, then delete it unless it was written within the grace period or is
    needed again (re-checked after the move)."""
    trash = objects.trash(key)
    if trash is None:
        return False
    touched = trash.mtime >= cutoff.timestamp()
    with transaction(hub.sessions, readonly=True) as session:
        kept = touched or again(session)
    if kept:
        objects.restore(key, trash)
    else:
        trash.discard()
    return not kept


def collect_garbage(hub: Hub, grace: timedelta, dry_run: bool = False,
                    on_progress: Callable[[str], None] | None = None) -> StorageGcResult:
    """Free LFS objects and Xet xorbs that no ref of any repo reaches (never a reachable one)."""
    cutoff = utcnow() - grace
    result = StorageGcResult()
    result.links_removed, unlinking = _unlink_unreachable(hub, cutoff, dry_run)
    result.objects_removed, result.object_bytes_freed = _remove_unlinked_objects(hub, cutoff, dry_run, unlinking)
    result.region_copies_removed, result.region_bytes_freed = _sweep_regions(hub, cutoff, dry_run)
    result.xet = xet.collect_garbage(hub, grace, dry_run=dry_run, on_progress=on_progress)
    log.info("storage gc: %d links, %d objects (%d bytes) removed", result.links_removed, result.objects_removed,
             result.object_bytes_freed)
    return result
