"""Secret notices (owners only) and the mail a finding sends to a repository's owners.

A notice is per (repo, secret fingerprint): a secret is announced once per repository, never shown in full.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from bastion import audit
from bastion.accounts.models import User
from bastion.accounts.service import notify
from bastion.audit.actions import AuditAction
from bastion.db import utcnow
from bastion.errors import BadRequest, NotFound
from bastion.hub import Hub
from bastion.repos.models import Repo
from bastion.scanning.adapters import blob_ref
from bastion.scanning.models import ScanResultRow, SecretNotice
from bastion.scanning.results import ScanResult, Verdict


def notify_owner(hub: Hub, session: Session, repo: Repo, path: str, blob_key: str, scanner: str,
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
