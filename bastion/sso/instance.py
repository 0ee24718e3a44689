"""Instance SSO: the whole instance behind one identity provider (OIDC or SAML 2.0). The token and assertion
checks are the org SSO's own (bastion.sso.oidc, bastion.sso.saml); this module keeps the settings, the
sign-ins in flight, the linked identities, just-in-time accounts and "SSO only" mode.

A verified sign-in becomes a Bastion session for: the account its IdP subject is linked to; else, when an
account already owns its (IdP-verified) e-mail address, nobody yet: the person must prove that account (its
password and second factor, in the same flow) before the identity is linked; else a new account (JIT).
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from bastion import audit
from bastion.accounts import service as accounts
from bastion.accounts.models import User, UserEmail
from bastion.audit.actions import AuditAction
from bastion.audit.context import bind_context
from bastion.db import utcnow
from bastion.errors import BadRequest, BastionError
from bastion.secretbox import SealedValueError, SecretBox
from bastion.sso import oidc, saml
from bastion.sso.models import InstanceSsoAssertion, InstanceSsoConfig, InstanceSsoIdentity, InstanceSsoState
from bastion.sso.service import CLAIM_PATH_RE, STATE_TTL, LoginRefused, _hash, claim_values

SECRET_CONTEXT = "instance"
DEFAULT_USERNAME_CLAIM = "preferred_username"


def get_config(session: Session) -> InstanceSsoConfig | None:
    return session.scalar(select(InstanceSsoConfig).order_by(InstanceSsoConfig.id).limit(1))


def enabled_config(session: Session) -> InstanceSsoConfig | None:
    config = get_config(session)
    return config if config is not None and config.enabled else None


def _row(session: Session) -> InstanceSsoConfig:
    config = get_config(session)
    if config is None:
        config = InstanceSsoConfig(enabled=False, sso_only=False, break_glass_user="",
                                   username_claim=DEFAULT_USERNAME_CLAIM)
        session.add(config)
    return config


def _username_claim(value: str) -> str:
    value = (value or "").strip() or DEFAULT_USERNAME_CLAIM
    if not CLAIM_PATH_RE.match(value):
        raise BadRequest(f"Invalid username claim {value!r}: a claim name or a dot-separated path")
    return value


def configure_oidc(session: Session, box: SecretBox, *, client_id: str, client_secret: str | None,
                   token_auth_method: str, username_claim: str, discovery: dict[str, Any]) -> InstanceSsoConfig:
    """Save the instance's OIDC settings (discovery already fetched and checked: oidc.discover)."""
    if not client_id.strip() or len(client_id) > 500:
        raise BadRequest("The client ID is required")
    if client_secret is not None and (not client_secret or len(client_secret) > 1000):
        raise BadRequest("The client secret is required")
    claim = _username_claim(username_claim)
    config = get_config(session)
    if (config is None or config.protocol != "oidc" or not config.client_secret) and client_secret is None:
        raise BadRequest("The client secret is required")
    config = _row(session)
    config.protocol, config.issuer, config.client_id = "oidc", discovery["issuer"], client_id.strip()
    if client_secret is not None:
        config.client_secret = box.seal(client_secret, SECRET_CONTEXT)
    config.token_auth_method, config.discovery, config.username_claim = token_auth_method, discovery, claim
    config.updated_at = utcnow()
    session.flush()
    audit.record(session, AuditAction.INSTANCE_SSO_SETTINGS, target=("instance", "sso"),
                 details={"protocol": "oidc", "issuer": config.issuer, "clientId": config.client_id,
                          "tokenAuthMethod": token_auth_method, "usernameClaim": claim,
                          "secretChanged": client_secret is not None})
    return config


