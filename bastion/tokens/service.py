"""Token operations: create, authenticate, rename, rotate, revoke, and the Principal a token acts as."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import bindparam, select, update
from sqlalchemy.orm import Session, object_session

from bastion import audit
from bastion.accounts.models import User
from bastion.accounts.service import notify
from bastion.audit import aggregate
from bastion.audit.actions import AuditAction
from bastion.authz import Principal
from bastion.authz.policy import note_token_denial
from bastion.db import utcnow
from bastion.errors import BadRequest, InvalidCredentials, NotFound, UnknownCredentials
from bastion.mail import Mailer
from bastion.tokens import format as token_format
from bastion.tokens import governance, restrictions
from bastion.tokens.models import AccessToken
from bastion.tokens.restrictions import OrgTokenPolicy, ReadOnly, Scope, Scoped

ROLES = ("read", "write", "fineGrained")
# Writing last-used on every request would make each read a write; once a minute is enough.
LAST_USED_RESOLUTION = timedelta(minutes=1)


@dataclass(frozen=True)
class IssuedToken:
    token: AccessToken
    secret: str


def _restrictions_for(role: str, scopes: list[Scope] | None, can_read_gated: bool) -> list[dict[str, Any]]:
    if role in ("read", "write"):
        if scopes:
            raise BadRequest("Scopes belong to fine-grained tokens (role fineGrained)")
        if can_read_gated:
            # read and write tokens read every gated repo their owner has access to: nothing to widen
            raise BadRequest("canReadGatedRepos belongs to fine-grained tokens (role fineGrained)")
        return [ReadOnly().to_json()] if role == "read" else []
    if not scopes and not can_read_gated:
        raise BadRequest("A fine-grained token needs at least one scope (or canReadGatedRepos)")
    return [Scoped(tuple(scopes or ()), can_read_gated=can_read_gated).to_json()]


def create_token(session: Session, user: User, name: str, role: str = "read",
                 expires_at: datetime | None = None, scopes: list[Scope] | None = None,
                 can_read_gated: bool = False, mailer: Mailer | None = None) -> IssuedToken:
    """`can_read_gated`: a fine-grained token may read the files of public gated repos its owner has
    access to (the Hub's canReadGatedRepos); without it, only those its scopes name. `mailer`: the
    owner's primary address is told (a token is a sensitive account change)."""
    if role not in ROLES:
        raise BadRequest(f"Invalid token role {role!r}: expected one of {', '.join(ROLES)}")
    name = _valid_name(name)
    scopes = governance.resolve_group_scopes(session, scopes) if scopes else scopes
    if expires_at is not None and expires_at <= utcnow():
        raise BadRequest("The expiry date must be in the future")
    secret = token_format.generate()
    tok = AccessToken(user_id=user.id, name=name, role=role, secret_hash=token_format.hash_token(secret),
                      last4=secret[-4:], expires_at=expires_at,
                      restrictions=_restrictions_for(role, scopes, can_read_gated))
    session.add(tok)
    session.flush()
    audit.record(session, AuditAction.TOKEN_CREATE, target=("token", str(tok.id)), namespace=user.name,
                 details={"name": name, "role": role, "user": user.name, "scopes": scopes_payload(tok)["scoped"],
                          "expires": expires_at.isoformat() if expires_at else None,
                          **({"canReadGatedRepos": True} if can_read_gated else {})})
    governance.token_created(session, tok)  # org token governance: pending approval, or approved for org admins
    _tell_owner(session, mailer, tok, "created", f"An access token named {name!r} ({role}) was created")
    return IssuedToken(tok, secret)


def _tell_owner(session: Session, mailer: Mailer | None, tok: AccessToken, verb: str, text: str) -> None:
    notify(session, mailer, tok.user, f"An access token was {verb}", f"{text} on your account.",
           review="/settings/tokens")


def _valid_name(name: str) -> str:
    name = (name or "").strip()
    if not name or len(name) > 100:
        raise BadRequest("A token needs a name of 1 to 100 characters")
    return name


def principal_for_token(tok: AccessToken) -> Principal:
    """The Principal a live token acts as: its owner's current rights, narrowed by its restrictions."""
    stored = restrictions.load_all(tok.restrictions or [])
    if tok.role == "read" and not any(isinstance(r, ReadOnly) for r in stored):
        stored += (ReadOnly(),)  # whatever the row says, a read token never writes
    # Org token policies, evaluated on every use with the approval states as they are now.
    session = object_session(tok)
    if session is None:  # the approval states cannot be read: fail closed
        return Principal(method="token", user_id=tok.user_id, username=tok.user.name, token_id=tok.id,
                         token_role=tok.role, restrictions=(restrictions.DenyAll("token state unavailable"),))
    stored += (OrgTokenPolicy(tok.user_id, tok.role == "fineGrained", governance.approval_states(session, tok.id)),)
    return Principal(method="token", user_id=tok.user_id, username=tok.user.name, is_admin=tok.user.is_admin,
                     token_id=tok.id, token_role=tok.role, restrictions=stored)


def principal_for_token_id(session: Session, token_id: int) -> Principal | None:
    """The Principal of token `token_id` as it is now, None once it is revoked, expired or its user is
    disabled: what a capability minted with the token re-checks on every use (one primary-key read)."""
    tok = session.get(AccessToken, token_id)
    if tok is None:
        return None
    if not is_live(tok):
        status = state(tok)
        note_token_denial(tok.id, tok.user.name, "capability",
                          "inactive user" if status == "active" else f"{status} token")
        return None
    return principal_for_token(tok)


def scopes_payload(tok: AccessToken) -> dict[str, Any]:
    """`auth.accessToken.fineGrained` as whoami-v2 reports it on the Hub."""
    scoped: list[dict[str, Any]] = []
    glob: list[str] = []
    gated = False
    for r in restrictions.load_all(tok.restrictions or []):
        if isinstance(r, Scoped):
            glob += sorted(r.global_permissions)
            scoped += [{"entity": {"type": s.entity_type, "name": s.name}, "permissions": sorted(s.permissions)}
                       for s in r.scopes]
            gated = gated or r.can_read_gated
    return {"scoped": scoped, "global": glob, "canReadGatedRepos": gated}


def token_payload(tok: AccessToken) -> dict[str, Any]:
    """A token as listed to its owner: everything but the secret."""
    payload: dict[str, Any] = {
        "id": tok.id, "displayName": tok.name, "role": tok.role, "last4": tok.last4,
        "createdAt": _iso(tok.created_at), "expiresAt": _iso(tok.expires_at), "revokedAt": _iso(tok.revoked_at),
        "rotatedAt": _iso(tok.rotated_at), "lastUsedAt": _iso(tok.last_used_at), "lastUsedIp": tok.last_used_ip,
        "lastUsedUserAgent": tok.last_used_user_agent, "state": state(tok),
    }
    if tok.role == "fineGrained":
        payload["fineGrained"] = scopes_payload(tok)
    return payload


def _iso(dt: datetime | None) -> str | None:
    return dt.isoformat().replace("+00:00", "Z") if dt else None


def tokens_by_ids(session: Session, ids: set[int]) -> dict[int, AccessToken]:
    """The tokens among `ids` that still exist, by id (audit logs say which token acted)."""
    if not ids:
        return {}
    return {t.id: t for t in session.scalars(select(AccessToken).where(AccessToken.id.in_(sorted(ids))))}


def list_tokens(session: Session, user: User) -> list[AccessToken]:
    return list(session.scalars(select(AccessToken).where(AccessToken.user_id == user.id)
                                .order_by(AccessToken.created_at.desc(), AccessToken.id.desc())))


def get_own_token(session: Session, user: User, token_id: int) -> AccessToken:
    tok = session.get(AccessToken, token_id)
    if tok is None or tok.user_id != user.id:
        raise NotFound("Token not found")
    return tok


def rename_token(session: Session, tok: AccessToken, name: str) -> None:
    old, tok.name = tok.name, _valid_name(name)
    audit.record(session, AuditAction.TOKEN_RENAME, target=("token", str(tok.id)), namespace=tok.user.name,
                 details={"from": old, "to": tok.name})


def rotate_token(session: Session, tok: AccessToken, mailer: Mailer | None = None) -> str:
    """A new secret with the same scopes; the old secret stops working at once."""
    if tok.revoked_at is not None:
        raise BadRequest("A revoked token cannot be rotated")
    secret = token_format.generate()
    tok.secret_hash, tok.last4, tok.rotated_at = token_format.hash_token(secret), secret[-4:], utcnow()
    audit.record(session, AuditAction.TOKEN_ROTATE, target=("token", str(tok.id)), namespace=tok.user.name,
                 details={"name": tok.name})
    _tell_owner(session, mailer, tok, "rotated", f"The access token {tok.name!r} was given a new secret")
    return secret


def authenticate(session: Session, presented: str, ip: str | None, user_agent: str | None,
                 touch: bool = True) -> AccessToken:
    """Return the live token for a presented secret, or raise InvalidCredentials."""
    if not token_format.is_well_formed(presented):
        raise UnknownCredentials("malformed token")
    digest = token_format.hash_token(presented)
    tok = session.scalar(_BY_HASH, {"digest": digest})
    # The lookup is by hash; the comparison is repeated in constant time as defence in depth.
    if tok is None or not secrets.compare_digest(tok.secret_hash, digest):
        raise UnknownCredentials("unknown token")
    now = utcnow()
    if tok.revoked_at is not None or (tok.expires_at is not None and tok.expires_at <= now):
        # A known token used after its end: worth an audit event (the caller records it, rate-limited).
        note_token_denial(tok.id, tok.user.name, "authenticate", "revoked token" if tok.revoked_at else "expired token")
        raise InvalidCredentials("revoked token" if tok.revoked_at else "expired token")
    if not tok.user.is_active:
        note_token_denial(tok.id, tok.user.name, "authenticate", "inactive user")
        raise InvalidCredentials("inactive user")
    if touch and needs_touch(tok):
        touch_last_used(session, tok.id, ip, user_agent)
    return tok


# Built once: this lookup runs on every authenticated request, and building the statement each time
# cost about as much as running it.
_BY_HASH = select(AccessToken).where(AccessToken.secret_hash == bindparam("digest"))


def find_by_secret(session: Session, presented: str) -> AccessToken | None:
    """The token a secret belongs to, live or not (for leak reports); None for anything else."""
    if not token_format.is_well_formed(presented):
        return None
    digest = token_format.hash_token(presented)
    tok = session.scalar(_BY_HASH, {"digest": digest})
    return tok if tok is not None and secrets.compare_digest(tok.secret_hash, digest) else None


def state(tok: AccessToken) -> str:
    """revoked / expired / active: what the owner sees (the tests authenticate() applies)."""
    if tok.revoked_at is not None:
        return "revoked"
    if tok.expires_at is not None and tok.expires_at <= utcnow():
        return "expired"
    return "active"


def is_live(tok: AccessToken) -> bool:
    return state(tok) == "active" and tok.user.is_active


def revoke_token(session: Session, tok: AccessToken, reason: str = "revoked by owner",
                 mailer: Mailer | None = None) -> None:
    if tok.revoked_at is None:
        tok.revoked_at = utcnow()
        audit.record(session, AuditAction.TOKEN_REVOKE, target=("token", str(tok.id)),
                     namespace=tok.user.name, details={"name": tok.name, "reason": reason})
        _tell_owner(session, mailer, tok, "revoked", f"The access token {tok.name!r} was revoked")


def needs_touch(tok: AccessToken) -> bool:
    return tok.last_used_at is None or utcnow() - tok.last_used_at > LAST_USED_RESOLUTION


def touch_last_used(session: Session, token_id: int, ip: str | None, user_agent: str | None) -> None:
    session.execute(update(AccessToken).where(AccessToken.id == token_id).values(
        last_used_at=utcnow(), last_used_ip=ip, last_used_user_agent=(user_agent or "")[:512] or None))


def note_failed_authentication(ip: str | None, reason: str, method: str, path: str) -> None:
    """Audit, after the response, a credential that names no token: one event per source IP and reason
    a window, with a count (bastion.audit.aggregate), so a flood of bad tokens cannot fill the log."""
    source = ip or "unknown"
    aggregate.defer(AuditAction.TOKEN_AUTH_FAILED, key=f"{AuditAction.TOKEN_AUTH_FAILED}:{source}:{reason}",
                    target=("ip", source), details={"reason": reason, "method": method, "path": path[:200]})
