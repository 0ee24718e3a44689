"""Deprovisioning in one service call: deactivate_user() revokes every credential kind of a user in the
caller's transaction; reactivate_user() lets the person sign in again with none of the old credentials.

Every credential Bastion accepts is revoked here or re-checks `User.is_active` on each use:
- web sessions (revoked here; `accounts.sessions` also refuses an inactive user's cookie),
- access tokens (revoked here, for good: reactivation never brings one back; `tokens.service.authenticate`
  refuses an inactive user's token anyway), hence git over HTTP (its password is a token) and every
  Xet CAS token and fetch URL (bound to the token or session that obtained it, re-read on each use:
  `api.auth.bound_principal`), and LFS upload URLs (the policy refuses one whose user is inactive),
- pending org token approval requests (revoked: an org admin is no longer asked to approve them),
- SSO sessions of every org (deleted: a later sign-in must go through the IdP again); instance SSO
  signs in to a web session, revoked with the others,
- e-mail addresses never verified (but the primary one): their verification links die with them, and a
  deactivated account verifies nothing meanwhile (`accounts.verify_email`); reset links need the account active,
- org memberships a provisioning source manages (`OrgMember.managed_by`, e.g. "scim"), when the caller
  names that source; memberships granted by hand stay (an admin decides about them).
Repos stay where they are and commits keep their author. The actor of every audit event is the
current audit context: the admin, the CLI, or the SCIM client.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from bastion import audit
from bastion.accounts.models import User, WebSession
from bastion.audit.actions import AuditAction
from bastion.db import utcnow
from bastion.errors import BadRequest, Conflict
from bastion.orgs.models import Organization, OrgMember, OrgTokenApproval, ResourceGroup, ResourceGroupMember
from bastion.sso.models import SsoSession
from bastion.tokens import service as tokens
from bastion.tokens.models import AccessToken

REASON_MAX = 500
# Who deactivates (User.deactivated_by): an instance administrator (the CLI, the admin API and page), unless a
# provisioning source names itself; an administrator may undo any deactivation, a source only what it may answer
# for (bastion.scim.service decides that for SCIM).
ADMIN = "admin"


@dataclass(frozen=True)
class Revocation:
    """What deactivate_user() revoked, by credential kind (what was already dead is not counted)."""

    web_sessions: int
    tokens: int
    approvals: int
    sso_sessions: int
    memberships: int
    unverified_emails: int = 0

    def as_json(self) -> dict[str, int]:
        return {"webSessions": self.web_sessions, "tokens": self.tokens, "approvals": self.approvals,
                "ssoSessions": self.sso_sessions, "memberships": self.memberships,
                "unverifiedEmails": self.unverified_emails}


def _reason(reason: str) -> str:
    text = (reason or "").strip()
    if len(text) > REASON_MAX:
        raise BadRequest(f"The reason is limited to {REASON_MAX} characters")
    return text


def deactivate_user(session: Session, user: User, *, reason: str,
                    memberships_managed_by: str | None = None, by: str = ADMIN) -> Revocation:
    """Set `user` inactive and revoke every credential it holds, in the caller's transaction (no commit).
    Idempotent: deactivating an inactive user revokes whatever is left (nothing, normally). `by` is kept as
    who deactivated the account; an administrator's word replaces a source's, never the other way round."""
    reason = _reason(reason)
    if user.is_active or by == ADMIN:
        user.deactivated_by = by
    user.is_active = False
    now = utcnow()
    # Web sessions (instance SSO sign-ins included): every one not already revoked, pending ones too.
    ended = session.execute(update(WebSession).where(WebSession.user_id == user.id, WebSession.revoked_at.is_(None))
                            .values(revoked_at=now)).rowcount  # type: ignore[attr-defined]
    # Access tokens: revoked for good (revoke_token records one token.revoke event each).
    live = list(session.scalars(select(AccessToken).where(AccessToken.user_id == user.id,
                                                          AccessToken.revoked_at.is_(None))))
    for tok in live:
        tokens.revoke_token(session, tok, reason=f"user deactivated: {reason}" if reason else "user deactivated")
    # Org token approvals still waiting for an org admin: revoked (permanent for that org).
    token_ids = select(AccessToken.id).where(AccessToken.user_id == user.id)
    approvals = session.execute(update(OrgTokenApproval).where(OrgTokenApproval.token_id.in_(token_ids),
                                                               OrgTokenApproval.state == "pending")
                                .values(state="revoked", decided_at=now)).rowcount  # type: ignore[attr-defined]
    sso = session.execute(delete(SsoSession).where(SsoSession.user_id == user.id)).rowcount  # type: ignore[attr-defined]
    # Addresses the account never proved (not the primary one): a verification link already sent -- maybe to an
    # intruder who added the address in a stolen session -- must not verify one later, after a reactivation.
    unproven = [e for e in user.emails if e.verified_at is None and not e.primary]
    for row in unproven:
        user.emails.remove(row)
    memberships = _drop_managed_memberships(session, user, memberships_managed_by, reason) \
        if memberships_managed_by else 0
    revoked = Revocation(int(ended or 0), len(live), int(approvals or 0), int(sso or 0), memberships, len(unproven))
    audit.record(session, AuditAction.USER_DEACTIVATE, target=("user", user.name), namespace=user.name,
                 details={"reason": reason, "revoked": revoked.as_json(),
                          **({"memberships_managed_by": memberships_managed_by} if memberships_managed_by else {})})
    session.flush()
    return revoked


def _drop_managed_memberships(session: Session, user: User, source: str, reason: str) -> int:
    """Remove the memberships `source` manages (with the user's resource groups in those orgs). Unlike a
    removal by an org admin this may leave an org without an admin: the identity provider said the
    person is gone, and an instance admin can still name a new org admin."""
    rows = session.execute(select(OrgMember, Organization).join(Organization, Organization.id == OrgMember.org_id)
                           .where(OrgMember.user_id == user.id, OrgMember.managed_by == source)).all()
    for member, org in rows:
        groups = select(ResourceGroup.id).where(ResourceGroup.org_id == org.id)
        session.execute(delete(ResourceGroupMember).where(ResourceGroupMember.user_id == user.id,
                                                          ResourceGroupMember.group_id.in_(groups)))
        session.delete(member)
        audit.record(session, AuditAction.ORG_REMOVE_USER, target=("user", user.name), namespace=org.name,
                     details={"role": member.role, "managed_by": source, "deprovisioned": True,
                              **({"reason": reason} if reason else {})})
    session.flush()
    return len(rows)


def deactivated_by(user: User) -> str | None:
    """Who deactivated this inactive account: ADMIN or a provisioning source's name (None while active). An
    inactive account that does not say counts as an administrator's decision (fail closed)."""
    return None if user.is_active else (user.deactivated_by or ADMIN)


def reactivate_user(session: Session, user: User, *, reason: str) -> None:
    """Let `user` sign in again. Nothing revoked comes back: tokens stay revoked, sessions ended, SSO
    sessions gone; the person signs in anew and creates new tokens. The caller decided it may undo this
    deactivation (`deactivated_by`): an administrator may undo any."""
    reason = _reason(reason)
    if getattr(user, "deleted_at", None) is not None:
        raise Conflict("A deleted account cannot be reactivated")
    if user.is_active:
        return
    user.is_active = True
    user.deactivated_by = None
    audit.record(session, AuditAction.USER_REACTIVATE, target=("user", user.name), namespace=user.name,
                 details={"reason": reason})
    session.flush()



@dataclass(frozen=True)
class AccountRow:
    """An account as the instance admin's users page lists it."""

    name: str
    email: str
    fullname: str
    is_admin: bool
    active: bool
    deleted: bool
    created_at: str


def list_accounts(session: Session, limit: int = 500) -> list[AccountRow]:
    """Accounts for the admin page, deleted tombstones last (newest first otherwise)."""
    rows = session.scalars(select(User).order_by(User.deleted_at.is_not(None), User.id.desc()).limit(limit))
    return [AccountRow(u.name, u.email, u.fullname, u.is_admin, u.is_active, u.deleted_at is not None,
                       u.created_at.strftime("%Y-%m-%d")) for u in rows]