def configure_saml(session: Session, idp: dict[str, Any], username_claim: str) -> InstanceSsoConfig:
    """Save the instance's SAML settings (IdP metadata already checked: saml.check_idp_metadata)."""
    claim = _username_claim(username_claim)
    config = _row(session)
    config.protocol, config.issuer, config.client_id, config.client_secret = "saml", idp["entity_id"], "", ""
    config.token_auth_method, config.discovery, config.username_claim = "", idp, claim
    config.updated_at = utcnow()
    session.flush()
    audit.record(session, AuditAction.INSTANCE_SSO_SETTINGS, target=("instance", "sso"),
                 details={"protocol": "saml", "idpEntityId": idp["entity_id"], "signOnUrl": idp["sso_url"],
                          "usernameClaim": claim})
    return config


def set_enabled(session: Session, enabled: bool) -> InstanceSsoConfig:
    config = get_config(session)
    if config is None:
        raise BadRequest("Configure the instance's single sign-on first")
    if config.enabled != enabled:
        config.enabled = enabled
        audit.record(session, AuditAction.INSTANCE_SSO_ENABLE if enabled else AuditAction.INSTANCE_SSO_DISABLE,
                     target=("instance", "sso"), details={"protocol": config.protocol})
    return config


def set_sso_only(session: Session, sso_only: bool, break_glass_user: str | None) -> InstanceSsoConfig:
    """"SSO only": password sign-in refused for everyone but the break-glass admin (tokens keep working)."""
    config = get_config(session)
    if config is None:
        raise BadRequest("Configure the instance's single sign-on first")
    name = config.break_glass_user if break_glass_user is None else break_glass_user.strip()
    if name:
        user = session.scalar(select(User).where(User.name_lower == name.lower()))
        if user is None or not user.is_admin:
            raise BadRequest(f"The break-glass account {name!r} must be an existing instance administrator")
        name = user.name
    if sso_only and not name:
        raise BadRequest("\"SSO only\" needs a break-glass administrator (--break-glass-admin) who can still sign "
                         "in with a password")
    if sso_only and not config.enabled:
        raise BadRequest("Enable the instance's single sign-on before switching to \"SSO only\"")
    if (config.sso_only, config.break_glass_user) != (sso_only, name):
        config.sso_only, config.break_glass_user = sso_only, name
        audit.record(session, AuditAction.INSTANCE_SSO_SETTINGS, target=("instance", "sso"),
                     details={"ssoOnly": sso_only, "breakGlassAdmin": name})
    return config


def is_break_glass_admin(session: Session, user: User) -> bool:
    """Whether `user` is the administrator named to sign in with a password when "SSO only" is on: the one
    account that must outlive a broken or compromised identity provider (its SCIM cannot deactivate it)."""
    config = get_config(session)
    return config is not None and bool(config.break_glass_user) and user.is_admin \
        and user.name_lower == config.break_glass_user.lower()


def password_sign_in_allowed(session: Session, user: User) -> bool:
    """False while "SSO only" is on, except for the break-glass administrator."""
    config = enabled_config(session)
    if config is None or not config.sso_only:
        return True
    return is_break_glass_admin(session, user)


def settings_view(session: Session) -> dict[str, Any]:
    config = get_config(session)
    if config is None:
        return {"protocol": None, "enabled": False, "ssoOnly": False, "breakGlassAdmin": "",
                "usernameClaim": DEFAULT_USERNAME_CLAIM}
    return {"protocol": config.protocol, "issuer": config.issuer, "clientId": config.client_id,
            "tokenAuthMethod": config.token_auth_method, "usernameClaim": config.username_claim,
            **({"signOnUrl": config.discovery.get("sso_url")} if config.protocol == "saml" else {}),
            "enabled": config.enabled, "ssoOnly": config.sso_only, "breakGlassAdmin": config.break_glass_user,
            "linkedIdentities": len(list(session.scalars(select(InstanceSsoIdentity.id))))}


# ---- sign-in ---------------------------------------------------------------------------------------

