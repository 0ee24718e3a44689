"""Tables of single sign-on: an org's identity-provider settings, its members' SSO sessions and the
sign-ins in flight (state, nonce, PKCE verifier: each used once).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Boolean, ForeignKey, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from bastion.db import Base, UTCDateTime, utcnow


class SsoConfig(Base):
    """One organization's OIDC settings. The client secret is sealed (bastion.secretbox) to its org id."""

    __tablename__ = "sso_configs"

    id: Mapped[int] = mapped_column(primary_key=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("organizations.id", ondelete="CASCADE"), unique=True)
    protocol: Mapped[str] = mapped_column(String(8), default="oidc")
    issuer: Mapped[str] = mapped_column(String(1000))
    client_id: Mapped[str] = mapped_column(String(500))
    client_secret: Mapped[str] = mapped_column(String(2000))  # secretbox-sealed
    token_auth_method: Mapped[str] = mapped_column(String(32), default="client_secret_post")
    # The discovery document as fetched and validated when the settings were saved.
    discovery: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    role_claim: Mapped[str] = mapped_column(String(300), default="")
    role_map: Mapped[dict[str, str]] = mapped_column(JSON, default=dict)  # claim value → org role
    group_claim: Mapped[str] = mapped_column(String(300), default="")
    # claim value → [[resource group id, role], ...] (additive)
    group_map: Mapped[dict[str, list[list[Any]]]] = mapped_column(JSON, default=dict)
    email_domains: Mapped[list[str]] = mapped_column(JSON, default=list)
    session_days: Mapped[int] = mapped_column(Integer, default=7)
    enabled: Mapped[bool] = mapped_column(Boolean, default=False)
    # When a test sign-in last passed; "enable" needs one after the last change (updated_at).
    tested_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class SsoExemption(Base):
    """An external collaborator: a member who reaches the org's resources without SSO (their role and
    resource groups still apply)."""

    __tablename__ = "sso_exemptions"
    __table_args__ = (UniqueConstraint("org_id", "user_id", name="uq_sso_exemptions_org_user"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("organizations.id", ondelete="CASCADE"), index=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)


class SsoSession(Base):
    """A member's SSO session for one org: the IdP subject it was completed as, and until when it counts."""

    __tablename__ = "sso_sessions"
    __table_args__ = (UniqueConstraint("org_id", "user_id", name="uq_sso_sessions_org_user"),
                      UniqueConstraint("org_id", "subject", name="uq_sso_sessions_org_subject"))

    id: Mapped[int] = mapped_column(primary_key=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("organizations.id", ondelete="CASCADE"), index=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    subject: Mapped[str] = mapped_column(String(500))
    email: Mapped[str] = mapped_column(String(320), default="")
    authenticated_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)


class SsoLoginState(Base):
    """A sign-in sent to the IdP: only the state's SHA-256 is stored; consumed once, by the same user."""

    __tablename__ = "sso_login_states"

    id: Mapped[int] = mapped_column(primary_key=True)
    state_hash: Mapped[str] = mapped_column(String(64), unique=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("organizations.id", ondelete="CASCADE"), index=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    nonce: Mapped[str] = mapped_column(String(100))
    code_verifier: Mapped[str] = mapped_column(String(200))
    purpose: Mapped[str] = mapped_column(String(8), default="login")  # login | test
    next_path: Mapped[str] = mapped_column(String(2000), default="/")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class SsoSamlAssertion(Base):
    """The assertion-id replay cache: each SAML assertion is used once, kept until it would have expired."""

    __tablename__ = "sso_saml_assertions"
    __table_args__ = (UniqueConstraint("org_id", "assertion_id", name="uq_sso_saml_assertions_org_assertion"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("organizations.id", ondelete="CASCADE"), index=True)
    assertion_id: Mapped[str] = mapped_column(String(300))
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)


class InstanceSsoConfig(Base):
    """The instance's own SSO (one row): OIDC or SAML settings, how usernames are made, and "SSO only" mode.
    The client secret is sealed (bastion.secretbox) to the context "instance"."""

    __tablename__ = "instance_sso_configs"

    id: Mapped[int] = mapped_column(primary_key=True)
    protocol: Mapped[str] = mapped_column(String(8), default="oidc")
    issuer: Mapped[str] = mapped_column(String(1000))
    client_id: Mapped[str] = mapped_column(String(500), default="")
    client_secret: Mapped[str] = mapped_column(String(2000), default="")  # secretbox-sealed
    token_auth_method: Mapped[str] = mapped_column(String(32), default="")
    discovery: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)  # OIDC discovery, or the SAML IdP
    username_claim: Mapped[str] = mapped_column(String(300), default="preferred_username")
    enabled: Mapped[bool] = mapped_column(Boolean, default=False)
    sso_only: Mapped[bool] = mapped_column(Boolean, default=False)
    break_glass_user: Mapped[str] = mapped_column(String(96), default="")  # may still sign in with a password
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class InstanceSsoIdentity(Base):
    """An IdP subject linked to a Bastion account (made at JIT creation, or by linking after proof)."""

    __tablename__ = "instance_sso_identities"

    id: Mapped[int] = mapped_column(primary_key=True)
    subject: Mapped[str] = mapped_column(String(500), unique=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class InstanceSsoState(Base):
    """An instance sign-in sent to the IdP (nobody is signed in yet): the state's SHA-256, used once."""

    __tablename__ = "instance_sso_states"

    id: Mapped[int] = mapped_column(primary_key=True)
    state_hash: Mapped[str] = mapped_column(String(64), unique=True)
    nonce: Mapped[str] = mapped_column(String(100))  # OIDC nonce, or the SAML AuthnRequest ID
    code_verifier: Mapped[str] = mapped_column(String(200), default="")
    next_path: Mapped[str] = mapped_column(String(2000), default="/")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class InstanceSsoAssertion(Base):
    """The instance's SAML assertion-id replay cache."""

    __tablename__ = "instance_sso_assertions"

    id: Mapped[int] = mapped_column(primary_key=True)
    assertion_id: Mapped[str] = mapped_column(String(300), unique=True)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
