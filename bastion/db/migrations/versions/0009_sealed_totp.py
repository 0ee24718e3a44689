"""accounts: room for TOTP keys sealed with the instance key (bastion.secretbox)

Revision ID: 0009_sealed_totp
Revises: 0002_accounts
"""

import sqlalchemy as sa
from alembic import op

revision = "0009_sealed_totp"
down_revision = "0002_accounts"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Keys stored before this revision stay plaintext until their next successful use seals them.
    with op.batch_alter_table("users") as batch:
        batch.alter_column("totp_secret", existing_type=sa.String(64), type_=sa.String(255), existing_nullable=True)


def downgrade() -> None:
    with op.batch_alter_table("users") as batch:
        batch.alter_column("totp_secret", existing_type=sa.String(255), type_=sa.String(64), existing_nullable=True)
