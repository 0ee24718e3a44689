"""lfs: multipart parts are claimed before they are written and immutable once received; a completion
takes its upload (completing_at) before verifying it outside any transaction

Revision ID: 0012_lfs_multipart_parts
Revises: 0011_lfs_last_used
"""

import sqlalchemy as sa
from alembic import op

import bastion.db

revision = "0012_lfs_multipart_parts"
down_revision = "0011_lfs_last_used"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("lfs_multipart_uploads") as batch:
        batch.add_column(sa.Column("completing_at", bastion.db.UTCDateTime(timezone=True), nullable=True))
    op.create_table(
        "lfs_multipart_parts",
        sa.Column("upload_id", sa.String(length=32), nullable=False),
        sa.Column("part", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(length=8), nullable=False),
        sa.Column("created_at", bastion.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["upload_id"], ["lfs_multipart_uploads.id"], ondelete="CASCADE",
                                name=op.f("fk_lfs_multipart_parts_upload_id_lfs_multipart_uploads")),
        sa.PrimaryKeyConstraint("upload_id", "part", name=op.f("pk_lfs_multipart_parts")),
    )


def downgrade() -> None:
    op.drop_table("lfs_multipart_parts")
    with op.batch_alter_table("lfs_multipart_uploads") as batch:
        batch.drop_column("completing_at")
