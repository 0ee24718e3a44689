"""signing: the partially_verified verdict; orgs: delegating protection changes to repo managers

Revision ID: 0018_signing_protection
Revises: 0010_org_secret_push (and 0005_signing)
"""

import sqlalchemy as sa
from alembic import op

revision = "0018_signing_protection"
down_revision = "0010_org_secret_push"
branch_labels = None
depends_on = ("0005_signing",)


def upgrade() -> None:
    with op.batch_alter_table("commit_signatures") as batch:
        batch.alter_column("status", existing_type=sa.String(length=16), type_=sa.String(length=24),
                           existing_nullable=False)
    # Verdicts stored before the author counted: a commit authored by another address may be only partially
    # verified now. Stored verdicts are a cache (recomputed on the next read).
    op.execute("DELETE FROM commit_signatures WHERE status = 'verified' AND signer_user_id IS NOT NULL "
               "AND author_email <> committer_email")
    with op.batch_alter_table("organizations") as batch:
        batch.add_column(sa.Column("delegate_protection_changes", sa.Boolean(), nullable=False,
                                   server_default=sa.false()))


def downgrade() -> None:
    with op.batch_alter_table("organizations") as batch:
        batch.drop_column("delegate_protection_changes")
    op.execute("DELETE FROM commit_signatures WHERE status = 'partially_verified'")
    with op.batch_alter_table("commit_signatures") as batch:
        batch.alter_column("status", existing_type=sa.String(length=24), type_=sa.String(length=16),
                           existing_nullable=False)
