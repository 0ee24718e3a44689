"""Organization SSO: settings (validated discovery, sealed client secret, role and resource-group mapping),
"update and test" before "enable", sign-in (state, nonce, PKCE; each sign-in used once, by the user who
started it), SSO sessions and the facts the policy reads (orgs.service.sso_gate, filled at import).

A sign-in completes only for the signed-in Bastion user whose verified e-mail address is the one the IdP
returns (and, when the org lists e-mail domains, in one of them): SSO is a layer on top of the normal login.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, exists, not_, or_, select
from sqlalchemy.orm import Session

from bastion import audit
from bastion.accounts.models import User, UserEmail
from bastion.audit.actions import AuditAction
from bastion.authz.policy import ORG_ROLES
from bastion.db import utcnow
from bastion.errors import BadRequest, Conflict, NotFound
from bastion.orgs import service as orgs
from bastion.orgs.models import Organization, OrgInvitation, ResourceGroup
from bastion.secretbox import SealedValueError, SecretBox
from bastion.sso import oidc, saml
from bastion.sso.models import SsoConfig, SsoExemption, SsoLoginState, SsoSamlAssertion, SsoSession

MAPPED_ROLES = ("read", "contributor", "write", "admin")
DEFAULT_SESSION_DAYS = 7
MAX_SESSION_DAYS = 90
STATE_TTL = timedelta(minutes=10)
CLAIM_PATH_RE = re.compile(r"^[A-Za-z0-9_:/.\-]{1,300}\Z")
DOMAIN_RE = re.compile(r"^(?=.{1,253}\Z)([a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}\Z")
# Tests move SSO's clock (session lapse) through this file: seconds to add to the real time. Never set in a
# deployment; read on every call, so a test changes it while the server runs.
CLOCK_FILE_ENV = "BASTION_TEST_CLOCK_FILE"


def now() -> datetime:
    path = os.environ.get(CLOCK_FILE_ENV)
    if path:
        try:
            with open(path) as f:
                return utcnow() + timedelta(seconds=float(f.read().strip() or 0))
        except (OSError, ValueError):
            pass
    return utcnow()


def secret_box(instance_key: bytes) -> SecretBox:
    return SecretBox(instance_key, "sso-client-secret")


def _secret_context(org_id: int) -> str:
    return f"org:{org_id}"


# ---- the facts the policy reads ------------------------------------------------------------------

def enabled_config(session: Session, org_id: int) -> SsoConfig | None:
    return session.scalar(select(SsoConfig).where(SsoConfig.org_id == org_id, SsoConfig.enabled.is_(True)))


class _Gate:
    def member_facts(self, session: Session, org_id: int, member_ids: list[int]) -> tuple[bool, frozenset[int]]:
        if enabled_config(session, org_id) is None:
            return False, frozenset()
        if not member_ids:
            return True, frozenset()
        live = session.scalars(select(SsoSession.user_id).where(
            SsoSession.org_id == org_id, SsoSession.user_id.in_(member_ids), SsoSession.expires_at > now()))
        exempt = session.scalars(select(SsoExemption.user_id).where(
            SsoExemption.org_id == org_id, SsoExemption.user_id.in_(member_ids)))
        return True, frozenset(live) | frozenset(exempt)

    def sso_ok_clause(self, user_id: int, org_id: Any) -> ColumnElement[bool]:
        enforced = exists().where(SsoConfig.org_id == org_id, SsoConfig.enabled.is_(True))
        live = exists().where(SsoSession.org_id == org_id, SsoSession.user_id == user_id,
                              SsoSession.expires_at > now())
        exempt = exists().where(SsoExemption.org_id == org_id, SsoExemption.user_id == user_id)
        return or_(not_(enforced), live, exempt)

    def invitations_closed(self, session: Session, org_id: int) -> bool:
        return enabled_config(session, org_id) is not None


orgs.sso_gate = _Gate()


# ---- settings --------------------------------------------------------------------------------------

def get_config(session: Session, org: Organization) -> SsoConfig | None:
    return session.scalar(select(SsoConfig).where(SsoConfig.org_id == org.id))


def parse_role_map(text: str) -> dict[str, str]:
    """`VALUE=ROLE[,VALUE=ROLE…]` (the CLI's and the settings form's syntax) → {value: role}."""
    out: dict[str, str] = {}
    for item in (text or "").split(","):
        item = item.strip()
        if not item:
            continue
        value, sep, role = item.rpartition("=")
        if not sep or not value.strip():
            raise BadRequest(f"Invalid role mapping {item!r}: expected VALUE=ROLE")
        out[value.strip()] = role.strip()
    return out


def parse_group_map(text: str) -> dict[str, list[str]]:
    """`VALUE=GROUP:ROLE[,VALUE=GROUP:ROLE…]` → {value: ["GROUP:ROLE", …]} (group names resolved later)."""
    out: dict[str, list[str]] = {}
    for item in (text or "").split(","):
        item = item.strip()
        if not item:
            continue
        value, sep, target = item.rpartition("=")
        if not sep or not value.strip() or ":" not in target:
            raise BadRequest(f"Invalid resource group mapping {item!r}: expected VALUE=GROUP:ROLE")
        out.setdefault(value.strip(), []).append(target.strip())
    return out


@dataclass
class Settings:
    issuer: str
    client_id: str
    client_secret: str | None  # None: keep the stored one
    token_auth_method: str = "client_secret_post"
    role_claim: str = ""
    role_map: dict[str, str] | None = None
    group_claim: str = ""
    group_map: dict[str, list[str]] | None = None
    email_domains: list[str] | None = None
    session_days: int = DEFAULT_SESSION_DAYS


def _check_claim_path(path: str, what: str) -> str:
    path = (path or "").strip()
    if path and not CLAIM_PATH_RE.match(path):
        raise BadRequest(f"Invalid {what} {path!r}: a claim name or a dot-separated path such as user.role")
    return path


def _validated(session: Session, org: Organization, s: Settings) -> tuple[dict[str, str], dict[str, list[list[Any]]],
                                                                          list[str]]:
    if not s.client_id.strip() or len(s.client_id) > 500:
        raise BadRequest("The client ID is required")
    if s.client_secret is not None and (not s.client_secret or len(s.client_secret) > 1000):
        raise BadRequest("The client secret is required")
    if not isinstance(s.session_days, int) or not 1 <= s.session_days <= MAX_SESSION_DAYS:
        raise BadRequest(f"The SSO session length must be 1 to {MAX_SESSION_DAYS} days")
    role_claim = _check_claim_path(s.role_claim, "role attribute path")
    role_map = dict(s.role_map or {})
    for value, role in role_map.items():
        if role not in MAPPED_ROLES:
            raise BadRequest(f"Invalid role {role!r} for {value!r}: expected one of {', '.join(MAPPED_ROLES)}")
    if role_map and not role_claim:
        raise BadRequest("A role mapping needs the role attribute path (--role-claim) it reads")
    if role_claim and "admin" not in role_map.values():
        raise BadRequest("The role mapping needs at least one value mapped to admin")
    group_claim = _check_claim_path(s.group_claim, "resource group attribute path")
    group_map: dict[str, list[list[Any]]] = {}
    for value, targets in (s.group_map or {}).items():
        for target in targets:
            name, _, role = target.rpartition(":")
            if role not in orgs.GROUP_ROLES:
                raise BadRequest(f"Invalid resource group role {role!r}: expected one of {', '.join(orgs.GROUP_ROLES)}")
            group = session.scalar(select(ResourceGroup).where(ResourceGroup.org_id == org.id,
                                                               ResourceGroup.name_lower == name.strip().lower()))
            if group is None:
                raise BadRequest(f"Resource group {name!r} not found in {org.name}")
            group_map.setdefault(value, []).append([group.id, role])
    if group_map and not group_claim:
        raise BadRequest("A resource group mapping needs the attribute path (--group-claim) it reads")
    domains = sorted({d.strip().lower().lstrip("@") for d in (s.email_domains or []) if d.strip()})
    for d in domains:
        if not DOMAIN_RE.match(d):
            raise BadRequest(f"Invalid e-mail domain {d!r}")
    return role_map, group_map, domains


def configure(session: Session, box: SecretBox, org: Organization, s: Settings, discovery: dict[str, Any]) -> SsoConfig:
    """Save the org's OIDC settings (discovery already fetched and validated: oidc.discover). A change needs a
    new passing test before SSO can be enabled; while SSO is on, the new settings apply at once."""
    role_map, group_map, domains = _validated(session, org, s)
    config = get_config(session, org)
    if config is None and s.client_secret is None:
        raise BadRequest("The client secret is required")
    if config is None:
        config = SsoConfig(org_id=org.id, enabled=False)
        session.add(config)
    config.protocol = "oidc"
    config.issuer = discovery["issuer"]
    config.client_id = s.client_id.strip()
    if s.client_secret is not None:
        config.client_secret = box.seal(s.client_secret, _secret_context(org.id))
    config.token_auth_method = s.token_auth_method
    config.discovery = discovery
    config.role_claim, config.role_map = s.role_claim.strip(), role_map
    config.group_claim, config.group_map = s.group_claim.strip(), group_map
    config.email_domains, config.session_days = domains, s.session_days
    config.updated_at, config.tested_at = utcnow(), None
    session.flush()
    audit.record(session, AuditAction.ORG_SETTINGS_SSO, target=("org", org.name), namespace=org.name,
                 details={"protocol": "oidc", "issuer": config.issuer, "clientId": config.client_id,
                          "tokenAuthMethod": config.token_auth_method, "roleClaim": config.role_claim,
                          "roleMap": role_map, "groupClaim": config.group_claim,
                          "emailDomains": domains, "sessionDays": config.session_days,
                          "secretChanged": s.client_secret is not None})
    return config


def configure_saml(session: Session, org: Organization, s: Settings, idp: dict[str, Any]) -> SsoConfig:
    """Save the org's SAML 2.0 settings (IdP metadata already checked: saml.check_idp_metadata)."""
    role_map, group_map, domains = _validated(session, org, dataclasses.replace(s, client_id="-", client_secret=None))
    config = get_config(session, org)
    if config is None:
        config = SsoConfig(org_id=org.id, enabled=False)
        session.add(config)
    config.protocol, config.issuer, config.client_id, config.client_secret = "saml", idp["entity_id"], "", ""
    config.token_auth_method, config.discovery = "", idp
    config.role_claim, config.role_map = s.role_claim.strip(), role_map
    config.group_claim, config.group_map = s.group_claim.strip(), group_map
    config.email_domains, config.session_days = domains, s.session_days
    config.updated_at, config.tested_at = utcnow(), None
    session.flush()
    audit.record(session, AuditAction.ORG_SETTINGS_SSO, target=("org", org.name), namespace=org.name,
                 details={"protocol": "saml", "idpEntityId": idp["entity_id"], "signOnUrl": idp["sso_url"],
                          "roleClaim": config.role_claim, "roleMap": role_map, "groupClaim": config.group_claim,
                          "emailDomains": domains, "sessionDays": config.session_days})
    return config


