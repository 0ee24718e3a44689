"""accounts: passwords, e-mails, web sessions, second factors, known devices, rate limits

Revision ID: 0002_accounts
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

import bastion.db

revision = '0002_accounts'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('users', schema=None) as batch_op:
        batch_op.add_column(sa.Column('password_hash', sa.String(length=256), nullable=True))
        batch_op.add_column(sa.Column('password_changed_at', bastion.db.UTCDateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('totp_secret', sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column('totp_last_step', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('webauthn_handle', sa.String(length=64), nullable=True))

    op.create_table('user_emails',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('email', sa.String(length=320), nullable=False),
    sa.Column('email_lower', sa.String(length=320), nullable=False),
    sa.Column('primary', sa.Boolean(), nullable=False),
    sa.Column('verified_at', bastion.db.UTCDateTime(timezone=True), nullable=True),
    sa.Column('created_at', bastion.db.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_user_emails_user_id_users'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_user_emails'))
    )
    op.create_index(op.f('ix_user_emails_user_id'), 'user_emails', ['user_id'], unique=False)
    op.create_index(op.f('ix_user_emails_email_lower'), 'user_emails', ['email_lower'], unique=False)
    op.create_index('uq_user_emails_verified', 'user_emails', ['email_lower'], unique=True,
                    sqlite_where=sa.text('verified_at IS NOT NULL'), postgresql_where=sa.text('verified_at IS NOT NULL'))
    # Accounts created before this migration were created by an administrator: their address counts as verified.
    op.execute("INSERT INTO user_emails (user_id, email, email_lower, \"primary\", verified_at, created_at) "
               "SELECT id, email, lower(email), true, created_at, created_at FROM users")

    op.create_table('web_sessions',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('secret_hash', sa.String(length=64), nullable=False),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('created_at', bastion.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('last_seen_at', bastion.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('authenticated_at', bastion.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('revoked_at', bastion.db.UTCDateTime(timezone=True), nullable=True),
    sa.Column('ip', sa.String(length=64), nullable=True),
    sa.Column('user_agent', sa.String(length=512), nullable=True),
    sa.Column('pending', sa.JSON(), nullable=False),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_web_sessions_user_id_users'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_web_sessions')),
    sa.UniqueConstraint('secret_hash', name=op.f('uq_web_sessions_secret_hash'))
    )
    op.create_index(op.f('ix_web_sessions_user_id'), 'web_sessions', ['user_id'], unique=False)

    op.create_table('recovery_codes',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('code_hash', sa.String(length=64), nullable=False),
    sa.Column('created_at', bastion.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('used_at', bastion.db.UTCDateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_recovery_codes_user_id_users'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_recovery_codes'))
    )
    op.create_index(op.f('ix_recovery_codes_user_id'), 'recovery_codes', ['user_id'], unique=False)

    op.create_table('webauthn_credentials',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('label', sa.String(length=64), nullable=False),
    sa.Column('credential_id', sa.String(length=512), nullable=False),
    sa.Column('public_key', sa.LargeBinary(), nullable=False),
    sa.Column('sign_count', sa.Integer(), nullable=False),
    sa.Column('transports', sa.JSON(), nullable=False),
    sa.Column('created_at', bastion.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('last_used_at', bastion.db.UTCDateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_webauthn_credentials_user_id_users'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_webauthn_credentials')),
    sa.UniqueConstraint('credential_id', name=op.f('uq_webauthn_credentials_credential_id'))
    )
    op.create_index(op.f('ix_webauthn_credentials_user_id'), 'webauthn_credentials', ['user_id'], unique=False)

    op.create_table('known_devices',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('device_hash', sa.String(length=64), nullable=False),
    sa.Column('first_seen_at', bastion.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('last_seen_at', bastion.db.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_known_devices_user_id_users'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_known_devices'))
    )
    op.create_index('uq_known_devices_user_device', 'known_devices', ['user_id', 'device_hash'], unique=True)

    op.create_table('rate_limit_hits',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('key', sa.String(length=400), nullable=False),
    sa.Column('at', bastion.db.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_rate_limit_hits'))
    )
    op.create_index('ix_rate_limit_hits_key_at', 'rate_limit_hits', ['key', 'at'], unique=False)


def downgrade() -> None:
    op.drop_table('rate_limit_hits')
    op.drop_table('known_devices')
    op.drop_table('webauthn_credentials')
    op.drop_table('recovery_codes')
    op.drop_table('web_sessions')
    op.drop_table('user_emails')
    with op.batch_alter_table('users', schema=None) as batch_op:
        batch_op.drop_column('webauthn_handle')
        batch_op.drop_column('totp_last_step')
        batch_op.drop_column('totp_secret')
        batch_op.drop_column('password_changed_at')
        batch_op.drop_column('password_hash')
