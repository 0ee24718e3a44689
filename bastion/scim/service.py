"""SCIM's rules: the IdP's tokens, and what the instance's and an organization's SCIM client may do to
accounts, memberships and groups. Resources are scim2-models objects; routes only parse and render.

Safety rules (docs/architecture.md, "SCIM"):
- The instance's SCIM client is the instance's identity authority: it sees every account, creates them
  (its e-mail addresses are verified), changes their profile and deactivates them (deprovisioning: every
  credential revoked, SCIM-managed memberships removed, in the caller's transaction).
- An org's SCIM client sees the org's members and the accounts it provisioned, nothing else. It creates
  accounts (their addresses stay unverified: an org cannot vouch for an address), links an existing
  account only when it is already a member, changes the profile only of accounts it created, and its
  `active: false`/DELETE ends the membership (with that org's SSO session and token approvals); only an
  account it created is deactivated as a whole. Of a former member it did not create it returns no
  personal data.
- userName is immutable (it is the account's namespace: repos live under it).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from scim2_models import (
    ForbiddenException,
    Group,
    GroupMember,
    GroupMembership,
    InvalidValueException,
    Meta,
    MutabilityException,
    NotFoundException,
    UniquenessException,
    User,
)
from sqlalchemy import JSON, and_, case, column, delete, exists, func, literal, not_, or_, select, true, type_coerce
from sqlalchemy.orm import Session
from sqlalchemy.sql import Select

from bastion import audit
from bastion.accounts import service as accounts
from bastion.accounts.models import User as Account
from bastion.accounts.models import UserEmail
from bastion.audit.actions import AuditAction
from bastion.authz.policy import ORG_ROLES, Principal
from bastion.db import UTCDateTime, utcnow
from bastion.errors import BadRequest, Conflict, NotFound
from bastion.lifecycle import service as lifecycle
from bastion.orgs import service as orgs
from bastion.orgs.models import Organization, OrgMember, OrgTokenApproval, ResourceGroup, ResourceGroupMember
from bastion.scanning import leaks
from bastion.scim import filters
from bastion.scim.filters import Many, Scalar
from bastion.scim.models import ScimGroup, ScimGroupLink, ScimGroupMember, ScimIdentity, ScimToken
from bastion.sso import instance as sso_instance
from bastion.sso.models import SsoSession
from bastion.tokens import format as token_format
from bastion.tokens.models import AccessToken

SOURCE = "scim"  # OrgMember.managed_by of the memberships SCIM creates; deprovisioning names it
# An account the IdP sent no address for gets one no mail can reach (RFC 2606 reserves .invalid): the account
# table needs an address; SCIM shows none, and the first address the IdP sends replaces it.
NO_EMAIL_DOMAIN = "scim.invalid"
TOKEN_PREFIX = token_format.SCIM_PREFIX  # never `bst_`: a SCIM token is no account's token
LABEL_MAX = 100
_ID_RE = re.compile(r"^[0-9a-f]{24}\Z")
_GROUP_ID_RE = re.compile(r"^g[0-9a-f]{23}\Z")


@dataclass(frozen=True)
class Scope:
    """A SCIM endpoint: the instance's (org None) or one organization's."""

    org: Organization | None

    @property
    def key(self) -> str:
        return "instance" if self.org is None else f"org:{self.org.id}"

    @property
    def namespace(self) -> str | None:
        return self.org.name if self.org is not None else None


# ---- tokens ----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class IssuedScimToken:
    token: ScimToken
    secret: str  # shown once, never stored


def _generate() -> str:
    return token_format.generate(TOKEN_PREFIX)


def is_scim_secret(presented: str) -> bool:
    return presented.startswith(TOKEN_PREFIX)


def _label(label: str) -> str:
    label = (label or "").strip() or "SCIM"
    if len(label) > LABEL_MAX or any(ord(c) < 32 for c in label):
        raise BadRequest(f"A SCIM token label is 1 to {LABEL_MAX} printable characters")
    return label


def issue_token(session: Session, scope: Scope, label: str, created_by: Account | None) -> IssuedScimToken:
    secret = _generate()
    row = ScimToken(scope=scope.key, org_id=scope.org.id if scope.org else None, label=_label(label),
                    secret_hash=token_format.hash_token(secret), last4=secret[-4:],
                    created_by_user_id=created_by.id if created_by else None)
    session.add(row)
    session.flush()
    audit.record(session, AuditAction.SCIM_TOKEN_CREATE, target=("scim_token", str(row.id)),
                 namespace=scope.namespace, details={"scope": scope.key, "label": row.label})
    return IssuedScimToken(row, secret)


def revoke_token(session: Session, scope: Scope, tok: ScimToken, *, reason: str = "revoked") -> None:
    if tok.revoked_at is not None:
        return
    tok.revoked_at = utcnow()
    session.flush()
    audit.record(session, AuditAction.SCIM_TOKEN_REVOKE, target=("scim_token", str(tok.id)),
                 namespace=scope.namespace, details={"scope": scope.key, "label": tok.label, "reason": reason})


def rotate_token(session: Session, scope: Scope, tok: ScimToken, created_by: Account | None) -> IssuedScimToken:
    """A new token with the same label; the old one is revoked in the same transaction."""
    if tok.revoked_at is not None:
        raise BadRequest("This SCIM token is already revoked: create a new one")
    issued = issue_token(session, scope, tok.label, created_by)
    revoke_token(session, scope, tok, reason=f"rotated (replaced by token {issued.token.id})")
    return issued


def list_tokens(session: Session, scope: Scope) -> list[ScimToken]:
    return list(session.scalars(select(ScimToken).where(ScimToken.scope == scope.key).order_by(ScimToken.id.desc())))


def live_tokens(session: Session, scope: Scope) -> list[ScimToken]:
    return [t for t in list_tokens(session, scope) if t.revoked_at is None]


def get_token(session: Session, scope: Scope, token_id: int) -> ScimToken:
    tok = session.get(ScimToken, token_id)
    if tok is None or tok.scope != scope.key:
        raise NotFound("SCIM token not found")
    return tok


def authenticate(session: Session, presented: str) -> ScimToken | None:
    """The live SCIM token behind `presented`, else None. One SHA-256 lookup: the secret has 178 bits."""
    if len(presented) > 200 or not is_scim_secret(presented):
        return None
    tok = session.scalar(select(ScimToken).where(ScimToken.secret_hash == token_format.hash_token(presented)))
    if tok is None or tok.revoked_at is not None:
        return None
    tok.last_used_at = utcnow()
    return tok


class _LeakedScimTokens:
    """SCIM tokens found exposed (the secret scanner, the public revocation endpoint) are revoked on sight,
    audited as scim.token.revoke with the reason (bastion.scanning.leaks)."""

    def _find(self, session: Session, secret: str) -> ScimToken | None:
        if not token_format.is_well_formed(secret, (TOKEN_PREFIX,)):
            return None
        return session.scalar(select(ScimToken).where(ScimToken.secret_hash == token_format.hash_token(secret)))

    def is_live(self, session: Session, secret: str) -> bool | None:
        tok = self._find(session, secret)
        return None if tok is None else tok.revoked_at is None

    def revoke(self, session: Session, secret: str, *, source: str, where: str) -> bool:
        tok = self._find(session, secret)
        if tok is None or tok.revoked_at is not None:
            return False
        org = session.get(Organization, tok.org_id) if tok.org_id is not None else None
        revoke_token(session, Scope(org), tok, reason=f"leaked ({source}): {where}"[:300])
        return True


leaks.other_credentials.append(_LeakedScimTokens())


def principal_for(tok: ScimToken) -> Principal:
    return Principal(method="scim", scim_token_id=tok.id, scim_scope=tok.scope)


def actor_name(tok: ScimToken) -> str:
    return f"scim:{tok.label}#{tok.id}"


def token_view(tok: ScimToken) -> dict[str, Any]:
    return {"id": tok.id, "label": tok.label, "last4": tok.last4, "createdAt": orgs.iso(tok.created_at),
            "lastUsedAt": orgs.iso(tok.last_used_at), "revokedAt": orgs.iso(tok.revoked_at),
            "state": "revoked" if tok.revoked_at else "active"}


# ---- ids, versions -----------------------------------------------------------------------------------

def public_id(pk: int) -> str:
    return f"{pk:024x}"


def parse_id(text: str) -> int | None:
    return int(text, 16) if _ID_RE.match(text or "") else None


# Ids are unique across resource types (RFC 7643 §3.1): a user's is its 24 hex digits (the Hub's user ids), a
# group's starts with "g".
def group_public_id(pk: int) -> str:
    return f"g{pk:023x}"


def parse_group_id(text: str) -> int | None:
    return int(text[1:], 16) if _GROUP_ID_RE.match(text or "") else None


def version_of(payload: dict[str, Any]) -> str:
    """meta.version: a weak ETag over the resource as served (meta left out), so any change changes it."""
    body = {k: v for k, v in payload.items() if k != "meta"}
    return 'W/"' + hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:20] + '"'


# ---- users: what a scope sees ----------------------------------------------------------------------

@dataclass
class Seen:
    """An account as a scope sees it."""

    user: Account
    identity: ScimIdentity | None
    membership: OrgMember | None

    def owned(self, scope: Scope) -> bool:
        """May this scope change the account itself (profile, deactivation)?"""
        return scope.org is None or (self.identity is not None and self.identity.created_account)

    def personal(self, scope: Scope) -> bool:
        """May this scope read the account's personal data (names, e-mail addresses)?"""
        return self.owned(scope) or self.membership is not None

    def active(self, scope: Scope) -> bool:
        return bool(self.user.is_active) and (scope.org is None or self.membership is not None)


