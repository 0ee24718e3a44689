"""storage regions: the region new repositories of an organization (or of a resource group) are created in,
and region_moves (moving a repository to another region, a durable job)

A repository's own region is named by its storage key (`eu/<hex>`; a bare key: `default`), so existing
repositories stay in the default region without a data migration.

Revision ID: 0024_storage_regions
Revises: 0023_audit_chain
"""

import sqlalchemy as sa
from alembic import op

import bastion.db

revision = "0024_storage_regions"
down_revision = "0023_audit_chain"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("organizations") as batch:
        batch.add_column(sa.Column("default_region", sa.String(length=24), nullable=True))
    with op.batch_alter_table("resource_groups") as batch:
        batch.add_column(sa.Column("default_region", sa.String(length=24), nullable=True))
    op.create_table(
        "region_moves",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("repo_id", sa.Integer(), nullable=False),
        sa.Column("source_key", sa.String(length=64), nullable=False),
        sa.Column("target_key", sa.String(length=64), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("owner", sa.String(length=128), nullable=True),
        sa.Column("lease_until", bastion.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("error", sa.String(length=1000), nullable=True),
        sa.Column("requested_by", sa.String(length=96), nullable=True),
        sa.Column("copied_objects", sa.Integer(), nullable=False),
        sa.Column("copied_xorbs", sa.Integer(), nullable=False),
        sa.Column("created_at", bastion.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", bastion.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["repo_id"], ["repos.id"], name=op.f("fk_region_moves_repo_id_repos"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_region_moves")),
    )
    op.create_index(op.f("ix_region_moves_repo_id"), "region_moves", ["repo_id"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_region_moves_repo_id"), table_name="region_moves")
    op.drop_table("region_moves")
    with op.batch_alter_table("resource_groups") as batch:
        batch.drop_column("default_region")
    with op.batch_alter_table("organizations") as batch:
        batch.drop_column("default_region")
