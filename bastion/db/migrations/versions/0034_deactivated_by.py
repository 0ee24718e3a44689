"""who deactivated an account (an administrator or a provisioning source), so that an identity provider undoes
only a deactivation it may answer for

Revision ID: 0034_deactivated_by
Revises: 0033_retired_names
"""

import sqlalchemy as sa
from alembic import op

revision = "0034_deactivated_by"
down_revision = "0033_retired_names"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("users") as batch:
        batch.add_column(sa.Column("deactivated_by", sa.String(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("users") as batch:
        batch.drop_column("deactivated_by")
