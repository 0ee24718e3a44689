"""Block unsafe files: the inline scan that rejects a commit, the download guard, and releases.

With the policy on, a file is served only once every enabled scanner judged it safe, or a manager
released a file no scanner could prove safe (never an unsafe one).
"""

from __future__ import annotations

from functools import partial
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from bastion import audit
from bastion.audit.actions import AuditAction
from bastion.authz import Permission, Principal, authorize
from bastion.db import after_rollback, transaction
from bastion.errors import BadRequest, Forbidden, NotFound
from bastion.hub import Hub
from bastion.repos.guards import download_guards
from bastion.repos.models import Repo
from bastion.repos.service import repo_ref
from bastion.scanning import leaks
from bastion.scanning.adapters import (
    ISSUE_VERDICTS,
    PUBLIC_SCANNERS,
    BlobRef,
    Scanner,
    blob_ref,
    locate_content,
    run_scanner,
)
from bastion.scanning.models import ScanRelease
from bastion.scanning.results import Verdict
from bastion.scanning.verdicts import STATUS_FIELDS, file_status, store_result


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
    if not blocks_unsafe(repo, org_of(session, repo)):
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


def org_of(session: Session, repo: Repo) -> Any:
    """The owning organization, whose security policies apply to every one of its repos."""
    if repo.owner_org_id is None:
        return None
    from bastion.orgs.models import Organization

    return session.get(Organization, repo.owner_org_id)


# With "block unsafe files" on, these verdicts of the content scanners (PUBLIC_SCANNERS) hold a file
# too: a scanner that could not open or prove the content safe has not found it safe. A manager may
# release such a file (release_file); UNSAFE is never released.
RELEASABLE = frozenset({Verdict.SUSPICIOUS, Verdict.ERROR, Verdict.CAUTION})


def scan_inline_or_reject(hub: Hub, session: Session, repo: Repo, ref: BlobRef, path: str,
                           scanners: dict[str, Scanner]) -> None:
    released: bool | None = None
    found = locate_content(hub, ref, repo.id, session)
    for name, scanner in scanners.items():
        result = run_scanner(hub, scanner, ref, found, path)
        store_result(session, ref.key, name, result)
        if result.leaked:  # revoked if the commit lands (a refused one publishes nothing)
            leaks.revoke_leaked_in(session, hub, result.leaked, source="secret scanning",
                                   where=f"{repo.type}/{repo.repo_id}/{path}")
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


def _record_rejection(hub: Hub, target: tuple[str, str], namespace: str, details: dict[str, Any]) -> None:
    with transaction(hub.sessions) as session:
        audit.record(session, AuditAction.SCAN_POLICY_REJECT, target=target, namespace=namespace, details=details)
