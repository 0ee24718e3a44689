"""the daily allowance of pull-request content uploaded by users who cannot write to the repo

Revision ID: 0032_contribution_uploads
Revises: 0031_scim
"""

import sqlalchemy as sa
from alembic import op

import bastion.db

revision = "0032_contribution_uploads"
down_revision = "0031_scim"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "contribution_uploads",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("repo_id", sa.Integer(), nullable=True),
        sa.Column("key", sa.String(length=80), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("at", bastion.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name=op.f("fk_contribution_uploads_user_id_users"),
                                ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["repo_id"], ["repos.id"], name=op.f("fk_contribution_uploads_repo_id_repos"),
                                ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_contribution_uploads")),
    )
    op.create_index(op.f("ix_contribution_uploads_user_id"), "contribution_uploads", ["user_id"], unique=False)
    op.create_index(op.f("ix_contribution_uploads_at"), "contribution_uploads", ["at"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_contribution_uploads_at"), table_name="contribution_uploads")
    op.drop_index(op.f("ix_contribution_uploads_user_id"), table_name="contribution_uploads")
    op.drop_table("contribution_uploads")
