"""The scanning pipeline: jobs from commits, running a job, verdicts, status for the API.

A job is claimed with a lease; a worker that dies mid-scan leaves a lease that expires, and
the sweeper hands the job to another worker. Results are unique per (blob, scanner, version),
so a job that ran twice cannot record two different verdicts for the same scan.
"""

from __future__ import annotations

import bisect
import difflib
import hashlib
import hmac
import io
import logging
import secrets
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from contextvars import ContextVar, copy_context
from dataclasses import dataclass, replace
from datetime import timedelta
from functools import partial
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import pygit2
from sqlalchemy import bindparam, insert, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, aliased

from bastion import audit
from bastion.accounts.models import User
from bastion.accounts.service import notify
from bastion.audit.actions import AuditAction
from bastion.authz import Permission, Principal, authorize
from bastion.caches import WeightedLru
from bastion.config import Settings
from bastion.db import after_commit, after_rollback, transaction, utcnow
from bastion.errors import BadRequest, Forbidden, NotFound
from bastion.hub import Hub
from bastion.repos import admission
from bastion.repos.commit import CommitResult, post_commit_hooks
from bastion.repos.guards import download_guards
from bastion.repos.models import Repo
from bastion.repos.service import repo_ref
from bastion.scanning import generation, leaks
from bastion.scanning.isolation import ProcessLimits, ScanAborted, run_isolated
from bastion.scanning.models import ScanJob, ScanRelease, ScanResultRow, SecretNotice
from bastion.scanning.results import ScanResult, Verdict, worst
from bastion.scanning.scanners import pickles
from bastion.scanning.scanners import secrets as secret_scanning
from bastion.scanning.scanners.malware import MalwareScanner
from bastion.scanning.scanners.pickles import SCANNER_VERSION as PICKLE_VERSION
from bastion.scanning.scanners.pickles import PickleScanner
from bastion.scanning.scanners.secrets import (
    BASTION_TOKEN_DETECTOR,
    CallableVerifier,
    SecretFinding,
    SecretScanner,
    SecretScanReport,
    VerifierRegistry,
)
from bastion.scanning.scanners.secrets import SCANNER_VERSION as SECRETS_VERSION
from bastion.scanning.scanners.secrets import to_scan_result as to_secrets_result
from bastion.scanning.scanners.secrets.formats import decode_text
from bastion.storage.gitstore import LFS_POINTER_MAX, LFS_POINTER_MIN, GitRepo, parse_lfs_pointer
from bastion.xet.content import ANY_HOLDER, ObjectNotLinked, as_file, iter_object, locate

log = logging.getLogger("bastion.scanning")
ISSUE_VERDICTS = frozenset({Verdict.UNSAFE, Verdict.SUSPICIOUS, Verdict.CAUTION})


class Scanner(Protocol):
    name: str

    def version(self) -> str: ...

    def scan_path(self, path: Path) -> ScanResult: ...

    def scan_bytes(self, data: bytes, name: str = "") -> ScanResult: ...


@runtime_checkable
class IsolatedScanner(Scanner, Protocol):
    """A scanner that parses hostile content: the pipeline runs it in a process of its own under OS
    limits (bastion.scanning.isolation). The others (clamd, over a socket) run in a worker thread."""

    def scan_isolated(self, source: Path | bytes, name: str, limits: ProcessLimits) -> ScanResult: ...


class PickleScannerAdapter:
    name = "pickle"

    def __init__(self, spool_dir: Path | None = None) -> None:
        self.spool_dir = str(spool_dir) if spool_dir is not None else None
        self.scanner = PickleScanner(spool_dir=self.spool_dir)

    def version(self) -> str:
        return PICKLE_VERSION

    def scan_path(self, path: Path) -> ScanResult:
        return self._stamped(self.scanner.scan_path(path))

    def scan_bytes(self, data: bytes, name: str = "") -> ScanResult:
        return self._stamped(self.scanner.scan_bytes(data, name))

    def scan_isolated(self, source: Path | bytes, name: str, limits: ProcessLimits) -> ScanResult:
        return self._stamped(run_isolated(pickles.scan_source, (source, name, self.spool_dir), limits))

    def _stamped(self, result: ScanResult) -> ScanResult:
        # Verdicts are keyed by the version this pipeline asked for, so reuse and rescans agree.
        result.scanner_version = self.version()
        return result


# Where the blob being scanned was found (repo id, path): read by the secrets scanner's revocations.
scan_location: ContextVar[dict[str, Any] | None] = ContextVar("bastion_scan_location", default=None)
SECRETS_MAX_BYTES = 256 * 1024 * 1024


class SecretsScannerAdapter:
    """Secrets: findings are owner-only notices; a live Bastion token is revoked on sight."""

    name = "secrets"

    def __init__(self, hub: Hub | None) -> None:
        endpoints = hub.settings.secret_verifiers if hub is not None else {}
        registry = (VerifierRegistry.with_http(endpoints, providers=set(endpoints)) if endpoints
                    else VerifierRegistry())
        if hub is not None:
            registry.register(BASTION_TOKEN_DETECTOR, CallableVerifier(partial(leaks.is_live_token, hub)))
        self.hub = hub
        self.scanner = SecretScanner(verifiers=registry)

    def version(self) -> str:
        return SECRETS_VERSION

    def scan_bytes(self, data: bytes, name: str = "") -> ScanResult:
        return self._judge(self.scanner.scan_blob(data, name), name)

    def scan_path(self, path: Path) -> ScanResult:
        return self._judge(self.scanner.scan_file(path, path.name, SECRETS_MAX_BYTES), path.name)

    def scan_isolated(self, source: Path | bytes, name: str, limits: ProcessLimits) -> ScanResult:
        # The scan process reads the content; verification (a database lookup for Bastion's own
        # tokens, provider APIs) and revocation happen here, on its findings.
        report: SecretScanReport = run_isolated(secret_scanning.scan_source, (source, name, SECRETS_MAX_BYTES),
                                                limits)
        report.findings = self.scanner.verify(report.findings)
        return self._judge(report, name)

    def _judge(self, report: SecretScanReport, name: str) -> ScanResult:
        live = [f.raw_secret for f in report.findings if f.detector == BASTION_TOKEN_DETECTOR and f.verified]
        if live and self.hub is not None:
            where = scan_location.get() or {}
            leaks.revoke_leaked(self.hub, live, source="secret scanning",
                                where=f"{where.get('repo', '?')}/{where.get('path', name)}")
        result = to_secrets_result(report.findings, report.skipped, binary=report.binary, partial=report.partial)
        if self.hub is not None:
            # A keyed fingerprint identifies the same secret across files and edits without storing it.
            key = self.hub.settings.secret_key
            for finding, detail in zip(report.findings, result.details.get("detail", []), strict=True):
                detail["fingerprint"] = hmac.new(key, finding.raw_secret.encode(), hashlib.sha256).hexdigest()[:40]
        result.scanner_version = self.version()
        return result


