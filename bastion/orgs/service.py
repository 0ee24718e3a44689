"""Organizations: create/delete, members and roles, invitations, resource groups, security settings.
Every change records its audit event in the caller's transaction. (Token governance, which reads
orgs, is tokens/governance.py.)

Over 500 lines on purpose: members, invitations and resource groups share the role rules and the
facts the policy reads (`org_facts`, `group_facts`), defined once here.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

from sqlalchemy import ColumnElement, func, or_, select
from sqlalchemy.orm import Session, aliased

from bastion import audit
from bastion.accounts.models import User, UserEmail, WebAuthnCredential
from bastion.accounts.service import refuse_retired, validate_namespace_name
from bastion.audit import retention as audit_retention
from bastion.audit import worker as audit_worker
from bastion.audit.actions import AuditAction
from bastion.authz.policy import (
    ORG_ROLES,
    READ_ROLES,
    REPO_VISIBILITY_POLICIES,
    TOKEN_POLICIES,
    GroupFacts,
    OrgFacts,
    Principal,
    check_secret_mode,
)
from bastion.db import utcnow
from bastion.errors import BadRequest, Conflict, Forbidden, NotFound
from bastion.mail import Mailer, Message
from bastion.orgs.models import (
    Organization,
    OrgInvitation,
    OrgMember,
    ResourceGroup,
    ResourceGroupMember,
)

# Roles the CLI and the member forms offer (no_access is set through the role API, as on the Hub).
MEMBER_ROLES = ("read", "contributor", "write", "admin")
GROUP_ROLES = ("read", "contributor", "write", "admin")
INVITATION_TTL = timedelta(days=7)
APPROVAL_STATES = ("pending", "approved", "denied", "revoked")
MAX_ADMIN_MAILS = 5  # as on the Hub: at most five admins are e-mailed about a pending token
SSO_INVITATIONS_CLOSED = ("The organization {org!r} uses single sign-on: classic invitations are disabled. Share "
                          "its SSO join link (/organizations/{org}/sso/login) instead.")
EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+\Z")


def _check_role(role: str, allowed: tuple[str, ...] = ORG_ROLES) -> str:
    if role not in allowed:
        raise BadRequest(f"Invalid role {role!r}: expected one of {', '.join(allowed)}")
    return role


# ---- lookups and the facts the policy decides on -----------------------------------------------

def find_org(session: Session, name: str) -> Organization | None:
    return session.scalar(select(Organization).where(Organization.name_lower == name.lower()))


def get_org(session: Session, name: str) -> Organization:
    org = find_org(session, name)
    if org is None:
        raise NotFound(f"Organization {name!r} not found")
    return org


def has_two_factor_clause(user_id: Any) -> ColumnElement[bool]:
    """Whether a user has a second factor enrolled (the same rule as accounts.sessions.has_second_factor)."""
    enrolled = aliased(User)  # an alias: inside a query over users it must not correlate to the outer row
    totp = select(enrolled.id).where(enrolled.id == user_id, enrolled.totp_secret.is_not(None)).exists()
    key = select(WebAuthnCredential.id).where(WebAuthnCredential.user_id == user_id).exists()
    return or_(totp, key)


class SsoGate(Protocol):
    """The port through which orgs (and the policy) read single sign-on: filled by bastion.sso.service."""

    def member_facts(self, session: Session, org_id: int, member_ids: list[int]) -> tuple[bool, frozenset[int]]:
        """(whether the org enforces SSO, the members who may use their membership now: live SSO session or
        exempt)."""
        ...

    def sso_ok_clause(self, user_id: int, org_id: Any) -> ColumnElement[bool]:
        """SQL: true where the org `org_id` (a column) does not enforce SSO or `user_id` may use membership."""
        ...

    def invitations_closed(self, session: Session, org_id: int) -> bool:
        """Whether classic invitations are closed because the org's SSO is on."""
        ...


sso_gate: SsoGate | None = None


def sso() -> SsoGate:
    if sso_gate is None:
        # Fail closed: an org is never judged as one without SSO because the SSO feature is not loaded.
        raise RuntimeError("no SSO gate: bastion.sso.service sets orgs.service.sso_gate (bastion.wiring)")
    return sso_gate