def _seen(session: Session, scope: Scope, user: Account) -> Seen | None:
    if user.deleted_at is not None:
        return None  # a deleted account's tombstone is nobody's to provision (bastion.lifecycle)
    identity = session.scalar(select(ScimIdentity).where(ScimIdentity.scope == scope.key,
                                                         ScimIdentity.user_id == user.id))
    if scope.org is None:
        return None if identity is not None and identity.deleted_at is not None else Seen(user, identity, None)
    membership = orgs.member(session, scope.org, user)
    if membership is None and identity is None:
        return None
    return Seen(user, identity, membership)


def find_user(session: Session, scope: Scope, scim_id: str) -> Seen:
    pk = parse_id(scim_id)
    user = session.get(Account, pk) if pk is not None else None
    seen = _seen(session, scope, user) if user is not None else None
    if seen is None:
        raise NotFoundException(detail=f"User {scim_id} not found")
    return seen


def _groups_of(session: Session, scope: Scope, user_ids: Iterable[int]) -> dict[int, list[ScimGroup]]:
    out: dict[int, list[ScimGroup]] = {}
    rows = session.execute(select(ScimGroupMember.user_id, ScimGroup).join(
        ScimGroup, ScimGroup.id == ScimGroupMember.group_id).where(
        ScimGroup.scope == scope.key, ScimGroupMember.user_id.in_(list(user_ids))).order_by(ScimGroup.id))
    for uid, group in rows:
        out.setdefault(uid, []).append(group)
    return out


