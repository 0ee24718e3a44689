"""gating: access requests of gated repositories (pending, accepted, rejected, granted)

Revision ID: 0013_gated
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

import bastion.db

revision = "0013_gated"
down_revision = "0001"
branch_labels = None
depends_on = None

DT = bastion.db.UTCDateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "repo_access_requests",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("repo_id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("email", sa.String(320), nullable=True),
        sa.Column("fields", sa.JSON(), nullable=True),
        sa.Column("created_at", DT, nullable=False),
        sa.Column("reviewed_at", DT, nullable=True),
        sa.Column("reviewed_by_user_id", sa.Integer(), nullable=True),
        sa.Column("granted", sa.Boolean(), nullable=False),
        sa.Column("rejection_reason", sa.String(200), nullable=True),
        sa.ForeignKeyConstraint(["repo_id"], ["repos.id"], name=op.f("fk_repo_access_requests_repo_id_repos"),
                                ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name=op.f("fk_repo_access_requests_user_id_users"),
                                ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["reviewed_by_user_id"], ["users.id"],
                                name=op.f("fk_repo_access_requests_reviewed_by_user_id_users"), ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_repo_access_requests")),
        sa.UniqueConstraint("repo_id", "user_id", name="uq_repo_access_requests_repo_user"),
    )
    op.create_index("ix_repo_access_requests_repo_status", "repo_access_requests", ["repo_id", "status", "created_at"])
    op.create_index(op.f("ix_repo_access_requests_user_id"), "repo_access_requests", ["user_id"])


def downgrade() -> None:
    op.drop_index(op.f("ix_repo_access_requests_user_id"), table_name="repo_access_requests")
    op.drop_index("ix_repo_access_requests_repo_status", table_name="repo_access_requests")
    op.drop_table("repo_access_requests")
