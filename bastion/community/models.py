"""Discussions and pull requests (one numbering per repo, shared with `repos.next_pr_number`) and their events.

A pull request's commits live in git (`refs/pr/N`); these rows hold what git does not: who opened it,
its title, status and target branch, and the comments, status and title changes in order.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Boolean, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from bastion.db import Base, UTCDateTime, utcnow

STATUSES = ("open", "closed", "merged", "draft")
EVENT_KINDS = ("comment", "status-change", "title-change")


class Discussion(Base):
    __tablename__ = "discussions"
    __table_args__ = (UniqueConstraint("repo_id", "num", name="uq_discussions_repo_num"),
                      Index("ix_discussions_repo_status", "repo_id", "status", "num"))

    id: Mapped[int] = mapped_column(primary_key=True)
    repo_id: Mapped[int] = mapped_column(ForeignKey("repos.id", ondelete="CASCADE"))
    num: Mapped[int] = mapped_column(Integer)
    is_pull_request: Mapped[bool] = mapped_column(Boolean, default=False)
    title: Mapped[str] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(16))  # open | closed | merged | draft
    author_user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"), nullable=True,
                                                       index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # Pull requests: the branch they merge into (refs/heads/…) and, once merged, the commit that did it.
    target_ref: Mapped[str | None] = mapped_column(String(255), nullable=True)
    merge_commit: Mapped[str | None] = mapped_column(String(40), nullable=True)

    @property
    def git_ref(self) -> str | None:
        return f"refs/pr/{self.num}" if self.is_pull_request else None


class DiscussionEvent(Base):
    """A comment (the first one is the description), a status change or a title change. A pull request's
    commits are read from git."""

    __tablename__ = "discussion_events"
    __table_args__ = (Index("ix_discussion_events_discussion", "discussion_id", "id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    discussion_id: Mapped[int] = mapped_column(ForeignKey("discussions.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(16))  # comment | status-change | title-change
    author_user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # status-change: {"status": …}; title-change: {"from": …, "to": …}
    data: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    # Comments: the text now, its earlier versions ([{"raw", "updatedAt", "author"}], oldest first), who
    # last changed it, and whether it was hidden. A hidden comment's text is erased (the Hub's rule: hiding
    # is irreversible and the content can no longer be read), so no reader can be handed it by mistake.
    content: Mapped[str | None] = mapped_column(Text, nullable=True)
    history: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    edited: Mapped[bool] = mapped_column(Boolean, default=False)
    updated_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    updated_by_user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"),
                                                           nullable=True)
    hidden: Mapped[bool] = mapped_column(Boolean, default=False)
    hidden_by_user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"),
                                                          nullable=True)

    @property
    def public_id(self) -> str:
        return f"{self.id:024x}"  # the Hub's event ids are 24 hex digits
