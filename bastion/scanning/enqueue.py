"""Queueing scans: the post-commit hook, jobs for new blobs (in batches), rescans, and dispatch.

Jobs are unique per (blob, scanner, version): content already judged by a scanner version is not
scanned again, and concurrent commits cannot queue the same scan twice.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import timedelta

import pygit2
from sqlalchemy import and_, bindparam, insert, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, aliased

from bastion import audit
from bastion.audit.actions import AuditAction
from bastion.db import after_commit, transaction, utcnow
from bastion.hub import Hub
from bastion.repos import admission
from bastion.repos.commit import CommitResult, post_commit_hooks
from bastion.repos.models import Repo
from bastion.repos.service import secret_push_protection_mode
from bastion.scanning import generation
from bastion.scanning.adapters import BlobRef, Scanner, blob_ref, scanners_of
from bastion.scanning.models import ScanJob, ScanResultRow
from bastion.scanning.notices import notify_owner
from bastion.scanning.policy import blocks_unsafe, org_of, scan_inline_or_reject
from bastion.scanning.protection import check_new_secrets
from bastion.scanning.results import ScanResult, Verdict

ENQUEUE_BATCH = 2000
_INSERT_JOBS = insert(ScanJob.__table__).returning(ScanJob.__table__.c.id, sort_by_parameter_order=True)
# Which of a batch of blobs a scanner version has a job or a verdict for (compiled once; keys expand).
_KNOWN_JOBS = select(ScanJob.blob_key).where(
    ScanJob.blob_key.in_(bindparam("keys", expanding=True)), ScanJob.scanner == bindparam("scanner"),
    ScanJob.scanner_version == bindparam("version"))
_KNOWN_RESULTS = select(ScanResultRow.blob_key).where(
    ScanResultRow.blob_key.in_(bindparam("keys", expanding=True)), ScanResultRow.scanner == bindparam("scanner"),
    ScanResultRow.scanner_version == bindparam("version"))


def enqueue_blobs(hub: Hub, session: Session, blobs: Iterable[tuple[BlobRef, str]], repo_id: int | None,
                  scanners: dict[str, Scanner]) -> list[int]:
    """`enqueue_blob` for many (blob, path) pairs, with three statements per ENQUEUE_BATCH blobs and scanner
    (a push of 100,000 files must not cost 300,000 round trips): jobs and verdicts that exist are looked
    up per batch, the missing jobs inserted together. A batch that meets a concurrent commit's insert (the
    unique key) falls back to `enqueue_blob` per blob. A blob at several paths is queued once, for the first."""
    unique = list({ref.key: (ref, path) for ref, path in reversed(list(blobs))}.values())[::-1]
    new: list[int] = []
    conn = session.connection()
    for i in range(0, len(unique), ENQUEUE_BATCH):
        chunk = unique[i:i + ENQUEUE_BATCH]
        keys = [ref.key for ref, _ in chunk]
        for name, scanner in scanners.items():
            version = scanner.version()
            params = {"keys": keys, "scanner": name, "version": version}
            known = set(conn.scalars(_KNOWN_JOBS, params)) | set(conn.scalars(_KNOWN_RESULTS, params))
            lease = utcnow() + timedelta(seconds=hub.settings.scan_lease_seconds)
            rows = [{"blob_key": ref.key, "scanner": name, "scanner_version": version, "source_kind": ref.kind,
                     "storage_key": ref.storage_key, "size": ref.size, "repo_id": repo_id, "path": path[:1024],
                     "state": "queued", "lease_until": lease}
                    for ref, path in chunk if ref.key not in known]
            if not rows:
                continue
            try:
                with session.begin_nested():
                    generation.changed(session)  # a Core statement: the ORM's events do not see it
                    new += conn.scalars(_INSERT_JOBS, rows).all()
            except IntegrityError:  # a concurrent commit queued some of them: one at a time
                for ref, path in chunk:
                    if ref.key not in known:
                        new += enqueue_blob(hub, session, ref, repo_id, path, {name: scanner})
    return new


def enqueue_blob(hub: Hub, session: Session, ref: BlobRef, repo_id: int | None, path: str,
                 scanners: dict[str, Scanner], force: bool = False) -> list[int]:
    """Create (or reuse) one job per scanner for the blob; returns ids of jobs that need running."""
    new: list[int] = []
    lease = utcnow() + timedelta(seconds=hub.settings.scan_lease_seconds)
    for name, scanner in scanners.items():
        version = scanner.version()
        job = session.scalar(select(ScanJob).where(ScanJob.blob_key == ref.key, ScanJob.scanner == name,
                                                   ScanJob.scanner_version == version))
        if job is not None:
            if force and job.state == "done":
                job.state, job.attempts, job.lease_until, job.updated_at = "queued", 0, lease, utcnow()
                new.append(job.id)
            continue
        if not force and session.scalar(select(ScanResultRow.id).where(
                ScanResultRow.blob_key == ref.key, ScanResultRow.scanner == name,
                ScanResultRow.scanner_version == version)) is not None:
            continue  # identical content already scanned by this scanner version: reuse the verdict
        try:
            with session.begin_nested():
                job = ScanJob(blob_key=ref.key, scanner=name, scanner_version=version, source_kind=ref.kind,
                              storage_key=ref.storage_key, size=ref.size, repo_id=repo_id, path=path[:1024],
                              state="queued", lease_until=lease)
                session.add(job)
        except IntegrityError:
            continue  # a concurrent commit queued the same scan
        new.append(job.id)
    return new


def dispatch_after_commit(hub: Hub, session: Session, job_ids: list[int]) -> None:
    queue = hub.scan_queue
    if queue is None or not job_ids:
        return  # no queue attached (admin commands): the sweeper of any worker picks them up
    after_commit(session, lambda: queue.enqueue_many(job_ids))


def on_commit(hub: Hub, session: Session, repo: Repo, result: CommitResult) -> None:
    """Post-commit hook: queue a scan of every new or changed blob, or block the commit by policy."""
    scanners = scanners_of(hub)
    if not scanners:
        return
    job_ids: list[int] = []
    org = org_of(session, repo)
    # A push is judged in pre-receive (its objects quarantined) and applied in proc-receive: the
    # refusing checks run in the first phase, the scan enqueue in the second (repos.admission).
    judging, applying = admission.judging(), admission.applying()
    blocking = judging and blocks_unsafe(repo, org)
    secret_mode = secret_push_protection_mode(repo, org) if judging else None
    if secret_mode is not None:
        check_new_secrets(hub, session, repo, result, secret_mode)
    if not (blocking or applying):
        return
    git = hub.git(repo.storage_key)
    blobs = [(blob_ref(hub, repo.storage_key, git_oid, git), path) for path, git_oid in result.changed_blobs]
    if blocking:
        for ref, path in blobs:
            if ref.size <= hub.settings.scan_inline_max_bytes:
                scan_inline_or_reject(hub, session, repo, ref, path, scanners)
    if not applying:
        return
    if "secrets" in scanners:
        # Verdicts that exist already (scanned elsewhere, or inline just now) notify this repo's owners.
        _reuse_secret_verdicts(hub, session, repo, blobs, scanners["secrets"])
    job_ids += enqueue_blobs(hub, session, blobs, repo.id, scanners)
    dispatch_after_commit(hub, session, job_ids)


def _reuse_secret_verdicts(hub: Hub, session: Session, repo: Repo, blobs: list[tuple[BlobRef, str]],
                           scanner: Scanner) -> None:
    """Content already scanned elsewhere: this repo still gets its notices (and mail) for it. One query
    per ENQUEUE_BATCH blobs; each path of a blob gets its notice, in the commit's order."""
    keys = list(dict.fromkeys(ref.key for ref, _ in blobs))
    rows: dict[str, ScanResultRow] = {}
    for i in range(0, len(keys), ENQUEUE_BATCH):
        rows.update((row.blob_key, row) for row in session.scalars(select(ScanResultRow).where(
            ScanResultRow.blob_key.in_(keys[i:i + ENQUEUE_BATCH]), ScanResultRow.scanner == "secrets",
            ScanResultRow.scanner_version == scanner.version())))
    for ref, path in blobs:
        row = rows.get(ref.key)
        if row is not None and row.details.get("detail"):
            notify_owner(hub, session, repo, path, ref.key, "secrets",
                          ScanResult("secrets", row.scanner_version, Verdict(row.verdict), row.summary, row.details))


