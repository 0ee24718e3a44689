"""Access requests of gated repos: ask, withdraw, review (accept, reject, reset), grant, list.

Each change records its audit event and queues its e-mail in the caller's transaction. Who may do
what is the policy's (REPO_ACCESS_REQUEST for the requester, REPO_ACCESS_READ/WRITE for those who
manage the repo); whether a caller may read the files is decided there too, from `gate_facts()`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from bastion import audit
from bastion.accounts.models import User
from bastion.accounts.service import primary_verified
from bastion.api.urls import URL_PREFIX
from bastion.audit.actions import AuditAction
from bastion.authz.policy import GateFacts
from bastion.db import utcnow
from bastion.errors import BadRequest, Forbidden, NotFound
from bastion.gating.models import STATUSES, AccessRequest
from bastion.mail import Mailer, Message
from bastion.repos import service as repos_service
from bastion.repos.browse import iso
from bastion.repos.models import Repo
from bastion.repos.service import ORG_MEMBERS_GATED

MODES = ("auto", "manual")
MAX_MANAGER_MAILS = 5  # as on the Hub: an org repo's requests are e-mailed to its first five admins
MAX_FIELDS = 50
MAX_FIELD_NAME = 200
MAX_FIELD_VALUE = 2000
MAX_REASON = 200
REVIEW_ACTIONS = {"accepted": AuditAction.REPO_ACCESS_REQUEST_ACCEPT,
                  "rejected": AuditAction.REPO_ACCESS_REQUEST_REJECT, "pending": AuditAction.REPO_ACCESS_REQUEST_RESET}


def gate_facts(session: Session, repo: Repo, viewer_id: int | None) -> GateFacts | None:
    """The gate as the policy needs it: None for a repo that is not gated; else its mode and the
    viewer's request status (the only user whose status is loaded)."""
    if repo.gated is None:
        return None
    statuses: dict[int, str] = {}
    if viewer_id is not None:
        status = session.scalar(select(AccessRequest.status).where(AccessRequest.repo_id == repo.id,
                                                                   AccessRequest.user_id == viewer_id))
        if status is not None:
            statuses[viewer_id] = status
    return GateFacts(mode=repo.gated, org_members_gated=bool((repo.settings or {}).get(ORG_MEMBERS_GATED)),
                     statuses=statuses)


repos_service.gate_facts = gate_facts


def find_request(session: Session, repo: Repo, user_id: int) -> AccessRequest | None:
    return session.scalar(select(AccessRequest).where(AccessRequest.repo_id == repo.id,
                                                      AccessRequest.user_id == user_id))


def parse_fields(raw: Any) -> dict[str, str]:
    """The gate form's extra fields: a flat object of labels to short texts (checkboxes, dates, choices)."""
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise BadRequest("The access request form must be an object of field labels to values")
    if len(raw) > MAX_FIELDS:
        raise BadRequest(f"At most {MAX_FIELDS} fields in an access request")
    out: dict[str, str] = {}
    for key, value in raw.items():
        if not isinstance(key, str) or not key.strip() or len(key) > MAX_FIELD_NAME:
            raise BadRequest(f"Access request field names are 1 to {MAX_FIELD_NAME} characters")
        if isinstance(value, bool):
            value = "true" if value else "false"
        elif isinstance(value, int | float):
            value = str(value)
        if not isinstance(value, str) or len(value) > MAX_FIELD_VALUE:
            raise BadRequest(f"Access request field {key[:80]!r} must be a text of at most {MAX_FIELD_VALUE} "
                             "characters")
        out[key.strip()] = value
    return out


FIELD_KINDS = {"text": "text", "checkbox": "checkbox", "date_picker": "date", "country": "text", "select": "select"}


def form_fields(raw: Any) -> list[dict[str, Any]]:
    """The gate form's extra fields from the model card's `extra_gated_fields` (the Hub's format: label →
    type, or label → {type, options}); unknown types are asked as text."""
    if not isinstance(raw, dict):
        return []
    out: list[dict[str, Any]] = []
    for label, spec in list(raw.items())[:MAX_FIELDS]:
        if not isinstance(label, str) or not label.strip() or len(label) > MAX_FIELD_NAME:
            continue
        kind = spec.get("type") if isinstance(spec, dict) else spec
        options: list[tuple[str, str]] = []
        if isinstance(spec, dict) and isinstance(spec.get("options"), list):
            for option in spec["options"][:200]:
                if isinstance(option, dict):
                    options.append((str(option.get("value", "")), str(option.get("label", option.get("value", "")))))
                else:
                    options.append((str(option), str(option)))
        field = {"label": label.strip(), "kind": FIELD_KINDS.get(str(kind), "text"), "options": options}
        if field["kind"] == "select" and not options:
            field["kind"] = "text"
        out.append(field)
    return out