# Scanner verdicts shown to anyone who can read the repo. Secret findings are not: a notice that a
# file holds a secret (and where) is for the repo's owners only.
PUBLIC_SCANNERS = ("av", "pickle")


def build_scanners(settings: Settings, only: Iterable[str] | None = None, hub: Hub | None = None,
                   ) -> dict[str, Scanner]:
    """The enabled scanners, by name. Unknown names in the settings are a configuration error."""
    wanted = list(only or settings.scanners)
    out: dict[str, Scanner] = {}
    for name in wanted:
        if name == "av":
            out[name] = MalwareScanner(settings.resolved_clamd_address, settings.scan_timeout_seconds)
        elif name == "pickle":
            # Large inflated members are spooled next to the server's other temporary files.
            out[name] = PickleScannerAdapter(settings.tmp_dir if hub is not None else None)
        elif name == "secrets":
            out[name] = SecretsScannerAdapter(hub)
        else:
            raise ValueError(f"unknown scanner {name!r} (known: av, pickle, secrets)")
    return out


@dataclass(frozen=True)
class BlobRef:
    key: str
    kind: str  # lfs | git
    storage_key: str | None
    size: int


def blob_ref(hub: Hub, storage_key: str, git_oid: str, git: GitRepo | None = None) -> BlobRef:
    """What a blob's verdicts are keyed by and where its bytes are read. `git`: the repository, already
    open (a commit of many files opens it once). Only pointer-sized blobs are read."""
    repo = (git or hub.git(storage_key)).repo
    _kind, size = repo.odb.read_header(git_oid)
    ptr = parse_lfs_pointer(repo[git_oid].data) if LFS_POINTER_MIN <= size <= LFS_POINTER_MAX else None
    if ptr is not None:
        return BlobRef(ptr.oid, "lfs", None, ptr.size)
    return BlobRef(git_oid, "git", storage_key, size)


class ContentGone(Exception):
    """The bytes to scan went away with their repository (deleted after the commit queued them)."""


def read_bytes(hub: Hub, ref: BlobRef) -> bytes:
    try:
        return hub.git(ref.storage_key or "").repo[ref.key].data
    except (pygit2.GitError, KeyError, ValueError) as exc:
        raise ContentGone(str(exc)) from None


# ---- enqueueing ---------------------------------------------------------------------------------

def _scanners_of(hub: Hub) -> dict[str, Scanner]:
    cached = getattr(hub, "_scanners", None)
    if cached is None:
        cached = build_scanners(hub.settings, hub=hub)
        hub._scanners = cached  # type: ignore[attr-defined]
    return cached


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


def _dispatch_after_commit(hub: Hub, session: Session, job_ids: list[int]) -> None:
    queue = hub.scan_queue
    if queue is None or not job_ids:
        return  # no queue attached (admin commands): the sweeper of any worker picks them up
    after_commit(session, lambda: queue.enqueue_many(job_ids))


def on_commit(hub: Hub, session: Session, repo: Repo, result: CommitResult) -> None:
    """Post-commit hook: queue a scan of every new or changed blob, or block the commit by policy."""
    scanners = _scanners_of(hub)
    if not scanners:
        return
    job_ids: list[int] = []
    org = _org_of(session, repo)
    # A push is judged in pre-receive (its objects quarantined) and applied in proc-receive: the
    # refusing checks run in the first phase, the scan enqueue in the second (repos.admission).
    judging, applying = admission.judging(), admission.applying()
    blocking = judging and blocks_unsafe(repo, org)
    if judging and ((repo.settings or {}).get("secret_push_protection")
                    or (org is not None and org.secret_push_protection)):
        _check_new_secrets(hub, session, repo, result)
    if not (blocking or applying):
        return
    git = hub.git(repo.storage_key)
    blobs = [(blob_ref(hub, repo.storage_key, git_oid, git), path) for path, git_oid in result.changed_blobs]
    if blocking:
        for ref, path in blobs:
            if ref.size <= hub.settings.scan_inline_max_bytes:
                _scan_inline_or_reject(hub, session, repo, ref, path, scanners)
    if not applying:
        return
    if "secrets" in scanners:
        # Verdicts that exist already (scanned elsewhere, or inline just now) notify this repo's owners.
        _reuse_secret_verdicts(hub, session, repo, blobs, scanners["secrets"])
    job_ids += enqueue_blobs(hub, session, blobs, repo.id, scanners)
    _dispatch_after_commit(hub, session, job_ids)


def blocks_unsafe(repo: Repo, org: Any) -> bool:
    """Whether "block unsafe files" is on for `repo` (its own setting, or its organization's)."""
    return bool((repo.settings or {}).get("block_unsafe")) or bool(org is not None and org.block_unsafe)


def _block_unsafe_guard(hub: Hub, session: Session, repo: Repo, key: str, principal: Principal) -> str | None:
    """Block unsafe files, for every size (repos.guards): with the policy on, a file is downloadable only
    once every enabled scanner has judged it safe -- files too large to scan before the ref moves
    included -- and an unsafe one stays blocked. A file no scanner could prove safe (suspicious, could
    not open, error) stays blocked too, until a manager releases it (release_file). Those who manage the
    repo may still fetch it (to look at what was flagged, or prove it harmless). A secret finding is
    named to managers only."""
    if not blocks_unsafe(repo, _org_of(session, repo)):
        return None
    status = file_status(hub, session, key, repo.id)
    if status["status"] == Verdict.SAFE:
        return None
    if authorize(principal, Permission.REPO_MANAGE, repo_ref(repo)):
        return None
    each = [Verdict(status[field]["status"]) for field in STATUS_FIELDS.values() if isinstance(status.get(field), dict)]
    if all(v is Verdict.SAFE or v in RELEASABLE for v in each) and is_released(session, repo.id, key):
        return None  # released by a manager: every scanner ran, none found it unsafe
    shown_status = file_status(hub, session, key)
    shown = Verdict(shown_status["status"])
    if shown in ISSUE_VERDICTS or shown is Verdict.ERROR:
        reasons = [shown_status[STATUS_FIELDS[n]]["summary"] for n in PUBLIC_SCANNERS
                   if isinstance(shown_status.get(STATUS_FIELDS[n]), dict)
                   and shown_status[STATUS_FIELDS[n]]["status"] == shown and shown_status[STATUS_FIELDS[n]]["summary"]]
        because = f" ({'; '.join(reasons)})" if reasons else ""
        return f"blocked by this repository's policy (block unsafe files): the scanners judged it {shown}{because}"
    if shown is Verdict.SAFE:
        return "blocked by this repository's policy (block unsafe files): held for review by its managers"
    return ("blocked by this repository's policy (block unsafe files) until every enabled scanner has judged it "
            f"safe (scan status: {shown})")