def org_with_facts(session: Session, name: str) -> tuple[Organization, OrgFacts]:
    """The org `name` (404 if missing) and the facts the policy decides on for it."""
    org = get_org(session, name)
    return org, org_facts(session, org)


def org_facts(session: Session, org: Organization) -> OrgFacts:
    roles = dict(session.execute(select(OrgMember.user_id, OrgMember.role).where(OrgMember.org_id == org.id)).all())
    two_factor: frozenset[int] = frozenset()
    if org.require_2fa and roles:
        two_factor = frozenset(session.scalars(select(User.id).where(User.id.in_(list(roles)),
                                                                     has_two_factor_clause(User.id))))
    sso_required, sso_ok = sso().member_facts(session, org.id, list(roles))
    return OrgFacts(id=org.id, name=org.name, roles=roles, two_factor=two_factor, require_2fa=org.require_2fa,
                    token_policy=org.token_policy, repo_visibility=org.repo_visibility,
                    hide_members=org.hide_members, delegate_protection_changes=org.delegate_protection_changes,
                    sso_required=sso_required, sso_ok=sso_ok)


def group_facts(session: Session, group: ResourceGroup) -> GroupFacts:
    roles = dict(session.execute(select(ResourceGroupMember.user_id, ResourceGroupMember.role).where(
        ResourceGroupMember.group_id == group.id)).all())
    return GroupFacts(id=group.id, org_id=group.org_id, name=group.name, roles=roles)


def parse_group_id(value: Any) -> int:
    if not isinstance(value, str) or not re.fullmatch(r"[0-9a-fA-F]{24}", value):
        raise BadRequest(f"Invalid resource group id {value!r}: expected 24 hexadecimal digits")
    return int(value, 16)


def find_group(session: Session, org_id: int | None, group_pk: int) -> ResourceGroup | None:
    """The group `group_pk` (parse_group_id) of the org `org_id`; None if it has no such group."""
    group = session.get(ResourceGroup, group_pk)
    return group if group is not None and org_id is not None and group.org_id == org_id else None


def get_group(session: Session, org: Organization, public_id: str) -> ResourceGroup:
    group = find_group(session, org.id, parse_group_id(public_id))
    if group is None:
        raise NotFound("Resource group not found")
    return group


def member(session: Session, org: Organization, user: User) -> OrgMember | None:
    return session.scalar(select(OrgMember).where(OrgMember.org_id == org.id, OrgMember.user_id == user.id))


def user_by_name(session: Session, name: str) -> User:
    user = session.scalar(select(User).where(User.name_lower == (name or "").lower()))
    if user is None:
        raise NotFound(f"User {name!r} not found")
    return user


# ---- organizations ------------------------------------------------------------------------------

def create_org(session: Session, owner: User, name: str, fullname: str = "") -> Organization:
    """A new org with `owner` as its first admin. Names are shared with users, case-insensitively."""
    validate_namespace_name(name)
    taken = session.scalar(select(User.id).where(User.name_lower == name.lower())) or find_org(session, name)
    if taken is not None:
        raise Conflict(f"The name {name!r} is already taken")
    refuse_retired(session, name)
    org = Organization(name=name, name_lower=name.lower(), fullname=(fullname or "").strip()[:200], description="",
                       default_role="read", require_2fa=False, repo_visibility="public", hide_members=False,
                       token_policy="allow")  # noqa: S106 (a policy name, not a secret)
    session.add(org)
    session.flush()
    audit.record(session, AuditAction.ORG_CREATE, target=("org", org.name), namespace=org.name,
                 details={"fullname": org.fullname, "owner": owner.name})
    _add(session, org, owner, "admin", via="create")
    return org


def update_profile(session: Session, org: Organization, fullname: str, description: str) -> None:
    org.fullname, org.description = fullname.strip()[:200], description.strip()[:1000]
    audit.record(session, AuditAction.ORG_PROFILE, target=("org", org.name), namespace=org.name,
                 details={"fullname": org.fullname, "description": org.description})