def _require_gated(repo: Repo) -> None:
    if repo.gated is None:
        raise BadRequest(f"{repo.type} {repo.repo_id} is not gated")


def _target(repo: Repo) -> tuple[str, str]:
    return ("repo", f"{repo.type}/{repo.repo_id}")


def page_url(public_url: str | None, repo: Repo, suffix: str = "") -> str | None:
    """A link for an e-mail: only on the configured public URL, never one built from a request's Host."""
    if not public_url:
        return None
    return f"{public_url.rstrip('/')}/{URL_PREFIX[repo.type]}{repo.repo_id}{suffix}"


def ask(session: Session, mailer: Mailer | None, public_url: str | None, repo: Repo, user: User,
        fields: dict[str, str]) -> AccessRequest:
    """The user asks to read the files: accepted at once in auto mode, pending in manual mode (the
    repo's managers are e-mailed). Asking again while pending or accepted changes nothing; a rejected
    user cannot ask again (the Hub's rule)."""
    _require_gated(repo)
    row = find_request(session, repo, user.id)
    if row is not None:
        if row.status == "rejected":
            raise Forbidden(f"Your request to access {repo.type} {repo.repo_id} has been rejected by the repo's "
                            "authors.")
        return row
    now = utcnow()
    auto = repo.gated == "auto"
    row = AccessRequest(repo_id=repo.id, user_id=user.id, status="accepted" if auto else "pending",
                        email=primary_verified(user), fields=fields or None, created_at=now,
                        reviewed_at=now if auto else None, granted=False)
    session.add(row)
    session.flush()
    audit.record(session, AuditAction.REPO_ACCESS_REQUEST_CREATE, target=_target(repo), namespace=repo.namespace,
                 details={"user": user.name, "status": row.status, "mode": repo.gated,
                          "fields": sorted(row.fields or {})})
    if not auto:
        link = page_url(public_url, repo, "/access-requests")
        for manager in managers(session, repo):
            _mail(session, mailer, manager, f"{user.name} asks for access to {repo.repo_id}",
                  f"{user.name} asked for access to the files of the gated {repo.type} {repo.repo_id}."
                  + (f"\n\nReview the request here:\n{link}" if link else
                     "\n\nReview it on the repository's access requests page."))
    return row


def withdraw(session: Session, repo: Repo, user: User) -> None:
    """The requester cancels their own pending request."""
    _require_gated(repo)
    row = find_request(session, repo, user.id)
    if row is None or row.status != "pending":
        raise NotFound(f"You have no pending access request for {repo.repo_id}")
    session.delete(row)
    session.flush()
    audit.record(session, AuditAction.REPO_ACCESS_REQUEST_WITHDRAW, target=_target(repo), namespace=repo.namespace,
                 details={"user": user.name})


def review(session: Session, mailer: Mailer | None, public_url: str | None, repo: Repo, actor: User, user: User,
           status: str, rejection_reason: str | None = None) -> AccessRequest:
    """Accept, reject, or move back to pending (the client's `cancel`) a user's request."""
    _require_gated(repo)
    if status not in STATUSES:
        raise BadRequest(f"Invalid status {status!r}: expected one of {', '.join(STATUSES)}")
    if rejection_reason is not None:
        if status != "rejected":
            raise BadRequest("'rejectionReason' applies only when rejecting a request")
        if not isinstance(rejection_reason, str) or len(rejection_reason) > MAX_REASON:
            raise BadRequest(f"'rejectionReason' must be a text of at most {MAX_REASON} characters")
    row = find_request(session, repo, user.id)
    if row is None:
        raise NotFound(f"No access request from {user.name} for {repo.repo_id}")
    if row.status == status:
        raise NotFound(f"The access request of {user.name} is already in the {status} list")
    before = row.status
    row.status, row.reviewed_at, row.reviewed_by_user_id = status, utcnow(), actor.id
    row.rejection_reason = rejection_reason if status == "rejected" else None
    session.flush()
    audit.record(session, REVIEW_ACTIONS[status], target=_target(repo), namespace=repo.namespace,
                 details={"user": user.name, "from": before, "to": status,
                          **({"rejectionReason": rejection_reason} if rejection_reason else {})})
    words = {"accepted": "was accepted: you can now download its files",
             "rejected": "was rejected by the repository's authors",
             "pending": "was moved back to pending review by the repository's authors; you cannot download its "
                        "files until it is accepted"}
    reason = f"\n\nReason given: {rejection_reason}" if rejection_reason else ""
    link = page_url(public_url, repo)
    _mail(session, mailer, user, f"Your access request for {repo.repo_id}",
          f"Your request to access the {repo.type} {repo.repo_id} {words[status]}.{reason}"
          + (f"\n\n{link}" if link else ""))
    return row