download_guards.append(_block_unsafe_guard)


def _org_of(session: Session, repo: Repo) -> Any:
    """The owning organization, whose security policies apply to every one of its repos."""
    if repo.owner_org_id is None:
        return None
    from bastion.orgs.models import Organization

    return session.get(Organization, repo.owner_org_id)


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
            _notify_owner(hub, session, repo, path, ref.key, "secrets",
                          ScanResult("secrets", row.scanner_version, Verdict(row.verdict), row.summary, row.details))


# With "block unsafe files" on, these verdicts of the content scanners (PUBLIC_SCANNERS) hold a file
# too: a scanner that could not open or prove the content safe has not found it safe. A manager may
# release such a file (release_file); UNSAFE is never released.
RELEASABLE = frozenset({Verdict.SUSPICIOUS, Verdict.ERROR, Verdict.CAUTION})


def _scan_inline_or_reject(hub: Hub, session: Session, repo: Repo, ref: BlobRef, path: str,
                           scanners: dict[str, Scanner]) -> None:
    released: bool | None = None
    for name, scanner in scanners.items():
        result = _run_scanner(hub, scanner, ref, repo.id, path, session)
        _store_result(session, ref.key, name, result)
        if result.verdict is Verdict.UNSAFE:
            why = f"{path} is unsafe ({result.summary})"
        elif result.verdict in RELEASABLE and name in PUBLIC_SCANNERS:
            if released is None:
                released = is_released(session, repo.id, ref.key)
            if released:
                continue
            why = (f"{path} could not be proven safe by the {name} scanner ({result.summary}); unknown is not "
                   f"safe. A repository manager may release this file (blob {ref.key}): "
                   f"POST /api/{repo.type}s/{repo.repo_id}/scan/release")
        else:
            continue
        details = {"path": path, "blob": ref.key, "scanner": name, "verdict": str(result.verdict),
                   "summary": result.summary}
        # Plain values: the repo row is expired once the commit's transaction rolls back.
        target = ("repo", f"{repo.type}/{repo.repo_id}")
        after_rollback(session, partial(_record_rejection, hub, target, repo.namespace, details))
        raise Forbidden(f"Commit rejected by this repository's policy (block unsafe files): {why}")


def is_released(session: Session, repo_id: int, key: str) -> bool:
    return session.scalar(select(ScanRelease.id).where(ScanRelease.repo_id == repo_id,
                                                       ScanRelease.blob_key == key)) is not None


def release_file(hub: Hub, session: Session, repo: Repo, user_id: int | None, *, blob: str | None = None,
                 path: str | None = None, revision: str = "main", reason: str = "") -> dict[str, Any]:
    """Release a file "block unsafe files" holds because no scanner could prove it safe: by `path` at
    `revision`, or by `blob` (its LFS sha256 or git blob id; a file not committed yet may be released
    ahead, so that a commit of it passes). A file any scanner judged unsafe cannot be released."""
    if (blob is None) == (path is None):
        raise BadRequest("Give either 'path' (with an optional 'revision') or 'blob'")
    if path is not None:
        git = hub.git(repo.storage_key)
        try:
            entry = git.resolve(revision).tree[path.strip("/")]
        except KeyError:
            raise NotFound(f"No file {path!r} at {revision!r}") from None
        if entry.type_str != "blob":
            raise BadRequest(f"{path!r} is not a file")
        key = blob_ref(hub, repo.storage_key, str(entry.id)).key
    else:
        key = (blob or "").lower()
        if not (len(key) in (40, 64) and all(c in "0123456789abcdef" for c in key)):
            raise BadRequest("'blob' must be an LFS sha256 (64 hex digits) or a git blob id (40 hex digits)")
    status = file_status(hub, session, key, repo.id)
    verdicts = {name: status[field]["status"] for name, field in STATUS_FIELDS.items()
                if isinstance(status.get(field), dict)}
    if Verdict.UNSAFE in verdicts.values():
        raise Forbidden("This file was judged unsafe: unsafe files cannot be released")
    if not is_released(session, repo.id, key):
        try:
            with session.begin_nested():
                session.add(ScanRelease(repo_id=repo.id, blob_key=key, path=(path or "")[:1024],
                                        reason=reason[:2000], released_by=user_id))
        except IntegrityError:
            pass  # released concurrently
        audit.record(session, AuditAction.SCAN_RELEASE, target=("repo", f"{repo.type}/{repo.repo_id}"),
                     namespace=repo.namespace,
                     details={"blob": key, "path": path, "revision": revision if path else None,
                              "verdicts": verdicts, "reason": reason[:500]})
    return {"blob": key, "released": True, "verdicts": verdicts}


def revoke_release(session: Session, repo: Repo, blob: str) -> None:
    row = session.scalar(select(ScanRelease).where(ScanRelease.repo_id == repo.id,
                                                   ScanRelease.blob_key == blob.lower()))
    if row is None:
        raise NotFound("No such release in this repository")
    session.delete(row)
    audit.record(session, AuditAction.SCAN_RELEASE_REVOKE, target=("repo", f"{repo.type}/{repo.repo_id}"),
                 namespace=repo.namespace, details={"blob": row.blob_key, "path": row.path})


def released_files(session: Session, repo: Repo) -> list[dict[str, Any]]:
    return [{"blob": r.blob_key, "path": r.path, "reason": r.reason, "releasedAt": r.created_at.isoformat()}
            for r in session.scalars(select(ScanRelease).where(ScanRelease.repo_id == repo.id)
                                     .order_by(ScanRelease.id))]


def added_lines_text(old: bytes | None, new: bytes) -> str:
    """`new` with every line that was already in `old` blanked: line numbers stay those of the file."""
    new_lines = new.decode("utf-8", "replace").splitlines()
    if old is None:
        return "\n".join(new_lines)
    old_lines = old.decode("utf-8", "replace").splitlines()
    keep = [""] * len(new_lines)
    for tag, _i1, _i2, j1, j2 in difflib.SequenceMatcher(None, old_lines, new_lines, autojunk=False).get_opcodes():
        if tag in ("replace", "insert"):
            keep[j1:j2] = new_lines[j1:j2]
    return "\n".join(keep)