def client(box: SecretBox, config: InstanceSsoConfig, redirect_uri: str) -> oidc.Client:
    try:
        secret = box.open(config.client_secret, SECRET_CONTEXT)
    except SealedValueError:
        raise BadRequest("The stored SSO client secret does not open with this instance's key: set it again") \
            from None
    return oidc.Client(discovery=config.discovery, client_id=config.client_id, client_secret=secret,
                       token_auth_method=config.token_auth_method, redirect_uri=redirect_uri)


def start_login(session: Session, box: SecretBox, *, next_path: str, redirect_uri: str,
                saml_urls: saml.SpUrls) -> str:
    config = enabled_config(session)
    if config is None:
        raise BadRequest("Single sign-on is not enabled on this instance")
    state, nonce, verifier = secrets.token_urlsafe(32), secrets.token_urlsafe(32), secrets.token_urlsafe(64)
    url = ""
    if config.protocol == "saml":
        nonce, url = saml.authn_request(saml_urls, config.discovery, state)
        verifier = ""
    session.add(InstanceSsoState(state_hash=_hash(state), nonce=nonce, code_verifier=verifier, next_path=next_path,
                                 created_at=utcnow()))
    session.flush()
    return url or client(box, config, redirect_uri).authorization_url(state, nonce, verifier)


@dataclass(frozen=True)
class Pending:
    nonce: str
    code_verifier: str
    next_path: str


def state_known(session: Session, state: str) -> bool:
    return bool(state) and session.scalar(select(InstanceSsoState.id).where(
        InstanceSsoState.state_hash == _hash(state))) is not None


def claim_state(session: Session, state: str) -> Pending:
    """Take the sign-in `state` names, once (unknown, used or expired: refused)."""
    row = session.scalar(select(InstanceSsoState).where(InstanceSsoState.state_hash == _hash(state or "")))
    if row is None:
        raise LoginRefused("unknown_state", "This sign-in is unknown (state): start again from the sign-in page")
    if row.used_at is not None:
        raise LoginRefused("reused_state", "This sign-in was already used (state): start again from the sign-in page")
    row.used_at = utcnow()
    if utcnow() - row.created_at > STATE_TTL:
        raise LoginRefused("expired_state", "This sign-in took too long: start again from the sign-in page")
    return Pending(row.nonce, row.code_verifier, row.next_path)


def remember_assertion(session: Session, assertion_id: str, keep_until: datetime) -> None:
    session.execute(InstanceSsoAssertion.__table__.delete().where(InstanceSsoAssertion.expires_at < utcnow()))
    if session.scalar(select(InstanceSsoAssertion.id).where(
            InstanceSsoAssertion.assertion_id == assertion_id[:300])) is not None:
        raise LoginRefused("replayed", "This SAML assertion was already used")
    session.add(InstanceSsoAssertion(assertion_id=assertion_id[:300], expires_at=keep_until))
    session.flush()


@dataclass(frozen=True)
class Outcome:
    user: User | None  # signed in as this account
    link_to: str = ""  # or: an account owns this e-mail; it must be proven before the identity is linked
    subject: str = ""
    email: str = ""


def _sanitised(value: str) -> str:
    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", value.strip())
    name = re.sub(r"[-_.]{2,}", "-", name).strip("-_.")[:90].strip("-_.")
    return name


def _free_name(session: Session, wanted: str) -> str:
    base = _sanitised(wanted) or "user"
    try:
        accounts.validate_namespace_name(base)
    except BadRequest:
        base = _sanitised(f"user-{base}")[:90] or "user"
    for i in range(1, 1000):
        candidate = base if i == 1 else f"{base}-{i}"
        try:
            accounts.validate_namespace_name(candidate)
        except BadRequest:
            continue
        taken = session.scalar(select(User.id).where(User.name_lower == candidate.lower()))
        if taken is None and not _org_named(session, candidate) and not accounts.name_retired(session, candidate):
            return candidate
    return f"user-{secrets.token_hex(6)}"


