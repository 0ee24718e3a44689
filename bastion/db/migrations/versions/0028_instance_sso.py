"""instance sso: the instance's SSO settings, linked IdP identities, sign-ins in flight, SAML replay cache

Revision ID: 0028_instance_sso
Revises: 0027_audit_read_indexes
"""

import sqlalchemy as sa
from alembic import op

from bastion.db import UTCDateTime

revision = "0028_instance_sso"
down_revision = "0027_audit_read_indexes"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "instance_sso_configs",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("protocol", sa.String(length=8), nullable=False),
        sa.Column("issuer", sa.String(length=1000), nullable=False),
        sa.Column("client_id", sa.String(length=500), nullable=False),
        sa.Column("client_secret", sa.String(length=2000), nullable=False),
        sa.Column("token_auth_method", sa.String(length=32), nullable=False),
        sa.Column("discovery", sa.JSON(), nullable=False),
        sa.Column("username_claim", sa.String(length=300), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("sso_only", sa.Boolean(), nullable=False),
        sa.Column("break_glass_user", sa.String(length=96), nullable=False),
        sa.Column("updated_at", UTCDateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "instance_sso_identities",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("subject", sa.String(length=500), nullable=False, unique=True),
        sa.Column("user_id", sa.Integer(), sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False,
                  unique=True),
        sa.Column("created_at", UTCDateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "instance_sso_states",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("state_hash", sa.String(length=64), nullable=False, unique=True),
        sa.Column("nonce", sa.String(length=100), nullable=False),
        sa.Column("code_verifier", sa.String(length=200), nullable=False),
        sa.Column("next_path", sa.String(length=2000), nullable=False),
        sa.Column("created_at", UTCDateTime(timezone=True), nullable=False),
        sa.Column("used_at", UTCDateTime(timezone=True), nullable=True),
    )
    op.create_table(
        "instance_sso_assertions",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("assertion_id", sa.String(length=300), nullable=False, unique=True),
        sa.Column("expires_at", UTCDateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    for table in ("instance_sso_assertions", "instance_sso_states", "instance_sso_identities",
                  "instance_sso_configs"):
        op.drop_table(table)
