"""Verdicts: storing a scanner's result, and the security status the API shows for files and revisions.

Statuses are computed from the stored verdicts and pending jobs; revision summaries are cached under the
verdict generation (bastion.scanning.generation), so they are never stale.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import pygit2
from sqlalchemy import bindparam, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from bastion.authz import Permission, Principal, authorize
from bastion.caches import WeightedLru
from bastion.db import utcnow
from bastion.hub import Hub
from bastion.repos import annotations
from bastion.repos.models import Repo
from bastion.repos.service import repo_ref
from bastion.scanning import generation
from bastion.scanning.adapters import ISSUE_VERDICTS, PUBLIC_SCANNERS, scanners_of
from bastion.scanning.models import ScanJob, ScanResultRow, SecretNotice
from bastion.scanning.results import ScanResult, Verdict, worst
from bastion.storage.gitstore import LFS_POINTER_MAX, LFS_POINTER_MIN, parse_lfs_pointer


def store_result(session: Session, key: str, scanner: str, result: ScanResult) -> None:
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


STATUS_FIELDS = {"av": "avScan", "pickle": "pickleImportScan", "format": "formatScan", "secrets": "secretsScan"}


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
    scanners = {n: s for n, s in scanners_of(hub).items() if n in shown}
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


# The Hub's status enum (unscanned | safe | queued | error | caution | suspicious | unsafe) has no
# `unavailable`: a scanner that could not run (no clamd, no signatures yet) has not read the file, and its
# job is kept and runs again when the scanner is back. On the Hub's wire that reads `unscanned`, which is
# what it is (not yet known, never safe, `scansDone` false). Not `error`: that says the scan of this file
# failed, pointing at the file rather than at the instance, and tools treat it as final. Bastion's own
# word stays in `bastionStatus`, on the file and on each scanner's entry.
_HUB_STATUS = {str(Verdict.UNAVAILABLE): str(Verdict.UNSCANNED)}


def _hub_status(status: str) -> str:
    return _HUB_STATUS.get(status, status)


def hub_file_status(status: dict[str, Any]) -> dict[str, Any]:
    """A `securityFileStatus` with the Hub's enum in every `status`, Bastion's verdict in `bastionStatus`."""
    out = {**status, "status": _hub_status(status["status"]), "bastionStatus": status["status"]}
    for field in STATUS_FIELDS.values():
        entry = out.get(field)
        if isinstance(entry, dict) and isinstance(entry.get("status"), str):
            out[field] = {**entry, "status": _hub_status(entry["status"]), "bastionStatus": entry["status"]}
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
    versions = {n: s.version() for n, s in scanners_of(hub).items() if n in shown}
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
    MAX_FILES_WITH_ISSUES `{path, level}`, `filesWithIssuesCount` counting all). Cached per (commit, reader's view
    of secrets, scanner versions, verdict generation): any verdict, job or notice change anywhere makes
    the next call compute it afresh, so it is never stale."""
    versions = tuple(sorted((n, s.version()) for n, s in scanners_of(hub).items()))
    gen = generation.current(session)  # read first: what follows is at least as new
    key = (str(commit.id), secrets_of, versions, gen)
    cached = _summaries.get(key) if gen is not None else None
    if cached is None:
        files = revision_files(hub, repo, commit) if files is None else files
        overall = _overall_verdicts(hub, session, list(dict.fromkeys(key for _, key in files)), secrets_of)
        # The Hub's shape: each file with its level (the file's overall status, from the Hub's enum).
        issues = [{"path": path, "level": str(overall[key])} for path, key in files if overall[key] in ISSUE_VERDICTS]
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
             "files": [{"path": path, **hub_file_status(statuses[key])} for path, key in page]},
            limit is not None and offset + limit < len(files))


# ---- what repos' API answers carry (bastion.repos.annotations) ----------------------------------

def repo_security_status(hub: Hub, session: Session, repo: Repo, commit: pygit2.Commit,
                         reader: Principal) -> dict[str, Any]:
    """`securityRepoStatus`: scansDone is true only when every file has a verdict from every scanner."""
    status = revision_summary(hub, session, repo, commit, secrets_visible(reader, repo))
    return {"scansDone": status["scansDone"], "filesWithIssues": status["filesWithIssues"],
            "filesWithIssuesCount": status["filesWithIssuesCount"]}


def repo_file_statuses(hub: Hub, session: Session, repo: Repo, keys: list[str],
                       reader: Principal) -> dict[str, dict[str, Any]]:
    """`securityFileStatus` of each listed blob; secret findings only for those who manage the repo."""
    statuses = file_statuses(hub, session, keys, secrets_visible(reader, repo))
    return {key: hub_file_status(status) for key, status in statuses.items()}


annotations.security_status = repo_security_status
annotations.file_statuses = repo_file_statuses
