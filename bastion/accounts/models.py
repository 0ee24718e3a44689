"""Tables of the accounts package: users, their e-mails, web sessions, second factors,
known devices and the sliding-window counters behind sign-in rate limits.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Boolean, ForeignKey, Index, Integer, LargeBinary, String, text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from bastion.db import Base, UTCDateTime, utcnow


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(primary_key=True)
    # Usernames share one namespace with organizations; compared case-insensitively.
    name: Mapped[str] = mapped_column(String(96), unique=True)
    name_lower: Mapped[str] = mapped_column(String(96), unique=True)
    email: Mapped[str] = mapped_column(String(320))  # the primary address (mirrors the primary UserEmail)
    fullname: Mapped[str] = mapped_column(String(200), default="")
    is_admin: Mapped[bool] = mapped_column(Boolean, default=False)
    is_active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # argon2id PHC string; None: the account cannot sign in with a password (token-only users).
    password_hash: Mapped[str | None] = mapped_column(String(256), nullable=True, default=None)
    password_changed_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True, default=None)
    # RFC 6238 secret once confirmed, sealed with the instance key (twofactor.totp_box; a plaintext base32
    # value from before sealing is sealed at its next use); the last accepted time step makes each code single-use.
    totp_secret: Mapped[str | None] = mapped_column(String(255), nullable=True, default=None)
    totp_last_step: Mapped[int | None] = mapped_column(Integer, nullable=True, default=None)
    # Random per-user handle for WebAuthn (the spec forbids personal data there).
    webauthn_handle: Mapped[str | None] = mapped_column(String(64), nullable=True, default=None)
    # Set when the account was deleted (bastion.lifecycle): the row stays as a pseudonymous tombstone
    # (name "deleted-…", no e-mail, no credentials) so ids in audit events and commits still resolve.
    deleted_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True, default=None)
    # Who deactivated the account (bastion.lifecycle.service): "admin" (the CLI, the admin API or page) or a
    # provisioning source ("scim:instance", "scim:org:<id>"), so that a source undoes only what it may answer for;
    # None while active (an inactive account without it counts as an administrator's decision).
    deactivated_by: Mapped[str | None] = mapped_column(String(64), nullable=True, default=None)

    emails: Mapped[list[UserEmail]] = relationship(back_populates="user", cascade="all, delete-orphan",
                                                   order_by="UserEmail.id")


class UserEmail(Base):
    __tablename__ = "user_emails"
    __table_args__ = (
        # An address belongs to at most one account once verified; unverified claims may collide so
        # that sign-up never reveals whether an address is registered.
        Index("uq_user_emails_verified", "email_lower", unique=True,
              sqlite_where=text("verified_at IS NOT NULL"), postgresql_where=text("verified_at IS NOT NULL")),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    email: Mapped[str] = mapped_column(String(320))
    email_lower: Mapped[str] = mapped_column(String(320), index=True)
    primary: Mapped[bool] = mapped_column(Boolean, default=False)
    verified_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True, default=None)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    user: Mapped[User] = relationship(back_populates="emails")


class WebSession(Base):
    """A browser session. The cookie holds a random secret; only its SHA-256 is stored."""

    __tablename__ = "web_sessions"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    secret_hash: Mapped[str] = mapped_column(String(64), unique=True)
    # "pending": password accepted, second factor outstanding (grants nothing); "active": signed in.
    state: Mapped[str] = mapped_column(String(16), default="active")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_seen_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # Last time the user proved a password / second factor in this session ("sudo mode").
    authenticated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True, default=None)
    ip: Mapped[str | None] = mapped_column(String(64), nullable=True)
    user_agent: Mapped[str | None] = mapped_column(String(512), nullable=True)
    # Short-lived server-side state of multi-step flows (WebAuthn challenge, TOTP secret being enrolled).
    pending: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class RecoveryCode(Base):
    __tablename__ = "recovery_codes"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    code_hash: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True, default=None)


class WebAuthnCredential(Base):
    __tablename__ = "webauthn_credentials"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    label: Mapped[str] = mapped_column(String(64))
    credential_id: Mapped[str] = mapped_column(String(512), unique=True)  # base64url
    public_key: Mapped[bytes] = mapped_column(LargeBinary)
    sign_count: Mapped[int] = mapped_column(Integer, default=0)
    transports: Mapped[list[str]] = mapped_column(JSON, default=list)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True, default=None)


class KnownDevice(Base):
    """Browsers a user signed in from before; a sign-in from any other one is announced by e-mail."""

    __tablename__ = "known_devices"
    __table_args__ = (Index("uq_known_devices_user_device", "user_id", "device_hash", unique=True),)

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    device_hash: Mapped[str] = mapped_column(String(64))
    first_seen_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_seen_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class RateLimitHit(Base):
    """One counted attempt under a key such as "login:ip:10.0.0.1"; a sliding window counts the rows."""

    __tablename__ = "rate_limit_hits"
    __table_args__ = (Index("ix_rate_limit_hits_key_at", "key", "at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    key: Mapped[str] = mapped_column(String(400))
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class RetiredName(Base):
    """The name of a deleted account, never given again: a newcomer under it would be served whatever others
    still fetch by the old repo ids and profile links (repo-jacking). Kept as the SHA-256 of the lower-cased
    name, not the name (bastion.accounts.service.retire_name)."""

    __tablename__ = "retired_names"

    name_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    retired_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