def set_enabled(session: Session, org: Organization, enabled: bool, *, require_test: bool = True) -> SsoConfig:
    config = get_config(session, org)
    if config is None:
        raise BadRequest("Configure single sign-on first")
    if enabled and require_test and (config.tested_at is None or config.tested_at < config.updated_at):
        raise BadRequest("Update and test the SSO configuration first: a test sign-in must pass with the current "
                         "settings before SSO can be enabled")
    if config.enabled != enabled:
        config.enabled = enabled
        audit.record(session, AuditAction.ORG_SETTINGS_SSO_ENABLE if enabled else AuditAction.ORG_SETTINGS_SSO_DISABLE,
                     target=("org", org.name), namespace=org.name,
                     details={"protocol": config.protocol, "tested": config.tested_at is not None})
    return config


def set_exempt(session: Session, org: Organization, user: User, exempt: bool) -> None:
    """Make a member an external collaborator (no SSO needed), or no longer."""
    if orgs.member(session, org, user) is None:
        raise NotFound(f"{user.name} is not a member of {org.name}")
    row = session.scalar(select(SsoExemption).where(SsoExemption.org_id == org.id, SsoExemption.user_id == user.id))
    if exempt and row is None:
        session.add(SsoExemption(org_id=org.id, user_id=user.id))
    elif not exempt and row is not None:
        session.delete(row)
    else:
        return
    session.flush()
    audit.record(session, AuditAction.ORG_SETTINGS_SSO, target=("user", user.name), namespace=org.name,
                 details={"externalCollaborator": exempt})


