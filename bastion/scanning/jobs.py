"""A scan job's life, as one pipeline: claim, scan, record. Also the sweeper and scanner versions.

    run_job: _claim   one short writing transaction: the lease, and every lookup the scan needs (the
                      repository the job scans for, where an LFS object's bytes are stored)
             scan     no transaction held (the secrets scanner's check of Bastion tokens reads in a
                      read-only one of its own)
             _record  one writing transaction: the verdict and all its follow-ups -- the result, the
                      audit event, notices and mail, revocation of leaked tokens, the job's completion
                      (or its retry, its wait for a scanner, its removal when the content is gone)

A worker that dies mid-scan leaves a lease that expires, and the sweeper hands the job to another
worker; a worker whose lease was taken over records nothing. Results are unique per (blob, scanner,
version), so a job that ran twice cannot record two different verdicts for the same scan.
"""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from sqlalchemy import exists, select, update
from sqlalchemy.orm import Session

from bastion import audit
from bastion.audit.actions import AuditAction
from bastion.db import transaction, utcnow
from bastion.hub import Hub
from bastion.lfs.content import ANY_HOLDER, StoredObject
from bastion.repos.models import Repo
from bastion.scanning import leaks
from bastion.scanning.adapters import (
    ISSUE_VERDICTS,
    BlobRef,
    ContentGone,
    Scanner,
    locate_content,
    run_scanner,
    scanners_of,
)
from bastion.scanning.models import ScanJob, ScanResultRow
from bastion.scanning.notices import notify_owner
from bastion.scanning.results import ScanResult, Verdict
from bastion.scanning.verdicts import store_result

log = logging.getLogger("bastion.scanning")


@dataclass
class Claimed:
    """A job this worker holds the lease of, with what its scan needs (read in the claim)."""

    job: ScanJob  # detached: a snapshot as claimed
    token: str
    label: str  # the repository scanned for, as "type/name" ("?": deleted since), for revocation notes
    found: Path | StoredObject | None  # where an LFS object's bytes are; None for a git blob
    failure: str | None = None  # the lookups failed: the job is retried


def run_job(hub: Hub, job_id: int, scanners: dict[str, Scanner] | None = None) -> str:
    """Run one job to completion (or to a retry); returns what happened, for logs and tests."""
    scanners = scanners or scanners_of(hub)
    claimed = _claim(hub, job_id, scanners)
    if isinstance(claimed, str):
        return claimed  # skipped, or gone
    job = claimed.job
    scanner = scanners.get(job.scanner)
    result, failure, gone = None, claimed.failure, False
    if failure is None:
        try:
            if scanner is None:
                result = ScanResult(job.scanner, job.scanner_version, Verdict.ERROR, "scanner no longer enabled")
            else:
                ref = BlobRef(job.blob_key, job.source_kind, job.storage_key, job.size)
                result = run_scanner(hub, scanner, ref, claimed.found, job.path)
        except ContentGone:
            gone = True
        except Exception as exc:  # a scanner bug must become a retry or an `error` verdict, never a dead worker
            log.exception("scan job %s failed", job_id)
            failure = f"{type(exc).__name__}: {exc}"
    return _record(hub, claimed, result, failure, gone)


def _claim(hub: Hub, job_id: int, scanners: dict[str, Scanner]) -> Claimed | str:
    with transaction(hub.sessions) as session:
        job = session.scalar(select(ScanJob).where(ScanJob.id == job_id).with_for_update())
        now = utcnow()
        if job is None or job.state == "done":
            return "skipped"
        if job.state == "running" and job.lease_until is not None and job.lease_until > now:
            return "skipped"  # another worker holds a live lease
        token = secrets.token_hex(8)
        job.state, job.lease_token, job.attempts = "running", token, job.attempts + 1
        job.lease_until = now + timedelta(seconds=hub.settings.scan_lease_seconds)
        job.updated_at = now
        # The repository the job scans for: a label for revocation notes, and the reader whose link to
        # an LFS object the scan needs; one deleted since the job was queued leaves ANY_HOLDER.
        repo = session.get(Repo, job.repo_id) if job.repo_id is not None else None
        label, reader = (f"{repo.type}/{repo.repo_id}", repo.id) if repo is not None else ("?", ANY_HOLDER)
        found, failure = None, None
        if job.scanner in scanners:
            try:
                found = locate_content(hub, BlobRef(job.blob_key, job.source_kind, job.storage_key, job.size),
                                       reader, session)
            except ContentGone:
                # Gone with its repository (or collected): drop the job, so the same bytes committed
                # elsewhere later get a fresh one (a finished job without a verdict would block that).
                session.delete(job)
                return "gone"
            except Exception as exc:
                log.exception("scan job %s: locating its content failed", job_id)
                failure = f"{type(exc).__name__}: {exc}"
        session.flush()
        session.expunge(job)
        return Claimed(job, token, label, found, failure)


