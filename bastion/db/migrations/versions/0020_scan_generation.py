"""scanning: the verdict generation, a counter every change to verdicts, jobs or secret notices bumps

Revision ID: 0020_scan_generation
Revises: 0004_scanning
"""

import sqlalchemy as sa
from alembic import op

revision = "0020_scan_generation"
down_revision = "0004_scanning"
branch_labels = None
depends_on = None


def upgrade() -> None:
    table = op.create_table(
        "scan_generation",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("generation", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_scan_generation")),
    )
    op.bulk_insert(table, [{"id": 1, "generation": 0}])


def downgrade() -> None:
    op.drop_table("scan_generation")
