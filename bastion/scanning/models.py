"""Scanning tables: durable scan jobs (the queue's source of truth) and verdict history.

Results are keyed by (blob, scanner, scanner version): identical content is scanned once
per scanner version, and a new scanner or signature version adds a row instead of erasing one.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Boolean, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from bastion.db import Base, UTCDateTime, utcnow


class ScanJob(Base):
    __tablename__ = "scan_jobs"
    __table_args__ = (
        UniqueConstraint("blob_key", "scanner", "scanner_version", name="uq_scan_jobs_blob_scanner_version"),
        Index("ix_scan_jobs_state_lease", "state", "lease_until"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    # Content identity: the LFS sha256 (64 hex) or the git blob id (40 hex) of a regular file.
    blob_key: Mapped[str] = mapped_column(String(64))
    scanner: Mapped[str] = mapped_column(String(16))
    scanner_version: Mapped[str] = mapped_column(String(200))
    # Where to read the bytes: an LFS object, or a git blob in one repository.
    source_kind: Mapped[str] = mapped_column(String(8))  # lfs | git
    storage_key: Mapped[str | None] = mapped_column(String(64), nullable=True)
    size: Mapped[int] = mapped_column(BigInteger, default=0)
    repo_id: Mapped[int | None] = mapped_column(Integer, nullable=True)  # the repo whose commit queued it
    path: Mapped[str] = mapped_column(String(1024), default="")
    state: Mapped[str] = mapped_column(String(16), default="queued")  # queued | running | done
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    lease_token: Mapped[str | None] = mapped_column(String(32), nullable=True)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class ScanResultRow(Base):
    __tablename__ = "scan_results"
    __table_args__ = (
        UniqueConstraint("blob_key", "scanner", "scanner_version", name="uq_scan_results_blob_scanner_version"),
        Index("ix_scan_results_blob", "blob_key"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    blob_key: Mapped[str] = mapped_column(String(64))
    scanner: Mapped[str] = mapped_column(String(16))
    scanner_version: Mapped[str] = mapped_column(String(200))
    verdict: Mapped[str] = mapped_column(String(16))
    summary: Mapped[str] = mapped_column(Text, default="")
    details: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class SecretNotice(Base):
    """One distinct secret seen in one repo (by keyed fingerprint, never the secret): the owners'
    notice and their decision on it. Keyed by fingerprint, so an edit elsewhere in the file, or the
    same secret in another file, is not a new alarm; a new secret is.
    """

    __tablename__ = "secret_notices"
    __table_args__ = (UniqueConstraint("repo_id", "fingerprint", name="uq_secret_notices_repo_fingerprint"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    repo_id: Mapped[int] = mapped_column(Integer, index=True)
    fingerprint: Mapped[str] = mapped_column(String(64))  # HMAC of the secret with the instance key
    provider: Mapped[str] = mapped_column(String(64))
    secret_type: Mapped[str] = mapped_column(String(200))
    detector: Mapped[str] = mapped_column(String(64))
    preview: Mapped[str] = mapped_column(String(200), default="")
    verification: Mapped[str] = mapped_column(String(16))
    verified: Mapped[bool] = mapped_column(Boolean, default=False)
    first_path: Mapped[str] = mapped_column(String(1024))
    first_line: Mapped[int] = mapped_column(Integer)
    first_blob: Mapped[str] = mapped_column(String(64))
    state: Mapped[str] = mapped_column(String(16), default="open")  # open | dismissed | resolved
    reason: Mapped[str] = mapped_column(Text, default="")
    decided_by: Mapped[int | None] = mapped_column(Integer, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class ScanRelease(Base):
    """A file of one repo that "block unsafe files" holds because the scanners could not prove it safe
    (suspicious, could not open, error), released by someone who manages the repo. Per blob per repo:
    the same bytes elsewhere stay held, and a file any scanner judges unsafe is never released.
    """

    __tablename__ = "scan_releases"
    __table_args__ = (UniqueConstraint("repo_id", "blob_key", name="uq_scan_releases_repo_blob"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    repo_id: Mapped[int] = mapped_column(ForeignKey("repos.id", ondelete="CASCADE"))
    blob_key: Mapped[str] = mapped_column(String(64))  # LFS sha256 or git blob id
    path: Mapped[str] = mapped_column(String(1024), default="")  # where it was when released, for people
    reason: Mapped[str] = mapped_column(Text, default="")
    released_by: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class ScanGeneration(Base):
    """One row (id 1): a counter bumped by every transaction that changes scan_jobs, scan_results or
    secret_notices (bastion.scanning.generation). A summary derived from those tables and cached under
    the generation it was computed at can never be served stale, by any process sharing the database."""

    __tablename__ = "scan_generation"

    id: Mapped[int] = mapped_column(primary_key=True)
    generation: Mapped[int] = mapped_column(BigInteger, default=0)