# What an org or a resource group holds belongs to the features above orgs (repos): each registers a
# check that refuses (Conflict) to delete an org or a group still holding something of theirs. The
# database refuses too (ON DELETE RESTRICT); the checks say what is left, in a 409.
org_delete_checks: list[Callable[[Session, Organization], None]] = []
group_delete_checks: list[Callable[[Session, ResourceGroup], None]] = []
# Parts of a resource group's detail that features above orgs add (repos: the repos it holds that
# the caller may see): (session, group, principal) -> keys of the payload.
group_detail_parts: list[Callable[[Session, ResourceGroup, Principal], dict[str, Any]]] = []


def delete_org(session: Session, org: Organization) -> None:
    """Only an org without repositories: deleting it must never delete repositories as a side effect."""
    for check in org_delete_checks:
        check(session, org)
    audit.record(session, AuditAction.ORG_DELETE, target=("org", org.name), namespace=org.name, details={})
    session.delete(org)
    session.flush()


def list_members(session: Session, org: Organization) -> list[tuple[User, OrgMember]]:
    return list(session.execute(select(User, OrgMember).join(OrgMember, OrgMember.user_id == User.id).where(
        OrgMember.org_id == org.id).order_by(User.name_lower)))


def orgs_of(session: Session, user: User) -> list[tuple[Organization, str]]:
    return list(session.execute(select(Organization, OrgMember.role).join(
        OrgMember, OrgMember.org_id == Organization.id).where(OrgMember.user_id == user.id).order_by(
        Organization.name_lower)))


def whoami_orgs(session: Session, user: User) -> list[dict[str, Any]]:
    """`orgs` of whoami-v2, as the Hub reports them (full names included)."""
    return [{"type": "org", "id": f"{org.id:024x}", "name": org.name, "fullname": org.fullname,
             "roleInOrg": role, "isEnterprise": False, "avatarUrl": "", "email": None,
             "periodEnd": None, "canPay": False}
            for org, role in orgs_of(session, user)]


def _add(session: Session, org: Organization, user: User, role: str, *, via: str,
         managed_by: str | None = None) -> OrgMember:
    _check_role(role)
    if member(session, org, user) is not None:
        raise Conflict(f"{user.name} is already a member of {org.name}")
    row = OrgMember(org_id=org.id, user_id=user.id, role=role, managed_by=managed_by)
    session.add(row)
    session.flush()
    audit.record(session, AuditAction.ORG_ADD_USER, target=("user", user.name), namespace=org.name,
                 details={"role": role, "via": via})
    return row


def add_member(session: Session, org: Organization, user: User, role: str | None = None) -> OrgMember:
    """An admin adds a user directly (CLI, API): the org's default role unless one is given."""
    return _add(session, org, user, role or org.default_role, via="admin")


def add_provisioned_member(session: Session, org: Organization, user: User, source: str) -> OrgMember:
    """A provisioning source (e.g. "scim") adds a member with the org's default role; the membership is
    marked as managed by that source, which may later remove it (and deprovisioning names it)."""
    return _add(session, org, user, org.default_role, via=source, managed_by=source)


def admin_ids(session: Session, org_id: int) -> list[int]:
    """The org's administrators (who hear about unsafe files in its repositories)."""
    return list(session.scalars(select(OrgMember.user_id).where(OrgMember.org_id == org_id,
                                                                OrgMember.role == "admin")))


def _last_admin(session: Session, org: Organization, user: User) -> bool:
    """Whether removing or demoting admin `user` would leave `org` without an administrator who can act. A
    deactivated admin administers nothing, so only active ones count; the last admin of all stays too (an
    instance administrator may still reactivate them)."""
    others = session.execute(select(User.is_active).join(OrgMember, OrgMember.user_id == User.id).where(
        OrgMember.org_id == org.id, OrgMember.role == "admin", OrgMember.user_id != user.id)).scalars().all()
    return not others or (user.is_active and not any(others))


