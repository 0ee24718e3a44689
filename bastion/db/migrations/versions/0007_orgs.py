"""orgs: organizations, memberships, invitations, resource groups, token approvals; org-owned repos

Revision ID: 0007_orgs
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

import bastion.db

revision = "0007_orgs"
down_revision = "0001"
branch_labels = None
depends_on = None

DT = bastion.db.UTCDateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "organizations",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(96), nullable=False),
        sa.Column("name_lower", sa.String(96), nullable=False),
        sa.Column("fullname", sa.String(200), nullable=False),
        sa.Column("description", sa.String(1000), nullable=False),
        sa.Column("created_at", DT, nullable=False),
        sa.Column("default_role", sa.String(16), nullable=False),
        sa.Column("require_2fa", sa.Boolean(), nullable=False),
        sa.Column("repo_visibility", sa.String(16), nullable=False),
        sa.Column("hide_members", sa.Boolean(), nullable=False),
        sa.Column("token_policy", sa.String(16), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_organizations")),
        sa.UniqueConstraint("name", name=op.f("uq_organizations_name")),
        sa.UniqueConstraint("name_lower", name=op.f("uq_organizations_name_lower")),
    )
    op.create_table(
        "org_members",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("org_id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("created_at", DT, nullable=False),
        sa.ForeignKeyConstraint(["org_id"], ["organizations.id"], name=op.f("fk_org_members_org_id_organizations"),
                                ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name=op.f("fk_org_members_user_id_users"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_org_members")),
        sa.UniqueConstraint("org_id", "user_id", name="uq_org_members_org_user"),
    )
    op.create_index(op.f("ix_org_members_org_id"), "org_members", ["org_id"])
    op.create_index(op.f("ix_org_members_user_id"), "org_members", ["user_id"])
    op.create_table(
        "org_invitations",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("org_id", sa.Integer(), nullable=False),
        sa.Column("email", sa.String(320), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("secret_hash", sa.String(64), nullable=False),
        sa.Column("invited_by_user_id", sa.Integer(), nullable=True),
        sa.Column("created_at", DT, nullable=False),
        sa.Column("expires_at", DT, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("answered_by_user_id", sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(["org_id"], ["organizations.id"],
                                name=op.f("fk_org_invitations_org_id_organizations"), ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["invited_by_user_id"], ["users.id"],
                                name=op.f("fk_org_invitations_invited_by_user_id_users"), ondelete="SET NULL"),
        sa.ForeignKeyConstraint(["answered_by_user_id"], ["users.id"],
                                name=op.f("fk_org_invitations_answered_by_user_id_users"), ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_org_invitations")),
        sa.UniqueConstraint("secret_hash", name=op.f("uq_org_invitations_secret_hash")),
    )
    op.create_index(op.f("ix_org_invitations_org_id"), "org_invitations", ["org_id"])
    op.create_table(
        "resource_groups",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("org_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("name_lower", sa.String(200), nullable=False),
        sa.Column("description", sa.String(500), nullable=False),
        sa.Column("created_at", DT, nullable=False),
        sa.ForeignKeyConstraint(["org_id"], ["organizations.id"],
                                name=op.f("fk_resource_groups_org_id_organizations"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_resource_groups")),
        sa.UniqueConstraint("org_id", "name_lower", name="uq_resource_groups_org_name"),
    )
    op.create_index(op.f("ix_resource_groups_org_id"), "resource_groups", ["org_id"])
    op.create_table(
        "resource_group_members",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("group_id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.ForeignKeyConstraint(["group_id"], ["resource_groups.id"],
                                name=op.f("fk_resource_group_members_group_id_resource_groups"), ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name=op.f("fk_resource_group_members_user_id_users"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_resource_group_members")),
        sa.UniqueConstraint("group_id", "user_id", name="uq_resource_group_members_group_user"),
    )
    op.create_index(op.f("ix_resource_group_members_group_id"), "resource_group_members", ["group_id"])
    op.create_index(op.f("ix_resource_group_members_user_id"), "resource_group_members", ["user_id"])
    op.create_table(
        "org_token_approvals",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("org_id", sa.Integer(), nullable=False),
        sa.Column("token_id", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("created_at", DT, nullable=False),
        sa.Column("decided_at", DT, nullable=True),
        sa.Column("decided_by_user_id", sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(["org_id"], ["organizations.id"],
                                name=op.f("fk_org_token_approvals_org_id_organizations"), ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["token_id"], ["access_tokens.id"],
                                name=op.f("fk_org_token_approvals_token_id_access_tokens"), ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["decided_by_user_id"], ["users.id"],
                                name=op.f("fk_org_token_approvals_decided_by_user_id_users"), ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_org_token_approvals")),
        sa.UniqueConstraint("org_id", "token_id", name="uq_org_token_approvals_org_token"),
    )
    op.create_index(op.f("ix_org_token_approvals_org_id"), "org_token_approvals", ["org_id"])
    op.create_index(op.f("ix_org_token_approvals_token_id"), "org_token_approvals", ["token_id"])
    with op.batch_alter_table("repos") as batch:
        batch.add_column(sa.Column("owner_org_id", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("resource_group_id", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("creator_user_id", sa.Integer(), nullable=True))
        batch.create_foreign_key(op.f("fk_repos_owner_org_id_organizations"), "organizations", ["owner_org_id"],
                                 ["id"], ondelete="RESTRICT")
        batch.create_foreign_key(op.f("fk_repos_resource_group_id_resource_groups"), "resource_groups",
                                 ["resource_group_id"], ["id"], ondelete="RESTRICT")
        batch.create_foreign_key(op.f("fk_repos_creator_user_id_users"), "users", ["creator_user_id"], ["id"],
                                 ondelete="SET NULL")
        batch.create_index(op.f("ix_repos_owner_org_id"), ["owner_org_id"])
        batch.create_index(op.f("ix_repos_resource_group_id"), ["resource_group_id"])


def downgrade() -> None:
    with op.batch_alter_table("repos") as batch:
        batch.drop_index(op.f("ix_repos_resource_group_id"))
        batch.drop_index(op.f("ix_repos_owner_org_id"))
        batch.drop_constraint(op.f("fk_repos_creator_user_id_users"), type_="foreignkey")
        batch.drop_constraint(op.f("fk_repos_resource_group_id_resource_groups"), type_="foreignkey")
        batch.drop_constraint(op.f("fk_repos_owner_org_id_organizations"), type_="foreignkey")
        batch.drop_column("creator_user_id")
        batch.drop_column("resource_group_id")
        batch.drop_column("owner_org_id")
    for table in ("org_token_approvals", "resource_group_members", "resource_groups", "org_invitations",
                  "org_members", "organizations"):
        op.drop_table(table)