def exempt_users(session: Session, org: Organization) -> list[User]:
    return list(session.scalars(select(User).join(SsoExemption, SsoExemption.user_id == User.id).where(
        SsoExemption.org_id == org.id).order_by(User.name_lower)))


def live_session(session: Session, org: Organization, user_id: int | None) -> SsoSession | None:
    if user_id is None:
        return None
    return session.scalar(select(SsoSession).where(SsoSession.org_id == org.id, SsoSession.user_id == user_id,
                                                   SsoSession.expires_at > now()))


# ---- sign-in ---------------------------------------------------------------------------------------

class LoginRefused(Exception):
    """A sign-in refused: audited (org.sso_login_failed) by the caller in a transaction of its own."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason, self.message = reason, message


def client(box: SecretBox, config: SsoConfig, redirect_uri: str) -> oidc.Client:
    try:
        secret = box.open(config.client_secret, _secret_context(config.org_id))
    except SealedValueError:
        raise BadRequest("The stored SSO client secret does not open with this instance's key: set it again") \
            from None
    return oidc.Client(discovery=config.discovery, client_id=config.client_id, client_secret=secret,
                       token_auth_method=config.token_auth_method, redirect_uri=redirect_uri)


def _hash(state: str) -> str:
    return hashlib.sha256(state.encode()).hexdigest()


def start_login(session: Session, box: SecretBox, org: Organization, user_id: int, *, test: bool, next_path: str,
                redirect_uri: str, saml_urls: saml.SpUrls | None = None) -> str:
    """The IdP URL that starts a sign-in (or, for an admin, the test of the current settings)."""
    config = get_config(session, org)
    if config is None or (not config.enabled and not test):
        raise NotFound(f"The organization {org.name!r} has no single sign-on enabled")
    state, nonce = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
    verifier = secrets.token_urlsafe(64)
    if config.protocol == "saml":
        assert saml_urls is not None
        nonce, url = saml.authn_request(saml_urls, config.discovery, state)  # the AuthnRequest's ID
        verifier = ""
    session.add(SsoLoginState(state_hash=_hash(state), org_id=org.id, user_id=user_id, nonce=nonce,
                              code_verifier=verifier, purpose="test" if test else "login", next_path=next_path,
                              created_at=utcnow()))
    session.flush()
    if config.protocol == "saml":
        return url
    return client(box, config, redirect_uri).authorization_url(state, nonce, verifier)


@dataclass(frozen=True)
class PendingLogin:
    org_id: int
    user_id: int
    nonce: str
    code_verifier: str
    purpose: str
    next_path: str


def claim_state(session: Session, org: Organization, user_id: int | None, state: str, *,
                bound_to_state: bool = False) -> PendingLogin:
    """Take the sign-in `state` names, once: unknown, used, expired, another org's or another user's is refused.
    `bound_to_state` (a SAML response posted cross-site, without the session cookie): the state's own user."""
    row = session.scalar(select(SsoLoginState).where(SsoLoginState.state_hash == _hash(state or "")))
    if bound_to_state and row is not None:
        user_id = row.user_id
    if row is None or row.org_id != org.id:
        raise LoginRefused("unknown_state", "This sign-in is unknown (state): start again from the SSO login link")
    if row.used_at is not None:
        raise LoginRefused("reused_state", "This sign-in was already used (state): start again from the SSO login link")
    row.used_at = utcnow()
    if row.user_id != user_id:
        raise LoginRefused("other_user", "This sign-in was started by another user")
    if utcnow() - row.created_at > STATE_TTL:
        raise LoginRefused("expired_state", "This sign-in took too long: start again from the SSO login link")
    return PendingLogin(row.org_id, row.user_id, row.nonce, row.code_verifier, row.purpose, row.next_path)