def user_resource(scope: Scope, seen: Seen, base: str, groups: list[ScimGroup]) -> User:
    user, identity = seen.user, seen.identity
    profile = dict(identity.profile or {}) if identity is not None else {}
    resource = User(id=public_id(user.id), user_name=user.name, active=seen.active(scope),
                    external_id=identity.external_id if identity is not None else None)
    if seen.personal(scope):
        if identity is not None and (identity.created_account or profile):  # what the IdP said, as it said it
            name, emails = profile.get("name"), profile.get("emails")
        else:  # an account the IdP did not describe: what Bastion knows
            name = {"formatted": user.fullname} if user.fullname else None
            emails = [{"value": user.email, "primary": True}]
        if emails is not None:
            emails = [e for e in emails if not str(e.get("value", "")).endswith("@" + NO_EMAIL_DOMAIN)] or None
        resource = User.model_validate({**resource.model_dump(scim_ctx=None, exclude_none=True),
                                        "name": name, "displayName": profile.get("displayName"),
                                        "emails": emails})
    if groups:
        resource.groups = [GroupMembership(value=group_public_id(g.id), display=g.display_name) for g in groups]
    created = identity.created_at if identity is not None else user.created_at
    modified = identity.updated_at if identity is not None else user.created_at
    resource.meta = Meta(resource_type="User", created=created, last_modified=modified,
                         location=f"{base}/Users/{public_id(user.id)}")
    return resource


def serve_users(session: Session, scope: Scope, seen: list[Seen], base: str) -> list[User]:
    groups = _groups_of(session, scope, [s.user.id for s in seen])
    return [user_resource(scope, s, base, groups.get(s.user.id, [])) for s in seen]


# ---- lists: a filter is one SQL query, a page is OFFSET/LIMIT in id order (bastion.scim.filters) -----------------

@dataclass(frozen=True)
class Listing:
    """One page of a list or search: the resources served and how many the filter matched in all."""

    total: int
    resources: list[Any]


_PROFILE_KEYS = ("name", "displayName", "emails")  # what _profile keeps: a profile with none of them is empty


def _dialect(session: Session) -> str:
    return session.get_bind().dialect.name


def _scoped_users(scope: Scope, *entities: Any) -> Select[Any]:
    """The accounts a scope sees (as _seen decides for one), with their identity and, for an org, membership."""
    identity = and_(ScimIdentity.user_id == Account.id, ScimIdentity.scope == scope.key)
    if scope.org is None:
        return select(*entities).select_from(Account).outerjoin(ScimIdentity, identity).where(
            Account.deleted_at.is_(None), ScimIdentity.deleted_at.is_(None))
    # The org's accounts: a member or an identity, each one unique-index lookup from the account's row, so
    # `userName eq` stays a lookup by users.name_lower (a union of the org's rows was materialized per query:
    # 0.65× the first page at 20,000 members on PostgreSQL, against 0.2× for the instance).
    return select(*entities).select_from(Account).outerjoin(ScimIdentity, identity).outerjoin(
        OrgMember, and_(OrgMember.user_id == Account.id, OrgMember.org_id == scope.org.id)).where(
        Account.deleted_at.is_(None), or_(OrgMember.id.is_not(None), ScimIdentity.id.is_not(None)))


def _user_columns(scope: Scope, dialect: str) -> filters.Columns:
    """What user_resource serves, as SQL over _scoped_users' row: it must say what user_resource says."""
    member = true() if scope.org is None else OrgMember.id.is_not(None)
    has_identity = ScimIdentity.id.is_not(None)
    created = ScimIdentity.created_account.is_(true())
    personal = or_(true() if scope.org is None else created, member)
    described = and_(has_identity, or_(created, *(ScimIdentity.profile[k].as_string().is_not(None)
                                                  for k in _PROFILE_KEYS)))
    display_name = ScimIdentity.profile["displayName"].as_string()

    def shown(v: Any) -> Any:  # an address SCIM never shows (NO_EMAIL_DOMAIN) is no value
        return and_(v.is_not(None), not_(filters.ends_with(v, "@" + NO_EMAIL_DOMAIN)))

    def any_email(p: filters.Predicate) -> filters.Clause:
        if dialect == "sqlite":
            items = func.json_each(ScimIdentity.profile, "$.emails").table_valued(column("value", JSON))
        else:
            items = func.json_array_elements(ScimIdentity.profile["emails"]).table_valued(column("value", JSON))
        value = items.c.value["value"].as_string()
        said = exists(select(literal(1)).select_from(items).where(shown(value), p(value)))
        return and_(personal, or_(and_(described, said), and_(not_(described), shown(Account.email), p(Account.email))))

    def any_group(p: filters.Predicate) -> filters.Clause:
        return exists(select(literal(1)).select_from(ScimGroupMember).join(
            ScimGroup, ScimGroup.id == ScimGroupMember.group_id).where(
            ScimGroupMember.user_id == Account.id, ScimGroup.scope == scope.key, p(ScimGroup.id)))

    def dated(identity_column: Any) -> Any:
        return type_coerce(case((has_identity, identity_column), else_=Account.created_at), UTCDateTime())

    return {
        ("id", None): Scalar(Account.id, true(), decode=parse_id),
        ("user_name", None): Scalar(Account.name_lower, true(), folded=True),
        ("external_id", None): Scalar(ScimIdentity.external_id, ScimIdentity.external_id.is_not(None)),
        ("active", None): Scalar(and_(Account.is_active.is_(true()), member), true()),
        ("display_name", None): Scalar(display_name, and_(personal, display_name.is_not(None))),
        ("emails", "value"): Many(any_email),
        ("groups", "value"): Many(any_group, decode=parse_group_id),
        ("meta", "created"): Scalar(dated(ScimIdentity.created_at), true()),
        ("meta", "last_modified"): Scalar(dated(ScimIdentity.updated_at), true()),
    }


def _group_columns() -> filters.Columns:
    """What group_resource serves, as SQL over scim_groups."""

    def any_member(p: filters.Predicate) -> filters.Clause:
        return exists(select(literal(1)).select_from(ScimGroupMember).where(
            ScimGroupMember.group_id == ScimGroup.id, p(ScimGroupMember.user_id)))

    return {
        ("id", None): Scalar(ScimGroup.id, true(), decode=parse_group_id),
        ("display_name", None): Scalar(ScimGroup.display_name, true()),
        ("external_id", None): Scalar(ScimGroup.external_id, ScimGroup.external_id.is_not(None)),
        ("members", "value"): Many(any_member, decode=parse_id),
        ("meta", "created"): Scalar(ScimGroup.created_at, true()),
        ("meta", "last_modified"): Scalar(ScimGroup.updated_at, true()),
    }


