"""signing: GPG and SSH signing keys, vigilant mode, stored commit-signature verdicts

Revision ID: 0005_signing
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

import bastion.db

revision = "0005_signing"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "gpg_keys",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("fingerprint", sa.String(length=64), nullable=False),
        sa.Column("key_id", sa.String(length=16), nullable=False),
        sa.Column("armored", sa.Text(), nullable=False),
        sa.Column("emails", sa.JSON(), nullable=False),
        sa.Column("expires_at", bastion.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("created_at", bastion.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name=op.f("fk_gpg_keys_user_id_users"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_gpg_keys")),
        sa.UniqueConstraint("fingerprint", name=op.f("uq_gpg_keys_fingerprint")),
    )
    op.create_index(op.f("ix_gpg_keys_user_id"), "gpg_keys", ["user_id"])
    op.create_table(
        "gpg_subkeys",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("gpg_key_id", sa.Integer(), nullable=False),
        sa.Column("key_id", sa.String(length=16), nullable=False),
        sa.Column("fingerprint", sa.String(length=64), nullable=False),
        sa.Column("primary", sa.Boolean(), nullable=False),
        sa.Column("can_sign", sa.Boolean(), nullable=False),
        sa.Column("revoked", sa.Boolean(), nullable=False),
        sa.Column("expires_at", bastion.db.UTCDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["gpg_key_id"], ["gpg_keys.id"], name=op.f("fk_gpg_subkeys_gpg_key_id_gpg_keys"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_gpg_subkeys")),
    )
    op.create_index(op.f("ix_gpg_subkeys_gpg_key_id"), "gpg_subkeys", ["gpg_key_id"])
    op.create_index(op.f("ix_gpg_subkeys_key_id"), "gpg_subkeys", ["key_id"])
    op.create_table(
        "ssh_signing_keys",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("title", sa.String(length=100), nullable=False),
        sa.Column("key_type", sa.String(length=64), nullable=False),
        sa.Column("public_key", sa.Text(), nullable=False),
        sa.Column("fingerprint", sa.String(length=100), nullable=False),
        sa.Column("created_at", bastion.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name=op.f("fk_ssh_signing_keys_user_id_users"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ssh_signing_keys")),
        sa.UniqueConstraint("fingerprint", name=op.f("uq_ssh_signing_keys_fingerprint")),
    )
    op.create_index(op.f("ix_ssh_signing_keys_user_id"), "ssh_signing_keys", ["user_id"])
    op.create_table(
        "signing_preferences",
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("vigilant", sa.Boolean(), nullable=False),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name=op.f("fk_signing_preferences_user_id_users"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("user_id", name=op.f("pk_signing_preferences")),
    )
    op.create_table(
        "commit_signatures",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("repo_id", sa.Integer(), nullable=False),
        sa.Column("commit_sha", sa.String(length=40), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("sig_type", sa.String(length=8), nullable=True),
        sa.Column("key_id", sa.String(length=100), nullable=True),
        sa.Column("signer", sa.String(length=200), nullable=True),
        sa.Column("signer_user_id", sa.Integer(), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("committer_email", sa.String(length=320), nullable=False),
        sa.Column("author_email", sa.String(length=320), nullable=False),
        sa.Column("verified_at", bastion.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["repo_id"], ["repos.id"], name=op.f("fk_commit_signatures_repo_id_repos"),
                                ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["signer_user_id"], ["users.id"],
                                name=op.f("fk_commit_signatures_signer_user_id_users"), ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_commit_signatures")),
        sa.UniqueConstraint("repo_id", "commit_sha", name="uq_commit_signatures_repo_commit"),
    )
    op.create_index("ix_commit_signatures_key_id", "commit_signatures", ["key_id"])
    op.create_index("ix_commit_signatures_committer_email", "commit_signatures", ["committer_email"])
    op.create_index("ix_commit_signatures_author_email", "commit_signatures", ["author_email"])
    op.create_index("ix_commit_signatures_signer_user_id", "commit_signatures", ["signer_user_id"])


def downgrade() -> None:
    op.drop_table("commit_signatures")
    op.drop_table("signing_preferences")
    op.drop_index(op.f("ix_ssh_signing_keys_user_id"), table_name="ssh_signing_keys")
    op.drop_table("ssh_signing_keys")
    op.drop_index(op.f("ix_gpg_subkeys_key_id"), table_name="gpg_subkeys")
    op.drop_index(op.f("ix_gpg_subkeys_gpg_key_id"), table_name="gpg_subkeys")
    op.drop_table("gpg_subkeys")
    op.drop_index(op.f("ix_gpg_keys_user_id"), table_name="gpg_keys")
    op.drop_table("gpg_keys")
