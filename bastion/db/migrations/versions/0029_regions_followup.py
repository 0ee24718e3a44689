"""storage regions follow-up: the Xet shards each repository uploaded (moved with it between regions, swept
per region by garbage collection), an organization's default region per repository type, and region moves
that outlive their repository (deleted during the move: the row stays, `repo_id` NULL, to remove the copies)

Shards uploaded before this revision are linked to no repository: nothing reads a shard after its
registration, so they stay where they were uploaded until a region sweep of garbage collection
(a region's shard that no repository of the region uploaded) removes them.

Revision ID: 0029_regions_followup
Revises: 0028_instance_sso
"""

import sqlalchemy as sa
from alembic import op

import bastion.db

revision = "0029_regions_followup"
down_revision = "0028_instance_sso"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "repo_xet_shards",
        sa.Column("repo_id", sa.Integer(), nullable=False),
        sa.Column("shard_hash", sa.String(length=64), nullable=False),
        sa.Column("created_at", bastion.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["repo_id"], ["repos.id"], name=op.f("fk_repo_xet_shards_repo_id_repos"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("repo_id", "shard_hash", name=op.f("pk_repo_xet_shards")),
    )
    op.create_index(op.f("ix_repo_xet_shards_shard_hash"), "repo_xet_shards", ["shard_hash"], unique=False)
    with op.batch_alter_table("organizations") as batch:
        batch.add_column(sa.Column("default_regions", sa.String(length=200), nullable=True))
    with op.batch_alter_table("region_moves") as batch:
        batch.drop_constraint("fk_region_moves_repo_id_repos", type_="foreignkey")
        batch.alter_column("repo_id", existing_type=sa.Integer(), nullable=True)
        batch.create_foreign_key(op.f("fk_region_moves_repo_id_repos"), "repos", ["repo_id"], ["id"],
                                 ondelete="SET NULL")
        batch.add_column(sa.Column("leftovers", sa.Text(), nullable=True))


def downgrade() -> None:
    op.execute("DELETE FROM region_moves WHERE repo_id IS NULL")
    with op.batch_alter_table("region_moves") as batch:
        batch.drop_column("leftovers")
        batch.drop_constraint("fk_region_moves_repo_id_repos", type_="foreignkey")
        batch.alter_column("repo_id", existing_type=sa.Integer(), nullable=False)
        batch.create_foreign_key(op.f("fk_region_moves_repo_id_repos"), "repos", ["repo_id"], ["id"],
                                 ondelete="CASCADE")
    with op.batch_alter_table("organizations") as batch:
        batch.drop_column("default_regions")
    op.drop_index(op.f("ix_repo_xet_shards_shard_hash"), table_name="repo_xet_shards")
    op.drop_table("repo_xet_shards")