def claim_values(claims: dict[str, Any], path: str) -> list[str]:
    """The values at a dot-separated path of the claims: a string, or each string of an array."""
    node: Any = claims
    if path in claims:
        node = claims[path]  # a claim whose name has dots (a URI) is read whole first
    else:
        for part in path.split("."):
            if not isinstance(node, dict) or part not in node:
                return []
            node = node[part]
    if isinstance(node, str | int | bool):
        return [str(node)]
    if isinstance(node, list):
        return [str(v) for v in node if isinstance(v, str | int | bool)]
    return []


def mapped_role(config: SsoConfig, claims: dict[str, Any]) -> str | None:
    """The most privileged role the claims map to; None when no value matches (or no mapping is set)."""
    if not config.role_claim:
        return None
    roles = [config.role_map[v] for v in claim_values(claims, config.role_claim) if v in config.role_map]
    return max(roles, key=ORG_ROLES.index) if roles else None


def _user_has_verified(session: Session, user_id: int, email: str) -> bool:
    return session.scalar(select(UserEmail.id).where(UserEmail.user_id == user_id, UserEmail.email_lower == email,
                                                     UserEmail.verified_at.is_not(None))) is not None


def complete_login(session: Session, org: Organization, pending: PendingLogin, claims: dict[str, Any]) -> str:
    """Apply a validated sign-in: the SSO session, membership (SSO join), role and resource groups. Returns
    what happened: "test" | "login" | "join"."""
    config = get_config(session, org)
    if config is None:
        raise LoginRefused("not_configured", "Single sign-on is not configured for this organization")
    user = session.get(User, pending.user_id)
    assert user is not None
    email = claims.get("email")
    if not isinstance(email, str) or "@" not in email:
        raise LoginRefused("no_email", "The identity provider returned no e-mail address")
    email = email.strip().lower()
    if claims.get("email_verified") is False:
        raise LoginRefused("email_unverified", "The identity provider has not verified this e-mail address")
    if config.email_domains and email.rsplit("@", 1)[1] not in config.email_domains:
        raise LoginRefused("email_domain", f"The e-mail address {email} is not in one of the organization's "
                                           "e-mail domains")
    if not _user_has_verified(session, user.id, email):
        raise LoginRefused("email_mismatch", f"The identity provider signed you in as {email}: add and verify that "
                                             "address on your Bastion account, then sign in again")
    subject = str(claims["sub"])
    other = session.scalar(select(SsoSession).where(SsoSession.org_id == org.id, SsoSession.subject == subject,
                                                    SsoSession.user_id != user.id))
    if other is not None:
        raise LoginRefused("subject_taken", "This identity-provider account is already linked to another user")
    if pending.purpose == "test":
        config.tested_at = utcnow()
        audit.record(session, AuditAction.ORG_SETTINGS_SSO, target=("org", org.name), namespace=org.name,
                     details={"test": "passed", "subject": subject, "email": email})
    if pending.purpose == "test" and not config.enabled and orgs.member(session, org, user) is None:
        return "test"
    start = now()
    row = session.scalar(select(SsoSession).where(SsoSession.org_id == org.id, SsoSession.user_id == user.id))
    if row is None:
        row = SsoSession(org_id=org.id, user_id=user.id, subject=subject)
        session.add(row)
    row.subject, row.email = subject, email
    row.authenticated_at, row.expires_at = start, start + timedelta(days=config.session_days)
    membership = orgs.member(session, org, user)
    role = mapped_role(config, claims)
    outcome = "login"
    if membership is None:
        invitation = session.scalar(select(OrgInvitation).where(
            OrgInvitation.org_id == org.id, OrgInvitation.email == email, OrgInvitation.state == "pending",
            OrgInvitation.expires_at > utcnow()).order_by(OrgInvitation.id.desc()).limit(1))
        join_role = role or (invitation.role if invitation is not None else org.default_role)
        orgs.add_member(session, org, user, join_role)
        if invitation is not None:
            invitation.state, invitation.answered_by_user_id = "accepted", user.id
        outcome = "join"
        audit.record(session, AuditAction.ORG_SSO_JOIN, target=("user", user.name), namespace=org.name,
                     details={"subject": subject, "email": email, "role": join_role,
                              "roleFrom": "mapping" if role else ("invitation" if invitation else "default")})
    else:
        if config.role_claim:
            # Synced at every sign-in: the mapping, else the org's default role.
            wanted = role or org.default_role
            if membership.role != wanted:
                try:
                    with session.begin_nested():
                        orgs.change_role(session, org, user, wanted)
                except Conflict:
                    pass  # the org's last admin keeps the role: an org always has one
        audit.record(session, AuditAction.ORG_SSO_LOGIN, target=("user", user.name), namespace=org.name,
                     details={"subject": subject, "email": email, "role": orgs.member(session, org, user).role,
                              "expiresAt": row.expires_at.isoformat(), "test": pending.purpose == "test"})
    _sync_groups(session, org, user, config, claims)
    session.flush()
    return "test" if pending.purpose == "test" else outcome


