"""names of deleted accounts, never given again (kept as their SHA-256)

Revision ID: 0033_retired_names
Revises: 0032_contribution_uploads
"""

import sqlalchemy as sa
from alembic import op

import bastion.db

revision = "0033_retired_names"
down_revision = "0032_contribution_uploads"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "retired_names",
        sa.Column("name_hash", sa.String(length=64), nullable=False),
        sa.Column("retired_at", bastion.db.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name_hash", name=op.f("pk_retired_names")),
    )


def downgrade() -> None:
    op.drop_table("retired_names")
