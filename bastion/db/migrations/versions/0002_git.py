"""git over HTTP: Git LFS file locks

Revision ID: 0002_git
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

import bastion.db

revision = '0002_git'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('lfs_locks',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('repo_id', sa.Integer(), nullable=False),
    sa.Column('path', sa.String(length=1024), nullable=False),
    sa.Column('owner_user_id', sa.Integer(), nullable=False),
    sa.Column('ref_name', sa.String(length=255), nullable=True),
    sa.Column('created_at', bastion.db.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['owner_user_id'], ['users.id'], name=op.f('fk_lfs_locks_owner_user_id_users'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['repo_id'], ['repos.id'], name=op.f('fk_lfs_locks_repo_id_repos'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_lfs_locks')),
    sa.UniqueConstraint('repo_id', 'path', name='uq_lfs_locks_repo_path')
    )
    with op.batch_alter_table('lfs_locks', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_lfs_locks_repo_id'), ['repo_id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('lfs_locks', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_lfs_locks_repo_id'))
    op.drop_table('lfs_locks')
