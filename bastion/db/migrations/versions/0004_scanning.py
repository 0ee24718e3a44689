"""scanning: durable scan jobs, verdict history, secret notices

Revision ID: 0004_scanning
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

import bastion.db

revision = "0004_scanning"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "scan_jobs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("blob_key", sa.String(length=64), nullable=False),
        sa.Column("scanner", sa.String(length=16), nullable=False),
        sa.Column("scanner_version", sa.String(length=200), nullable=False),
        sa.Column("source_kind", sa.String(length=8), nullable=False),
        sa.Column("storage_key", sa.String(length=64), nullable=True),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("repo_id", sa.Integer(), nullable=True),
        sa.Column("path", sa.String(length=1024), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("lease_until", bastion.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("lease_token", sa.String(length=32), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("created_at", bastion.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", bastion.db.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_scan_jobs")),
        sa.UniqueConstraint("blob_key", "scanner", "scanner_version", name="uq_scan_jobs_blob_scanner_version"),
    )
    op.create_index("ix_scan_jobs_state_lease", "scan_jobs", ["state", "lease_until"])
    op.create_table(
        "scan_results",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("blob_key", sa.String(length=64), nullable=False),
        sa.Column("scanner", sa.String(length=16), nullable=False),
        sa.Column("scanner_version", sa.String(length=200), nullable=False),
        sa.Column("verdict", sa.String(length=16), nullable=False),
        sa.Column("summary", sa.Text(), nullable=False),
        sa.Column("details", sa.JSON(), nullable=False),
        sa.Column("created_at", bastion.db.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_scan_results")),
        sa.UniqueConstraint("blob_key", "scanner", "scanner_version", name="uq_scan_results_blob_scanner_version"),
    )
    op.create_index("ix_scan_results_blob", "scan_results", ["blob_key"])
    op.create_table(
        "secret_notices",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("repo_id", sa.Integer(), nullable=False),
        sa.Column("fingerprint", sa.String(length=64), nullable=False),
        sa.Column("provider", sa.String(length=64), nullable=False),
        sa.Column("secret_type", sa.String(length=200), nullable=False),
        sa.Column("detector", sa.String(length=64), nullable=False),
        sa.Column("preview", sa.String(length=200), nullable=False),
        sa.Column("verification", sa.String(length=16), nullable=False),
        sa.Column("verified", sa.Boolean(), nullable=False),
        sa.Column("first_path", sa.String(length=1024), nullable=False),
        sa.Column("first_line", sa.Integer(), nullable=False),
        sa.Column("first_blob", sa.String(length=64), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("decided_by", sa.Integer(), nullable=True),
        sa.Column("created_at", bastion.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", bastion.db.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_secret_notices")),
        sa.UniqueConstraint("repo_id", "fingerprint", name="uq_secret_notices_repo_fingerprint"),
    )
    op.create_index("ix_secret_notices_repo_id", "secret_notices", ["repo_id"])


def downgrade() -> None:
    op.drop_index("ix_secret_notices_repo_id", table_name="secret_notices")
    op.drop_table("secret_notices")
    op.drop_index("ix_scan_results_blob", table_name="scan_results")
    op.drop_table("scan_results")
    op.drop_index("ix_scan_jobs_state_lease", table_name="scan_jobs")
    op.drop_table("scan_jobs")
