"""sso: organizations' OIDC and SAML settings, the SAML assertion replay cache, members' SSO sessions, sign-ins in flight

Revision ID: 0025_sso
Revises: 0024_storage_regions
"""

import sqlalchemy as sa
from alembic import op

from bastion.db import UTCDateTime

revision = "0025_sso"
down_revision = "0024_storage_regions"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "sso_configs",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("org_id", sa.Integer(), sa.ForeignKey("organizations.id", ondelete="CASCADE"), nullable=False,
                  unique=True),
        sa.Column("protocol", sa.String(length=8), nullable=False),
        sa.Column("issuer", sa.String(length=1000), nullable=False),
        sa.Column("client_id", sa.String(length=500), nullable=False),
        sa.Column("client_secret", sa.String(length=2000), nullable=False),
        sa.Column("token_auth_method", sa.String(length=32), nullable=False),
        sa.Column("discovery", sa.JSON(), nullable=False),
        sa.Column("role_claim", sa.String(length=300), nullable=False),
        sa.Column("role_map", sa.JSON(), nullable=False),
        sa.Column("group_claim", sa.String(length=300), nullable=False),
        sa.Column("group_map", sa.JSON(), nullable=False),
        sa.Column("email_domains", sa.JSON(), nullable=False),
        sa.Column("session_days", sa.Integer(), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("tested_at", UTCDateTime(timezone=True), nullable=True),
        sa.Column("updated_at", UTCDateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "sso_exemptions",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("org_id", sa.Integer(), sa.ForeignKey("organizations.id", ondelete="CASCADE"), nullable=False),
        sa.Column("user_id", sa.Integer(), sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
        sa.UniqueConstraint("org_id", "user_id", name="uq_sso_exemptions_org_user"),
    )
    op.create_index("ix_sso_exemptions_org_id", "sso_exemptions", ["org_id"])
    op.create_index("ix_sso_exemptions_user_id", "sso_exemptions", ["user_id"])
    op.create_table(
        "sso_sessions",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("org_id", sa.Integer(), sa.ForeignKey("organizations.id", ondelete="CASCADE"), nullable=False),
        sa.Column("user_id", sa.Integer(), sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
        sa.Column("subject", sa.String(length=500), nullable=False),
        sa.Column("email", sa.String(length=320), nullable=False),
        sa.Column("authenticated_at", UTCDateTime(timezone=True), nullable=False),
        sa.Column("expires_at", UTCDateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("org_id", "user_id", name="uq_sso_sessions_org_user"),
        sa.UniqueConstraint("org_id", "subject", name="uq_sso_sessions_org_subject"),
    )
    op.create_index("ix_sso_sessions_org_id", "sso_sessions", ["org_id"])
    op.create_index("ix_sso_sessions_user_id", "sso_sessions", ["user_id"])
    op.create_table(
        "sso_login_states",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("state_hash", sa.String(length=64), nullable=False, unique=True),
        sa.Column("org_id", sa.Integer(), sa.ForeignKey("organizations.id", ondelete="CASCADE"), nullable=False),
        sa.Column("user_id", sa.Integer(), sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
        sa.Column("nonce", sa.String(length=100), nullable=False),
        sa.Column("code_verifier", sa.String(length=200), nullable=False),
        sa.Column("purpose", sa.String(length=8), nullable=False),
        sa.Column("next_path", sa.String(length=2000), nullable=False),
        sa.Column("created_at", UTCDateTime(timezone=True), nullable=False),
        sa.Column("used_at", UTCDateTime(timezone=True), nullable=True),
    )
    op.create_index("ix_sso_login_states_org_id", "sso_login_states", ["org_id"])
    op.create_table(
        "sso_saml_assertions",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("org_id", sa.Integer(), sa.ForeignKey("organizations.id", ondelete="CASCADE"), nullable=False),
        sa.Column("assertion_id", sa.String(length=300), nullable=False),
        sa.Column("expires_at", UTCDateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("org_id", "assertion_id", name="uq_sso_saml_assertions_org_assertion"),
    )
    op.create_index("ix_sso_saml_assertions_org_id", "sso_saml_assertions", ["org_id"])


def downgrade() -> None:
    op.drop_table("sso_saml_assertions")
    op.drop_table("sso_login_states")
    op.drop_table("sso_sessions")
    op.drop_table("sso_exemptions")
    op.drop_table("sso_configs")