def _user_clause(session: Session, scope: Scope, scim_filter: Any) -> filters.Clause:
    dialect = _dialect(session)
    return filters.where(scim_filter, User, _user_columns(scope, dialect), dialect)


def _group_clause(session: Session, scope: Scope, scim_filter: Any) -> filters.Clause:
    return and_(ScimGroup.scope == scope.key, filters.where(scim_filter, Group, _group_columns(), _dialect(session)))


def _count_users(session: Session, scope: Scope, clause: filters.Clause) -> int:
    return int(session.scalar(_scoped_users(scope, func.count(Account.id)).where(clause)) or 0)


def _count_groups(session: Session, clause: filters.Clause) -> int:
    return int(session.scalar(select(func.count(ScimGroup.id)).where(clause)) or 0)


def _user_page(session: Session, scope: Scope, clause: filters.Clause, offset: int, limit: int,
               base: str) -> list[User]:
    if limit <= 0:
        return []
    entities: tuple[Any, ...] = (Account, ScimIdentity) if scope.org is None else (Account, ScimIdentity, OrgMember)
    rows = session.execute(_scoped_users(scope, *entities).where(clause).order_by(Account.id)
                           .offset(offset).limit(limit)).all()
    seen = [Seen(row[0], row[1], row[2] if scope.org is not None else None) for row in rows]
    return serve_users(session, scope, seen, base)


def _group_page(session: Session, clause: filters.Clause, offset: int, limit: int, base: str) -> list[Group]:
    if limit <= 0:
        return []
    groups = session.scalars(select(ScimGroup).where(clause).order_by(ScimGroup.id).offset(offset).limit(limit))
    return [group_resource(session, g, base) for g in groups]


def list_users(session: Session, scope: Scope, scim_filter: Any, start: int, count: int, base: str) -> Listing:
    """GET /Users, POST /Users/.search: the users `scim_filter` matches (None: all), from the 1-based `start`."""
    clause = _user_clause(session, scope, scim_filter)
    return Listing(_count_users(session, scope, clause), _user_page(session, scope, clause, start - 1, count, base))


def list_groups(session: Session, scope: Scope, scim_filter: Any, start: int, count: int, base: str) -> Listing:
    clause = _group_clause(session, scope, scim_filter)
    return Listing(_count_groups(session, clause), _group_page(session, clause, start - 1, count, base))


def search_all(session: Session, scope: Scope, scim_filter: Any, start: int, count: int, base: str) -> Listing:
    """POST /.search: Users then Groups, one sequence paged across both."""
    users, groups = _user_clause(session, scope, scim_filter), _group_clause(session, scope, scim_filter)
    user_total = _count_users(session, scope, users)
    page: list[Any] = _user_page(session, scope, users, start - 1, count, base)
    if len(page) < count:
        page += _group_page(session, groups, max(0, start - 1 - user_total), count - len(page), base)
    return Listing(user_total + _count_groups(session, groups), page)


# ---- users: changes ----------------------------------------------------------------------------------

def _primary_email(resource: User) -> str | None:
    emails = resource.emails or []
    chosen = next((e for e in emails if e.primary), emails[0] if emails else None)
    return str(chosen.value) if chosen is not None and chosen.value else None


def _fullname(resource: User, fallback: str) -> str:
    name = resource.name
    if name is not None:
        if name.formatted:
            return name.formatted[:200]
        parts = " ".join(p for p in (name.given_name, name.family_name) if p)
        if parts:
            return parts[:200]
    return (resource.display_name or fallback)[:200]


def _refuse_password(resource: User) -> None:
    """Bastion sets no password over SCIM (changePassword is not supported; accounts sign in through SSO or set
    their own): one sent is refused with a 400, never dropped while the IdP believes the account has it (a setting
    accepted is a setting enforced). Other attributes Bastion does not keep (title, phoneNumbers, …) describe the
    person, grant nothing, and are sent by IdPs' default mappings: they are ignored, as before."""
    if resource.password is not None:
        raise InvalidValueException(detail="Bastion sets no password over SCIM (changePassword is not supported)")


def _profile(resource: User) -> dict[str, Any]:
    dumped = resource.model_dump(scim_ctx=None, exclude_none=True, by_alias=True, mode="json")
    return {k: dumped[k] for k in ("name", "displayName", "emails") if k in dumped}


def _identity_for(session: Session, scope: Scope, user: Account, *, created: bool = False) -> ScimIdentity:
    identity = session.scalar(select(ScimIdentity).where(ScimIdentity.scope == scope.key,
                                                         ScimIdentity.user_id == user.id))
    if identity is None:
        identity = ScimIdentity(scope=scope.key, org_id=scope.org.id if scope.org else None, user_id=user.id,
                                created_account=created, profile={})
        session.add(identity)
        session.flush()
    return identity


def _set_primary_email(session: Session, scope: Scope, seen: Seen, email: str) -> None:
    """The IdP's primary address becomes the account's. The instance's IdP vouches for it (verified, unless
    another account owns it verified) only on an account it created: on one it linked, the address is the IdP's
    word about a person who already proved other addresses, and a verified address is how a password is reset, so
    vouching there would hand the IdP every account it can name. An org's IdP never vouches (it cannot prove an
    address). An unverified address never replaces a verified primary one (where security notices go)."""
    user = seen.user
    lower = email.lower()
    row = next((r for r in user.emails if r.email_lower == lower), None)
    vouch = scope.org is None and seen.identity is not None and seen.identity.created_account
    if vouch:
        owner = session.scalar(select(UserEmail.user_id).where(UserEmail.email_lower == lower,
                                                               UserEmail.verified_at.is_not(None)))
        if owner is not None and owner != user.id:
            raise UniquenessException(detail=f"The e-mail address {email} belongs to another account")
    if row is None:
        row = UserEmail(email=email, email_lower=lower, primary=False, verified_at=utcnow() if vouch else None)
        user.emails.append(row)
    elif vouch and row.verified_at is None:
        row.verified_at = utcnow()
    if row.verified_at is None and accounts.primary_verified(user) is not None:
        session.flush()
        return
    for other in user.emails:
        other.primary = other is row
    user.email = email
    session.flush()


