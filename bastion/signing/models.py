"""Tables of the signing package: users' GPG keys (with every key id they answer to), SSH signing
keys, per-user preferences and the stored verdict of each commit that entered a repository.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, Boolean, ForeignKey, Index, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from bastion.db import Base, UTCDateTime, utcnow


class GpgKey(Base):
    __tablename__ = "gpg_keys"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    # Upper-case hex. Unique across users: one key has one owner, so a verdict names one signer.
    fingerprint: Mapped[str] = mapped_column(String(64), unique=True)
    key_id: Mapped[str] = mapped_column(String(16))
    armored: Mapped[str] = mapped_column(Text)
    # Lower-cased e-mails of the key's non-revoked user IDs (the key's claims, not proof of anything).
    emails: Mapped[list[str]] = mapped_column(JSON, default=list)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True, default=None)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    subkeys: Mapped[list[GpgSubkey]] = relationship(back_populates="key", cascade="all, delete-orphan",
                                                    order_by="GpgSubkey.id")


class GpgSubkey(Base):
    """Every key id a GPG key answers to, the primary included: a signature names its issuer by one."""

    __tablename__ = "gpg_subkeys"

    id: Mapped[int] = mapped_column(primary_key=True)
    gpg_key_id: Mapped[int] = mapped_column(ForeignKey("gpg_keys.id", ondelete="CASCADE"), index=True)
    key_id: Mapped[str] = mapped_column(String(16), index=True)
    fingerprint: Mapped[str] = mapped_column(String(64))
    primary: Mapped[bool] = mapped_column(Boolean, default=False)
    can_sign: Mapped[bool] = mapped_column(Boolean, default=False)
    revoked: Mapped[bool] = mapped_column(Boolean, default=False)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True, default=None)

    key: Mapped[GpgKey] = relationship(back_populates="subkeys")


class SshSigningKey(Base):
    __tablename__ = "ssh_signing_keys"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    title: Mapped[str] = mapped_column(String(100), default="")
    key_type: Mapped[str] = mapped_column(String(64))
    public_key: Mapped[str] = mapped_column(Text)  # "type base64", no comment
    fingerprint: Mapped[str] = mapped_column(String(100), unique=True)  # SHA256:…, as ssh-keygen prints it
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class SigningPreference(Base):
    __tablename__ = "signing_preferences"

    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), primary_key=True)
    # Vigilant mode: unsigned commits claiming one of this user's e-mails show as unverified.
    vigilant: Mapped[bool] = mapped_column(Boolean, default=False)


class CommitSignature(Base):
    """The verdict on one commit of one repo, so listings never re-run gpg or ssh-keygen.

    Rows are deleted (and recomputed on the next read) when a key or preference they depend on
    changes; the e-mail and key id columns exist to find those rows.
    """

    __tablename__ = "commit_signatures"
    __table_args__ = (
        UniqueConstraint("repo_id", "commit_sha", name="uq_commit_signatures_repo_commit"),
        Index("ix_commit_signatures_key_id", "key_id"),
        Index("ix_commit_signatures_committer_email", "committer_email"),
        Index("ix_commit_signatures_author_email", "author_email"),
        Index("ix_commit_signatures_signer_user_id", "signer_user_id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    repo_id: Mapped[int] = mapped_column(ForeignKey("repos.id", ondelete="CASCADE"))
    commit_sha: Mapped[str] = mapped_column(String(40))
    status: Mapped[str] = mapped_column(String(24))  # verified | partially_verified | unverified | unsigned
    sig_type: Mapped[str | None] = mapped_column(String(8), nullable=True)  # gpg | ssh
    key_id: Mapped[str | None] = mapped_column(String(100), nullable=True)
    signer: Mapped[str | None] = mapped_column(String(200), nullable=True)
    signer_user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"), nullable=True)
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    committer_email: Mapped[str] = mapped_column(String(320), default="")
    author_email: Mapped[str] = mapped_column(String(320), default="")
    verified_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
