"""audit: an index for reading a namespace's log newest first (keyset pages over (namespace, id))

Revision ID: 0027_audit_read_indexes
Revises: 0026_repo_redirects_and_purges
"""

from alembic import op

revision = "0027_audit_read_indexes"
down_revision = "0026_repo_redirects_and_purges"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_audit_events_namespace_id", "audit_events", ["namespace", "id"])


def downgrade() -> None:
    op.drop_index("ix_audit_events_namespace_id", table_name="audit_events")
