"""Org token governance: which orgs a token reaches, the approval policy's states and decisions, and the
list an org's admins review. Tokens sit above orgs: this reads org memberships and policies, orgs import
nothing of tokens."""

from __future__ import annotations

import dataclasses
import weakref
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, bindparam, or_, select
from sqlalchemy.orm import Session

from bastion import audit
from bastion.accounts.models import User
from bastion.accounts.service import notify, primary_verified
from bastion.audit.actions import AuditAction
from bastion.db import utcnow
from bastion.errors import BadRequest, Conflict, NotFound
from bastion.mail import Mailer
from bastion.orgs.models import Organization, OrgMember, OrgTokenApproval, ResourceGroup
from bastion.orgs.service import MAX_ADMIN_MAILS, iso, member
from bastion.tokens.models import AccessToken
from bastion.tokens.restrictions import GROUP_SCOPE_RE, REPO_ENTITY_TYPES, Scope, Scoped, load_all


def resolve_group_scopes(session: Session, scopes: list[Scope]) -> list[Scope]:
    """Resource-group scopes named `org/group-name` → `org/<24-hex id>`, the form tokens store."""
    out = []
    for scope in scopes:
        if scope.entity_type == "resource-group" and not GROUP_SCOPE_RE.match(scope.name.lower()):
            org_name, _, group_name = scope.name.partition("/")
            group = session.scalar(select(ResourceGroup).join(Organization, Organization.id == ResourceGroup.org_id)
                                   .where(Organization.name_lower == org_name.lower(),
                                          ResourceGroup.name_lower == group_name.lower()))
            if group is None:
                raise BadRequest(f"No resource group {group_name!r} in organization {org_name!r}")
            org = session.get(Organization, group.org_id)
            assert org is not None
            scope = dataclasses.replace(scope, name=f"{org.name}/{group.public_id}")
        out.append(scope)
    return out



_APPROVAL_STATES = select(OrgTokenApproval.org_id, OrgTokenApproval.state).where(
    OrgTokenApproval.token_id == bindparam("token_id"))


def approval_states(session: Session, token_id: int) -> dict[int, str]:
    """A token's recorded state per org (read on every use of the token: the statement is built once)."""
    return dict(session.execute(_APPROVAL_STATES, {"token_id": token_id}).all())


def targeted_orgs(session: Session, tok: AccessToken) -> set[int]:
    """Orgs a fine-grained token names: an org entity, one of its resource groups, or one of its repos."""
    names: set[str] = set()
    group_ids: set[int] = set()
    for r in load_all(tok.restrictions or []):
        if isinstance(r, Scoped):
            for s in r.scopes:
                if s.entity_type == "org":
                    names.add(s.name.lower())
                elif s.entity_type in REPO_ENTITY_TYPES:
                    names.add(s.name.split("/")[0].lower())
                elif s.entity_type == "resource-group":
                    group_ids.add(int(s.name.split("/")[1], 16))
    ids = set(session.scalars(select(Organization.id).where(Organization.name_lower.in_(sorted(names)))))
    ids |= set(session.scalars(select(ResourceGroup.org_id).where(ResourceGroup.id.in_(sorted(group_ids)))))
    return ids


def effective_state(org: Organization, tok: AccessToken, recorded: str | None, owner_role: str | None) -> str:
    """What the admins' list shows; the same rule as restrictions.OrgTokenPolicy.decide()."""
    if recorded == "revoked":
        return "revoked"
    if org.token_policy == "allow":
        return "authorized"
    if tok.role != "fineGrained":
        return "refused"  # read/write tokens under a fine-grained-only or approval policy
    if org.token_policy == "fine_grained":
        return "authorized"
    if recorded is None:
        return "approved" if owner_role == "admin" else "pending"
    return recorded