def _leave_org(session: Session, org: Organization, user: Account) -> None:
    """The org's SCIM ends a membership: the member, their resource groups, their SSO session for this
    org and their tokens' approvals in it (pending or approved: a new membership asks again)."""
    try:
        orgs.remove_member(session, org, user)
    except Conflict as exc:
        raise UniquenessException(detail=exc.message) from exc  # the last admin stays
    session.execute(delete(SsoSession).where(SsoSession.org_id == org.id, SsoSession.user_id == user.id))
    token_ids = select(AccessToken.id).where(AccessToken.user_id == user.id)
    session.execute(delete(OrgTokenApproval).where(OrgTokenApproval.org_id == org.id,
                                                   OrgTokenApproval.token_id.in_(token_ids),
                                                   OrgTokenApproval.state.in_(("pending", "approved"))))
    session.flush()


def _deactivate(session: Session, scope: Scope, user: Account) -> None:
    if user.is_active and sso_instance.is_break_glass_admin(session, user):
        raise ForbiddenException(detail="This account is the instance's break-glass administrator, the way in when "
                                        "the identity provider fails: SCIM cannot deactivate it (an administrator "
                                        "can, with `bastion admin deactivate-user`)")
    if user.is_active:
        where = "the instance's SCIM" if scope.org is None else f"the SCIM of {scope.org.name}"
        lifecycle.deactivate_user(session, user, reason=f"deprovisioned by {where}",
                                     memberships_managed_by=SOURCE, by=_authority(scope))


def _authority(scope: Scope) -> str:
    """The name a scope's deactivations are kept under (User.deactivated_by)."""
    return f"{SOURCE}:{scope.key}"


def _may_undo(scope: Scope, deactivated_by: str) -> bool:
    """An IdP puts back only a deactivation it can answer for: an org's, its own; the instance's, any SCIM
    client's (it is the instance's identity authority). An administrator's decision (a compromised account, a
    person who left) is never undone by a routine sync: only an administrator reactivates it."""
    if scope.org is None:
        return deactivated_by.startswith(f"{SOURCE}:")
    return deactivated_by == _authority(scope)


def _reactivate(session: Session, scope: Scope, user: Account) -> None:
    if not user.is_active:
        by = lifecycle.deactivated_by(user) or lifecycle.ADMIN
        if not _may_undo(scope, by):
            who = "an instance administrator" if by == lifecycle.ADMIN else \
                "the instance's SCIM" if by == _authority(Scope(None)) else "another SCIM client"
            raise ForbiddenException(detail=f"This account was deactivated by {who}; this SCIM client cannot "
                                            "reactivate it (an instance administrator can)")
        where = "the instance's SCIM" if scope.org is None else f"the SCIM of {scope.org.name}"
        lifecycle.reactivate_user(session, user, reason=f"provisioned again by {where}")


def _set_active(session: Session, scope: Scope, seen: Seen, active: bool) -> None:
    user = seen.user
    if scope.org is None:
        if active:
            _reactivate(session, scope, user)
        else:
            _deactivate(session, scope, user)
        return
    org = scope.org
    if active:
        if seen.owned(scope):
            _reactivate(session, scope, user)
        if seen.membership is None:
            if not seen.owned(scope):  # a person joins an org they did not come from only by accepting an invitation
                raise ForbiddenException(detail="This account was not provisioned by this organization's SCIM and "
                                                "is no longer a member: invite it again")
            if not user.is_active:
                raise ForbiddenException(detail="This account is deactivated; the organization cannot add it")
            seen.membership = orgs.add_provisioned_member(session, org, user, SOURCE)
            apply_roles(session, org, user)
        return
    if seen.membership is not None:
        _leave_org(session, org, user)
        seen.membership = None
    if seen.owned(scope):
        _deactivate(session, scope, user)


def create_user(session: Session, scope: Scope, resource: User) -> Seen:
    _refuse_password(resource)
    name = resource.user_name or ""
    existing = session.scalar(select(Account).where(Account.name_lower == name.lower()))
    if existing is not None:
        return _link_existing(session, scope, existing, resource)
    email = _primary_email(resource) or f"{name}@{NO_EMAIL_DOMAIN}"
    try:
        user = accounts.create_user(session, name, email, _fullname(resource, name),
                                    email_verified=scope.org is None)
    except Conflict as exc:
        raise UniquenessException(detail=exc.message) from exc
    except BadRequest as exc:
        raise InvalidValueException(detail=exc.message) from exc
    identity = _identity_for(session, scope, user, created=True)
    identity.external_id = resource.external_id
    identity.profile = _profile(resource)
    membership = orgs.add_provisioned_member(session, scope.org, user, SOURCE) if scope.org is not None else None
    seen = Seen(user, identity, membership)
    audit.record(session, AuditAction.SCIM_USER_CREATE, target=("user", user.name), namespace=scope.namespace,
                 details={"scope": scope.key, "externalId": resource.external_id, "linked": False})
    if resource.active is False:
        _set_active(session, scope, seen, False)
    elif scope.org is not None:
        apply_roles(session, scope.org, user)
    return seen


