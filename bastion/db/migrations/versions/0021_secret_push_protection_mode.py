"""orgs: what secret push protection refuses (verified-only | high-confidence | all), per organization

Revision ID: 0021_secret_push_protection_mode
Revises: 0018_signing_protection
"""

import sqlalchemy as sa
from alembic import op

revision = "0021_secret_push_protection_mode"
down_revision = "0018_signing_protection"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("organizations") as batch:
        batch.add_column(sa.Column("secret_push_protection_mode", sa.String(length=16), nullable=False,
                                   server_default="high-confidence"))


def downgrade() -> None:
    with op.batch_alter_table("organizations") as batch:
        batch.drop_column("secret_push_protection_mode")
