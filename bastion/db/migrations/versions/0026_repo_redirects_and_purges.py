"""repos: redirects from a moved repo's old names; LFS objects permanently deleted from a repo

Revision ID: 0026_repo_redirects_and_purges
Revises: 0025_sso
"""

import sqlalchemy as sa
from alembic import op

from bastion.db import UTCDateTime

revision = "0026_repo_redirects_and_purges"
down_revision = "0025_sso"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "repo_redirects",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("type", sa.String(length=16), nullable=False),
        sa.Column("namespace_lower", sa.String(length=96), nullable=False),
        sa.Column("name_lower", sa.String(length=96), nullable=False),
        sa.Column("repo_id", sa.Integer(), sa.ForeignKey("repos.id", ondelete="CASCADE"), nullable=False),
        sa.Column("created_at", UTCDateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("type", "namespace_lower", "name_lower", name="uq_repo_redirects_name"),
    )
    op.create_index("ix_repo_redirects_repo_id", "repo_redirects", ["repo_id"])
    op.create_table(
        "purged_lfs_objects",
        sa.Column("repo_id", sa.Integer(), sa.ForeignKey("repos.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("oid", sa.String(length=64), primary_key=True),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("purged_at", UTCDateTime(timezone=True), nullable=False),
        sa.Column("actor_user_id", sa.Integer(), sa.ForeignKey("users.id", ondelete="SET NULL"), nullable=True),
    )


def downgrade() -> None:
    op.drop_table("purged_lfs_objects")
    op.drop_index("ix_repo_redirects_repo_id", table_name="repo_redirects")
    op.drop_table("repo_redirects")