def _org_named(session: Session, name: str) -> bool:
    from bastion.orgs.models import Organization

    return session.scalar(select(Organization.id).where(Organization.name_lower == name.lower())) is not None


def complete_login(session: Session, claims: dict[str, Any], protocol: str) -> Outcome:
    """Apply a verified sign-in (claims already validated by oidc.Client.validate or saml.parse_response)."""
    config = enabled_config(session)
    if config is None:
        raise LoginRefused("not_enabled", "Single sign-on is not enabled on this instance")
    subject = str(claims.get("sub") or "")
    if not subject:
        raise LoginRefused("missing_subject", "The identity provider named no subject")
    email = claims.get("email")
    email = email.strip().lower() if isinstance(email, str) and "@" in email else ""
    verified = claims.get("email_verified") is True and bool(email)
    identity = session.scalar(select(InstanceSsoIdentity).where(InstanceSsoIdentity.subject == subject))
    if identity is not None:
        user = session.get(User, identity.user_id)
        if user is None or not user.is_active:
            raise LoginRefused("account_inactive", "The Bastion account of this identity is not active")
        audit.record(session, AuditAction.USER_SSO_LOGIN, target=("user", user.name), namespace=user.name,
                     details={"subject": subject, "protocol": protocol, "email": email})
        return Outcome(user)
    if not email:
        raise LoginRefused("no_email", "The identity provider returned no e-mail address")
    owner = session.scalar(select(UserEmail.user_id).where(UserEmail.email_lower == email,
                                                           UserEmail.verified_at.is_not(None)))
    if owner is not None:
        user = session.get(User, owner)
        assert user is not None
        if not verified:
            raise LoginRefused("email_unverified", f"An account with the address {email} exists, and the identity "
                                                   "provider has not verified that address: nothing was linked")
        return Outcome(None, link_to=user.name, subject=subject, email=email)
    names = claim_values(claims, config.username_claim) or [email.split("@", 1)[0]]
    name = _free_name(session, names[0])
    fullname = claims.get("name") if isinstance(claims.get("name"), str) else ""
    try:
        with bind_context(via="sso"):
            user = accounts.create_user(session, name, email, fullname=str(fullname or "")[:200],
                                        email_verified=verified)
    except BastionError as exc:
        raise LoginRefused("create_failed", f"No account could be made for this identity: {exc.message}") from None
    session.add(InstanceSsoIdentity(subject=subject[:500], user_id=user.id, created_at=utcnow()))
    session.flush()
    audit.record(session, AuditAction.USER_SSO_LOGIN, target=("user", user.name), namespace=user.name,
                 details={"subject": subject, "protocol": protocol, "email": email, "created": True,
                          "emailVerified": verified})
    return Outcome(user)


def link(session: Session, user: User, subject: str, email: str) -> None:
    """Link an IdP identity to `user`, who has just proven the account (password and second factor)."""
    if session.scalar(select(UserEmail.id).where(UserEmail.user_id == user.id, UserEmail.email_lower == email,
                                                 UserEmail.verified_at.is_not(None))) is None:
        raise LoginRefused("email_mismatch", f"This identity ({email}) belongs to another account: sign in as "
                                             "the account that owns that address")
    taken = session.scalar(select(InstanceSsoIdentity).where(
        (InstanceSsoIdentity.subject == subject) | (InstanceSsoIdentity.user_id == user.id)))
    if taken is not None:
        raise LoginRefused("already_linked", "This identity or this account is already linked")
    session.add(InstanceSsoIdentity(subject=subject[:500], user_id=user.id, created_at=utcnow()))
    session.flush()
    audit.record(session, AuditAction.USER_SSO_LINK, target=("user", user.name), namespace=user.name,
                 details={"subject": subject, "email": email})


def record_refusal(session: Session, user_name: str | None, reason: str, message: str) -> None:
    audit.record(session, AuditAction.USER_SSO_LOGIN_FAILED, target=("user", user_name or "-"),
                 details={"reason": reason, "message": message[:300]})