def on_token_created(session: Session, mailer: Mailer | None, tok: AccessToken) -> None:
    """A new fine-grained token that targets an org under approval: pending (admins e-mailed), or approved
    at once when its owner is one of the org's admins (no e-mail then, as on the Hub)."""
    if tok.role != "fineGrained":
        return
    for org_id in sorted(targeted_orgs(session, tok)):
        org = session.get(Organization, org_id)
        if org is None or org.token_policy != "approval":
            continue
        owner = session.get(User, tok.user_id)
        assert owner is not None
        row = member(session, org, owner)
        admin = row is not None and row.role == "admin"
        session.add(OrgTokenApproval(org_id=org.id, token_id=tok.id, state="approved" if admin else "pending",
                                     decided_at=utcnow() if admin else None,
                                     decided_by_user_id=owner.id if admin else None))
        session.flush()
        target = ("token", str(tok.id))
        if admin:
            audit.record(session, AuditAction.ORG_TOKEN_APPROVAL_AUTHORIZED, target=target, namespace=org.name,
                         details={"token": tok.name, "user": owner.name, "automatic": True})
            continue
        audit.record(session, AuditAction.ORG_TOKEN_APPROVAL_REQUEST, target=target, namespace=org.name,
                     details={"token": tok.name, "user": owner.name})
        admins = session.scalars(select(User).join(OrgMember, OrgMember.user_id == User.id).where(
            OrgMember.org_id == org.id, OrgMember.role == "admin").order_by(User.id))
        sent = 0
        for admin_user in admins:
            if sent >= MAX_ADMIN_MAILS:
                break
            if primary_verified(admin_user) is None:
                continue
            page = f"/organizations/{org.name}/settings/tokens"
            # Without a public URL the notice still goes out (the approval waits on it), naming the page
            # instead of linking it: refusing would refuse the token's creation, not protect anyone.
            where = (f"here:\n{mailer.link(page)}" if mailer is not None and mailer.public_url
                     else f"in the organization's settings, Access tokens ({page} on this Bastion).")
            notify(session, mailer, admin_user, f"A token needs approval for {org.name}",
                   f"{owner.name} created the access token {tok.name!r}, which needs an administrator's approval "
                   f"before it can access {org.name}'s resources. Review it {where}")
            sent += 1


def _approval_row(session: Session, org: Organization, tok: AccessToken) -> OrgTokenApproval:
    row = session.scalar(select(OrgTokenApproval).where(OrgTokenApproval.org_id == org.id,
                                                        OrgTokenApproval.token_id == tok.id))
    if row is None:
        row = OrgTokenApproval(org_id=org.id, token_id=tok.id, state="pending")
        session.add(row)
    return row


DECISIONS = {"approve": ("approved", AuditAction.ORG_TOKEN_APPROVAL_AUTHORIZED, "approved"),
             "deny": ("denied", AuditAction.ORG_TOKEN_APPROVAL_DENIED, "denied"),
             "revoke": ("revoked", AuditAction.ORG_TOKEN_APPROVAL_REVOKED, "revoked")}


def decide_token(session: Session, mailer: Mailer | None, org: Organization, tok: AccessToken, actor: User,
                 verb: str) -> str:
    """approve / deny (both reversible) / revoke (permanent for this org). Returns the new state."""
    if verb not in DECISIONS:
        raise BadRequest("Unknown decision: expected approve, deny or revoke")
    if not reaches_org(session, org, tok):
        raise NotFound("Token not found")
    state, action, word = DECISIONS[verb]
    row = _approval_row(session, org, tok)
    if row.state == "revoked":
        raise Conflict("This token was revoked for the organization; revocation cannot be undone")
    if verb in ("approve", "deny") and org.token_policy != "approval":
        raise BadRequest("Approving and denying tokens needs the 'require administrator approval' policy")
    row.state, row.decided_at, row.decided_by_user_id = state, utcnow(), actor.id
    session.flush()
    owner = session.get(User, tok.user_id)
    assert owner is not None
    audit.record(session, action, target=("token", str(tok.id)), namespace=org.name,
                 details={"token": tok.name, "user": owner.name})
    notify(session, mailer, owner, f"Your token was {word} by {org.name}",
           f"An administrator of {org.name} {word} your access token {tok.name!r} for the organization's "
           "resources.")
    return state


