"""region_moves: one row per move of a repository to another storage region, the job's durable state."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from bastion.db import Base, UTCDateTime, utcnow


class RegionMove(Base):
    """A move's steps, in order: copy -> verify -> switch -> clean -> done (or failed). `state` names the
    next step to run; each step is idempotent, so a worker killed anywhere resumes at the recorded step.
    The repository deleted during the move: `drop` (remove the copy the repository no longer uses, named
    in `leftovers`) -> gone; `repo_id` is then NULL."""

    __tablename__ = "region_moves"

    id: Mapped[int] = mapped_column(primary_key=True)
    repo_id: Mapped[int | None] = mapped_column(ForeignKey("repos.id", ondelete="SET NULL"), index=True,
                                                nullable=True)
    source_key: Mapped[str] = mapped_column(String(64))  # storage keys: each names its region
    target_key: Mapped[str] = mapped_column(String(64))
    state: Mapped[str] = mapped_column(String(16), default="copy")  # copy|verify|switch|clean|done|failed|drop|gone
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    # Who runs it: "host:pid" and until when; a dead owner's move is taken over at once on the same host.
    owner: Mapped[str | None] = mapped_column(String(128), nullable=True)
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    error: Mapped[str | None] = mapped_column(String(1000), nullable=True)
    requested_by: Mapped[str | None] = mapped_column(String(96), nullable=True)
    copied_objects: Mapped[int] = mapped_column(Integer, default=0)
    copied_xorbs: Mapped[int] = mapped_column(Integer, default=0)
    # Set when the repository is deleted during the move: JSON {"key": the storage key of the copy to
    # remove, "oids": [...], "xorbs": [...], "shards": [...]} (what the repository linked).
    leftovers: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