def _check_new_secrets(hub: Hub, session: Session, repo: Repo, result: CommitResult) -> None:
    """Push protection: a commit that adds a verified or checksum-valid secret does not land."""
    scanners = _scanners_of(hub)
    adapter = scanners.get("secrets")
    scanner = adapter.scanner if isinstance(adapter, SecretsScannerAdapter) else SecretScanner()
    git = hub.git(repo.storage_key)
    parent = git.repo[result.parent_oid] if result.parent_oid else None
    blocked = []
    diff_max = hub.settings.push_protection_diff_max_bytes
    for path, git_oid in result.changed_blobs:
        try:
            old_oid = str(parent.tree[path].id) if parent is not None else None
        except KeyError:
            old_oid = None
        if _content_size(git, git_oid) > diff_max or (old_oid and _content_size(git, old_oid) > diff_max):
            # Read whole, streamed in bounded memory: a secret counts when the old version lacked it.
            added = _streamed_added_secrets(hub, session, repo.id, scanner, git, old_oid, git_oid, path)
        else:
            new = _protected_content(hub, session, repo.id, git, git_oid)
            if new is None:
                continue  # a pointer to nothing this repo holds: the commit path refuses it
            old = _protected_content(hub, session, repo.id, git, old_oid) if old_oid else None
            added = _added_secrets(scanner, old, new, path)
        for finding in added:
            if finding.verification != "none" and finding.verified:
                blocked.append(finding)
    blocked += [f for f in _message_secrets(scanner, git, result) if f.verification != "none" and f.verified]
    if not blocked:
        return
    described = [{"file": f.file, "line": f.line, "type": f.secret_type, "provider": f.provider} for f in blocked]
    target = ("repo", f"{repo.type}/{repo.repo_id}")
    # A live Bastion token that lands (a bypass) is revoked: it is published. A refused push publishes
    # nothing (its objects are dropped with the quarantine), so the token stays as its owner left it.
    live = [f.raw_secret for f in blocked if f.detector == BASTION_TOKEN_DETECTOR]
    revoke = partial(leaks.revoke_leaked, hub, live, source="secret push protection",
                     where=f"{target[1]}: " + ", ".join(sorted({f.file for f in blocked}))[:200]) if live else None
    reason = result.options.get("secrets_bypass")
    if reason:
        audit.record(session, AuditAction.SECRET_PUSH_BYPASS, target=target, namespace=repo.namespace,
                     details={"reason": reason, "commit": result.commit_oid, "findings": described})
        if revoke is not None:
            after_commit(session, revoke)
            after_rollback(session, revoke)
        return
    after_rollback(session, partial(_record_secret_block, hub, target, repo.namespace, described))
    where = "; ".join(f"{d['file']}:{d['line']} ({d['type']})" for d in described[:10])
    raise Forbidden(f"Push protection: this commit adds secrets: {where}. Remove them, or, if this is a test "
                    "credential, retry with a bypass reason (repository managers only).")


# Messages are scanned in batches of about this many characters (one scan per batch, not per commit).
_MESSAGE_BATCH = 8 << 20


def _message_secrets(scanner: SecretScanner, git: Any, result: CommitResult) -> list[SecretFinding]:
    """Secrets in the messages of the commits the move brings in and of the annotated tag it writes:
    findings name "commit <sha> message" (or "tag <ref> message") and the line in that message."""
    parts: list[tuple[str, str]] = []
    for sha in result.new_commits:
        try:
            parts.append((f"commit {sha[:12]} message", git.repo[sha].message or ""))
        except (KeyError, ValueError):
            continue
    if result.tag_message:
        parts.append((f"tag {result.ref_name.removeprefix('refs/tags/')} message", result.tag_message))
    found: list[SecretFinding] = []
    batch: list[tuple[str, str]] = []
    size = 0
    for label, message in parts + [("", "")]:
        if (size + len(message) > _MESSAGE_BATCH or not label) and batch:
            found += _scan_messages(scanner, batch)
            batch, size = [], 0
        if label:
            batch.append((label, message.rstrip("\n")))
            size += len(message)
    return found


def _scan_messages(scanner: SecretScanner, batch: list[tuple[str, str]]) -> list[SecretFinding]:
    starts: list[int] = []
    line = 1
    for _label, message in batch:
        starts.append(line)
        line += message.count("\n") + 1
    out = []
    for f in scanner.scan_text("\n".join(m for _, m in batch), "commit message"):
        i = bisect.bisect_right(starts, f.line) - 1
        out.append(replace(f, file=batch[i][0], line=f.line - starts[i] + 1,
                           end_line=max(f.end_line, f.line) - starts[i] + 1))
    return out


def _added_secrets(scanner: SecretScanner, old: bytes | None, new: bytes, path: str) -> list[SecretFinding]:
    """The secrets `new` adds to `old`: in text, those on added lines; in binary content, those among
    its printable strings that the old version did not hold."""
    if decode_text(new) is not None:
        return scanner.scan_text(added_lines_text(old, new), path)
    found = scanner.scan_strings(new, path)
    if old is None or not found:
        return found
    before = {f.raw_secret for f in scanner.scan_strings(old, path)}
    return [f for f in found if f.raw_secret not in before]


def _content_size(git: Any, git_oid: str) -> int:
    """The size of a file's content: the blob's, or that of the LFS object its pointer names."""
    _kind, size = git.repo.odb.read_header(git_oid)
    if size <= LFS_POINTER_MAX:
        pointer = parse_lfs_pointer(git.repo[git_oid].data)
        if pointer is not None:
            return int(pointer.size)
    return int(size)


def _content_pieces(hub: Hub, session: Session, repo_id: int, git: Any, git_oid: str) -> Iterable[bytes] | None:
    """The bytes push protection reads for a file, as pieces: the blob, or the LFS object its pointer
    names (secrets in a large notebook or JSON file stored with LFS must not slip through); None for a
    pointer to an object the repo holds no link to (the commit path refuses such pointers; one in the
    parent, from before that rule, names nothing readable) or no longer stored."""
    _kind, size = git.repo.odb.read_header(git_oid)
    data: bytes = git.repo[git_oid].data
    pointer = parse_lfs_pointer(data) if size <= LFS_POINTER_MAX else None
    if pointer is None:
        return [data]
    try:
        return iter_object(hub, repo_id, pointer.oid, session=session)
    except ObjectNotLinked:
        return None


def _protected_content(hub: Hub, session: Session, repo_id: int, git: Any, git_oid: str) -> bytes | None:
    pieces = _content_pieces(hub, session, repo_id, git, git_oid)
    return None if pieces is None else b"".join(pieces)


class _PieceReader(io.RawIOBase):
    """A read()-able file over an iterator of byte pieces (an LFS object streamed from storage)."""

    def __init__(self, pieces: Iterable[bytes]) -> None:
        self.pieces = iter(pieces)
        self.held = b""

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        while n < 0 or len(self.held) < n:
            piece = next(self.pieces, None)
            if piece is None:
                break
            self.held += piece
        out, self.held = (self.held, b"") if n < 0 else (self.held[:n], self.held[n:])
        return out


