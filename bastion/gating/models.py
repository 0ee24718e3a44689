"""The access requests of gated repositories: one row per (repo, user), its status and who decided."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, ForeignKey, Index, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from bastion.db import Base, UTCDateTime, utcnow

STATUSES = ("pending", "accepted", "rejected")


class AccessRequest(Base):
    """A user's request to read a gated repo's files (or a grant made without one).

    Kept when gating is turned off, so turning it on again restores who had access. The row is the
    user's consent to share their name and e-mail with those who manage the repo: `email` is the
    address shared at that moment (none for a grant the user never asked for).
    """

    __tablename__ = "repo_access_requests"
    __table_args__ = (UniqueConstraint("repo_id", "user_id", name="uq_repo_access_requests_repo_user"),
                      Index("ix_repo_access_requests_repo_status", "repo_id", "status", "created_at"))

    id: Mapped[int] = mapped_column(primary_key=True)
    repo_id: Mapped[int] = mapped_column(ForeignKey("repos.id", ondelete="CASCADE"))
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    status: Mapped[str] = mapped_column(String(16))  # pending | accepted | rejected
    email: Mapped[str | None] = mapped_column(String(320), nullable=True)
    # The gate form's extra fields as the requester filled them ({label: text}).
    fields: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    reviewed_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    reviewed_by_user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"),
                                                            nullable=True)
    granted: Mapped[bool] = mapped_column(default=False)  # given by a manager without a request (grant)
    rejection_reason: Mapped[str | None] = mapped_column(String(200), nullable=True)

    @property
    def public_id(self) -> str:
        return f"{self.id:024x}"  # the Hub's request ids are 24 hex digits