def _sync_groups(session: Session, org: Organization, user: User, config: SsoConfig, claims: dict[str, Any]) -> None:
    """Resource-group mapping, additive: the user joins every group a claim value maps to (the highest role
    a group is mapped to); groups no value maps to are left as they are."""
    if not config.group_claim:
        return
    best: dict[int, str] = {}
    for value in claim_values(claims, config.group_claim):
        for group_id, role in config.group_map.get(value, []):
            if group_id not in best or ORG_ROLES.index(role) > ORG_ROLES.index(best[group_id]):
                best[group_id] = role
    for group_id, role in sorted(best.items()):
        group = session.get(ResourceGroup, group_id)
        if group is None or group.org_id != org.id:
            continue
        current = orgs.group_facts(session, group).roles.get(user.id)
        if current is None or ORG_ROLES.index(role) > ORG_ROLES.index(current):
            orgs.set_group_member(session, org, group, user, role)


def saml_state_known(session: Session, org: Organization, relay_state: str) -> bool:
    return bool(relay_state) and session.scalar(select(SsoLoginState.id).where(
        SsoLoginState.state_hash == _hash(relay_state), SsoLoginState.org_id == org.id)) is not None


def remember_assertion(session: Session, org: Organization, assertion_id: str, keep_until: datetime) -> None:
    """The replay cache: LoginRefused if this assertion (or this finish token) was already used here."""
    session.execute(SsoSamlAssertion.__table__.delete().where(SsoSamlAssertion.expires_at < utcnow()))
    if session.scalar(select(SsoSamlAssertion.id).where(SsoSamlAssertion.org_id == org.id,
                                                        SsoSamlAssertion.assertion_id == assertion_id)) is not None:
        raise LoginRefused("replayed", "This SAML assertion was already used")
    session.add(SsoSamlAssertion(org_id=org.id, assertion_id=assertion_id[:300], expires_at=keep_until))
    session.flush()