def _streamed_secrets(hub: Hub, session: Session, repo_id: int, scanner: SecretScanner, git: Any, git_oid: str,
                      path: str) -> list[SecretFinding]:
    pieces = _content_pieces(hub, session, repo_id, git, git_oid)
    if pieces is None:
        return []
    reader = _PieceReader(pieces)
    head = reader.read(8192)
    reader.held = head + reader.held
    if decode_text(head) is None:
        return scanner.scan_stream(reader, path)  # type: ignore[arg-type]
    return scanner.scan_text_stream(reader, path)  # type: ignore[arg-type]


def _streamed_added_secrets(hub: Hub, session: Session, repo_id: int, scanner: SecretScanner, git: Any,
                            old_oid: str | None, git_oid: str, path: str) -> list[SecretFinding]:
    """The secrets a file above the diff bound adds: those the new version holds anywhere and the old
    one did not (by the secret, not by line: a diff of such files is not computed)."""
    found = _streamed_secrets(hub, session, repo_id, scanner, git, git_oid, path)
    if not found or old_oid is None:
        return found
    before = {f.raw_secret for f in _streamed_secrets(hub, session, repo_id, scanner, git, old_oid, path)}
    return [f for f in found if f.raw_secret not in before]


def _record_secret_block(hub: Hub, target: tuple[str, str], namespace: str, described: list[dict[str, Any]]) -> None:
    with transaction(hub.sessions) as session:
        audit.record(session, AuditAction.SECRET_PUSH_BLOCKED, target=target, namespace=namespace,
                     details={"findings": described})


def _record_rejection(hub: Hub, target: tuple[str, str], namespace: str, details: dict[str, Any]) -> None:
    with transaction(hub.sessions) as session:
        audit.record(session, AuditAction.SCAN_POLICY_REJECT, target=target, namespace=namespace, details=details)


post_commit_hooks.append(on_commit)


# ---- running ------------------------------------------------------------------------------------

def scan_limits(settings: Settings) -> ProcessLimits:
    return ProcessLimits(settings.scan_memory_limit_mb, settings.scan_cpu_seconds, settings.scan_timeout_seconds)


def _run_scanner(hub: Hub, scanner: Scanner, ref: BlobRef, repo_id: int | None, path: str = "",
                 session: Session | None = None) -> ScanResult:
    """One scanner on one blob, as a file of repository `repo_id` (ANY_HOLDER: of whichever repositories
    hold it, when the one that queued the scan is gone): an LFS object is read only if that repository
    holds a link (`session`: the caller's transaction, for an inline scan during a commit). A scanner
    that parses the content runs in a scan process of its own under the OS limits in the settings;
    over one, the verdict is `error` saying which."""
    isolated = isinstance(scanner, IsolatedScanner)
    limits = scan_limits(hub.settings)
    found = None
    if ref.kind == "lfs":
        try:
            found = locate(hub, repo_id, ref.key, session)
        except ObjectNotLinked:
            raise ContentGone(f"LFS object {ref.key} is not linked to the repository it is scanned for") from None
        if found is None:
            # Collected by storage GC (no ref reached it) after the commit queued it: like a git blob gone
            # with its repo, no verdict is stored, so the same bytes uploaded again are scanned afresh
            # instead of inheriting an error.
            raise ContentGone(f"LFS object {ref.key} is no longer stored")

    def work() -> ScanResult:
        if found is not None:
            with as_file(hub, found) as local:  # a Xet-stored file is reconstructed for the scan
                if isinstance(scanner, IsolatedScanner):
                    return scanner.scan_isolated(local, local.name, limits)
                return scanner.scan_path(local)
        if isinstance(scanner, IsolatedScanner):
            return scanner.scan_isolated(read_bytes(hub, ref), path, limits)
        return scanner.scan_bytes(read_bytes(hub, ref), path)

    if isolated:
        try:
            return work()  # the scan process has its own wall-clock limit
        except ScanAborted as exc:
            result = ScanResult(scanner.name, scanner.version(), Verdict.ERROR, exc.summary)
            result.retryable = exc.retryable
            return result
    pool = ThreadPoolExecutor(1, thread_name_prefix=f"scan-{scanner.name}")
    try:
        # The worker thread sees the caller's context (scan_location, audit context).
        return pool.submit(copy_context().run, work).result(timeout=hub.settings.scan_timeout_seconds)
    except FutureTimeout:
        return ScanResult(scanner.name, scanner.version(), Verdict.ERROR,
                          f"timed out after {hub.settings.scan_timeout_seconds}s")
    finally:
        pool.shutdown(wait=False, cancel_futures=True)


def _store_result(session: Session, key: str, scanner: str, result: ScanResult) -> None:
    existing = session.scalar(select(ScanResultRow).where(
        ScanResultRow.blob_key == key, ScanResultRow.scanner == scanner,
        ScanResultRow.scanner_version == result.scanner_version))
    if existing is None:
        try:
            with session.begin_nested():
                session.add(ScanResultRow(blob_key=key, scanner=scanner, scanner_version=result.scanner_version,
                                          verdict=str(result.verdict), summary=result.summary,
                                          details=result.details))
        except IntegrityError:
            pass  # the same scan finished elsewhere first; its verdict stands
    else:
        existing.verdict, existing.summary, existing.details = str(result.verdict), result.summary, result.details
        existing.created_at = utcnow()


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
    scanners = scanners or _scanners_of(hub)
    scanner = scanners.get(job.scanner)
    ref = BlobRef(job.blob_key, job.source_kind, job.storage_key, job.size)
    try:
        if scanner is None:
            result = ScanResult(job.scanner, job.scanner_version, Verdict.ERROR, "scanner no longer enabled")
        else:
            label, reader = _job_repo(hub, job.repo_id)
            token_ctx = scan_location.set({"repo": label, "path": job.path})
            try:
                result = _run_scanner(hub, scanner, ref, reader, job.path)
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
        _store_result(session, job.blob_key, job.scanner, result)
        current.state, current.lease_until, current.updated_at = "done", None, utcnow()
        if result.verdict in ISSUE_VERDICTS and job.repo_id is not None:
            repo = session.get(Repo, job.repo_id)
            if repo is not None:
                audit.record(session, AuditAction.SCAN_FINDING, target=("repo", f"{repo.type}/{repo.repo_id}"),
                             namespace=repo.namespace,
                             details={"path": job.path, "blob": job.blob_key, "scanner": job.scanner,
                                      "verdict": str(result.verdict), "summary": result.summary})
                _notify_owner(hub, session, repo, job.path, job.blob_key, job.scanner, result)
    return str(result.verdict)


