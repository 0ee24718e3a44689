"""Xet tables: stored xorbs (once each, with their chunk layout), the repos that proved possession
of each xorb, registered files (Xet file hash -> sha256 oid and terms), and the dedupe chunk index.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, ForeignKey, Integer, LargeBinary, String
from sqlalchemy.orm import Mapped, mapped_column

from bastion.db import Base, UTCDateTime, utcnow


class XetXorb(Base):
    """A validated xorb in the xorb store, keyed by its Xet hash (api.md hex form).

    `layout` packs, per chunk, (chunk hash, uncompressed size, serialized end offset): what shard
    verification, reconstruction plans and dedupe answers need, without re-reading the xorb.
    """

    __tablename__ = "xet_xorbs"

    hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    size: Mapped[int] = mapped_column(BigInteger)  # serialized bytes on disk
    num_chunks: Mapped[int] = mapped_column(Integer)
    unpacked_size: Mapped[int] = mapped_column(BigInteger)
    layout: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # Refreshed whenever an upload or a dedupe answer hands the xorb out: GC spares recent ones.
    last_used_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class RepoXetXorb(Base):
    """`repo_id` proved possession of xorb `xorb_hash`: it uploaded bytes that hash to it.

    The Xet analogue of RepoLfsObject. Shards of a repo may reference, and dedupe answers to a
    repo may reveal, only xorbs linked to it: knowing a hash never grants another tenant's data.
    """

    __tablename__ = "repo_xet_xorbs"

    repo_id: Mapped[int] = mapped_column(ForeignKey("repos.id", ondelete="CASCADE"), primary_key=True)
    xorb_hash: Mapped[str] = mapped_column(ForeignKey("xet_xorbs.hash", ondelete="CASCADE"), primary_key=True,
                                           index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class RepoXetShard(Base):
    """`repo_id` uploaded the shard `shard_hash` (its sha256, the key in the region's shard store): the
    shards a repository's Xet files were registered by, moved with it to another region."""

    __tablename__ = "repo_xet_shards"

    repo_id: Mapped[int] = mapped_column(ForeignKey("repos.id", ondelete="CASCADE"), primary_key=True)
    shard_hash: Mapped[str] = mapped_column(String(64), primary_key=True, index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class XetFile(Base):
    """A file registered by a verified shard: its Xet file hash, its sha256 (the LFS oid), its terms.

    `sha256` was recomputed by Bastion from the reconstructed bytes, never taken from the shard.
    """

    __tablename__ = "xet_files"

    file_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    sha256: Mapped[str] = mapped_column(String(64), index=True)
    size: Mapped[int] = mapped_column(BigInteger)
    segments: Mapped[bytes] = mapped_column(LargeBinary)  # packed FileSegments, see service.pack_segments
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class XetFileXorb(Base):
    """File -> xorb references (what garbage collection must keep)."""

    __tablename__ = "xet_file_xorbs"

    file_hash: Mapped[str] = mapped_column(ForeignKey("xet_files.file_hash", ondelete="CASCADE"), primary_key=True)
    xorb_hash: Mapped[str] = mapped_column(ForeignKey("xet_xorbs.hash"), primary_key=True, index=True)


class XetDedupeChunk(Base):
    """Global-dedupe index: chunks a client may ask about (deduplication.md eligibility) -> xorb."""

    __tablename__ = "xet_dedupe_chunks"

    chunk_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    xorb_hash: Mapped[str] = mapped_column(ForeignKey("xet_xorbs.hash", ondelete="CASCADE"), primary_key=True,
                                           index=True)
