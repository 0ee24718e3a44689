"""The account_deletions table: one row per deleted account, kept after its personal data is gone, saying
when its repos are purged (the grace period) and which audit event pseudonymised its events."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column

from bastion.db import Base, UTCDateTime, utcnow


class AccountDeletion(Base):
    __tablename__ = "account_deletions"

    id: Mapped[int] = mapped_column(primary_key=True)
    # The tombstone user row (renamed to the pseudonym, no personal data left).
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), unique=True)
    pseudonym: Mapped[str] = mapped_column(String(96))
    deleted_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # When the account's own repos are deleted for good (None: it had none left, all were transferred).
    purge_repos_after: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    repos_purged_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # The user.audit_redact event that lists the events it pseudonymised.
    redaction_event_id: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
