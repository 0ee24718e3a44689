"""tokens: restrictions (fine-grained scopes, read-only) and rotation time

Revision ID: 0006_tokens
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

import bastion.db

revision = "0006_tokens"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("access_tokens") as batch:
        batch.add_column(sa.Column("restrictions", sa.JSON(), nullable=False, server_default="[]"))
        batch.add_column(sa.Column("rotated_at", bastion.db.UTCDateTime(timezone=True), nullable=True))
    # Tokens issued before restrictions existed: a read token keeps being read-only.
    op.execute("UPDATE access_tokens SET restrictions = '[{\"t\": \"read-only\"}]' WHERE role = 'read'")


def downgrade() -> None:
    with op.batch_alter_table("access_tokens") as batch:
        batch.drop_column("rotated_at")
        batch.drop_column("restrictions")