def grant(session: Session, mailer: Mailer | None, public_url: str | None, repo: Repo, actor: User,
          user: User) -> AccessRequest:
    """Give a user access without a request of theirs (or accept the one they made)."""
    _require_gated(repo)
    row = find_request(session, repo, user.id)
    if row is not None and row.status == "accepted":
        raise BadRequest(f"{user.name} already has access to {repo.repo_id}")
    now = utcnow()
    if row is None:
        row = AccessRequest(repo_id=repo.id, user_id=user.id, status="accepted", email=None, fields=None,
                            created_at=now, granted=True)
        session.add(row)
    row.status, row.reviewed_at, row.reviewed_by_user_id, row.granted = "accepted", now, actor.id, True
    row.rejection_reason = None
    session.flush()
    audit.record(session, AuditAction.REPO_ACCESS_REQUEST_GRANT, target=_target(repo), namespace=repo.namespace,
                 details={"user": user.name})
    link = page_url(public_url, repo)
    _mail(session, mailer, user, f"You were given access to {repo.repo_id}",
          f"{actor.name} gave you access to the files of the gated {repo.type} {repo.repo_id}."
          + (f"\n\n{link}" if link else ""))
    return row


def managers(session: Session, repo: Repo) -> list[User]:
    """Who is e-mailed about a new request: a user repo's owner; an org repo's first five admins."""
    if repo.owner_org_id is None:
        owner = session.get(User, repo.owner_user_id) if repo.owner_user_id is not None else None
        return [owner] if owner is not None else []
    from bastion.orgs.models import OrgMember

    return list(session.scalars(select(User).join(OrgMember, OrgMember.user_id == User.id).where(
        OrgMember.org_id == repo.owner_org_id, OrgMember.role == "admin").order_by(User.id).limit(MAX_MANAGER_MAILS)))


def _mail(session: Session, mailer: Mailer | None, user: User, subject: str, body: str) -> None:
    to = primary_verified(user)  # an unverified address may not be theirs
    if mailer is not None and to is not None:
        mailer.queue(session, Message(to=to, subject=f"[Bastion] {subject}", body=f"Hello {user.name},\n\n{body}\n"))


@dataclass(frozen=True)
class RequestPage:
    rows: list[tuple[AccessRequest, User, User | None]]  # request, requester, who granted it
    has_more: bool


def list_requests(session: Session, repo: Repo, status: str, offset: int, limit: int) -> RequestPage:
    if status not in STATUSES:
        raise NotFound(f"Unknown access request list {status!r}: expected one of {', '.join(STATUSES)}")
    rows = list(session.execute(
        select(AccessRequest, User).join(User, User.id == AccessRequest.user_id)
        .where(AccessRequest.repo_id == repo.id, AccessRequest.status == status)
        .order_by(AccessRequest.created_at, AccessRequest.id).offset(offset).limit(limit + 1)).tuples())
    out = []
    for row, user in rows[:limit]:
        granter = session.get(User, row.reviewed_by_user_id) if row.granted and row.reviewed_by_user_id else None
        out.append((row, user, granter))
    return RequestPage(out, len(rows) > limit)


def user_payload(user: User, email: str | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"_id": f"{user.id:024x}", "user": user.name, "fullname": user.fullname or user.name,
                           "avatarUrl": "", "isPro": False, "type": "user", "verifiedOrgNames": []}
    if email:
        out["email"] = email
    return out


def request_payload(row: AccessRequest, user: User, granter: User | None) -> dict[str, Any]:
    """One item of the Hub's user-access-request lists (what huggingface_hub's AccessRequest reads)."""
    out: dict[str, Any] = {"requestId": row.public_id, "user": user_payload(user, row.email), "status": row.status,
                           "timestamp": iso(row.created_at)}
    if row.reviewed_at is not None:
        out["reviewedAt"] = iso(row.reviewed_at)
    if row.fields:
        out["fields"] = row.fields
    if granter is not None:
        out["grantedBy"] = user_payload(granter)
    return out


def request_by_public_id(session: Session, repo: Repo, request_id: str) -> AccessRequest:
    try:
        key = int(request_id, 16) if len(request_id) == 24 else None
    except ValueError:
        key = None
    row = session.get(AccessRequest, key) if key is not None else None
    if row is None or row.repo_id != repo.id:
        raise NotFound(f"Access request {request_id[:40]!r} not found")
    return row