post_commit_hooks.append(on_commit)


def rescan_outdated(hub: Hub, limit: int = 10_000) -> int:
    """Queue scans for blobs whose newest verdict came from an older scanner or signature version, and
    for blobs other scanners scanned that an enabled scanner never did (it was enabled later).

    Safe to run from every worker at once: a blob that already has a job for the current version, or
    a pending job of any version (it will be scanned, and labelled, with the version current then), is
    not queued again, and jobs are unique per (blob, scanner, version), so concurrent callers cannot
    queue the same scan twice. Each call queues up to `limit` blobs per scanner; call again until it
    returns 0.
    """
    scanners = scanners_of(hub)
    count = 0
    with transaction(hub.sessions) as session:
        for name, scanner in scanners.items():
            version = scanner.version()
            if version == "unavailable":
                continue
            done = select(ScanResultRow.blob_key).where(ScanResultRow.scanner == name,
                                                        ScanResultRow.scanner_version == version)
            other = aliased(ScanJob)
            handled = select(other.blob_key).where(other.scanner == name, or_(
                other.scanner_version == version, other.state != "done"))
            ever = select(other.blob_key).where(other.scanner == name)
            stale = session.execute(select(ScanJob).where(ScanJob.blob_key.not_in(done), or_(
                and_(ScanJob.scanner == name, ScanJob.scanner_version != version, ScanJob.blob_key.not_in(handled)),
                # A scanner enabled after these blobs were scanned by the others (the format scanner on
                # an upgraded instance): without a job of its own, their status would stay unscanned.
                and_(ScanJob.scanner != name, ScanJob.blob_key.not_in(ever))))
                .order_by(ScanJob.id).limit(limit)).scalars()
            seen: set[str] = set()
            job_ids: list[int] = []
            for old in stale:
                if old.blob_key in seen:
                    continue
                seen.add(old.blob_key)
                ref = BlobRef(old.blob_key, old.source_kind, old.storage_key, old.size)
                job_ids += enqueue_blob(hub, session, ref, old.repo_id, old.path, {name: scanner})
            count += len(job_ids)
            dispatch_after_commit(hub, session, job_ids)
    return count


