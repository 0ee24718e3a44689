"""orgs: secret push protection for all of an organization's repositories

Revision ID: 0010_org_secret_push
Revises: 0008_org_block_unsafe
"""

import sqlalchemy as sa
from alembic import op

revision = "0010_org_secret_push"
down_revision = "0008_org_block_unsafe"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("organizations") as batch:
        batch.add_column(sa.Column("secret_push_protection", sa.Boolean(), nullable=False, server_default=sa.false()))


def downgrade() -> None:
    with op.batch_alter_table("organizations") as batch:
        batch.drop_column("secret_push_protection")