def _drop(session: Session, org: Organization, user: User) -> OrgMember:
    row = member(session, org, user)
    if row is None:
        raise NotFound(f"{user.name} is not a member of {org.name}")
    if row.role == "admin" and _last_admin(session, org, user):
        raise Conflict("An organization needs at least one administrator: make someone else admin first")
    group_ids = select(ResourceGroup.id).where(ResourceGroup.org_id == org.id)
    for gm in session.scalars(select(ResourceGroupMember).where(ResourceGroupMember.user_id == user.id,
                                                                ResourceGroupMember.group_id.in_(group_ids))):
        session.delete(gm)
    session.delete(row)
    session.flush()
    return row


def remove_member(session: Session, org: Organization, user: User) -> None:
    row = _drop(session, org, user)
    audit.record(session, AuditAction.ORG_REMOVE_USER, target=("user", user.name), namespace=org.name,
                 details={"role": row.role})


def leave(session: Session, org: Organization, user: User) -> None:
    row = _drop(session, org, user)
    audit.record(session, AuditAction.ORG_LEAVE, target=("user", user.name), namespace=org.name,
                 details={"role": row.role})


@dataclass(frozen=True)
class GroupAssignment:
    group: ResourceGroup
    role: str


def change_role(session: Session, org: Organization, user: User, role: str,
                groups: list[GroupAssignment] | None = None) -> None:
    """The Hub's role change: a new org role and, when `groups` is given, the member's group roles,
    replacing all earlier ones (an empty list removes every group membership)."""
    _check_role(role)
    row = member(session, org, user)
    if row is None:
        raise NotFound(f"{user.name} is not a member of {org.name}")
    if row.role == "admin" and role != "admin" and _last_admin(session, org, user):
        raise Conflict("An organization needs at least one administrator: make someone else admin first")
    if row.role != role:
        audit.record(session, AuditAction.ORG_CHANGE_ROLE, target=("user", user.name), namespace=org.name,
                     details={"from": row.role, "to": role})
        row.role = role
    if groups is None:
        return
    wanted = {a.group.id: a for a in groups}
    if len(wanted) != len(groups):
        raise BadRequest("Each resource group may appear once")
    for a in groups:
        if a.group.org_id != org.id:
            raise BadRequest("Resource group not found in this organization")
        _check_role(a.role, GROUP_ROLES)
    current = {gm.group_id: gm for gm in session.scalars(select(ResourceGroupMember).join(
        ResourceGroup, ResourceGroup.id == ResourceGroupMember.group_id).where(
        ResourceGroupMember.user_id == user.id, ResourceGroup.org_id == org.id))}
    for gid in current:
        if gid not in wanted:
            remove_group_member(session, org, session.get(ResourceGroup, gid), user)  # type: ignore[arg-type]
    for a in groups:
        set_group_member(session, org, a.group, user, a.role)


def set_default_role(session: Session, org: Organization, role: str) -> None:
    _check_role(role, MEMBER_ROLES)
    if role != org.default_role:
        audit.record(session, AuditAction.ORG_UPDATE_SETTINGS, target=("org", org.name), namespace=org.name,
                     details={"defaultRole": role, "from": org.default_role})
        org.default_role = role


# ---- invitations ------------------------------------------------------------------------------

