"""scanning: files released by a repo's managers from "block unsafe files" (suspicious, not unsafe)

Revision ID: 0017_scan_releases
Revises: 0004_scanning
"""

import sqlalchemy as sa
from alembic import op

import bastion.db

revision = "0017_scan_releases"
down_revision = "0004_scanning"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "scan_releases",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("repo_id", sa.Integer(), nullable=False),
        sa.Column("blob_key", sa.String(64), nullable=False),
        sa.Column("path", sa.String(1024), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("released_by", sa.Integer(), nullable=True),
        sa.Column("created_at", bastion.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["repo_id"], ["repos.id"], name=op.f("fk_scan_releases_repo_id_repos"),
                                ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["released_by"], ["users.id"], name=op.f("fk_scan_releases_released_by_users"),
                                ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_scan_releases")),
        sa.UniqueConstraint("repo_id", "blob_key", name="uq_scan_releases_repo_blob"),
    )


def downgrade() -> None:
    op.drop_table("scan_releases")
