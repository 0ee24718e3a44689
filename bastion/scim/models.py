"""Tables of SCIM: the IdP's bearer tokens, the accounts and groups each SCIM scope provisioned.

A scope is the instance (`org_id` NULL, scope "instance") or one organization (scope "org:<id>"):
the `scope` column carries it so a unique constraint can include it (NULL never collides in SQL).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Boolean, ForeignKey, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from bastion.db import Base, UTCDateTime, utcnow


class ScimToken(Base):
    """An IdP's bearer token: only the SHA-256 of the secret is stored; `bsc_` prefix (never a user token)."""

    __tablename__ = "scim_tokens"

    id: Mapped[int] = mapped_column(primary_key=True)
    scope: Mapped[str] = mapped_column(String(32), index=True)
    org_id: Mapped[int | None] = mapped_column(ForeignKey("organizations.id", ondelete="CASCADE"), nullable=True)
    label: Mapped[str] = mapped_column(String(100), default="")
    secret_hash: Mapped[str] = mapped_column(String(64), unique=True)
    last4: Mapped[str] = mapped_column(String(4))
    created_by_user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class ScimIdentity(Base):
    """An account as one SCIM scope knows it: its externalId, whether this scope created the account
    (only then may an org's SCIM change its profile or deactivate it), and for the instance whether the
    IdP deleted it (the account stays, deactivated; SCIM answers 404 for it)."""

    __tablename__ = "scim_identities"
    __table_args__ = (UniqueConstraint("scope", "user_id", name="uq_scim_identities_scope_user"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    scope: Mapped[str] = mapped_column(String(32), index=True)
    org_id: Mapped[int | None] = mapped_column(ForeignKey("organizations.id", ondelete="CASCADE"), nullable=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    external_id: Mapped[str | None] = mapped_column(String(500), nullable=True)
    # What the IdP said beyond the account's own fields: name parts, displayName, every e-mail with its type.
    profile: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_account: Mapped[bool] = mapped_column(Boolean, default=False)
    deleted_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class ScimGroup(Base):
    """A SCIM group; in an org it may be linked to an org role (`org_role`) and to resource groups."""

    __tablename__ = "scim_groups"

    id: Mapped[int] = mapped_column(primary_key=True)
    scope: Mapped[str] = mapped_column(String(32), index=True)
    org_id: Mapped[int | None] = mapped_column(ForeignKey("organizations.id", ondelete="CASCADE"), nullable=True)
    display_name: Mapped[str] = mapped_column(String(200))
    external_id: Mapped[str | None] = mapped_column(String(500), nullable=True)
    org_role: Mapped[str | None] = mapped_column(String(16), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class ScimGroupMember(Base):
    __tablename__ = "scim_group_members"
    __table_args__ = (UniqueConstraint("group_id", "user_id", name="uq_scim_group_members_group_user"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    group_id: Mapped[int] = mapped_column(ForeignKey("scim_groups.id", ondelete="CASCADE"), index=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)


class ScimGroupLink(Base):
    """A SCIM group linked to a resource group: its members get `role` there."""

    __tablename__ = "scim_group_links"
    __table_args__ = (UniqueConstraint("scim_group_id", "resource_group_id", name="uq_scim_group_links_pair"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    scim_group_id: Mapped[int] = mapped_column(ForeignKey("scim_groups.id", ondelete="CASCADE"), index=True)
    resource_group_id: Mapped[int] = mapped_column(ForeignKey("resource_groups.id", ondelete="CASCADE"), index=True)
    role: Mapped[str] = mapped_column(String(16))