def _link_existing(session: Session, scope: Scope, user: Account, resource: User) -> Seen:
    """POST for a userName that exists: the instance links it if it never saw it (or deleted it); an org
    links only its own members. Anything else is a uniqueness conflict that says nothing more."""
    seen = _seen(session, scope, user)
    taken = UniquenessException(detail=f"The userName {resource.user_name!r} is already taken")
    if scope.org is None:
        identity = session.scalar(select(ScimIdentity).where(ScimIdentity.scope == scope.key,
                                                             ScimIdentity.user_id == user.id))
        if identity is not None and identity.deleted_at is None:
            raise taken
        if identity is not None:
            identity.deleted_at = None  # the IdP provisions a deleted account again
        seen = Seen(user, _identity_for(session, scope, user), None)
    else:
        if seen is None or seen.membership is None or seen.identity is not None:
            raise taken
        seen.identity = _identity_for(session, scope, user)
        seen.membership.managed_by = SOURCE
    seen.identity.external_id = resource.external_id  # type: ignore[union-attr]
    audit.record(session, AuditAction.SCIM_USER_CREATE, target=("user", user.name), namespace=scope.namespace,
                 details={"scope": scope.key, "externalId": resource.external_id, "linked": True})
    if seen.owned(scope):
        update_user(session, scope, seen, user_resource(scope, seen, "", []), resource, audit_event=False)
    elif resource.active is False:  # a member the org did not create: the IdP's description of the person is
        _set_active(session, scope, seen, False)  # not applied (only its externalId and the membership are)
    return seen


def update_user(session: Session, scope: Scope, seen: Seen, before: User, after: User, *,
                audit_event: bool = True) -> None:
    """Apply a PUT or a PATCH: `before` is the resource as served, `after` as the IdP wants it."""
    user = seen.user
    _refuse_password(after)
    if after.user_name is not None and after.user_name.lower() != user.name.lower():
        raise MutabilityException(detail="userName is immutable in Bastion (it is the account's namespace)")
    changed: list[str] = []
    new_profile = _profile(after)
    old_profile = _profile(before)
    if new_profile != old_profile and (seen.personal(scope) or new_profile):
        if not seen.owned(scope):
            raise ForbiddenException(detail="This account was not provisioned by this organization's SCIM: "
                                            "only its membership and externalId can change")
        email = _primary_email(after)  # none: the account keeps its address (an account always has one)
        if email is not None and email.lower() != user.email.lower():
            _set_primary_email(session, scope, seen, email)
            changed.append("emails")
        identity = _identity_for(session, scope, user)
        identity.profile = new_profile
        fullname = _fullname(after, user.name)
        if fullname != user.fullname:
            user.fullname = fullname
        changed.append("profile")
        seen.identity = identity
    if after.external_id != (seen.identity.external_id if seen.identity else None):
        seen.identity = seen.identity or _identity_for(session, scope, user)
        seen.identity.external_id = after.external_id
        changed.append("externalId")
    active = True if after.active is None else bool(after.active)
    if active != seen.active(scope):
        _set_active(session, scope, seen, active)
        changed.append("active")
    if seen.identity is not None:
        seen.identity.updated_at = utcnow()
    session.flush()
    if audit_event and changed:
        action = AuditAction.SCIM_USER_UPDATE
        if "active" in changed:
            action = AuditAction.SCIM_USER_ACTIVATE if active else AuditAction.SCIM_USER_DEACTIVATE
        audit.record(session, action, target=("user", user.name), namespace=scope.namespace,
                     details={"scope": scope.key, "changed": changed})


def delete_user(session: Session, scope: Scope, seen: Seen) -> None:
    """DELETE: the instance deactivates the account (it stays, for its repos and audit trail) and forgets
    it; an org ends the membership, deactivates only an account it created, and forgets it."""
    user = seen.user
    if scope.org is not None and seen.membership is not None:
        _leave_org(session, scope.org, user)
    if seen.owned(scope):
        _deactivate(session, scope, user)
    group_ids = select(ScimGroup.id).where(ScimGroup.scope == scope.key)
    session.execute(delete(ScimGroupMember).where(ScimGroupMember.user_id == user.id,
                                                  ScimGroupMember.group_id.in_(group_ids)))
    identity = _identity_for(session, scope, user)
    if scope.org is None:
        identity.deleted_at = utcnow()
        identity.updated_at = utcnow()
    else:
        session.delete(identity)
    session.flush()
    audit.record(session, AuditAction.SCIM_USER_DELETE, target=("user", user.name), namespace=scope.namespace,
                 details={"scope": scope.key, "deactivated": not user.is_active})


# ---- groups ----------------------------------------------------------------------------------------------

def find_group(session: Session, scope: Scope, scim_id: str) -> ScimGroup:
    pk = parse_group_id(scim_id)
    group = session.get(ScimGroup, pk) if pk is not None else None
    if group is None or group.scope != scope.key:
        raise NotFoundException(detail=f"Group {scim_id} not found")
    return group


def all_groups(session: Session, scope: Scope) -> list[ScimGroup]:
    return list(session.scalars(select(ScimGroup).where(ScimGroup.scope == scope.key).order_by(ScimGroup.id)))


def member_ids(session: Session, group: ScimGroup) -> list[int]:
    return list(session.scalars(select(ScimGroupMember.user_id).where(ScimGroupMember.group_id == group.id)
                                .order_by(ScimGroupMember.user_id)))


def group_resource(session: Session, group: ScimGroup, base: str) -> Group:
    # No `display`: it is read-only and optional, and a PATCH answer must equal what the IdP sent (scim2-tester).
    members = [GroupMember(value=public_id(i), type="User", ref=f"{base}/Users/{public_id(i)}")
               for i in member_ids(session, group)]
    return Group(id=group_public_id(group.id), display_name=group.display_name, external_id=group.external_id,
                 members=members or None,
                 meta=Meta(resource_type="Group", created=group.created_at, last_modified=group.updated_at,
                           location=f"{base}/Groups/{group_public_id(group.id)}"))


def _wanted_members(session: Session, scope: Scope, resource: Group) -> set[int]:
    wanted: set[int] = set()
    for m in resource.members or []:
        pk = parse_id(str(m.value or ""))
        user = session.get(Account, pk) if pk is not None else None
        if user is None or _seen(session, scope, user) is None:
            raise InvalidValueException(detail=f"Group member {m.value!r} is no User of this SCIM endpoint")
        wanted.add(user.id)
    return wanted


