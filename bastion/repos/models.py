"""The repos table. Commits, refs and trees live in git, not here."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Boolean, ForeignKey, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from bastion.db import Base, UTCDateTime, utcnow
from bastion.storage.regions import region_of_key

REPO_TYPES = ("model", "dataset", "space")


class Repo(Base):
    __tablename__ = "repos"
    __table_args__ = (UniqueConstraint("type", "namespace_lower", "name_lower", name="uq_repos_type_ns_name"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    type: Mapped[str] = mapped_column(String(16))
    namespace: Mapped[str] = mapped_column(String(96), index=True)
    namespace_lower: Mapped[str] = mapped_column(String(96))
    name: Mapped[str] = mapped_column(String(96))
    name_lower: Mapped[str] = mapped_column(String(96))
    # Owner: a user (owner_user_id) or an organization (owner_org_id), never both; the namespace names it.
    owner_user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"), nullable=True)
    # An org cannot be deleted while it owns repos, nor a resource group while repos are in it (RESTRICT):
    # dropping the group would silently move private repos to the org root, where more members see them.
    owner_org_id: Mapped[int | None] = mapped_column(ForeignKey("organizations.id", ondelete="RESTRICT"),
                                                     nullable=True, index=True)
    resource_group_id: Mapped[int | None] = mapped_column(ForeignKey("resource_groups.id", ondelete="RESTRICT"),
                                                          nullable=True, index=True)
    # Who created it: an org `contributor` may write only to repos they created.
    creator_user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"), nullable=True)
    private: Mapped[bool] = mapped_column(Boolean, default=False)
    gated: Mapped[str | None] = mapped_column(String(16), nullable=True)  # None | auto | manual
    # Directory of the bare git repo under data_dir/repos: stable across renames.
    storage_key: Mapped[str] = mapped_column(String(64), unique=True)
    next_pr_number: Mapped[int] = mapped_column(Integer, default=1)
    settings: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_modified: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    downloads: Mapped[int] = mapped_column(Integer, default=0)
    likes: Mapped[int] = mapped_column(Integer, default=0)

    @property
    def region(self) -> str:
        """The storage region its bytes live in, named by its storage key (bastion.storage.regions)."""
        return region_of_key(self.storage_key)

    @property
    def repo_id(self) -> str:
        return f"{self.namespace}/{self.name}"


class RepoRedirect(Base):
    """A name a repo had before it was moved: requests to it are redirected to the repo's current name
    (the Hub's behaviour), for callers who may read the repo. A repo created at that name later wins."""

    __tablename__ = "repo_redirects"
    __table_args__ = (UniqueConstraint("type", "namespace_lower", "name_lower", name="uq_repo_redirects_name"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    type: Mapped[str] = mapped_column(String(16))
    namespace_lower: Mapped[str] = mapped_column(String(96))
    name_lower: Mapped[str] = mapped_column(String(96))
    repo_id: Mapped[int] = mapped_column(ForeignKey("repos.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class PurgedLfsObject(Base):
    """An LFS object permanently deleted from a repo (`permanently_delete_lfs_files`): every view of the
    repo's history shows its files as deleted, and no download serves it (its bytes are gone too
    unless another repo holds a link of its own)."""

    __tablename__ = "purged_lfs_objects"

    repo_id: Mapped[int] = mapped_column(ForeignKey("repos.id", ondelete="CASCADE"), primary_key=True)
    oid: Mapped[str] = mapped_column(String(64), primary_key=True)
    size: Mapped[int] = mapped_column(BigInteger)
    purged_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    actor_user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"), nullable=True)
