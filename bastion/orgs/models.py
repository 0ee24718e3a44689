"""Tables of the organizations package: orgs, memberships and roles, invitations, resource groups
and their members, and each token's approval state per org (token governance).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, ForeignKey, Integer, String, UniqueConstraint, event, select
from sqlalchemy.orm import Mapped, mapped_column

from bastion.accounts.models import User
from bastion.db import Base, UTCDateTime, utcnow
from bastion.errors import Conflict


class Organization(Base):
    __tablename__ = "organizations"

    id: Mapped[int] = mapped_column(primary_key=True)
    # Org names share one namespace with usernames (checked both ways: see _name_free_for_user below).
    name: Mapped[str] = mapped_column(String(96), unique=True)
    name_lower: Mapped[str] = mapped_column(String(96), unique=True)
    fullname: Mapped[str] = mapped_column(String(200), default="")
    description: Mapped[str] = mapped_column(String(1000), default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    default_role: Mapped[str] = mapped_column(String(16), default="read")
    require_2fa: Mapped[bool] = mapped_column(Boolean, default=False)
    repo_visibility: Mapped[str] = mapped_column(String(16), default="public")  # public | private | private_only
    hide_members: Mapped[bool] = mapped_column(Boolean, default=False)
    token_policy: Mapped[str] = mapped_column(String(16), default="allow")  # allow | fine_grained | approval
    # Reject commits to any org repo whose inline scan finds malware or a dangerous pickle.
    block_unsafe: Mapped[bool] = mapped_column(Boolean, default=False)
    # Secret push protection for every org repo (a repo may also turn it on for itself).
    secret_push_protection: Mapped[bool] = mapped_column(Boolean, default=False)
    # What it refuses (authz.policy.SECRET_PUSH_PROTECTION_MODES): the default mode of every org repo, and
    # while the org's protection is on, the loosest mode one of them may use.
    secret_push_protection_mode: Mapped[str] = mapped_column(String(16), default="high-confidence")
    # Lowering a repo's protections (secret push protection, block-unsafe, signed commits, protected refs,
    # secrets-bypass, super-squash under the signed-commit rule) is for org admins; on: repo managers too.
    delegate_protection_changes: Mapped[bool] = mapped_column(Boolean, default=False)
    # Days the org's audit events are kept (null: the instance's period); enforced by bastion.audit.retention.
    audit_retention_days: Mapped[int | None] = mapped_column(Integer, nullable=True)
    # The storage region new repositories are created in (None: the instance's default region).
    default_region: Mapped[str | None] = mapped_column(String(24), nullable=True)
    # Per repository type, over default_region: JSON {"model": "eu", "dataset": "us", "space": ...}.
    default_regions: Mapped[str | None] = mapped_column(String(200), nullable=True)


class OrgMember(Base):
    __tablename__ = "org_members"
    __table_args__ = (UniqueConstraint("org_id", "user_id", name="uq_org_members_org_user"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("organizations.id", ondelete="CASCADE"), index=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    role: Mapped[str] = mapped_column(String(16))  # no_access | read | contributor | write | admin
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # The provisioning source that manages this membership (e.g. "scim"), None when granted by hand:
    # deprovisioning by that source removes it (bastion.lifecycle.service.deactivate_user).
    managed_by: Mapped[str | None] = mapped_column(String(16), nullable=True, default=None)


class OrgInvitation(Base):
    """An e-mailed invitation: the link carries a random secret, only its SHA-256 is stored."""

    __tablename__ = "org_invitations"

    id: Mapped[int] = mapped_column(primary_key=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("organizations.id", ondelete="CASCADE"), index=True)
    email: Mapped[str] = mapped_column(String(320))
    role: Mapped[str] = mapped_column(String(16))
    secret_hash: Mapped[str] = mapped_column(String(64), unique=True)
    invited_by_user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    state: Mapped[str] = mapped_column(String(16), default="pending")  # pending | accepted | declined | cancelled
    answered_by_user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"), nullable=True)


class ResourceGroup(Base):
    __tablename__ = "resource_groups"
    __table_args__ = (UniqueConstraint("org_id", "name_lower", name="uq_resource_groups_org_name"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("organizations.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    name_lower: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(String(500), default="")
    # The storage region new repositories of this group are created in (None: the org's default).
    default_region: Mapped[str | None] = mapped_column(String(24), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    @property
    def public_id(self) -> str:
        return f"{self.id:024x}"


class ResourceGroupMember(Base):
    __tablename__ = "resource_group_members"
    __table_args__ = (UniqueConstraint("group_id", "user_id", name="uq_resource_group_members_group_user"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    group_id: Mapped[int] = mapped_column(ForeignKey("resource_groups.id", ondelete="CASCADE"), index=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    role: Mapped[str] = mapped_column(String(16))  # read | contributor | write | admin


class OrgTokenApproval(Base):
    """A token's state for one org under token governance; `revoked` is permanent for that org."""

    __tablename__ = "org_token_approvals"
    __table_args__ = (UniqueConstraint("org_id", "token_id", name="uq_org_token_approvals_org_token"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("organizations.id", ondelete="CASCADE"), index=True)
    token_id: Mapped[int] = mapped_column(ForeignKey("access_tokens.id", ondelete="CASCADE"), index=True)
    state: Mapped[str] = mapped_column(String(16), default="pending")  # pending | approved | denied | revoked
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    decided_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    decided_by_user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"), nullable=True)


@event.listens_for(User, "before_insert")
def _name_free_for_user(_mapper: object, connection: object, target: User) -> None:
    """A new user may not take an organization's name (users and orgs share one namespace); the
    orgs service checks the other direction. Here, so no sign-up path can forget it."""
    taken = connection.execute(  # type: ignore[attr-defined]
        select(Organization.id).where(Organization.name_lower == target.name.lower())).first()
    if taken is not None:
        raise Conflict(f"The name {target.name!r} is already taken")
