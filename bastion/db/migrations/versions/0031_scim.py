"""SCIM 2.0: the IdP's bearer tokens, the accounts and groups each SCIM scope (the instance, an
organization) provisioned, and SCIM groups linked to resource groups (org_members.managed_by: 0030_account_lifecycle).

Revision ID: 0031_scim
Revises: 0030_account_lifecycle
"""

import sqlalchemy as sa
from alembic import op

import bastion.db

revision = "0031_scim"
down_revision = "0030_account_lifecycle"
branch_labels = None
depends_on = None


def _org_fk(table: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(["org_id"], ["organizations.id"], name=op.f(f"fk_{table}_org_id_organizations"),
                                   ondelete="CASCADE")


def upgrade() -> None:
    op.create_table(
        "scim_tokens",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("scope", sa.String(length=32), nullable=False),
        sa.Column("org_id", sa.Integer(), nullable=True),
        sa.Column("label", sa.String(length=100), nullable=False),
        sa.Column("secret_hash", sa.String(length=64), nullable=False),
        sa.Column("last4", sa.String(length=4), nullable=False),
        sa.Column("created_by_user_id", sa.Integer(), nullable=True),
        sa.Column("created_at", bastion.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", bastion.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("last_used_at", bastion.db.UTCDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["created_by_user_id"], ["users.id"],
                                name=op.f("fk_scim_tokens_created_by_user_id_users"), ondelete="SET NULL"),
        _org_fk("scim_tokens"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_scim_tokens")),
        sa.UniqueConstraint("secret_hash", name=op.f("uq_scim_tokens_secret_hash")),
    )
    op.create_index(op.f("ix_scim_tokens_scope"), "scim_tokens", ["scope"], unique=False)
    op.create_table(
        "scim_identities",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("scope", sa.String(length=32), nullable=False),
        sa.Column("org_id", sa.Integer(), nullable=True),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("external_id", sa.String(length=500), nullable=True),
        sa.Column("profile", sa.JSON(), nullable=False),
        sa.Column("created_account", sa.Boolean(), nullable=False),
        sa.Column("deleted_at", bastion.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("created_at", bastion.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", bastion.db.UTCDateTime(timezone=True), nullable=False),
        _org_fk("scim_identities"),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name=op.f("fk_scim_identities_user_id_users"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_scim_identities")),
        sa.UniqueConstraint("scope", "user_id", name="uq_scim_identities_scope_user"),
    )
    op.create_index(op.f("ix_scim_identities_scope"), "scim_identities", ["scope"], unique=False)
    op.create_index(op.f("ix_scim_identities_user_id"), "scim_identities", ["user_id"], unique=False)
    op.create_table(
        "scim_groups",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("scope", sa.String(length=32), nullable=False),
        sa.Column("org_id", sa.Integer(), nullable=True),
        sa.Column("display_name", sa.String(length=200), nullable=False),
        sa.Column("external_id", sa.String(length=500), nullable=True),
        sa.Column("org_role", sa.String(length=16), nullable=True),
        sa.Column("created_at", bastion.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", bastion.db.UTCDateTime(timezone=True), nullable=False),
        _org_fk("scim_groups"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_scim_groups")),
    )
    op.create_index(op.f("ix_scim_groups_scope"), "scim_groups", ["scope"], unique=False)
    op.create_table(
        "scim_group_members",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("group_id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["group_id"], ["scim_groups.id"], name=op.f("fk_scim_group_members_group_id_scim_groups"),
                                ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name=op.f("fk_scim_group_members_user_id_users"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_scim_group_members")),
        sa.UniqueConstraint("group_id", "user_id", name="uq_scim_group_members_group_user"),
    )
    op.create_index(op.f("ix_scim_group_members_group_id"), "scim_group_members", ["group_id"], unique=False)
    op.create_index(op.f("ix_scim_group_members_user_id"), "scim_group_members", ["user_id"], unique=False)
    op.create_table(
        "scim_group_links",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("scim_group_id", sa.Integer(), nullable=False),
        sa.Column("resource_group_id", sa.Integer(), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.ForeignKeyConstraint(["scim_group_id"], ["scim_groups.id"],
                                name=op.f("fk_scim_group_links_scim_group_id_scim_groups"), ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["resource_group_id"], ["resource_groups.id"],
                                name=op.f("fk_scim_group_links_resource_group_id_resource_groups"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_scim_group_links")),
        sa.UniqueConstraint("scim_group_id", "resource_group_id", name="uq_scim_group_links_pair"),
    )
    op.create_index(op.f("ix_scim_group_links_scim_group_id"), "scim_group_links", ["scim_group_id"], unique=False)
    op.create_index(op.f("ix_scim_group_links_resource_group_id"), "scim_group_links", ["resource_group_id"],
                    unique=False)


def downgrade() -> None:
    for table in ("scim_group_links", "scim_group_members", "scim_groups", "scim_identities", "scim_tokens"):
        op.drop_table(table)