def saml_claims(assertion: saml.Assertion) -> dict[str, Any]:
    """The claims a SAML assertion gives: its NameID as subject (and e-mail, NameID format EmailAddress, unless an
    `email` attribute names it), and its attributes as lists (mapping paths are attribute names)."""
    claims: dict[str, Any] = dict(assertion.attributes)
    email = assertion.name_id
    for key in ("email", "mail", "urn:oid:0.9.2342.19200300.100.1.3"):
        if assertion.attributes.get(key):
            email = assertion.attributes[key][0]
            break
    claims.update({"sub": assertion.name_id, "email": email, "email_verified": True})
    return claims


def record_refusal(session: Session, org: Organization, user_name: str | None, reason: str, message: str) -> None:
    audit.record(session, AuditAction.ORG_SSO_LOGIN_FAILED, target=("user", user_name or "-"), namespace=org.name,
                 details={"reason": reason, "message": message[:300]})


def settings_view(session: Session, org: Organization) -> dict[str, Any] | None:
    """The settings as shown to the org's admins (never the secret)."""
    config = get_config(session, org)
    if config is None:
        return None
    names = {g.id: g.name for g in orgs.list_groups(session, org)}
    return {"protocol": config.protocol, "issuer": config.issuer, "clientId": config.client_id,
            **({"signOnUrl": config.discovery.get("sso_url")} if config.protocol == "saml" else {}),
            "tokenAuthMethod": config.token_auth_method, "roleClaim": config.role_claim,
            "roleMap": config.role_map, "groupClaim": config.group_claim,
            "groupMap": {v: [f"{names.get(gid, gid)}:{role}" for gid, role in targets]
                         for v, targets in config.group_map.items()},
            "emailDomains": config.email_domains, "sessionDays": config.session_days, "enabled": config.enabled,
            "testedAt": config.tested_at.isoformat() if config.tested_at else None,
            "tested": config.tested_at is not None and config.tested_at >= config.updated_at,
            "externalCollaborators": [u.name for u in exempt_users(session, org)]}


def expires_text(when: datetime | None) -> str:
    return when.strftime("%Y-%m-%d %H:%M UTC") if when else ""
