"""Xet storage: xorbs, repo links, files, file references, dedupe index

Revision ID: 0003_xet
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

import bastion.db

revision = '0003_xet'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('xet_xorbs',
    sa.Column('hash', sa.String(length=64), nullable=False),
    sa.Column('size', sa.BigInteger(), nullable=False),
    sa.Column('num_chunks', sa.Integer(), nullable=False),
    sa.Column('unpacked_size', sa.BigInteger(), nullable=False),
    sa.Column('layout', sa.LargeBinary(), nullable=False),
    sa.Column('created_at', bastion.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('last_used_at', bastion.db.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('hash', name=op.f('pk_xet_xorbs'))
    )
    op.create_table('xet_files',
    sa.Column('file_hash', sa.String(length=64), nullable=False),
    sa.Column('sha256', sa.String(length=64), nullable=False),
    sa.Column('size', sa.BigInteger(), nullable=False),
    sa.Column('segments', sa.LargeBinary(), nullable=False),
    sa.Column('created_at', bastion.db.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('file_hash', name=op.f('pk_xet_files'))
    )
    op.create_index(op.f('ix_xet_files_sha256'), 'xet_files', ['sha256'], unique=False)
    op.create_table('repo_xet_xorbs',
    sa.Column('repo_id', sa.Integer(), nullable=False),
    sa.Column('xorb_hash', sa.String(length=64), nullable=False),
    sa.Column('created_at', bastion.db.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['repo_id'], ['repos.id'], name=op.f('fk_repo_xet_xorbs_repo_id_repos'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['xorb_hash'], ['xet_xorbs.hash'], name=op.f('fk_repo_xet_xorbs_xorb_hash_xet_xorbs'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('repo_id', 'xorb_hash', name=op.f('pk_repo_xet_xorbs'))
    )
    op.create_index(op.f('ix_repo_xet_xorbs_xorb_hash'), 'repo_xet_xorbs', ['xorb_hash'], unique=False)
    op.create_table('xet_file_xorbs',
    sa.Column('file_hash', sa.String(length=64), nullable=False),
    sa.Column('xorb_hash', sa.String(length=64), nullable=False),
    sa.ForeignKeyConstraint(['file_hash'], ['xet_files.file_hash'], name=op.f('fk_xet_file_xorbs_file_hash_xet_files'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['xorb_hash'], ['xet_xorbs.hash'], name=op.f('fk_xet_file_xorbs_xorb_hash_xet_xorbs')),
    sa.PrimaryKeyConstraint('file_hash', 'xorb_hash', name=op.f('pk_xet_file_xorbs'))
    )
    op.create_index(op.f('ix_xet_file_xorbs_xorb_hash'), 'xet_file_xorbs', ['xorb_hash'], unique=False)
    op.create_table('xet_dedupe_chunks',
    sa.Column('chunk_hash', sa.String(length=64), nullable=False),
    sa.Column('xorb_hash', sa.String(length=64), nullable=False),
    sa.ForeignKeyConstraint(['xorb_hash'], ['xet_xorbs.hash'], name=op.f('fk_xet_dedupe_chunks_xorb_hash_xet_xorbs'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('chunk_hash', 'xorb_hash', name=op.f('pk_xet_dedupe_chunks'))
    )
    op.create_index(op.f('ix_xet_dedupe_chunks_xorb_hash'), 'xet_dedupe_chunks', ['xorb_hash'], unique=False)


def downgrade() -> None:
    op.drop_index(op.f('ix_xet_dedupe_chunks_xorb_hash'), table_name='xet_dedupe_chunks')
    op.drop_table('xet_dedupe_chunks')
    op.drop_index(op.f('ix_xet_file_xorbs_xorb_hash'), table_name='xet_file_xorbs')
    op.drop_table('xet_file_xorbs')
    op.drop_index(op.f('ix_repo_xet_xorbs_xorb_hash'), table_name='repo_xet_xorbs')
    op.drop_table('repo_xet_xorbs')
    op.drop_index(op.f('ix_xet_files_sha256'), table_name='xet_files')
    op.drop_table('xet_files')
    op.drop_table('xet_xorbs')