def _check_name(session: Session, scope: Scope, name: str | None, group_id: int | None) -> str:
    name = (name or "").strip()
    if not name or len(name) > 200:
        raise InvalidValueException(detail="displayName is required (at most 200 characters)")
    clash = session.scalar(select(ScimGroup.id).where(ScimGroup.scope == scope.key,
                                                      func.lower(ScimGroup.display_name) == name.lower()))
    if clash is not None and clash != group_id:
        raise UniquenessException(detail=f"A group named {name!r} exists already")
    return name


def _set_members(session: Session, scope: Scope, group: ScimGroup, wanted: set[int]) -> tuple[set[int], set[int]]:
    current = set(member_ids(session, group))
    added, removed = wanted - current, current - wanted
    for uid in sorted(added):
        session.add(ScimGroupMember(group_id=group.id, user_id=uid))
    if removed:
        session.execute(delete(ScimGroupMember).where(ScimGroupMember.group_id == group.id,
                                                      ScimGroupMember.user_id.in_(sorted(removed))))
    session.flush()
    if scope.org is not None:
        users = accounts.users_by_ids(session, added | removed)
        for uid in sorted(added | removed):
            apply_roles(session, scope.org, users[uid])
    return added, removed


def create_group(session: Session, scope: Scope, resource: Group) -> ScimGroup:
    group = ScimGroup(scope=scope.key, org_id=scope.org.id if scope.org else None,
                      display_name=_check_name(session, scope, resource.display_name, None),
                      external_id=resource.external_id)
    wanted = _wanted_members(session, scope, resource)
    session.add(group)
    session.flush()
    audit.record(session, AuditAction.SCIM_GROUP_CREATE, target=("scim_group", group_public_id(group.id)),
                 namespace=scope.namespace, details={"scope": scope.key, "name": group.display_name})
    if wanted:
        _members_changed(session, scope, group, *_set_members(session, scope, group, wanted))
    return group


def _members_changed(session: Session, scope: Scope, group: ScimGroup, added: set[int], removed: set[int]) -> None:
    users = accounts.users_by_ids(session, added | removed)
    audit.record(session, AuditAction.SCIM_GROUP_MEMBERS, target=("scim_group", group_public_id(group.id)),
                 namespace=scope.namespace,
                 details={"scope": scope.key, "name": group.display_name,
                          "added": sorted(users[u].name for u in added if u in users),
                          "removed": sorted(users[u].name for u in removed if u in users)})


def update_group(session: Session, scope: Scope, group: ScimGroup, resource: Group) -> None:
    name = _check_name(session, scope, resource.display_name, group.id)
    wanted = _wanted_members(session, scope, resource)
    changed = []
    if name != group.display_name or resource.external_id != group.external_id:
        group.display_name, group.external_id = name, resource.external_id
        changed.append("displayName")
    group.updated_at = utcnow()
    session.flush()
    if changed:
        audit.record(session, AuditAction.SCIM_GROUP_UPDATE, target=("scim_group", group_public_id(group.id)),
                     namespace=scope.namespace, details={"scope": scope.key, "name": group.display_name})
    added, removed = _set_members(session, scope, group, wanted)
    if added or removed:
        _members_changed(session, scope, group, added, removed)


def delete_group(session: Session, scope: Scope, group: ScimGroup) -> None:
    former = set(member_ids(session, group))
    audit.record(session, AuditAction.SCIM_GROUP_DELETE, target=("scim_group", group_public_id(group.id)),
                 namespace=scope.namespace, details={"scope": scope.key, "name": group.display_name})
    session.delete(group)
    session.flush()
    if scope.org is not None:
        users = accounts.users_by_ids(session, former)
        for uid in sorted(former):
            apply_roles(session, scope.org, users[uid])


# ---- SCIM groups → org roles and resource groups -----------------------------------------------------------

@dataclass(frozen=True)
class ResourceGroupLink:
    group: ResourceGroup
    role: str


def links_of(session: Session, group: ScimGroup) -> list[tuple[ResourceGroup, str]]:
    return list(session.execute(select(ResourceGroup, ScimGroupLink.role).join(
        ScimGroupLink, ScimGroupLink.resource_group_id == ResourceGroup.id).where(
        ScimGroupLink.scim_group_id == group.id).order_by(ResourceGroup.name_lower)).tuples())


def link_group(session: Session, org: Organization, group: ScimGroup, role: str | None,
               resource_groups: list[ResourceGroupLink]) -> None:
    """Link an org's SCIM group to an org role and to resource groups (replacing earlier links); every member's
    roles follow at once."""
    if group.scope != f"org:{org.id}":
        raise NotFound("SCIM group not found")
    if role is not None and role not in ORG_ROLES:
        raise BadRequest(f"Invalid role {role!r}: expected one of {', '.join(ORG_ROLES)}")
    seen: set[int] = set()
    for link in resource_groups:
        if link.group.org_id != org.id:
            raise BadRequest("Resource group not found in this organization")
        if link.role not in orgs.GROUP_ROLES:
            raise BadRequest(f"Invalid resource group role {link.role!r}: expected one of "
                             f"{', '.join(orgs.GROUP_ROLES)}")
        if link.group.id in seen:
            raise BadRequest("Each resource group may appear once")
        seen.add(link.group.id)
    group.org_role = role
    session.execute(delete(ScimGroupLink).where(ScimGroupLink.scim_group_id == group.id))
    for link in resource_groups:
        session.add(ScimGroupLink(scim_group_id=group.id, resource_group_id=link.group.id, role=link.role))
    session.flush()
    audit.record(session, AuditAction.SCIM_GROUP_LINK, target=("scim_group", group_public_id(group.id)),
                 namespace=org.name, details={"name": group.display_name, "role": role,
                                              "resourceGroups": [{"id": lk.group.public_id, "name": lk.group.name,
                                                                  "role": lk.role} for lk in resource_groups]})
    users = accounts.users_by_ids(session, set(member_ids(session, group)))
    for uid in sorted(users):
        apply_roles(session, org, users[uid])


