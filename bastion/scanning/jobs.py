"""Running a scan job: claim it under a lease, scan, record the verdict; retries, waits and the sweeper.

A worker that dies mid-scan leaves a lease that expires, and the sweeper hands the job to another
worker. Results are unique per (blob, scanner, version), so a job that ran twice cannot record two
different verdicts for the same scan.
"""

from __future__ import annotations

import logging
import secrets
from datetime import timedelta

from sqlalchemy import select

from bastion import audit
from bastion.audit.actions import AuditAction
from bastion.db import transaction, utcnow
from bastion.hub import Hub
from bastion.repos.models import Repo
from bastion.scanning.adapters import (
    ISSUE_VERDICTS,
    BlobRef,
    ContentGone,
    Scanner,
    run_scanner,
    scan_location,
    scanners_of,
)
from bastion.scanning.models import ScanJob
from bastion.scanning.notices import notify_owner
from bastion.scanning.results import ScanResult, Verdict
from bastion.scanning.verdicts import store_result
from bastion.xet.content import ANY_HOLDER

log = logging.getLogger("bastion.scanning")

def _claim(hub: Hub, job_id: int) -> tuple[ScanJob, str] | None:
    with transaction(hub.sessions) as session:
        job = session.scalar(select(ScanJob).where(ScanJob.id == job_id).with_for_update())
        now = utcnow()
        if job is None or job.state == "done":
            return None
        if job.state == "running" and job.lease_until is not None and job.lease_until > now:
            return None  # another worker holds a live lease
        token = secrets.token_hex(8)
        job.state, job.lease_token, job.attempts = "running", token, job.attempts + 1
        job.lease_until = now + timedelta(seconds=hub.settings.scan_lease_seconds)
        job.updated_at = now
        session.flush()
        session.expunge(job)
        return job, token


def run_job(hub: Hub, job_id: int, scanners: dict[str, Scanner] | None = None) -> str:
    """Run one job to completion (or to a retry); returns what happened, for logs and tests."""
    claimed = _claim(hub, job_id)
    if claimed is None:
        return "skipped"
    job, token = claimed
    scanners = scanners or scanners_of(hub)
    scanner = scanners.get(job.scanner)
    ref = BlobRef(job.blob_key, job.source_kind, job.storage_key, job.size)
    try:
        if scanner is None:
            result = ScanResult(job.scanner, job.scanner_version, Verdict.ERROR, "scanner no longer enabled")
        else:
            label, reader = _job_repo(hub, job.repo_id)
            token_ctx = scan_location.set({"repo": label, "path": job.path})
            try:
                result = run_scanner(hub, scanner, ref, reader, job.path)
            finally:
                scan_location.reset(token_ctx)
    except ContentGone:
        return _forget_job(hub, job.id, token)
    except Exception as exc:  # a scanner bug must become a retry or an `error` verdict, never a dead worker
        log.exception("scan job %s failed", job_id)
        return _retry_or_fail(hub, job, token, f"{type(exc).__name__}: {exc}")
    if result.verdict is Verdict.UNAVAILABLE:
        return _wait_for_scanner(hub, job, token, result)
    if result.verdict is Verdict.ERROR and result.retryable and job.attempts < hub.settings.scan_max_attempts:
        return _retry_or_fail(hub, job, token, result.summary)
    with transaction(hub.sessions) as session:
        current = session.scalar(select(ScanJob).where(ScanJob.id == job_id).with_for_update())
        if current is None or current.lease_token != token:
            return "superseded"  # our lease expired and another worker took over
        store_result(session, job.blob_key, job.scanner, result)
        current.state, current.lease_until, current.updated_at = "done", None, utcnow()
        if result.verdict in ISSUE_VERDICTS and job.repo_id is not None:
            repo = session.get(Repo, job.repo_id)
            if repo is not None:
                audit.record(session, AuditAction.SCAN_FINDING, target=("repo", f"{repo.type}/{repo.repo_id}"),
                             namespace=repo.namespace,
                             details={"path": job.path, "blob": job.blob_key, "scanner": job.scanner,
                                      "verdict": str(result.verdict), "summary": result.summary})
                notify_owner(hub, session, repo, job.path, job.blob_key, job.scanner, result)
    return str(result.verdict)


def _job_repo(hub: Hub, repo_id: int | None) -> tuple[str, int | None]:
    """The repository a job scans for, as a label for revocation notes and as the reader whose link to
    an LFS object the scan needs; a repository deleted since the job was queued leaves ANY_HOLDER."""
    if repo_id is None:
        return "?", ANY_HOLDER
    with transaction(hub.sessions, readonly=True) as session:
        repo = session.get(Repo, repo_id)
        return (f"{repo.type}/{repo.repo_id}", repo_id) if repo is not None else ("?", ANY_HOLDER)


def _forget_job(hub: Hub, job_id: int, token: str) -> str:
    """The content is gone with its repository: drop the job, so the same bytes committed
    elsewhere later get a fresh one (a finished job without a verdict would block that)."""
    with transaction(hub.sessions) as session:
        current = session.scalar(select(ScanJob).where(ScanJob.id == job_id).with_for_update())
        if current is not None and current.lease_token == token:
            session.delete(current)
    return "gone"


def _wait_for_scanner(hub: Hub, job: ScanJob, token: str, result: ScanResult) -> str:
    """The scanner cannot run (clamd down): show that, and keep the job until it can."""
    delay = min(600, 10 * 2 ** min(6, job.attempts))
    with transaction(hub.sessions) as session:
        current = session.scalar(select(ScanJob).where(ScanJob.id == job.id).with_for_update())
        if current is None or current.lease_token != token:
            return "superseded"
        store_result(session, job.blob_key, job.scanner, result)
        current.state, current.last_error, current.updated_at = "queued", result.summary[:2000], utcnow()
        current.lease_until = utcnow() + timedelta(seconds=delay)
    if hub.scan_queue is not None:
        hub.scan_queue.enqueue(job.id, delay=delay)
    return "unavailable"


def _retry_or_fail(hub: Hub, job: ScanJob, token: str, error: str) -> str:
    backoff = min(300, 5 * 2 ** max(0, job.attempts - 1))
    with transaction(hub.sessions) as session:
        current = session.scalar(select(ScanJob).where(ScanJob.id == job.id).with_for_update())
        if current is None or current.lease_token != token:
            return "superseded"
        current.last_error = error[:2000]
        current.updated_at = utcnow()
        if current.attempts >= hub.settings.scan_max_attempts:
            store_result(session, job.blob_key, job.scanner,
                          ScanResult(job.scanner, job.scanner_version, Verdict.ERROR, error[:500]))
            current.state, current.lease_until = "done", None
            return "error"
        current.state = "queued"
        current.lease_until = utcnow() + timedelta(seconds=backoff)
    if hub.scan_queue is not None:
        hub.scan_queue.enqueue(job.id, delay=backoff)
    return "retry"


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