def _secret_hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def invite(session: Session, mailer: Mailer | None, org: Organization, inviter: User, email: str,
           role: str | None = None) -> tuple[OrgInvitation, str]:
    """E-mail an expiring invitation link; only the link's holder, signed in with that address verified,
    can accept it. Returns the row and the secret (shown to nobody but the mail)."""
    email = (email or "").strip()
    if sso().invitations_closed(session, org.id):
        raise BadRequest(SSO_INVITATIONS_CLOSED.format(org=org.name))
    if not EMAIL_RE.match(email) or len(email) > 320:
        raise BadRequest(f"Invalid e-mail address {email!r}")
    role = _check_role(role or org.default_role, MEMBER_ROLES)
    secret = secrets.token_urlsafe(32)
    # Before anything is written: an instance that cannot put a link in the mail invites nobody.
    link = mailer.link(f"/organizations/invitations/{secret}") if mailer is not None else None
    inv = OrgInvitation(org_id=org.id, email=email.lower(), role=role, secret_hash=_secret_hash(secret),
                        invited_by_user_id=inviter.id, expires_at=utcnow() + INVITATION_TTL, state="pending")
    session.add(inv)
    session.flush()
    audit.record(session, AuditAction.ORG_INVITE_USER, target=("email", inv.email), namespace=org.name,
                 details={"role": role, "invitation": inv.id})
    if mailer is not None:
        mailer.queue(session, Message(
            to=email, subject=f"[Bastion] {inviter.name} invited you to join {org.name}",
            body=f"Hello,\n\n{inviter.name} invited you to join the organization {org.name} on Bastion as "
                 f"{role}.\n\nAccept or decline the invitation here (the link expires in "
                 f"{INVITATION_TTL.days} days):\n{link}\n\nSign in with the account whose verified e-mail "
                 f"address is {email}. If you did not expect this, ignore this message.\n"))
        audit.record(session, AuditAction.ORG_INVITE_EMAIL, target=("email", inv.email), namespace=org.name,
                     details={"invitation": inv.id})
    return inv, secret


def invitation_for(session: Session, secret: str) -> tuple[OrgInvitation, Organization]:
    inv = session.scalar(select(OrgInvitation).where(OrgInvitation.secret_hash == _secret_hash(secret or "")))
    if inv is None or inv.state != "pending" or inv.expires_at <= utcnow():
        raise NotFound("This invitation does not exist, was already answered, or has expired")
    org = session.get(Organization, inv.org_id)
    assert org is not None
    return inv, org


def _has_verified(session: Session, user: User, email: str) -> bool:
    return session.scalar(select(UserEmail.id).where(UserEmail.user_id == user.id, UserEmail.email_lower == email,
                                                     UserEmail.verified_at.is_not(None))) is not None


def accept_invitation(session: Session, secret: str, user: User) -> Organization:
    inv, org = invitation_for(session, secret)
    if sso().invitations_closed(session, org.id):
        raise Forbidden(SSO_INVITATIONS_CLOSED.format(org=org.name))
    # A forwarded or leaked link must not let someone else join: the address must be this user's, verified.
    if not _has_verified(session, user, inv.email):
        raise Forbidden(f"This invitation was sent to {inv.email}: add and verify that address on your account "
                        "to accept it")
    _add(session, org, user, inv.role, via="invitation")
    inv.state, inv.answered_by_user_id = "accepted", user.id
    audit.record(session, AuditAction.ORG_INVITE_ACCEPT, target=("user", user.name), namespace=org.name,
                 details={"invitation": inv.id, "role": inv.role})
    return org


def decline_invitation(session: Session, secret: str, user: User) -> Organization:
    inv, org = invitation_for(session, secret)
    if not _has_verified(session, user, inv.email):
        raise Forbidden(f"This invitation was sent to {inv.email}")
    inv.state, inv.answered_by_user_id = "declined", user.id
    audit.record(session, AuditAction.ORG_INVITE_DECLINE, target=("user", user.name), namespace=org.name,
                 details={"invitation": inv.id})
    return org


def pending_invitations(session: Session, org: Organization) -> list[OrgInvitation]:
    return list(session.scalars(select(OrgInvitation).where(
        OrgInvitation.org_id == org.id, OrgInvitation.state == "pending", OrgInvitation.expires_at > utcnow())
        .order_by(OrgInvitation.id)))


# ---- security settings -------------------------------------------------------------------------