def rescan_repo(hub: Hub, session: Session, repo: Repo, revision: str = "main") -> int:
    """Admin: scan every file of `revision` again with the current scanners (history is kept)."""
    git = hub.git(repo.storage_key)
    commit = git.resolve(revision)
    scanners = scanners_of(hub)
    job_ids: list[int] = []
    for path, entry in git.walk_files(commit.tree):
        job_ids += enqueue_blob(hub, session, blob_ref(hub, repo.storage_key, str(entry.id)), repo.id, path,
                                scanners, force=True)
    audit.record(session, AuditAction.SCAN_RESCAN, target=("repo", f"{repo.type}/{repo.repo_id}"),
                 namespace=repo.namespace, details={"revision": revision, "jobs": len(job_ids)})
    dispatch_after_commit(hub, session, job_ids)
    return len(job_ids)


def scan_history(hub: Hub, session: Session, repo: Repo) -> int:
    """Secret-scan every blob reachable from any ref (imported repos, or on demand): added history."""
    scanners = {k: v for k, v in scanners_of(hub).items() if k == "secrets"}
    if not scanners:
        return 0
    git = hub.git(repo.storage_key)
    tips = [git.repo.references[name].peel(pygit2.Commit).id for name in git.repo.references
            if name.startswith(("refs/heads/", "refs/tags/", "refs/pr/"))]
    seen: set[str] = set()
    job_ids: list[int] = []
    walker = git.repo.walk(tips[0]) if tips else []
    for tip in tips[1:]:
        walker.push(tip)  # type: ignore[union-attr]
    seen_trees: set[str] = set()

    def new_blobs(tree: pygit2.Tree, base: str) -> Iterable[tuple[str, str]]:
        # A tree already walked holds no blob we have not seen: history shares most of its trees.
        if str(tree.id) in seen_trees:
            return
        seen_trees.add(str(tree.id))
        for entry in tree:
            path = f"{base}{entry.name}"
            if entry.type_str == "tree":
                yield from new_blobs(git.repo[entry.id], path + "/")
            elif entry.type_str == "blob" and str(entry.id) not in seen:
                seen.add(str(entry.id))
                yield path, str(entry.id)

    for commit in walker:
        for path, oid in new_blobs(commit.tree, ""):
            job_ids += enqueue_blob(hub, session, blob_ref(hub, repo.storage_key, oid), repo.id, path, scanners)
    audit.record(session, AuditAction.SCAN_RESCAN, target=("repo", f"{repo.type}/{repo.repo_id}"),
                 namespace=repo.namespace, details={"history": True, "blobs": len(seen), "jobs": len(job_ids)})
    dispatch_after_commit(hub, session, job_ids)
    return len(job_ids)
