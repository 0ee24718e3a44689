"""lfs: when each object, and each repo's link to it, was last uploaded or referenced (storage GC)

Revision ID: 0011_lfs_last_used
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

import bastion.db

revision = "0011_lfs_last_used"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    for table in ("lfs_objects", "repo_lfs_objects"):
        with op.batch_alter_table(table) as batch:
            batch.add_column(sa.Column("last_used_at", bastion.db.UTCDateTime(timezone=True), nullable=True))
        t = sa.table(table, sa.column("created_at"), sa.column("last_used_at"))
        op.execute(t.update().values(last_used_at=t.c.created_at))
        with op.batch_alter_table(table) as batch:
            batch.alter_column("last_used_at", existing_type=bastion.db.UTCDateTime(timezone=True), nullable=False)


def downgrade() -> None:
    for table in ("lfs_objects", "repo_lfs_objects"):
        with op.batch_alter_table(table) as batch:
            batch.drop_column("last_used_at")