def set_security(session: Session, org: Organization, *, require_2fa: bool | None = None,
                 repo_visibility: str | None = None, hide_members: bool | None = None,
                 block_unsafe: bool | None = None, secret_push_protection: bool | None = None,
                 delegate_protection_changes: bool | None = None,
                 secret_push_protection_mode: str | None = None) -> None:
    target = ("org", org.name)
    if secret_push_protection_mode is not None:
        mode = check_secret_mode(secret_push_protection_mode)
        if mode != org.secret_push_protection_mode:
            audit.record(session, AuditAction.ORG_SECRET_PUSH_PROTECTION, target=target, namespace=org.name,
                         details={"secretPushProtectionMode": mode, "from": org.secret_push_protection_mode})
            org.secret_push_protection_mode = mode
    if delegate_protection_changes is not None and delegate_protection_changes != org.delegate_protection_changes:
        org.delegate_protection_changes = delegate_protection_changes
        audit.record(session, AuditAction.ORG_DELEGATE_PROTECTION_CHANGES, target=target, namespace=org.name,
                     details={"delegateProtectionChanges": delegate_protection_changes})
    if secret_push_protection is not None and secret_push_protection != org.secret_push_protection:
        org.secret_push_protection = secret_push_protection
        audit.record(session, AuditAction.ORG_SECRET_PUSH_PROTECTION, target=target, namespace=org.name,
                     details={"secretPushProtection": secret_push_protection})
    if block_unsafe is not None and block_unsafe != org.block_unsafe:
        org.block_unsafe = block_unsafe
        audit.record(session, AuditAction.ORG_BLOCK_UNSAFE, target=target, namespace=org.name,
                     details={"blockUnsafeFiles": block_unsafe})
    if require_2fa is not None and require_2fa != org.require_2fa:
        org.require_2fa = require_2fa
        audit.record(session, AuditAction.ORG_2FA_ENABLE if require_2fa else AuditAction.ORG_2FA_DISABLE,
                     target=target, namespace=org.name, details={})
    if repo_visibility is not None and repo_visibility != org.repo_visibility:
        if repo_visibility not in REPO_VISIBILITY_POLICIES:
            raise BadRequest(f"Invalid repository visibility policy {repo_visibility!r}: expected one of "
                             f"{', '.join(REPO_VISIBILITY_POLICIES)}")
        audit.record(session, AuditAction.ORG_REPO_VISIBILITY, target=target, namespace=org.name,
                     details={"from": org.repo_visibility, "to": repo_visibility})
        org.repo_visibility = repo_visibility
    if hide_members is not None and hide_members != org.hide_members:
        org.hide_members = hide_members
        audit.record(session, AuditAction.ORG_MEMBERS_PRIVACY_ENABLE if hide_members
                     else AuditAction.ORG_MEMBERS_PRIVACY_DISABLE, target=target, namespace=org.name, details={})


def set_audit_retention(session: Session, org: Organization, days: Any, instance_days: int) -> None:
    """How long the org's audit events are kept (None: the instance's period); enforced by the audit worker,
    which archives, then empties older ones (bastion.audit.retention)."""
    value = audit_retention.check_org_days(days, instance_days)
    if value != org.audit_retention_days:
        audit.record(session, AuditAction.ORG_AUDIT_RETENTION, target=("org", org.name), namespace=org.name,
                     details={"from": org.audit_retention_days, "to": value})
        org.audit_retention_days = value


def audit_retention_periods(session: Session) -> dict[str, int]:
    """Every organization with a period of its own (the audit worker's port)."""
    return {name: days for name, days in session.execute(
        select(Organization.name, Organization.audit_retention_days)
        .where(Organization.audit_retention_days.is_not(None))).all()}


audit_worker.org_periods = audit_retention_periods
AUDIT_RETENTION_CHOICES = audit_retention.ORG_CHOICES
def set_default_region(session: Session, org: Organization, region: str | None) -> None:
    """The storage region new repositories of the org are created in (None: the instance's default).
    The caller checked that the instance has the region."""
    if region != org.default_region:
        audit.record(session, AuditAction.ORG_DEFAULT_REGION, target=("org", org.name), namespace=org.name,
                     details={"from": org.default_region, "to": region})
        org.default_region = region


REGION_REPO_TYPES = ("model", "dataset", "space")


def default_regions(org: Organization) -> dict[str, str]:
    """The org's default region per repository type, where one is set (over `default_region`)."""
    try:
        raw = json.loads(org.default_regions) if org.default_regions else {}
    except ValueError:
        return {}
    return {t: r for t, r in raw.items() if t in REGION_REPO_TYPES and isinstance(r, str)}