def _record(hub: Hub, claimed: Claimed, result: ScanResult | None, failure: str | None, gone: bool) -> str:
    """What the scan found, and all that follows from it, in one transaction (see the module's docstring)."""
    job = claimed.job
    requeue: int | None = None
    with transaction(hub.sessions) as session:
        current = session.scalar(select(ScanJob).where(ScanJob.id == job.id).with_for_update())
        if current is None or current.lease_token != claimed.token:
            return "gone" if gone else "superseded"  # our lease expired and another worker took over
        if result is not None and result.leaked:
            leaks.revoke_leaked_in(session, hub, result.leaked, source="secret scanning",
                                   where=f"{claimed.label}/{job.path}")
        if gone:
            session.delete(current)
            return "gone"
        if result is not None and result.verdict is Verdict.UNAVAILABLE:
            outcome, requeue = _wait_for_scanner(session, current, result)
        elif result is not None and not (result.verdict is Verdict.ERROR and result.retryable
                                         and current.attempts < hub.settings.scan_max_attempts):
            return _finish(hub, session, current, result)
        else:
            outcome, requeue = _retry_or_fail(hub, session, current, failure or (result.summary if result else ""))
    if requeue is not None and hub.scan_queue is not None:
        hub.scan_queue.enqueue(job.id, delay=requeue)
    return outcome


def _finish(hub: Hub, session: Session, job: ScanJob, result: ScanResult) -> str:
    store_result(session, job.blob_key, job.scanner, result)
    job.state, job.lease_until, job.updated_at = "done", None, utcnow()
    if result.verdict in ISSUE_VERDICTS and job.repo_id is not None:
        repo = session.get(Repo, job.repo_id)
        if repo is not None:
            audit.record(session, AuditAction.SCAN_FINDING, target=("repo", f"{repo.type}/{repo.repo_id}"),
                         namespace=repo.namespace,
                         details={"path": job.path, "blob": job.blob_key, "scanner": job.scanner,
                                  "verdict": str(result.verdict), "summary": result.summary})
            notify_owner(hub, session, repo, job.path, job.blob_key, job.scanner, result)
    return str(result.verdict)


def _wait_for_scanner(session: Session, job: ScanJob, result: ScanResult) -> tuple[str, int]:
    """The scanner cannot run (clamd down): show that, and keep the job until it can."""
    delay = min(600, 10 * 2 ** min(6, job.attempts))
    store_result(session, job.blob_key, job.scanner, result)
    job.state, job.last_error, job.updated_at = "queued", result.summary[:2000], utcnow()
    job.lease_until = utcnow() + timedelta(seconds=delay)
    return "unavailable", delay


def _retry_or_fail(hub: Hub, session: Session, job: ScanJob, error: str) -> tuple[str, int | None]:
    backoff = min(300, 5 * 2 ** max(0, job.attempts - 1))
    job.last_error = error[:2000]
    job.updated_at = utcnow()
    if job.attempts >= hub.settings.scan_max_attempts:
        store_result(session, job.blob_key, job.scanner,
                     ScanResult(job.scanner, job.scanner_version, Verdict.ERROR, error[:500]))
        job.state, job.lease_until = "done", None
        return "error", None
    job.state = "queued"
    job.lease_until = utcnow() + timedelta(seconds=backoff)
    return "retry", backoff


def wake_waiting(hub: Hub, names: list[str]) -> int:
    """Scanners in `names` were unavailable and now answer: the jobs that wait for them (an `unavailable`
    verdict, kept queued with a back-off of up to ten minutes) are due now; the next sweep hands them out."""
    if not names:
        return 0
    now = utcnow()
    unavailable = exists().where(ScanResultRow.blob_key == ScanJob.blob_key, ScanResultRow.scanner == ScanJob.scanner,
                                 ScanResultRow.verdict == str(Verdict.UNAVAILABLE))
    with transaction(hub.sessions) as session:
        woken = session.execute(update(ScanJob).where(
            ScanJob.state == "queued", ScanJob.scanner.in_(names), ScanJob.lease_until > now, unavailable,
        ).values(lease_until=now).execution_options(synchronize_session=False))
    return woken.rowcount or 0


def sweep(hub: Hub, limit: int = 200) -> list[int]:
    """Hand jobs whose lease expired (lost message, dead worker) back to the queue."""
    now = utcnow()
    with transaction(hub.sessions) as session:
        jobs = list(session.scalars(select(ScanJob).where(ScanJob.state.in_(("queued", "running")),
                                                          ScanJob.lease_until < now).limit(limit)))
        ids = []
        for job in jobs:
            if job.state == "running":
                job.state = "queued"
            job.lease_until = now + timedelta(seconds=hub.settings.scan_lease_seconds)
            ids.append(job.id)
    if hub.scan_queue is not None:
        for job_id in ids:
            hub.scan_queue.enqueue(job_id)
    return ids


def scanner_versions(hub: Hub) -> dict[str, str]:
    """The enabled scanners' versions as of now (clamd is asked again; the answer refreshes its cache)."""
    out: dict[str, str] = {}
    for name, scanner in scanners_of(hub).items():
        refresh = getattr(scanner, "refresh_version", None)
        out[name] = refresh() if callable(refresh) else scanner.version()
    return out
