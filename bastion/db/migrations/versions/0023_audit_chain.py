"""audit: keyed chain (version, key id, MAC), anchor after retention, signed checkpoints, sinks and their outbox,
per-organization retention

Revision ID: 0023_audit_chain
Revises: 0022_community
"""

import sqlalchemy as sa
from alembic import op

import bastion.db

revision = "0023_audit_chain"
down_revision = "0022_community"
branch_labels = None
depends_on = None

BIGINT = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    with op.batch_alter_table("audit_events") as batch:
        # Existing events stay version 1 (unkeyed); new ones are written as version 2.
        batch.add_column(sa.Column("chain_version", sa.Integer(), nullable=False, server_default="1"))
        batch.add_column(sa.Column("key_id", sa.String(length=16), nullable=True))
        batch.add_column(sa.Column("mac", sa.String(length=64), nullable=True))
        batch.add_column(sa.Column("purged_by", sa.BigInteger(), nullable=True))
    with op.batch_alter_table("organizations") as batch:
        batch.add_column(sa.Column("audit_retention_days", sa.Integer(), nullable=True))
    op.create_table(
        "audit_anchor",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("last_event_id", sa.BigInteger(), nullable=False),
        sa.Column("last_hash", sa.String(length=64), nullable=False),
        sa.Column("count", sa.BigInteger(), nullable=False),
        sa.Column("key_id", sa.String(length=16), nullable=False),
        sa.Column("mac", sa.String(length=64), nullable=False),
        sa.Column("created_at", bastion.db.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_table(
        "audit_checkpoints",
        sa.Column("id", BIGINT, nullable=False),
        sa.Column("last_event_id", sa.BigInteger(), nullable=False),
        sa.Column("last_hash", sa.String(length=64), nullable=False),
        sa.Column("count", sa.BigInteger(), nullable=False),
        sa.Column("created_at", bastion.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("public_key", sa.String(length=200), nullable=False),
        sa.Column("signature", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_audit_checkpoints_last_event_id", "audit_checkpoints", ["last_event_id"])
    op.create_table(
        "audit_sinks",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("url", sa.String(length=500), nullable=False),
        sa.Column("secret", sa.String(length=300), nullable=True),
        sa.Column("namespace", sa.String(length=96), nullable=True),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("created_at", bastion.db.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_table(
        "audit_outbox",
        sa.Column("id", BIGINT, nullable=False),
        sa.Column("sink_id", sa.Integer(), sa.ForeignKey("audit_sinks.id", ondelete="CASCADE"), nullable=False),
        sa.Column("event_id", sa.BigInteger(), nullable=False),
        sa.Column("state", sa.String(length=8), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", bastion.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("last_error", sa.String(length=500), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_audit_outbox_due", "audit_outbox", ["sink_id", "state", "next_attempt_at"])
    op.create_index("ix_audit_outbox_event_id", "audit_outbox", ["event_id"])


def downgrade() -> None:
    op.drop_table("audit_outbox")
    op.drop_table("audit_sinks")
    op.drop_index("ix_audit_checkpoints_last_event_id", "audit_checkpoints")
    op.drop_table("audit_checkpoints")
    op.drop_table("audit_anchor")
    with op.batch_alter_table("organizations") as batch:
        batch.drop_column("audit_retention_days")
    with op.batch_alter_table("audit_events") as batch:
        for name in ("purged_by", "mac", "key_id", "chain_version"):
            batch.drop_column(name)