def set_type_default_region(session: Session, org: Organization, repo_type: str, region: str | None) -> None:
    """The storage region new repositories of one type are created in (None: the org's `default_region`).
    The caller checked the type and that the instance has the region."""
    current = default_regions(org)
    if current.get(repo_type) == region:
        return
    audit.record(session, AuditAction.ORG_DEFAULT_REGION, target=("org", org.name), namespace=org.name,
                 details={"repoType": repo_type, "from": current.get(repo_type), "to": region})
    if region is None:
        current.pop(repo_type, None)
    else:
        current[repo_type] = region
    org.default_regions = json.dumps(dict(sorted(current.items()))) if current else None


def default_region(session: Session, org_id: int, group: ResourceGroup | None = None,
                   repo_type: str | None = None) -> str | None:
    """Where a new repository of the org (in `group`, of `repo_type`) goes: the group's region, else the
    org's for the type, else the org's; None: the instance's default."""
    if group is not None and group.default_region:
        return group.default_region
    org = session.get(Organization, org_id)
    if org is None:
        return None
    return (default_regions(org).get(repo_type) if repo_type else None) or org.default_region


def set_group_default_region(session: Session, org: Organization, group: ResourceGroup, region: str | None) -> None:
    if region != group.default_region:
        audit.record(session, AuditAction.RESOURCE_GROUP_DEFAULT_REGION, target=("resource_group", group.public_id),
                     namespace=org.name, details={"from": group.default_region, "to": region})
        group.default_region = region


def repo_private_on_create(org: OrgFacts, private: bool | None) -> bool:
    """The visibility of a new org repo under the org's policy (None: the org's default)."""
    if private is None:
        return org.repo_visibility != "public"
    if not private and org.repo_visibility == "private_only":
        raise Forbidden(f"The organization {org.name!r} allows only private repositories")
    return private


def check_visibility_change(org: OrgFacts, principal: Principal, private: bool) -> None:
    """Under "private only", only the org's admins may make a repository public."""
    if not private and org.repo_visibility == "private_only" and not principal.is_admin and \
            org.roles.get(principal.user_id) != "admin":  # type: ignore[arg-type]
        raise Forbidden(f"The organization {org.name!r} allows only private repositories; only its "
                        "administrators can make one public")


# ---- resource groups ----------------------------------------------------------------------------

def list_groups(session: Session, org: Organization) -> list[ResourceGroup]:
    return list(session.scalars(select(ResourceGroup).where(ResourceGroup.org_id == org.id)
                                .order_by(ResourceGroup.name_lower)))


def _group_name(name: str) -> str:
    name = (name or "").strip()
    if not 1 <= len(name) <= 200:
        raise BadRequest("A resource group needs a name of 1 to 200 characters")
    return name


def create_group(session: Session, org: Organization, name: str, description: str = "",
                 users: list[tuple[User, str]] | None = None) -> ResourceGroup:
    name = _group_name(name)
    if session.scalar(select(ResourceGroup.id).where(ResourceGroup.org_id == org.id,
                                                     ResourceGroup.name_lower == name.lower())) is not None:
        raise Conflict(f"A resource group named {name!r} already exists")
    group = ResourceGroup(org_id=org.id, name=name, name_lower=name.lower(), description=(description or "")[:500])
    session.add(group)
    session.flush()
    audit.record(session, AuditAction.RESOURCE_GROUP_CREATE, target=("resource_group", group.public_id),
                 namespace=org.name, details={"name": name})
    for user, role in users or []:
        set_group_member(session, org, group, user, role)
    return group


def rename_group(session: Session, org: Organization, group: ResourceGroup, name: str,
                 description: str | None = None) -> None:
    name = _group_name(name)
    clash = session.scalar(select(ResourceGroup.id).where(ResourceGroup.org_id == org.id, ResourceGroup.id != group.id,
                                                          ResourceGroup.name_lower == name.lower()))
    if clash is not None:
        raise Conflict(f"A resource group named {name!r} already exists")
    before = group.name
    group.name, group.name_lower = name, name.lower()
    if description is not None:
        group.description = description[:500]
    audit.record(session, AuditAction.RESOURCE_GROUP_SETTINGS, target=("resource_group", group.public_id),
                 namespace=org.name, details={"from": before, "name": name})


