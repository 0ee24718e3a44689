"""account lifecycle: org memberships a provisioning source manages (`org_members.managed_by`), deleted accounts
(`users.deleted_at`, the `account_deletions` table with each one's repo grace period) and audit events
pseudonymised by an account deletion (`audit_events.redacted_by`)

Revision ID: 0030_account_lifecycle
Revises: 0029_regions_followup
"""

import sqlalchemy as sa
from alembic import op

import bastion.db

revision = "0030_account_lifecycle"
down_revision = "0029_regions_followup"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("org_members") as batch:
        batch.add_column(sa.Column("managed_by", sa.String(length=16), nullable=True))
    with op.batch_alter_table("users") as batch:
        batch.add_column(sa.Column("deleted_at", bastion.db.UTCDateTime(timezone=True), nullable=True))
    with op.batch_alter_table("audit_events") as batch:
        batch.add_column(sa.Column("redacted_by", sa.BigInteger(), nullable=True))
    op.create_table(
        "account_deletions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("pseudonym", sa.String(length=96), nullable=False),
        sa.Column("deleted_at", bastion.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("purge_repos_after", bastion.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("repos_purged_at", bastion.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("redaction_event_id", sa.BigInteger(), nullable=True),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name=op.f("fk_account_deletions_user_id_users"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_account_deletions")),
        sa.UniqueConstraint("user_id", name=op.f("uq_account_deletions_user_id")),
    )


def downgrade() -> None:
    op.drop_table("account_deletions")
    with op.batch_alter_table("audit_events") as batch:
        batch.drop_column("redacted_by")
    with op.batch_alter_table("users") as batch:
        batch.drop_column("deleted_at")
    with op.batch_alter_table("org_members") as batch:
        batch.drop_column("managed_by")
