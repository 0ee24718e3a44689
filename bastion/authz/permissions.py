"""The one permission vocabulary.

Naming: dotted `resource.capability[.level]`, the Hugging Face Hub's names where it has one
(`repo.content.read`, `repo.write`). A permission names what is done, never who may do it:
who may is decided only in policy.py.
"""

from __future__ import annotations

from collections.abc import Callable
from enum import StrEnum
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable[..., Any])


class Permission(StrEnum):
    PUBLIC = "public"  # anyone, signed in or not (health, README validation)
    USER_READ = "user.read"  # the caller's own identity (whoami)
    # Add/remove the caller's own GPG and SSH signing keys, vigilant mode: browser + recent re-authentication.
    USER_KEYS_WRITE = "user.keys.write"
    REPO_LIST = "repo.list"  # listing: results are filtered by readable_repos_clause()
    # Reading a repo is two permissions: its metadata (info, file listing, refs, history) and its file
    # contents (resolve, git fetch, LFS and Xet downloads). They differ only for a gated repo, whose
    # contents need an accepted access request. REPO_READ is the stricter one: a route not sorted into
    # metadata reads is gated (fail closed).
    REPO_METADATA_READ = "repo.metadata.read"  # info, tree, paths-info, refs, commits, scan status
    REPO_READ = "repo.content.read"  # file contents: the gate of a gated repo applies
    REPO_ACCESS_REQUEST = "repo.access.request"  # ask for (or withdraw) access to a gated repo, as oneself
    REPO_ACCESS_READ = "repo.access.read"  # list a gated repo's access requests (requesters' names, e-mails)
    REPO_ACCESS_WRITE = "repo.access.write"  # accept, reject, reset or grant access to a gated repo
    REPO_WRITE = "repo.write"  # commits, branches, tags, LFS uploads
    REPO_CREATE = "repo.create"  # a new repo in a namespace
    REPO_MANAGE = "repo.settings.write"  # visibility, settings, rename/move
    # Lower a repo's protections: switch off secret push protection, block-unsafe, signed commits, protected refs
    # (or narrow them), bypass secret push protection, super-squash a branch the signed-commit rule covers
    REPO_PROTECTION_LOWER = "repo.protection.lower"
    REPO_DELETE = "repo.delete"
    # Uploading file contents (LFS objects, Xet xorbs and shards, preupload) linked to a repo for a commit: every
    # commit right needs it, opening a pull request included, so anyone who may open one may upload for it.
    REPO_CONTENT_UPLOAD = "repo.content.upload"
    # The Community tab (discussions and pull requests). Opening one and commenting: anyone who reads the repo.
    REPO_DISCUSSION_CREATE = "repo.discussion.create"  # a discussion, or a pull request (create_pr commits too)
    REPO_DISCUSSION_COMMENT = "repo.discussion.comment"  # a comment on a discussion or pull request
    REPO_DISCUSSION_COMMENT_EDIT = "repo.discussion.comment.edit"  # change one's own comment's text
    # Close, reopen, rename a discussion, hide a comment: the author of what is acted on, or the repo's writers.
    REPO_DISCUSSION_MODERATE = "repo.discussion.moderate"
    REPO_PR_WRITE = "repo.pr.write"  # commit to refs/pr/N: its author while it is open, or the repo's writers
    REPO_PR_MERGE = "repo.pr.merge"  # merge a pull request into its target branch (write access)
    LFS_OBJECT_UPLOAD = "lfs.object.upload"  # a pre-signed upload URL (capability principal)
    XET_CAS_READ = "xet.cas.read"  # a Xet CAS token of one repo: reconstructions, dedupe (capability)
    XET_CAS_WRITE = "xet.cas.write"  # a Xet CAS write token of one repo: xorb and shard uploads (capability)
    XET_XORB_FETCH = "xet.xorb.fetch"  # a signed fetch URL: exactly one byte range of one xorb (capability)
    ADMIN = "admin"  # instance administration
    INSTANCE_STATUS_READ = "instance.status.read"  # the instance's health (clamd, signatures): admins, read only
    INSTANCE_SSO_WRITE = "instance.sso.write"  # the instance's SSO page (CSRF-checked forms): admins
    ACCOUNT_MANAGE = "account.write"  # the caller's own profile, password, sessions (browser only)
    # The caller's e-mail addresses: add, remove, resend verification, make primary. Browser + recent re-authentication.
    ACCOUNT_EMAILS_WRITE = "account.emails.write"
    ACCOUNT_SECURITY = "account.security.write"  # add/remove second factors: browser + recent re-authentication
    TOKEN_READ = "user.tokens.read"  # list the caller's own access tokens (browser only)
    TOKEN_MANAGE = "user.tokens.write"  # create, rename, rotate, revoke them: browser + recent re-authentication
    ORG_CREATE = "org.create"  # a new organization (any signed-in user, as on the Hub)
    ORG_READ = "org.read"  # an organization's settings and metadata (members with a role)
    ORG_WRITE = "org.write"  # profile, security settings, token policy and token approvals (org admins)
    ORG_DELETE = "org.delete"  # delete the organization (org admins, browser only)
    ORG_MEMBERS_READ = "org.members.read"  # the members list (public unless the org hides it)
    ORG_MEMBERS_WRITE = "org.members.write"  # invite, add, remove members and change roles (org admins)
    ORG_MEMBERSHIP_SELF = "org.membership.self"  # the caller's own membership: accept/decline invitation, leave
    RESOURCE_GROUP_WRITE = "resourceGroup.write"  # create (org admins), rename, delete, group members (group admins)
    REPO_RESOURCE_GROUP = "repo.resource_group.write"  # move a repo into, out of or between resource groups
    # Audit logs: an org's (its admins; instance admins), the instance's (instance admins), one's own security log.
    ORG_AUDIT_LOG_READ = "org.audit_log.read"
    # SCIM (bastion.scim): the IdP's provisioning API, granted only by a SCIM token of the same scope (the
    # instance or one org); the SCIM tokens and settings pages of an org (its admins) and of the instance
    # (instance admins), browser + recent re-authentication. Linking SCIM groups to roles is ORG_WRITE.
    SCIM_PROVISION = "scim.provision"
    ORG_SCIM_WRITE = "org.scim.write"
    INSTANCE_SCIM_WRITE = "instance.scim.write"
    INSTANCE_AUDIT_LOG_READ = "instance.audit_log.read"
    USER_SECURITY_LOG_READ = "user.security_log.read"
    # Identity lifecycle (bastion.lifecycle): one's own personal data as JSON (tokens that read, or the browser);
    # deleting one's own account (browser + recent re-authentication); the instance admin pages that deactivate,
    # reactivate and delete accounts (admins, browser + recent re-authentication; the API's are Permission.ADMIN).
    USER_DATA_EXPORT = "user.data_export"
    ACCOUNT_DELETE = "account.delete"
    INSTANCE_USERS_WRITE = "instance.users.write"


def permission(perm: Permission, *alternatives: Permission) -> Callable[[F], F]:
    """Declare the permission a route checks, and any it checks instead depending on the request (a git
    fetch or push, an LFS download or upload). The router walk test requires a declaration on every
    route; in strict mode the middleware refuses a response whose one check is not a declared one."""

    def mark(fn: F) -> F:
        fn.__bastion_permission__ = perm  # type: ignore[attr-defined]
        fn.__bastion_permissions__ = frozenset((perm, *alternatives))  # type: ignore[attr-defined]
        return fn

    return mark