def reaches_org(session: Session, org: Organization, tok: AccessToken) -> bool:
    """Can this token reach the org's non-public resources: its owner is a member, and it is a read/write
    token or a fine-grained token naming the org (or a group or repo of it). An instance administrator
    reaches every org without being a member, so their fine-grained tokens that name the org are under
    its token policy too (listed to its admins, who approve or revoke them); their read/write tokens act
    with instance-wide powers and are not listed in every org."""
    if tok.revoked_at is not None:
        return False
    if session.scalar(select(OrgMember.id).where(OrgMember.org_id == org.id,
                                                 OrgMember.user_id == tok.user_id)) is None:
        owner = session.get(User, tok.user_id)
        return bool(owner is not None and owner.is_admin and tok.role == "fineGrained"
                    and org.id in targeted_orgs(session, tok))
    return tok.role != "fineGrained" or org.id in targeted_orgs(session, tok)


@dataclass(frozen=True)
class OrgToken:
    token: AccessToken
    owner: User
    role_in_org: str | None  # None: an instance administrator who is not a member
    state: str
    scopes: list[dict[str, Any]]


def tokens_reaching(session: Session, org: Organization, *, include_revoked: bool = False) -> list[OrgToken]:
    from bastion.tokens.service import scopes_payload  # tokens.service builds on this module

    roles = dict(session.execute(select(OrgMember.user_id, OrgMember.role).where(OrgMember.org_id == org.id)).all())
    recorded = dict(session.execute(select(OrgTokenApproval.token_id, OrgTokenApproval.state).where(
        OrgTokenApproval.org_id == org.id)).all())
    out: list[OrgToken] = []
    instance_admins = select(User.id).where(User.is_admin.is_(True))
    toks = session.scalars(select(AccessToken).where(
        or_(AccessToken.user_id.in_(list(roles)),
            AccessToken.user_id.in_(instance_admins) & (AccessToken.role == "fineGrained")),
        AccessToken.revoked_at.is_(None))
                           .order_by(AccessToken.created_at.desc(), AccessToken.id.desc()))
    for tok in toks:
        if tok.expires_at is not None and tok.expires_at <= utcnow():
            continue
        if not reaches_org(session, org, tok):
            continue
        state = effective_state(org, tok, recorded.get(tok.id), roles.get(tok.user_id))
        if state == "revoked" and not include_revoked:
            continue
        out.append(OrgToken(tok, tok.user, roles.get(tok.user_id), state, scopes_payload(tok)["scoped"]))
    return out


def get_reaching_token(session: Session, org: Organization, token_id: int) -> AccessToken:
    tok = session.get(AccessToken, token_id)
    if tok is None or not reaches_org(session, org, tok):
        raise NotFound("Token not found")
    return tok


def org_token_payload(org: Organization, t: OrgToken) -> dict[str, Any]:
    """A token as the org's admins see it; its name only under the approval policy (as on the Hub)."""
    return {"id": t.token.id, "user": t.owner.name, "roleInOrg": t.role_in_org, "role": t.token.role,
            "displayName": t.token.name if org.token_policy == "approval" else None,
            "scoped": t.scopes, "createdAt": iso(t.token.created_at), "lastUsedAt": iso(t.token.last_used_at),
            "state": t.state}


# Set by install(): each database's mailer, for the approval requests token creation sends (it runs
# without a request). Keyed by engine, so in-process apps and tests never share one.
_mail: weakref.WeakKeyDictionary[Engine, Mailer | None] = weakref.WeakKeyDictionary()


def install(engine: Engine, mailer: Mailer | None) -> None:
    """Give token governance the instance's mailer (called by the app factory and CLI)."""
    _mail[engine] = mailer


def token_created(session: Session, tok: AccessToken) -> None:
    bind = session.get_bind()
    mailer = _mail.get(bind) if isinstance(bind, Engine) else None
    on_token_created(session, mailer, tok)
