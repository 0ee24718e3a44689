"""A user's own personal data as one JSON document (`GET /api/settings/data-export`, the settings page's
download): profile, e-mail addresses, signing keys, token metadata, second factors, org memberships, SSO
identities, gated-access requests, repositories, browser sessions and sign-in history.

Never a secret: no token secret or hash, no password hash, no TOTP secret, no recovery code, no WebAuthn
public key or handle, no session cookie hash. Tokens appear as their owner's token list shows them.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import and_, or_, select
from sqlalchemy.orm import Session

from bastion import audit
from bastion.accounts.models import RecoveryCode, User, WebAuthnCredential, WebSession
from bastion.audit.actions import AuditAction
from bastion.audit.models import AuditEvent
from bastion.gating.models import AccessRequest
from bastion.orgs.models import Organization, OrgMember, ResourceGroup, ResourceGroupMember
from bastion.repos.models import Repo
from bastion.signing import service as signing
from bastion.sso.models import InstanceSsoIdentity, SsoSession
from bastion.tokens import service as tokens

FORMAT_VERSION = 1
HISTORY_LIMIT = 10_000  # sign-in and security events, newest first
# What counts as sign-in history (the security log's kinds that say who came in, from where).
SIGN_IN_ACTIONS = (AuditAction.USER_LOGIN, AuditAction.USER_LOGIN_FAILED, AuditAction.USER_LOGOUT,
                   AuditAction.USER_SUDO, AuditAction.USER_SSO_LOGIN, AuditAction.USER_SSO_LOGIN_FAILED,
                   AuditAction.USER_2FA_FAILED, AuditAction.USER_2FA_RECOVERY_USE, AuditAction.ORG_SSO_LOGIN)


def _iso(dt: datetime | None) -> str | None:
    return dt.isoformat().replace("+00:00", "Z") if dt else None


def export_user_data(session: Session, user: User) -> dict[str, Any]:
    """The document, and an audit event saying it was taken (in the caller's transaction)."""
    uid = user.id
    doc: dict[str, Any] = {
        "format": "bastion-personal-data", "version": FORMAT_VERSION,
        "profile": {"name": user.name, "fullname": user.fullname, "email": user.email, "isAdmin": user.is_admin,
                    "active": user.is_active, "createdAt": _iso(user.created_at),
                    "passwordSet": user.password_hash is not None, "passwordChangedAt": _iso(user.password_changed_at)},
        "emails": [{"email": e.email, "primary": e.primary, "verified": e.verified_at is not None,
                    "verifiedAt": _iso(e.verified_at), "addedAt": _iso(e.created_at)} for e in user.emails],
        "sshSigningKeys": [signing.ssh_key_json(k) for k in signing.list_ssh_keys(session, uid)],
        "gpgKeys": [signing.gpg_key_json(k) for k in signing.list_gpg_keys(session, uid)],
        "accessTokens": [tokens.token_payload(t) for t in tokens.list_tokens(session, user)],
        "twoFactor": _two_factor(session, user),
        "organizations": _orgs(session, uid),
        "ssoIdentities": _sso(session, uid),
        "accessRequests": [
            {"repo": f"{repo.type}/{repo.repo_id}", "status": req.status, "email": req.email, "fields": req.fields,
             "createdAt": _iso(req.created_at), "reviewedAt": _iso(req.reviewed_at)}
            for req, repo in session.execute(select(AccessRequest, Repo).join(Repo, Repo.id == AccessRequest.repo_id)
                                             .where(AccessRequest.user_id == uid).order_by(AccessRequest.id))],
        "repositories": [{"id": f"{r.type}/{r.repo_id}", "private": r.private, "createdAt": _iso(r.created_at)}
                         for r in session.scalars(select(Repo).where(Repo.owner_user_id == uid,
                                                                     Repo.owner_org_id.is_(None)).order_by(Repo.id))],
        "sessions": [{"id": ws.id, "state": ws.state, "createdAt": _iso(ws.created_at),
                      "lastSeenAt": _iso(ws.last_seen_at), "revokedAt": _iso(ws.revoked_at), "ip": ws.ip,
                      "userAgent": ws.user_agent}
                     for ws in session.scalars(select(WebSession).where(WebSession.user_id == uid)
                                               .order_by(WebSession.id.desc()))],
        "signInHistory": _history(session, user),
    }
    audit.record(session, AuditAction.USER_DATA_EXPORT, target=("user", user.name), namespace=user.name,
                 details={"sections": sorted(k for k in doc if k not in ("format", "version"))})
    return doc


def _two_factor(session: Session, user: User) -> dict[str, Any]:
    keys = session.scalars(select(WebAuthnCredential).where(WebAuthnCredential.user_id == user.id)
                           .order_by(WebAuthnCredential.id))
    codes = list(session.scalars(select(RecoveryCode.used_at).where(RecoveryCode.user_id == user.id)))
    return {"totp": user.totp_secret is not None,
            "securityKeys": [{"label": k.label, "createdAt": _iso(k.created_at), "lastUsedAt": _iso(k.last_used_at)}
                             for k in keys],
            "recoveryCodes": {"total": len(codes), "unused": sum(1 for c in codes if c is None)}}


def _orgs(session: Session, uid: int) -> list[dict[str, Any]]:
    out = []
    for member, org in session.execute(select(OrgMember, Organization).join(Organization, Organization.id ==
                                                                            OrgMember.org_id)
                                       .where(OrgMember.user_id == uid).order_by(Organization.name_lower)):
        groups = session.execute(select(ResourceGroup.name, ResourceGroupMember.role).join(
            ResourceGroupMember, ResourceGroupMember.group_id == ResourceGroup.id).where(
            ResourceGroup.org_id == org.id, ResourceGroupMember.user_id == uid).order_by(ResourceGroup.name_lower))
        out.append({"name": org.name, "role": member.role, "memberSince": _iso(member.created_at),
                    "managedBy": member.managed_by,
                    "resourceGroups": [{"name": n, "role": r} for n, r in groups]})
    return out


def _sso(session: Session, uid: int) -> dict[str, Any]:
    identities = session.scalars(select(InstanceSsoIdentity).where(InstanceSsoIdentity.user_id == uid))
    orgs = session.execute(select(SsoSession, Organization.name).join(Organization, Organization.id ==
                                                                      SsoSession.org_id)
                           .where(SsoSession.user_id == uid).order_by(Organization.name_lower))
    return {"instance": [{"subject": i.subject, "linkedAt": _iso(i.created_at)} for i in identities],
            "orgSessions": [{"org": name, "subject": s.subject, "email": s.email,
                             "authenticatedAt": _iso(s.authenticated_at), "expiresAt": _iso(s.expires_at)}
                            for s, name in orgs]}


def _history(session: Session, user: User) -> list[dict[str, Any]]:
    about = or_(AuditEvent.actor_id == user.id,
                and_(AuditEvent.target_type == "user", AuditEvent.target_id == user.name))
    rows = session.scalars(select(AuditEvent).where(about, AuditEvent.action.in_([str(a) for a in SIGN_IN_ACTIONS]))
                           .order_by(AuditEvent.id.desc()).limit(HISTORY_LIMIT))
    return [{"at": _iso(ev.created_at), "type": ev.action, "ip": ev.ip, "userAgent": ev.user_agent, "via": ev.via,
             **({"reason": ev.details["reason"]} if isinstance(ev.details, dict) and "reason" in ev.details else {})}
            for ev in rows]
