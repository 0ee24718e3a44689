"""orgs: block-unsafe-files policy for all of an organization's repositories

Revision ID: 0008_org_block_unsafe
Revises: 0007_orgs
"""

import sqlalchemy as sa
from alembic import op

revision = "0008_org_block_unsafe"
down_revision = "0007_orgs"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("organizations") as batch:
        batch.add_column(sa.Column("block_unsafe", sa.Boolean(), nullable=False, server_default=sa.false()))


def downgrade() -> None:
    with op.batch_alter_table("organizations") as batch:
        batch.drop_column("block_unsafe")