def _notify_owner(hub: Hub, session: Session, repo: Repo, path: str, blob_key: str, scanner: str,
                  result: ScanResult) -> None:
    """E-mail the owner about unsafe files and verified (or checksum-valid) secrets, never the secret."""
    if scanner == "secrets":
        # Only secrets this repo has not had before: an edit next to a known secret is no new alarm.
        new = record_sightings(session, repo, path, blob_key, result.details.get("detail", []))
        findings = [f for f in new if f.get("verification") != "none"]
        if not findings:
            return
        lines = "\n".join(f"  line {f['line']}: {f['provider']} ({'verified' if f['verified'] else 'unverified'}, "
                          f"{f['verification']})" for f in findings)
        subject, body = (f"Secrets found in {repo.repo_id}",
                         f"Secret scanning found credentials in {path} of {repo.type} {repo.repo_id}:\n{lines}\n\n"
                         "Rotate them at the provider, then remove them from the repository history.")
    elif result.verdict is Verdict.UNSAFE:
        subject, body = (f"Unsafe file in {repo.repo_id}",
                         f"The {scanner} scanner marked {path} in {repo.type} {repo.repo_id} as unsafe: "
                         f"{result.summary}.")
    else:
        return
    recipients = {repo.owner_user_id} if repo.owner_user_id else set()
    if repo.owner_org_id is not None:
        from bastion.orgs.service import admin_ids

        recipients |= set(admin_ids(session, repo.owner_org_id))  # an org repo: its admins are the owners
    for user_id in sorted(recipients):
        user = session.get(User, user_id)
        if user is not None:
            notify(session, hub.mailer, user, subject, body)


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
        _store_result(session, job.blob_key, job.scanner, result)
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
            _store_result(session, job.blob_key, job.scanner,
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
    for name, scanner in _scanners_of(hub).items():
        refresh = getattr(scanner, "refresh_version", None)
        out[name] = refresh() if callable(refresh) else scanner.version()
    return out


def rescan_outdated(hub: Hub, limit: int = 10_000) -> int:
    """Queue scans for blobs whose newest verdict came from an older scanner or signature version.

    Safe to run from every worker at once: a blob that already has a job for the current version, or
    a pending job of any version (it will be scanned, and labelled, with the version current then), is
    not queued again, and jobs are unique per (blob, scanner, version), so concurrent callers cannot
    queue the same scan twice. Each call queues up to `limit` blobs per scanner; call again until it
    returns 0.
    """
    scanners = _scanners_of(hub)
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
            stale = session.execute(select(ScanJob).where(
                ScanJob.scanner == name, ScanJob.scanner_version != version, ScanJob.blob_key.not_in(done),
                ScanJob.blob_key.not_in(handled))
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
            _dispatch_after_commit(hub, session, job_ids)
    return count


def rescan_repo(hub: Hub, session: Session, repo: Repo, revision: str = "main") -> int:
    """Admin: scan every file of `revision` again with the current scanners (history is kept)."""
    git = hub.git(repo.storage_key)
    commit = git.resolve(revision)
    scanners = _scanners_of(hub)
    job_ids: list[int] = []
    for path, entry in git.walk_files(commit.tree):
        job_ids += enqueue_blob(hub, session, blob_ref(hub, repo.storage_key, str(entry.id)), repo.id, path,
                                scanners, force=True)
    audit.record(session, AuditAction.SCAN_RESCAN, target=("repo", f"{repo.type}/{repo.repo_id}"),
                 namespace=repo.namespace, details={"revision": revision, "jobs": len(job_ids)})
    _dispatch_after_commit(hub, session, job_ids)
    return len(job_ids)


def scan_history(hub: Hub, session: Session, repo: Repo) -> int:
    """Secret-scan every blob reachable from any ref (imported repos, or on demand): added history."""
    scanners = {k: v for k, v in _scanners_of(hub).items() if k == "secrets"}
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
    _dispatch_after_commit(hub, session, job_ids)
    return len(job_ids)


# ---- status for the API -------------------------------------------------------------------------

def _scanner_verdict(rows: list[ScanResultRow], pending: bool, version: str) -> tuple[Verdict, ScanResultRow | None]:
    """One scanner's status for one blob, from its verdicts (newest first) and whether a job is pending."""
    current = next((r for r in rows if r.scanner_version == version), None)
    latest = current or (rows[0] if rows else None)
    if current is not None:
        return Verdict(current.verdict), current
    if latest is not None:
        verdict = Verdict(latest.verdict)
        # An older verdict that found a problem stays visible; an older "safe" is not proof now.
        if verdict.rank > Verdict.QUEUED.rank:
            return verdict, latest
        return (Verdict.QUEUED if pending else Verdict.UNSCANNED), latest
    return (Verdict.QUEUED if pending else Verdict.UNSCANNED), None


STATUS_BATCH = 500


STATUS_FIELDS = {"av": "avScan", "pickle": "pickleImportScan", "secrets": "secretsScan"}


def secrets_visible(principal: Principal, repo: Repo) -> int | None:
    """The repo whose secret findings `principal` sees in security statuses: only those who manage it
    (as for the notices themselves); None for everyone else."""
    return repo.id if authorize(principal, Permission.REPO_MANAGE, repo_ref(repo)) else None


def file_statuses(hub: Hub, session: Session, keys: Iterable[str],
                  secrets_of: int | None = None) -> dict[str, dict[str, Any]]:
    """`securityFileStatus` for many blobs with two queries per 500 (a listing must not query per file).

    `secrets_of` (a repo id, from `secrets_visible()`): also the secrets scanner's verdict, as
    `secretsScan`, counted in `status`; a finding whose notice in that repo is dismissed or resolved
    no longer counts. Without it the statuses carry no trace of secret scanning.
    """
    shown = (*PUBLIC_SCANNERS, "secrets") if secrets_of is not None else PUBLIC_SCANNERS
    scanners = {n: s for n, s in _scanners_of(hub).items() if n in shown}
    closed = set(session.scalars(select(SecretNotice.fingerprint).where(
        SecretNotice.repo_id == secrets_of, SecretNotice.state != "open"))) if "secrets" in scanners else set()
    wanted = list(dict.fromkeys(keys))
    rows: dict[tuple[str, str], list[ScanResultRow]] = {}
    pending: set[tuple[str, str]] = set()
    for i in range(0, len(wanted), STATUS_BATCH):
        chunk = wanted[i:i + STATUS_BATCH]
        for row in session.scalars(select(ScanResultRow).where(
                ScanResultRow.blob_key.in_(chunk), ScanResultRow.scanner.in_(scanners))
                .order_by(ScanResultRow.created_at.desc(), ScanResultRow.id.desc())):
            rows.setdefault((row.blob_key, row.scanner), []).append(row)
        pending.update(tuple(r) for r in session.execute(select(ScanJob.blob_key, ScanJob.scanner).where(
            ScanJob.blob_key.in_(chunk), ScanJob.scanner.in_(scanners), ScanJob.state != "done")))
    versions = {name: scanner.version() for name, scanner in scanners.items()}
    out: dict[str, dict[str, Any]] = {}
    for key in wanted:
        status: dict[str, Any] = {"status": "unscanned", "avScan": None, "pickleImportScan": None}
        verdicts: list[Verdict] = []
        for name, version in versions.items():
            verdict, row = _scanner_verdict(rows.get((key, name), []), (key, name) in pending, version)
            summary = row.summary if row else None
            if name == "secrets" and row is not None and verdict in ISSUE_VERDICTS:
                found = {d.get("fingerprint") for d in row.details.get("detail", [])}
                if found and found <= closed:
                    verdict, summary = Verdict.SAFE, f"{summary} (every finding dismissed or resolved)"
            verdicts.append(verdict)
            entry = {**(dict(row.details) if row is not None else {}), "status": str(verdict),
                     "version": row.scanner_version if row else None, "summary": summary}
            status[STATUS_FIELDS[name]] = entry
        status["status"] = str(worst(verdicts))
        out[key] = status
    return out


def file_status(hub: Hub, session: Session, key: str, secrets_of: int | None = None) -> dict[str, Any]:
    """`securityFileStatus` as the Hub sends it: status, avScan, pickleImportScan (all three keys)."""
    return file_statuses(hub, session, [key], secrets_of)[key]


# A commit's files never change (its id is its content): listed once per process, up to this many files
# held in all. Summaries are cached under the verdict generation (bastion.scanning.generation).
REVISION_FILES_CACHED = 400_000
SUMMARIES_CACHED = 200_000  # weight: one per summary plus one per listed path with issues
_revision_files = WeightedLru(REVISION_FILES_CACHED)
_summaries = WeightedLru(SUMMARIES_CACHED)
# At most this many paths in `filesWithIssues` (those first in tree order); `filesWithIssuesCount`
# counts them all, and the per-file statuses of GET .../scan list every file, a page at a time.
MAX_FILES_WITH_ISSUES = 1000


def revision_files(hub: Hub, repo: Repo, commit: pygit2.Commit) -> list[tuple[str, str]]:
    """(path, verdict key) of every file at `commit`, in tree order. Only pointer-sized blobs are read,
    each once; the list is cached by commit id (read-only: callers must not change it)."""
    cached: list[tuple[str, str]] | None = _revision_files.get(str(commit.id))
    if cached is not None:
        return cached
    git = hub.git(repo.storage_key)
    odb, keys = git.repo.odb, {}
    out = []
    for path, entry in git.walk_files(commit.tree):
        key = keys.get(entry.id)
        if key is None:
            _kind, size = odb.read_header(entry.id)
            pointer = (parse_lfs_pointer(git.repo[entry.id].data)
                       if LFS_POINTER_MIN <= size <= LFS_POINTER_MAX else None)
            key = keys[entry.id] = pointer.oid if pointer is not None else str(entry.id)
        out.append((path, key))
    _revision_files.put(str(commit.id), out, max(1, len(out)))
    return out


SUMMARY_BATCH = 5000


# The summary's lookups, compiled once: the keys and scanners are expanding parameters (a list bound per
# call), so a batch costs no per-key expression building; rows come back as plain tuples (Core, no ORM).
_KEYS, _SCANNERS = bindparam("keys", expanding=True), bindparam("scanners", expanding=True)
_SUMMARY_RESULTS = (select(ScanResultRow.id, ScanResultRow.blob_key, ScanResultRow.scanner,
                           ScanResultRow.scanner_version, ScanResultRow.verdict)
                    .where(ScanResultRow.blob_key.in_(_KEYS), ScanResultRow.scanner.in_(_SCANNERS))
                    .order_by(ScanResultRow.created_at.desc(), ScanResultRow.id.desc()))


def _overall_verdicts(hub: Hub, session: Session, keys: list[str], secrets_of: int | None) -> dict[str, Verdict]:
    """Each blob's `status` as `file_statuses` computes it, except that a blob with no current verdict
    is UNSCANNED whether or not a job for it is pending (QUEUED in `file_statuses`): the summary treats
    both alike (not done, no issue), and the pending jobs of a large revision would be most of the rows
    read. Only verdict columns are read; the findings' details only for open secret findings."""
    shown = (*PUBLIC_SCANNERS, "secrets") if secrets_of is not None else PUBLIC_SCANNERS
    versions = {n: s.version() for n, s in _scanners_of(hub).items() if n in shown}
    if not versions:
        return dict.fromkeys(keys, Verdict.UNSCANNED)
    names = list(versions)
    conn = session.connection()
    rows: dict[tuple[str, str], list[Any]] = {}
    for i in range(0, len(keys), SUMMARY_BATCH):
        params = {"keys": keys[i:i + SUMMARY_BATCH], "scanners": names}
        for row in conn.execute(_SUMMARY_RESULTS, params):
            rows.setdefault((row.blob_key, row.scanner), []).append(row)
    out: dict[str, Verdict] = {}
    secret_rows: dict[int, str] = {}  # row id -> blob key, for secret findings that may be dismissed
    secret_verdicts: dict[str, dict[str, Verdict]] = {}
    for key in keys:
        if not any((key, name) in rows for name in names):
            out[key] = Verdict.UNSCANNED  # the common case in a large revision: no scanner has judged it
            continue
        verdicts, open_secret = [], False
        for name in names:
            found = rows.get((key, name))
            if found is None:
                verdicts.append(Verdict.UNSCANNED)
                continue
            verdict, row = _scanner_verdict(found, False, versions[name])
            verdicts.append(verdict)
            if name == "secrets" and row is not None and verdict in ISSUE_VERDICTS:
                secret_rows[row.id], open_secret = key, True
        if open_secret:
            secret_verdicts[key] = dict(zip(names, verdicts, strict=True))
        out[key] = worst(verdicts)
    if secret_rows:
        closed = set(session.scalars(select(SecretNotice.fingerprint).where(
            SecretNotice.repo_id == secrets_of, SecretNotice.state != "open")))
        ids = list(secret_rows)
        for i in range(0, len(ids), SUMMARY_BATCH):
            for row_id, details in session.execute(select(ScanResultRow.id, ScanResultRow.details).where(
                    ScanResultRow.id.in_(ids[i:i + SUMMARY_BATCH]))):
                found_fps = {d.get("fingerprint") for d in (details or {}).get("detail", [])}
                if found_fps and found_fps <= closed:
                    key = secret_rows[row_id]
                    secret_verdicts[key]["secrets"] = Verdict.SAFE
                    out[key] = worst(list(secret_verdicts[key].values()))
    return out


def revision_summary(hub: Hub, session: Session, repo: Repo, commit: pygit2.Commit, secrets_of: int | None = None,
                     files: list[tuple[str, str]] | None = None) -> dict[str, Any]:
    """`securityRepoStatus` of a revision: whether every file is scanned, and which have issues (at most
    MAX_FILES_WITH_ISSUES paths, `filesWithIssuesCount` counting all). Cached per (commit, reader's view
    of secrets, scanner versions, verdict generation): any verdict, job or notice change anywhere makes
    the next call compute it afresh, so it is never stale."""
    versions = tuple(sorted((n, s.version()) for n, s in _scanners_of(hub).items()))
    gen = generation.current(session)  # read first: what follows is at least as new
    key = (str(commit.id), secrets_of, versions, gen)
    cached = _summaries.get(key) if gen is not None else None
    if cached is None:
        files = revision_files(hub, repo, commit) if files is None else files
        overall = _overall_verdicts(hub, session, list(dict.fromkeys(key for _, key in files)), secrets_of)
        issues = [path for path, key in files if overall[key] in ISSUE_VERDICTS]
        # A scanner that could not run has not scanned: those files are not done, whatever else ran.
        done = all(v not in (Verdict.UNSCANNED, Verdict.QUEUED, Verdict.UNAVAILABLE) for v in overall.values())
        cached = {"scansDone": done, "filesWithIssues": issues[:MAX_FILES_WITH_ISSUES],
                  "filesWithIssuesCount": len(issues), "commit": str(commit.id)}
        if gen is not None:
            _summaries.put(key, cached, 1 + len(cached["filesWithIssues"]))
    return {**cached, "filesWithIssues": list(cached["filesWithIssues"])}


def repo_status(hub: Hub, session: Session, repo: Repo, revision: str, secrets_of: int | None = None,
                offset: int = 0, limit: int | None = None) -> tuple[dict[str, Any], bool]:
    """The revision's summary and its files' statuses from `offset` (at most `limit` of them, the
    details read only for those), and whether more files follow."""
    commit = hub.git(repo.storage_key).resolve(revision)
    files = revision_files(hub, repo, commit)
    page = files[offset:] if limit is None else files[offset:offset + limit]
    statuses = file_statuses(hub, session, [key for _, key in page], secrets_of)
    return ({**revision_summary(hub, session, repo, commit, secrets_of, files),
             "files": [{"path": path, **statuses[key]} for path, key in page]},
            limit is not None and offset + limit < len(files))


def scan_file_offline(scanners: dict[str, Scanner], path: Path) -> dict[str, Any]:
    """`bastion scan`: every enabled scanner on one local file, no database."""
    scans: dict[str, Any] = {}
    verdicts = []
    for name, scanner in scanners.items():
        try:
            result = scanner.scan_path(path)
        except Exception as exc:  # never report a file we could not scan as safe
            result = ScanResult(name, scanner.version(), Verdict.ERROR, f"{type(exc).__name__}: {exc}")
        verdicts.append(result.verdict)
        scans[name] = {**result.details, "status": str(result.verdict), "version": result.scanner_version,
                       "summary": result.summary}
    return {"status": str(worst(verdicts)), "scans": scans}


# ---- secret notices (owners only) ---------------------------------------------------------------

NOTICE_STATES = ("open", "dismissed", "resolved")


def record_sightings(session: Session, repo: Repo, path: str, blob_key: str,
                     details: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Create a notice for each secret new to this repo; return the new ones."""
    new = []
    for item in details:
        fp = item.get("fingerprint")
        if not fp:
            continue
        if session.scalar(select(SecretNotice.id).where(SecretNotice.repo_id == repo.id,
                                                        SecretNotice.fingerprint == fp)) is not None:
            continue
        try:
            with session.begin_nested():
                session.add(SecretNotice(
                    repo_id=repo.id, fingerprint=fp, provider=item.get("provider", ""),
                    secret_type=item.get("type", ""), detector=item.get("detector", ""),
                    preview=item.get("preview", ""), verification=item.get("verification", "none"),
                    verified=bool(item.get("verified")), first_path=path[:1024], first_line=int(item.get("line", 0)),
                    first_blob=blob_key, state="open", reason=""))
        except IntegrityError:
            continue  # seen by a concurrent job: not new
        new.append({**item, "file": path})
    return new


def secret_notices(hub: Hub, session: Session, repo: Repo, revision: str = "main",
                   history: bool = False) -> list[dict[str, Any]]:
    """The repo's secret notices, redacted: where each secret is now (or was first seen) and its state."""
    notices = {n.fingerprint: n for n in session.scalars(
        select(SecretNotice).where(SecretNotice.repo_id == repo.id).order_by(SecretNotice.id))}
    current: dict[str, list[tuple[str, int, str]]] = {}
    git = hub.git(repo.storage_key)
    commit = git.resolve(revision)
    for path, entry in git.walk_files(commit.tree):
        ref = blob_ref(hub, repo.storage_key, str(entry.id))
        row = session.scalar(select(ScanResultRow).where(ScanResultRow.blob_key == ref.key,
                                                         ScanResultRow.scanner == "secrets")
                             .order_by(ScanResultRow.created_at.desc(), ScanResultRow.id.desc()).limit(1))
        for item in (row.details.get("detail", []) if row is not None else []):
            if item.get("fingerprint"):
                current.setdefault(item["fingerprint"], []).append((path, int(item["line"]), ref.key))
    out = []
    for fp, n in notices.items():
        where = current.get(fp)
        if where is None and not history:
            continue  # not in this revision (removed, or only in history)
        path, line, blob = where[0] if where else (n.first_path, n.first_line, n.first_blob)
        out.append({"fingerprint": fp, "file": path, "line": line, "blob": blob, "inRevision": where is not None,
                    "locations": [{"file": p, "line": ln} for p, ln, _ in (where or [])],
                    "provider": n.provider, "type": n.secret_type, "detector": n.detector, "preview": n.preview,
                    "verification": n.verification, "verified": n.verified, "state": n.state,
                    "reason": n.reason or None, "firstSeen": {"file": n.first_path, "line": n.first_line}})
    return out


def set_notice_state(session: Session, repo: Repo, user_id: int | None, fingerprint: str, state: str,
                     reason: str) -> None:
    if state not in NOTICE_STATES:
        raise BadRequest(f"'state' must be one of {', '.join(NOTICE_STATES)}")
    row = session.scalar(select(SecretNotice).where(SecretNotice.repo_id == repo.id,
                                                    SecretNotice.fingerprint == fingerprint))
    if row is None:
        raise NotFound("No such secret notice in this repository")
    row.state, row.reason, row.decided_by, row.updated_at = state, reason[:2000], user_id, utcnow()
    action = AuditAction.SECRET_NOTICE_DISMISS if state == "dismissed" else AuditAction.SECRET_NOTICE_RESOLVE
    audit.record(session, action, target=("repo", f"{repo.type}/{repo.repo_id}"), namespace=repo.namespace,
                 details={"fingerprint": fingerprint, "file": row.first_path, "provider": row.provider,
                          "reason": reason[:500]})
