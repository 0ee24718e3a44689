"""Moving a repository to another storage region: copy, verify, switch, clean -- resumable at every step.

The job's state is a `region_moves` row; `state` names the next step and each step is idempotent, so a
worker killed anywhere (SIGKILL included) is resumed by the next one at the recorded step:

- copy: the bare git repository is copied into the target region's git root (into a `.incoming`
  folder, renamed into place when whole), and every LFS object, Xet xorb and Xet shard the repository
  links (`repo_lfs_objects`, `repo_xet_xorbs`, `repo_xet_shards`) and the segment records of its Xet
  files are copied into the target region's stores through their staging: each is verified against its
  name there (sha256; a xorb's Merkle hash; a shard's sha256, and it parses) before it is stored.
- verify: every copied object is read back from the target store and hashed; the copied git
  repository passes `git fsck`. Nothing has changed for readers yet: they read the source.
- switch: under the repository's git write lock (API commits and pushes take it), the git folder is
  synchronised once more (what was pushed meanwhile), objects linked since the copy are copied, then
  the repository's storage key is switched in one transaction (audited `repo.update_region`) and a
  `bastion-moved` marker is left in the source folder: a writer that took the lock on the source
  afterwards gets a 409 and retries on the target. From here readers read the target.
- clean: after `BASTION_REGION_MOVE_GRACE_SECONDS` (reads still streaming from the source end), objects
  linked meanwhile are reconciled once more, then the source git folder and the source copies (LFS
  objects, xorbs, shards, Xet file segment records) that no other repository of the source region links
  are deleted -- only now, after verification.

The repository deleted during its move (`repos.service.delete_hooks`, in the deleting transaction): the
move's row stays (`repo_id` NULL) with `leftovers` naming the copy the repository did not live in (the
target before the switch, the source after it) and what the repository linked; its state becomes `drop`,
which the worker holding the move (it notices at its next step) or the next one runs: that git folder
and that region's copies no other repository there needs are removed, and the move ends as `gone`.

`BASTION_FAULT_REGION_MOVE=<step>` (tests) kills the process with SIGKILL in the middle of that step.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from bastion import audit
from bastion.audit.actions import AuditAction
from bastion.db import transaction, utcnow
from bastion.errors import BadRequest, Conflict
from bastion.hub import Hub
from bastion.lfs.models import RepoLfsObject
from bastion.relocation.models import RegionMove
from bastion.repos import service as repos_service
from bastion.repos.models import Repo
from bastion.scanning.models import ScanJob
from bastion.storage import BlobMismatch, BlobStore
from bastion.storage.gitstore import MOVED_MARKER
from bastion.storage.regions import region_of_key, storage_key_in
from bastion.xet.errors import ShardFormatError
from bastion.xet.hashing import hex_to_hash
from bastion.xet.models import RepoXetShard, RepoXetXorb, XetFile
from bastion.xet.service import regions_needing_shard, regions_needing_xorb, xorb_store
from bastion.xet.shard import parse_shard
from bastion.xet.xorb import parse_xorb

log = logging.getLogger("bastion.relocation")
STEPS = ("copy", "verify", "switch", "clean")
ACTIVE = ("copy", "verify", "switch", "clean", "drop")
LEASE = timedelta(minutes=10)
BLOCK = 8 << 20

# A hook the queue fills (bastion.relocation.queue): hand a move to the workers.
enqueue_hooks: list[Callable[[Hub, int], None]] = []


class _Gone(Exception):
    """The repository was deleted during the move: its row says `drop` now."""


def _fault(step: str) -> None:
    """Fault injection for the crash tests: SIGKILL this process in the middle of `step`."""
    if os.environ.get("BASTION_FAULT_REGION_MOVE") == step:
        log.warning("fault injection: SIGKILL in step %s", step)
        os.kill(os.getpid(), signal.SIGKILL)


def _owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _owner_dead(owner: str | None) -> bool:
    if not owner:
        return True
    host, _, pid = owner.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return False  # another machine's: only its lease expiring frees it
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


# ---- requesting ------------------------------------------------------------------------------

def active_move(session: Session, repo_id: int) -> RegionMove | None:
    return session.scalar(select(RegionMove).where(RegionMove.repo_id == repo_id, RegionMove.state.in_(ACTIVE))
                          .order_by(RegionMove.id.desc()).limit(1))


def request_move(hub: Hub, session: Session, repo: Repo, region: str, requested_by: str | None) -> RegionMove:
    """A move of `repo` to `region` (the one already under way when there is one to the same region)."""
    if region not in hub.regions:
        raise BadRequest(f"Unknown storage region {region[:80]!r}: this instance has the regions: "
                         f"{', '.join(repr(r) for r in sorted(hub.regions))}")
    current = active_move(session, repo.id)
    if current is not None:
        if region_of_key(current.target_key) != region:
            raise Conflict(f"This repository is already being moved to {region_of_key(current.target_key)!r}")
        return current
    if repo.region == region:
        raise BadRequest(f"The repository is already in the region {region!r}")
    move = RegionMove(repo_id=repo.id, source_key=repo.storage_key,
                      target_key=storage_key_in(region, repo.storage_key.rpartition("/")[2]),
                      state="copy", requested_by=requested_by, updated_at=utcnow())
    session.add(move)
    session.flush()
    return move


def enqueue(hub: Hub, move_id: int) -> None:
    for hook in enqueue_hooks:
        hook(hub, move_id)


# ---- running ----------------------------------------------------------------------------------

def _claim(hub: Hub, move_id: int, takeover: bool) -> RegionMove | None:
    with transaction(hub.sessions) as session:
        move = session.scalar(select(RegionMove).where(RegionMove.id == move_id).with_for_update())
        if move is None or move.state not in ACTIVE:
            return None
        now = utcnow()
        live = move.lease_until is not None and move.lease_until > now and not _owner_dead(move.owner)
        if live and move.owner != _owner() and not takeover:
            return None
        move.owner, move.lease_until, move.attempts = _owner(), now + LEASE, move.attempts + 1
        move.updated_at = now
        session.flush()
        session.expunge(move)
        return move


def _advance(hub: Hub, move: RegionMove, state: str, **fields: object) -> None:
    with transaction(hub.sessions) as session:
        row = session.get(RegionMove, move.id)
        if row is None or row.state != move.state:  # the repository was deleted meanwhile (drop)
            raise _Gone()
        row.state, row.updated_at, row.lease_until = state, utcnow(), utcnow() + LEASE
        for name, value in fields.items():
            setattr(row, name, value)
    move.state = state


def run_move(hub: Hub, move_id: int, *, takeover: bool = False,
             progress: Callable[[str], None] = lambda _m: None) -> str:
    """Run (or resume) a move to its end; returns its final state, or "busy" when another live worker
    holds it. `takeover`: take it from a live owner too (an operator's foreground run)."""
    move = _claim(hub, move_id, takeover)
    if move is None:
        with transaction(hub.sessions, readonly=True) as session:
            row = session.get(RegionMove, move_id)
            return "busy" if row is not None and row.state in ACTIVE else (row.state if row else "gone")
    try:
        while move.state in ACTIVE:
            progress(f"{move.state}: {move.source_key} -> {move.target_key}")
            try:
                {"copy": _copy, "verify": _verify, "switch": _switch, "clean": _clean,
                 "drop": _drop}[move.state](hub, move)
            except _Gone:
                with transaction(hub.sessions, readonly=True) as session:
                    row = session.get(RegionMove, move.id)
                    if row is None or row.state != "drop":
                        raise
                    move.state, move.leftovers = row.state, row.leftovers
    except Exception as exc:
        log.exception("region move %d failed in %s", move.id, move.state)
        with transaction(hub.sessions) as session:
            row = session.get(RegionMove, move.id)
            if row is not None:
                row.error = f"{type(exc).__name__}: {exc}"[:1000]
                row.lease_until, row.owner = None, None
                # Nothing switched: the source is intact (unless the repository was deleted: drop).
                if move.state in ("copy", "verify") and row.state == move.state:
                    row.state = "failed"
        raise
    progress(move.state)
    return move.state


def sweep(hub: Hub) -> list[int]:
    """Moves whose worker died (lease expired, or its process is gone on this host): handed out again."""
    now = utcnow()
    with transaction(hub.sessions, readonly=True) as session:
        rows = session.execute(select(RegionMove.id, RegionMove.owner, RegionMove.lease_until)
                               .where(RegionMove.state.in_(ACTIVE))).all()
    stale = [i for i, owner, until in rows if until is None or until < now or _owner_dead(owner)]
    for move_id in stale:
        enqueue(hub, move_id)
    return stale


# ---- the steps --------------------------------------------------------------------------------

def _linked(hub: Hub, repo_id: int) -> tuple[list[str], list[str]]:
    with transaction(hub.sessions, readonly=True) as session:
        oids = list(session.scalars(select(RepoLfsObject.oid).where(RepoLfsObject.repo_id == repo_id)
                                    .order_by(RepoLfsObject.oid)))
        xorbs = list(session.scalars(select(RepoXetXorb.xorb_hash).where(RepoXetXorb.repo_id == repo_id)
                                     .order_by(RepoXetXorb.xorb_hash)))
    return oids, xorbs


def _linked_shards(hub: Hub, repo_id: int) -> list[str]:
    with transaction(hub.sessions, readonly=True) as session:
        return list(session.scalars(select(RepoXetShard.shard_hash).where(RepoXetShard.repo_id == repo_id)
                                    .order_by(RepoXetShard.shard_hash)))


def _read_shard(store: BlobStore, key: str) -> bytes:
    """A stored shard's bytes, verified: they hash to its key and parse as a shard."""
    with store.open(key) as fh:
        data = fh.read()
    if hashlib.sha256(data).hexdigest() != key:
        raise BlobMismatch(f"shard {key} hashes to {hashlib.sha256(data).hexdigest()}")
    parse_shard(data, max_bytes=max(len(data), 1))
    return data


def _copy_shard(hub: Hub, source: str, target: str, key: str) -> bool:
    src, dst = xorb_store(hub, source).shards, xorb_store(hub, target).shards
    if dst.exists(key) or not src.exists(key):
        return False
    dst.put_verified(key, _read_shard(src, key))
    return True


def _copy_blob(source: BlobStore, target: BlobStore, oid: str) -> bool:
    """Copy one LFS object, verified against its sha256 on the way in; False when the source has none
    (stored only as Xet chunks, copied with the xorbs)."""
    if target.exists(oid):
        return False
    size = source.size(oid)
    if size is None:
        return False
    staged = target.stage()
    try:
        with source.open(oid) as fh:
            for block in iter(lambda: fh.read(BLOCK), b""):
                staged.write(block)
    except BaseException:
        staged.abort()
        raise
    staged.commit(oid, size)
    return True


def _copy_xorb(hub: Hub, source: str, target: str, key: str) -> bool:
    src, dst = xorb_store(hub, source), xorb_store(hub, target)
    if dst.has_xorb(key) or not src.has_xorb(key):
        return False
    size = src.xorbs.size(key) or 0
    data = src.read_xorb(key, 0, size)
    parse_xorb(data, hex_to_hash(key))  # every chunk decoded and the xorb hash recomputed
    dst.put_xorb(key, data)
    return True


def _git_sync(source: Path, target: Path) -> None:
    """Copy a bare repository (or bring a copy up to date): objects first, then refs, so every ref in the
    copy names objects already there. Whole files only: new git files are written once, then renamed."""
    target.mkdir(parents=True, exist_ok=True)
    for leftover in target.rglob("*.move-tmp"):  # a copy killed half way
        leftover.unlink()
    entries = sorted(source.rglob("*"), key=lambda p: (not str(p.relative_to(source)).startswith("objects"), str(p)))
    for src in entries:
        rel = src.relative_to(source)
        if rel.name in ("bastion.lock", MOVED_MARKER) or src.is_dir() \
                or any(p.startswith(("incoming-", "tmp_objdir")) or p.endswith(".lock") for p in rel.parts):
            continue
        dst = target / rel
        if dst.exists() and rel.parts[0] == "objects" and rel.parts[1:2] != ("info",) \
                and dst.stat().st_size == src.stat().st_size:
            continue  # an object file is immutable once written
        dst.parent.mkdir(parents=True, exist_ok=True)
        tmp = dst.with_name(dst.name + ".move-tmp")
        shutil.copy2(src, tmp)
        os.replace(tmp, dst)
    # Refs deleted in the source since an earlier pass are deleted in the copy too (objects are kept:
    # unreachable ones are harmless, and git's own gc drops them).
    for dst in sorted(target.rglob("*"), reverse=True):
        rel = dst.relative_to(target)
        if rel.parts[0] in ("refs", "logs", "packed-refs") and dst.is_file() and not (source / rel).exists():
            dst.unlink()


def _copy_objects(hub: Hub, move: RegionMove) -> tuple[int, int]:
    source, target = region_of_key(move.source_key), region_of_key(move.target_key)
    oids, xorbs = _linked(hub, move.repo_id)
    src_blobs, dst_blobs = hub.blobs_in(source), hub.blobs_in(target)
    copied = sum(_copy_blob(src_blobs, dst_blobs, oid) for oid in oids)
    copied_x = sum(_copy_xorb(hub, source, target, key) for key in xorbs)
    for key in _linked_shards(hub, move.repo_id):
        _copy_shard(hub, source, target, key)
    # The Xet files' segment records of the source region (small; they name the xorbs just copied).
    src_x, dst_x = xorb_store(hub, source), xorb_store(hub, target)
    for file_hex in _xet_files(hub, oids):
        packed = src_x.file_segments(file_hex)
        if packed is not None and dst_x.file_segments(file_hex) is None:
            dst_x.put_file_segments(file_hex, packed)
    return copied, copied_x


def _xet_files(hub: Hub, oids: list[str]) -> list[str]:
    with transaction(hub.sessions, readonly=True) as session:
        out: list[str] = []
        for i in range(0, len(oids), 500):
            out += session.scalars(select(XetFile.file_hash).where(XetFile.sha256.in_(oids[i:i + 500])))
    return sorted(set(out))


def _copy(hub: Hub, move: RegionMove) -> None:
    src, dst = hub.git_path(move.source_key), hub.git_path(move.target_key)
    if not dst.exists():
        incoming = dst.with_name(dst.name + ".incoming")
        _git_sync(src, incoming)
        _fault("copy")
        os.replace(incoming, dst)
    else:
        _git_sync(src, dst)
    copied, copied_x = _copy_objects(hub, move)
    _advance(hub, move, "verify", copied_objects=copied, copied_xorbs=copied_x)


def _verify_objects(hub: Hub, move: RegionMove) -> None:
    target = region_of_key(move.target_key)
    oids, xorbs = _linked(hub, move.repo_id)
    blobs, store = hub.blobs_in(target), xorb_store(hub, target)
    source_blobs = hub.blobs_in(region_of_key(move.source_key))
    for oid in oids:
        if not blobs.exists(oid):
            if source_blobs.exists(oid):
                raise BlobMismatch(f"LFS object {oid} was not copied to {target}")
            continue  # stored as Xet chunks only
        h = hashlib.sha256()
        with blobs.open(oid) as fh:
            for block in iter(lambda: fh.read(BLOCK), b""):
                h.update(block)
        if h.hexdigest() != oid:
            blobs.delete(oid)  # copied again on the retry
            raise BlobMismatch(f"LFS object {oid} in {target} hashes to {h.hexdigest()}")
    for key in xorbs:
        if not store.has_xorb(key):
            if xorb_store(hub, region_of_key(move.source_key)).has_xorb(key):
                raise BlobMismatch(f"xorb {key} was not copied to {target}")
            continue
        data = store.read_xorb(key, 0, store.xorbs.size(key) or 0)
        parse_xorb(data, hex_to_hash(key))
    source_shards = xorb_store(hub, region_of_key(move.source_key)).shards
    for key in _linked_shards(hub, move.repo_id):
        if not store.shards.exists(key):
            if source_shards.exists(key):
                raise BlobMismatch(f"shard {key} was not copied to {target}")
            continue
        try:
            _read_shard(store.shards, key)
        except (BlobMismatch, ShardFormatError):
            store.shards.delete(key)  # copied again on the retry
            raise


def _git_fsck(path: Path) -> None:
    proc = subprocess.run(["git", "--git-dir", str(path), "fsck", "--no-dangling", "--no-progress"],
                          capture_output=True, text=True, timeout=3600)
    if proc.returncode != 0:
        raise RuntimeError(f"git fsck of the copy failed: {proc.stderr.strip()[:500]}")


def _verify(hub: Hub, move: RegionMove) -> None:
    _git_fsck(hub.git_path(move.target_key))
    _fault("verify")
    _verify_objects(hub, move)
    _advance(hub, move, "switch")


def _switch(hub: Hub, move: RegionMove) -> None:
    src, dst = hub.git_path(move.source_key), hub.git_path(move.target_key)
    with transaction(hub.sessions, readonly=True) as session:
        key = session.scalar(select(Repo.storage_key).where(Repo.id == move.repo_id))
    if key == move.target_key:  # switched before a crash: the marker may be missing
        if src.exists():
            (src / MOVED_MARKER).write_text(move.target_key)
        _advance(hub, move, "clean")
        return
    git = hub.git(move.source_key)
    with git.write_lock():  # no API commit or push moves a ref while we switch
        _git_sync(src, dst)  # what was pushed since the copy
        _git_fsck(dst)
        _copy_objects(hub, move)  # what was uploaded since the copy
        _verify_objects(hub, move)
        _fault("switch")
        with transaction(hub.sessions) as session:
            repo = session.scalar(select(Repo).where(Repo.id == move.repo_id).with_for_update())
            if repo is None:
                raise _Gone()
            repo.storage_key = move.target_key
            # Scan jobs queued for git blobs of the repository read them from its new location.
            session.execute(update(ScanJob).where(ScanJob.storage_key == move.source_key)
                            .values(storage_key=move.target_key))
            audit.record(session, AuditAction.REPO_UPDATE_REGION, target=("repo", f"{repo.type}/{repo.repo_id}"),
                         namespace=repo.namespace,
                         details={"from": region_of_key(move.source_key), "to": region_of_key(move.target_key),
                                  "move": move.id, "requestedBy": move.requested_by})
            row = session.get(RegionMove, move.id)
            assert row is not None
            row.state, row.updated_at = "clean", utcnow()
        # Writers that waited for the lock see this and retry on the new location.
        (src / MOVED_MARKER).write_text(move.target_key)
    move.state = "clean"


def _clean(hub: Hub, move: RegionMove) -> None:
    grace = float(os.environ.get("BASTION_REGION_MOVE_GRACE_SECONDS", "60"))
    with transaction(hub.sessions, readonly=True) as session:
        row = session.get(RegionMove, move.id)
        switched_at = row.updated_at if row is not None else utcnow()
    wait = grace - (utcnow() - switched_at).total_seconds()
    if wait > 0:
        time.sleep(wait)  # reads that started on the source before the switch finish
    source = region_of_key(move.source_key)
    _copy_objects(hub, move)  # uploads that raced the switch into the source
    _verify_objects(hub, move)
    _fault("clean")
    oids, xorbs = _linked(hub, move.repo_id)
    shards = _linked_shards(hub, move.repo_id)
    with transaction(hub.sessions, readonly=True) as session:
        keys = dict(session.execute(select(Repo.id, Repo.storage_key)).tuples().all())
        holders = {oid: {region_of_key(keys[r]) for (r,) in session.execute(
            select(RepoLfsObject.repo_id).where(RepoLfsObject.oid == oid)) if r in keys} for oid in oids}
        xholders = {x: regions_needing_xorb(session, x) for x in xorbs}
        sholders = {x: regions_needing_shard(session, x) for x in shards}
    src_blobs, src_xet = hub.blobs_in(source), xorb_store(hub, source)
    for oid in oids:
        if source not in holders.get(oid, set()):
            trash = src_blobs.trash(oid)
            if trash is not None:
                trash.discard()
    for key in xorbs:
        if source not in xholders.get(key, set()):
            trash = src_xet.trash_xorb(key)
            if trash is not None:
                trash.discard()
    for key in shards:
        if source not in sholders.get(key, set()):
            trash = src_xet.shards.trash(key)
            if trash is not None:
                trash.discard()
    if src_xet.files is not None:  # the segment records of Xet files no repository of the source holds
        unheld = [oid for oid in oids if source not in holders.get(oid, set())]
        for file_hex in _xet_files(hub, unheld):
            src_xet.files.delete(file_hex)
    src = hub.git_path(move.source_key)
    if src.exists():
        doomed = src.with_name(src.name + ".moved")
        os.replace(src, doomed)
        shutil.rmtree(doomed, ignore_errors=True)
    _advance(hub, move, "done", owner=None, lease_until=None)


# ---- the repository deleted during its move -------------------------------------------------

def _on_repo_delete(hub: Hub, session: Session, repo: Repo) -> None:
    """In the deleting transaction: a move under way keeps what it must remove, and turns to `drop`."""
    move = active_move(session, repo.id)
    if move is None or move.state == "drop":
        return
    other = move.target_key if repo.storage_key == move.source_key else move.source_key
    oids = list(session.scalars(select(RepoLfsObject.oid).where(RepoLfsObject.repo_id == repo.id)))
    xorbs = list(session.scalars(select(RepoXetXorb.xorb_hash).where(RepoXetXorb.repo_id == repo.id)))
    shards = list(session.scalars(select(RepoXetShard.shard_hash).where(RepoXetShard.repo_id == repo.id)))
    move.leftovers = json.dumps({"key": other, "oids": sorted(oids), "xorbs": sorted(xorbs),
                                 "shards": sorted(shards)})
    move.state, move.updated_at = "drop", utcnow()
    session.flush()
    log.info("region move %d: repository %s deleted during the move; its copy %s goes", move.id, repo.repo_id,
             other)


def _discard(objects: BlobStore, key: str, needed: Callable[[], bool]) -> None:
    """Move a copy aside, then delete it unless it is needed (checked again after the move)."""
    trash = objects.trash(key)
    if trash is None:
        return
    if needed():
        objects.restore(key, trash)
    else:
        trash.discard()


def _drop(hub: Hub, move: RegionMove) -> None:
    """Remove the copy a deleted repository did not live in: its git folder (whole or half copied) and
    that region's copies of what it linked that no other repository of the region needs."""
    left = json.loads(move.leftovers or "{}")
    key = str(left.get("key") or move.target_key)
    region = region_of_key(key)
    path = hub.git_path(key)
    for folder in (path.with_name(path.name + ".incoming"), path):
        if folder.exists():
            doomed = folder.with_name(folder.name + ".dropped")
            os.replace(folder, doomed)
            shutil.rmtree(doomed, ignore_errors=True)
    _fault("drop")
    blobs, store = hub.blobs_in(region), xorb_store(hub, region)

    def lfs_needed(oid: str) -> bool:
        with transaction(hub.sessions, readonly=True) as session:
            keys = session.scalars(select(Repo.storage_key).join(RepoLfsObject, RepoLfsObject.repo_id == Repo.id)
                                   .where(RepoLfsObject.oid == oid))
            return any(region_of_key(k) == region for k in keys)

    def needed_by(check: Callable[[Session, str], set[str]], name: str) -> bool:
        with transaction(hub.sessions, readonly=True) as session:
            return region in check(session, name)

    oids = [str(o) for o in left.get("oids", [])]
    for oid in oids:
        _discard(blobs, oid, lambda oid=oid: lfs_needed(oid))  # type: ignore[misc]
    for x in left.get("xorbs", []):
        _discard(store.xorbs, str(x), lambda x=x: needed_by(regions_needing_xorb, str(x)))  # type: ignore[misc]
    for x in left.get("shards", []):
        _discard(store.shards, str(x), lambda x=x: needed_by(regions_needing_shard, str(x)))  # type: ignore[misc]
    if store.files is not None:
        for file_hex in _xet_files(hub, [o for o in oids if not lfs_needed(o)]):
            store.files.delete(file_hex)
    _advance(hub, move, "gone", owner=None, lease_until=None)


if _on_repo_delete not in repos_service.delete_hooks:
    repos_service.delete_hooks.append(_on_repo_delete)
