"""community: discussions and pull requests, and their events (comments, status and title changes)

Revision ID: 0022_community
Revises: 0021_secret_push_protection_mode
"""

import sqlalchemy as sa
from alembic import op

from bastion.db import UTCDateTime

revision = "0022_community"
down_revision = "0021_secret_push_protection_mode"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "discussions",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("repo_id", sa.Integer(), sa.ForeignKey("repos.id", ondelete="CASCADE"), nullable=False),
        sa.Column("num", sa.Integer(), nullable=False),
        sa.Column("is_pull_request", sa.Boolean(), nullable=False),
        sa.Column("title", sa.String(length=200), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("author_user_id", sa.Integer(), sa.ForeignKey("users.id", ondelete="SET NULL"), nullable=True),
        sa.Column("created_at", UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", UTCDateTime(timezone=True), nullable=False),
        sa.Column("target_ref", sa.String(length=255), nullable=True),
        sa.Column("merge_commit", sa.String(length=40), nullable=True),
        sa.UniqueConstraint("repo_id", "num", name="uq_discussions_repo_num"),
    )
    op.create_index("ix_discussions_repo_status", "discussions", ["repo_id", "status", "num"])
    op.create_index("ix_discussions_author_user_id", "discussions", ["author_user_id"])
    op.create_table(
        "discussion_events",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("discussion_id", sa.Integer(), sa.ForeignKey("discussions.id", ondelete="CASCADE"),
                  nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("author_user_id", sa.Integer(), sa.ForeignKey("users.id", ondelete="SET NULL"), nullable=True),
        sa.Column("created_at", UTCDateTime(timezone=True), nullable=False),
        sa.Column("data", sa.JSON(), nullable=False),
        sa.Column("content", sa.Text(), nullable=True),
        sa.Column("history", sa.JSON(), nullable=False),
        sa.Column("edited", sa.Boolean(), nullable=False),
        sa.Column("updated_at", UTCDateTime(timezone=True), nullable=True),
        sa.Column("updated_by_user_id", sa.Integer(), sa.ForeignKey("users.id", ondelete="SET NULL"), nullable=True),
        sa.Column("hidden", sa.Boolean(), nullable=False),
        sa.Column("hidden_by_user_id", sa.Integer(), sa.ForeignKey("users.id", ondelete="SET NULL"), nullable=True),
    )
    op.create_index("ix_discussion_events_discussion", "discussion_events", ["discussion_id", "id"])


def downgrade() -> None:
    op.drop_table("discussion_events")
    op.drop_table("discussions")