def delete_group(session: Session, org: Organization, group: ResourceGroup) -> None:
    """Only an empty group: its private repos would otherwise land at the org root, seen by more members."""
    for check in group_delete_checks:
        check(session, group)
    audit.record(session, AuditAction.RESOURCE_GROUP_DELETE, target=("resource_group", group.public_id),
                 namespace=org.name, details={"name": group.name})
    session.delete(group)
    session.flush()


def group_members(session: Session, group: ResourceGroup) -> list[tuple[User, str]]:
    return list(session.execute(select(User, ResourceGroupMember.role).join(
        ResourceGroupMember, ResourceGroupMember.user_id == User.id).where(
        ResourceGroupMember.group_id == group.id).order_by(User.name_lower)))


def set_group_member(session: Session, org: Organization, group: ResourceGroup, user: User, role: str) -> None:
    _check_role(role, GROUP_ROLES)
    if member(session, org, user) is None:
        raise BadRequest(f"{user.name} is not a member of {org.name}: add them to the organization first")
    row = session.scalar(select(ResourceGroupMember).where(ResourceGroupMember.group_id == group.id,
                                                           ResourceGroupMember.user_id == user.id))
    target = ("resource_group", group.public_id)
    if row is None:
        session.add(ResourceGroupMember(group_id=group.id, user_id=user.id, role=role))
        session.flush()
        audit.record(session, AuditAction.RESOURCE_GROUP_ADD_USERS, target=target, namespace=org.name,
                     details={"users": [{"user": user.name, "role": role}]})
    elif row.role != role:
        audit.record(session, AuditAction.RESOURCE_GROUP_CHANGE_ROLE, target=target, namespace=org.name,
                     details={"user": user.name, "from": row.role, "to": role})
        row.role = role


def remove_group_member(session: Session, org: Organization, group: ResourceGroup, user: User) -> None:
    row = session.scalar(select(ResourceGroupMember).where(ResourceGroupMember.group_id == group.id,
                                                           ResourceGroupMember.user_id == user.id))
    if row is None:
        raise NotFound(f"{user.name} is not in this resource group")
    session.delete(row)
    session.flush()
    audit.record(session, AuditAction.RESOURCE_GROUP_REMOVE_USERS, target=("resource_group", group.public_id),
                 namespace=org.name, details={"users": [user.name]})


def resource_group_payload(session: Session, group: ResourceGroup) -> dict[str, Any]:
    """`resourceGroup` of repo info, as the Hub reports it."""
    n = session.scalar(select(func.count(ResourceGroupMember.id)).where(ResourceGroupMember.group_id == group.id))
    return {"id": group.public_id, "name": group.name, "numUsers": n or 0}


# ---- token governance ---------------------------------------------------------------------------

def set_token_policy(session: Session, org: Organization, policy: str) -> None:
    if policy not in TOKEN_POLICIES:
        raise BadRequest(f"Invalid token policy {policy!r}: expected one of {', '.join(TOKEN_POLICIES)}")
    if policy == org.token_policy:
        return
    before, org.token_policy = org.token_policy, policy
    target = ("org", org.name)
    if policy == "approval":
        audit.record(session, AuditAction.ORG_TOKEN_APPROVAL_ENABLED, target=target, namespace=org.name,
                     details={"from": before})
    elif before == "approval":
        audit.record(session, AuditAction.ORG_TOKEN_APPROVAL_DISABLED, target=target, namespace=org.name,
                     details={"to": policy})
    else:
        audit.record(session, AuditAction.ORG_UPDATE_SETTINGS, target=target, namespace=org.name,
                     details={"tokenPolicy": policy, "from": before})


def iso(dt: datetime | None) -> str | None:
    return dt.isoformat().replace("+00:00", "Z") if dt else None


def readable_role(role: str | None) -> bool:
    return role in READ_ROLES