def _higher(a: str | None, b: str) -> str:
    return b if a is None or ORG_ROLES.index(b) > ORG_ROLES.index(a) else a


def apply_roles(session: Session, org: Organization, user: Account) -> None:
    """A member's org role and resource groups from their SCIM groups: the highest role any of their groups
    is linked to (none left: the org's default role, for memberships SCIM manages); in every resource group
    some SCIM group of the org is linked to, exactly the highest linked role (or no membership). Groups and
    roles no SCIM group is linked to are left as they are. Each change is audited by the orgs service."""
    membership = orgs.member(session, org, user)
    if membership is None:
        return
    groups = list(session.scalars(select(ScimGroup).join(ScimGroupMember, ScimGroupMember.group_id == ScimGroup.id)
                                  .where(ScimGroup.scope == f"org:{org.id}", ScimGroupMember.user_id == user.id)))
    role: str | None = None
    for g in groups:
        if g.org_role:
            role = _higher(role, g.org_role)
    any_role_link = session.scalar(select(ScimGroup.id).where(ScimGroup.scope == f"org:{org.id}",
                                                              ScimGroup.org_role.is_not(None)).limit(1))
    if role is None and any_role_link is not None and membership.managed_by == SOURCE:
        role = org.default_role
    if role is not None and role != membership.role:
        try:
            orgs.change_role(session, org, user, role)
        except Conflict as exc:
            raise UniquenessException(detail=exc.message) from exc
    wanted: dict[int, str] = {}
    for g in groups:
        for rg, rg_role in links_of(session, g):
            wanted[rg.id] = _higher(wanted.get(rg.id), rg_role)
    linked = set(session.scalars(select(ScimGroupLink.resource_group_id).join(
        ScimGroup, ScimGroup.id == ScimGroupLink.scim_group_id).where(ScimGroup.scope == f"org:{org.id}")))
    current = {gm.group_id: gm.role for gm in session.scalars(select(ResourceGroupMember).where(
        ResourceGroupMember.user_id == user.id, ResourceGroupMember.group_id.in_(sorted(linked))))}
    for rg_id in sorted(linked):
        rg = session.get(ResourceGroup, rg_id)
        if rg is None:
            continue
        if rg_id in wanted and current.get(rg_id) != wanted[rg_id]:
            orgs.set_group_member(session, org, rg, user, wanted[rg_id])
        elif rg_id not in wanted and rg_id in current:
            orgs.remove_group_member(session, org, rg, user)


def group_view(session: Session, group: ScimGroup) -> dict[str, Any]:
    return {"id": group_public_id(group.id), "displayName": group.display_name, "externalId": group.external_id,
            "members": len(member_ids(session, group)), "role": group.org_role,
            "resourceGroups": [{"id": rg.public_id, "name": rg.name, "role": role}
                               for rg, role in links_of(session, group)]}


def provisioned_view(session: Session, scope: Scope) -> list[dict[str, Any]]:
    """The accounts this scope's SCIM knows (for the settings pages)."""
    rows = session.execute(select(ScimIdentity, Account).join(Account, Account.id == ScimIdentity.user_id).where(
        ScimIdentity.scope == scope.key).order_by(Account.name_lower))
    out = []
    for identity, user in rows:
        out.append({"name": user.name, "externalId": identity.external_id, "createdByScim": identity.created_account,
                    "active": user.is_active, "deleted": identity.deleted_at is not None,
                    "updatedAt": orgs.iso(identity.updated_at)})
    return out




def settings_view(session: Session, scope: Scope, base: str) -> dict[str, Any]:
    """The SCIM settings of a scope (API and pages): its endpoint, tokens (never secrets), groups, accounts."""
    return {"baseUrl": base, "tokens": [token_view(t) for t in list_tokens(session, scope)],
            "groups": [group_view(session, g) for g in all_groups(session, scope)],
            "users": provisioned_view(session, scope)}


def parse_links(session: Session, org: Organization, items: Any) -> list[ResourceGroupLink]:
    """`[{"id": <resource group id or name>, "role": ROLE}, …]` → links (BadRequest on anything else)."""
    if not isinstance(items, list):
        raise BadRequest("'resourceGroups' must be a list of {\"id\", \"role\"}")
    links = []
    for item in items:
        if not isinstance(item, dict) or not isinstance(item.get("id"), str) or not isinstance(item.get("role"), str):
            raise BadRequest("'resourceGroups' must be a list of {\"id\", \"role\"}")
        group = _resource_group(session, org, item["id"])
        links.append(ResourceGroupLink(group, item["role"]))
    return links


def parse_link_text(session: Session, org: Organization, text: str) -> list[ResourceGroupLink]:
    """`GROUP:ROLE[, GROUP:ROLE…]` (the settings form's syntax, as SSO's mapping) → links."""
    links = []
    for item in (text or "").split(","):
        item = item.strip()
        if not item:
            continue
        name, sep, role = item.rpartition(":")
        if not sep or not name.strip():
            raise BadRequest(f"Invalid resource group link {item!r}: expected GROUP:ROLE")
        links.append(ResourceGroupLink(_resource_group(session, org, name.strip()), role.strip()))
    return links


def _resource_group(session: Session, org: Organization, key: str) -> ResourceGroup:
    if re.fullmatch(r"[0-9a-f]{24}", key):
        found = orgs.find_group(session, org.id, int(key, 16))
        if found is not None:
            return found
    group = session.scalar(select(ResourceGroup).where(ResourceGroup.org_id == org.id,
                                                       ResourceGroup.name_lower == key.lower()))
    if group is None:
        raise BadRequest(f"Resource group {key!r} not found in {org.name}")
    return group


def find_org_group(session: Session, org: Organization, scim_id: str) -> ScimGroup:
    pk = parse_group_id(scim_id)
    group = session.get(ScimGroup, pk) if pk is not None else None
    if group is None or group.scope != f"org:{org.id}":
        raise NotFound("SCIM group not found")
    return group
