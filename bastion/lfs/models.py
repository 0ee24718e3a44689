"""LFS tables: stored objects (once each) and the repos that may reference them."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, ForeignKey, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from bastion.db import Base, UTCDateTime, utcnow


class LfsObject(Base):
    """A verified object in the blob store: its bytes hash to `oid` and number `size`."""

    __tablename__ = "lfs_objects"

    oid: Mapped[str] = mapped_column(String(64), primary_key=True)
    size: Mapped[int] = mapped_column(BigInteger)
    region: Mapped[str] = mapped_column(String(32), default="default")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # Uploaded or linked again: storage GC never deletes an object used within its grace period.
    last_used_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class RepoLfsObject(Base):
    """`repo_id` proved possession of `oid` (uploaded it, or it came in a commit of that repo).

    A commit may reference only objects linked to its repo: knowing a sha256 is not enough to
    pull another repo's private file into your own.
    """

    __tablename__ = "repo_lfs_objects"

    repo_id: Mapped[int] = mapped_column(ForeignKey("repos.id", ondelete="CASCADE"), primary_key=True)
    oid: Mapped[str] = mapped_column(ForeignKey("lfs_objects.oid"), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # Uploaded, or referenced by a commit or push being checked: storage GC removes a link only when
    # no ref of the repo reaches the object and it was not used within the grace period.
    last_used_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class LfsMultipartUpload(Base):
    """A multipart upload in progress: parts are written in place into one staging file.

    Each part is claimed before it is written and is immutable once received (LfsMultipartPart), so
    the bytes completion verifies are the bytes stored: no part can be rewritten after the hash.
    """

    __tablename__ = "lfs_multipart_uploads"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    repo_id: Mapped[int] = mapped_column(ForeignKey("repos.id", ondelete="CASCADE"))
    oid: Mapped[str] = mapped_column(String(64))
    size: Mapped[int] = mapped_column(BigInteger)
    chunk_size: Mapped[int] = mapped_column(BigInteger)
    staging_path: Mapped[str] = mapped_column(String(512))
    user_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # Set when a completion takes the upload (its bytes are then verified outside any transaction).
    completing_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class LfsMultipartPart(Base):
    """One part of a multipart upload: `writing` while its one request streams it, `done` once received.

    The primary key is the claim: a second request for a part being written or already received is
    refused (409), so each byte of the staging file is written by exactly one successful request.
    A failed write releases its claim (the row is deleted), so the client can send the part again.
    """

    __tablename__ = "lfs_multipart_parts"

    upload_id: Mapped[str] = mapped_column(ForeignKey("lfs_multipart_uploads.id", ondelete="CASCADE"),
                                           primary_key=True)
    part: Mapped[int] = mapped_column(Integer, primary_key=True)
    state: Mapped[str] = mapped_column(String(8), default="writing")  # writing | done
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class LfsLock(Base):
    """A Git LFS file lock (`git lfs lock`): one per path per repo, owned by the user who took it."""

    __tablename__ = "lfs_locks"
    __table_args__ = (UniqueConstraint("repo_id", "path", name="uq_lfs_locks_repo_path"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    repo_id: Mapped[int] = mapped_column(ForeignKey("repos.id", ondelete="CASCADE"), index=True)
    path: Mapped[str] = mapped_column(String(1024))
    owner_user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    ref_name: Mapped[str | None] = mapped_column(String(255), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class ContributionUpload(Base):
    """Bytes a user who may not write to `repo_id` was allowed to upload there for pull requests: an LFS object
    (`key` its oid) or a Xet xorb (`key` "xorb:" + its hash), counted once per user and key in the window
    (bastion.lfs.allowance)."""

    __tablename__ = "contribution_uploads"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    repo_id: Mapped[int | None] = mapped_column(ForeignKey("repos.id", ondelete="SET NULL"), nullable=True)
    key: Mapped[str] = mapped_column(String(80))
    size: Mapped[int] = mapped_column(BigInteger)
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
