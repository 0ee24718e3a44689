"""audit: repeats of a failure counted between the events that report them (bastion.audit.aggregate)

Revision ID: 0014_audit_aggregates
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

import bastion.db

revision = "0014_audit_aggregates"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "audit_aggregates",
        sa.Column("key", sa.String(length=300), nullable=False),
        sa.Column("action", sa.String(length=64), nullable=False),
        sa.Column("recorded_at", bastion.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("pending", sa.Integer(), nullable=False),
        sa.Column("pending_since", bastion.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("target_type", sa.String(length=32), nullable=False),
        sa.Column("target_id", sa.String(length=300), nullable=False),
        sa.Column("namespace", sa.String(length=96), nullable=True),
        sa.Column("details", sa.JSON(), nullable=False),
        sa.Column("context", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_audit_aggregates")),
    )
    with op.batch_alter_table("audit_aggregates") as batch:
        batch.create_index(batch.f("ix_audit_aggregates_recorded_at"), ["recorded_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("audit_aggregates") as batch:
        batch.drop_index(batch.f("ix_audit_aggregates_recorded_at"))
    op.drop_table("audit_aggregates")
