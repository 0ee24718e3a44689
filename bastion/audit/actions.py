"""Every audit event name, in one enum (the Hub's `scope.action` names where it has one)."""

from enum import StrEnum


class AuditAction(StrEnum):
    USER_CREATE = "user.create"
    USER_LOGIN = "user.login"
    USER_LOGIN_FAILED = "user.login_failed"
    USER_LOGOUT = "user.logout"
    USER_SUDO = "user.sudo"
    USER_SESSION_REVOKE = "user.session_revoke"
    USER_PROFILE_UPDATE = "user.profile_update"
    USER_EMAIL_ADD = "user.email_add"
    USER_EMAIL_VERIFY = "user.email_verify"
    USER_EMAIL_REMOVE = "user.email_remove"
    USER_EMAIL_PRIMARY = "user.email_primary"
    USER_PASSWORD_CHANGE = "user.password_change"
    USER_PASSWORD_RESET_REQUEST = "user.password_reset_request"
    USER_PASSWORD_RESET = "user.password_reset"
    USER_2FA_TOTP_ADD = "user.2fa.totp_add"
    USER_2FA_TOTP_REMOVE = "user.2fa.totp_remove"
    USER_2FA_WEBAUTHN_ADD = "user.2fa.webauthn_add"
    USER_2FA_WEBAUTHN_REMOVE = "user.2fa.webauthn_remove"
    USER_2FA_RECOVERY_GENERATE = "user.2fa.recovery_codes_generate"
    USER_2FA_RECOVERY_USE = "user.2fa.recovery_code_use"
    USER_2FA_FAILED = "user.2fa.failed"
    # Identity lifecycle (bastion.lifecycle): deprovisioned (every credential revoked), allowed back in,
    # deleted (personal data removed, audit events pseudonymised), repos of a deleted account purged after
    # the grace period, and a user's export of their own data.
    USER_DEACTIVATE = "user.deactivate"
    USER_REACTIVATE = "user.reactivate"
    USER_DELETE = "user.delete"
    USER_AUDIT_REDACT = "user.audit_redact"
    USER_REPOS_PURGE = "user.repos_purge"
    USER_DATA_EXPORT = "user.data_export"
    TOKEN_CREATE = "token.create"
    TOKEN_REVOKE = "token.revoke"
    TOKEN_ROTATE = "token.rotate"
    TOKEN_RENAME = "token.rename"
    TOKEN_USE_DENIED = "token.use_denied"
    TOKEN_AUTH_FAILED = "token.auth_failed"  # a presented credential matched no token (per source IP and reason)
    REPO_CREATE = "repo.create"
    REPO_DELETE = "repo.delete"
    REPO_MOVE = "repo.move"
    # LFS files permanently deleted (permanently_delete_lfs_files): the oids, refs rewritten, bytes removed.
    REPO_DELETE_LFS_FILE = "repo.delete_lfs_file"
    REPO_UPDATE_SETTINGS = "repo.update_settings"
    # A protection lowered (switched off or narrowed, instance commits accepted) or set aside (super-squash of
    # a branch the signed-commit rule covers): who, and before/after (authz REPO_PROTECTION_LOWER).
    REPO_PROTECTION_LOWER = "repo.protection.lower"
    REPO_UPDATE_VISIBILITY = "repo.update_visibility"
    REPO_UPDATE_GATED = "repo.update_gated"  # gating turned on/off, auto/manual, org members gated or not
    REPO_ACCESS_REQUEST_CREATE = "repo.access_request.create"  # a user asked (accepted at once in auto mode)
    REPO_ACCESS_REQUEST_ACCEPT = "repo.access_request.accept"
    REPO_ACCESS_REQUEST_REJECT = "repo.access_request.reject"
    REPO_ACCESS_REQUEST_RESET = "repo.access_request.reset"  # a manager moved it back to pending
    REPO_ACCESS_REQUEST_GRANT = "repo.access_request.grant"  # a manager gave access without a request
    REPO_ACCESS_REQUEST_WITHDRAW = "repo.access_request.withdraw"  # the requester cancelled a pending request
    REPO_COMMIT = "repo.commit"
    REPO_SQUASH = "repo.super_squash"
    REPO_BRANCH_CREATE = "repo.branch_create"
    REPO_BRANCH_DELETE = "repo.branch_delete"
    REPO_TAG_CREATE = "repo.tag_create"
    REPO_TAG_DELETE = "repo.tag_delete"
    REPO_PR_CREATE = "repo.pr_create"
    REPO_PR_MERGE = "repo.pr_merge"
    # The Community tab (bastion.community): discussions and pull requests, their comments and moderation.
    REPO_DISCUSSION_CREATE = "repo.discussion.create"
    REPO_DISCUSSION_COMMENT = "repo.discussion.comment"
    REPO_DISCUSSION_COMMENT_EDIT = "repo.discussion.comment_edit"
    REPO_DISCUSSION_COMMENT_HIDE = "repo.discussion.comment_hide"
    REPO_DISCUSSION_STATUS = "repo.discussion.status_change"
    REPO_DISCUSSION_TITLE = "repo.discussion.title_change"
    LFS_OBJECT_STORE = "repo.lfs_object_store"  # an object's bytes stored for a repo: LFS basic, multipart, Xet file
    XET_UPLOAD = "repo.xet_upload"  # a xorb stored for a repo
    LFS_LOCK_CREATE = "repo.lfs_lock_create"  # git lfs lock
    LFS_LOCK_DELETE = "repo.lfs_lock_delete"  # git lfs unlock (`forced`: someone else's lock broken)
    REPO_PUSH_REJECTED = "repo.push_rejected"  # a git push refused by the receive checks
    SCAN_FINDING = "repo.scan_finding"
    SCAN_POLICY_REJECT = "repo.scan_policy_reject"
    SCAN_RESCAN = "repo.rescan"
    STORAGE_GC = "instance.storage_gc"  # an administrator freed unreachable LFS objects and xorbs
    STORAGE_FSCK = "instance.storage_fsck"  # an administrator re-verified every stored object
    # The embedded clamd (bastion.scanning.clamd): started, restarted after it died, signatures updated by
    # freshclam, and an update failing (once per run of failures, not per retry).
    CLAMD_START = "instance.clamd_start"
    CLAMD_RESTART = "instance.clamd_restart"
    SIGNATURES_UPDATE = "instance.signatures_update"
    SIGNATURES_UPDATE_FAILED = "instance.signatures_update_failed"
    SECRET_PUSH_BLOCKED = "repo.secret_push_blocked"
    SECRET_PUSH_BYPASS = "repo.secret_push_bypass"
    SECRET_NOTICE_DISMISS = "repo.secret_notice_dismiss"
    SECRET_NOTICE_RESOLVE = "repo.secret_notice_resolve"
    SCAN_RELEASE = "repo.scan_release"  # a manager released a file the scanners could not prove safe
    SCAN_RELEASE_REVOKE = "repo.scan_release_revoke"
    USER_GPG_KEY_ADD = "user.gpg_key_add"
    USER_GPG_KEY_REMOVE = "user.gpg_key_remove"
    USER_SSH_SIGNING_KEY_ADD = "user.ssh_signing_key_add"
    USER_SSH_SIGNING_KEY_REMOVE = "user.ssh_signing_key_remove"
    USER_VIGILANT_MODE = "user.vigilant_mode"
    ORG_CREATE = "org.create"
    ORG_DELETE = "org.delete"
    ORG_PROFILE = "org.settings.profile"
    ORG_UPDATE_SETTINGS = "org.update_settings"  # default role, token policy "fine-grained only"
    ORG_ADD_USER = "org.add_user"
    ORG_REMOVE_USER = "org.remove_user"
    ORG_CHANGE_ROLE = "org.change_role"
    ORG_LEAVE = "org.leave"
    ORG_INVITE_USER = "org.invite_user"
    ORG_INVITE_EMAIL = "org.invite.email"
    ORG_INVITE_ACCEPT = "org.invite.accept"
    ORG_INVITE_DECLINE = "org.invite.decline"
    ORG_SETTINGS_SSO = "org.settings.sso"  # SSO settings saved, or a test sign-in passed
    ORG_SETTINGS_SSO_ENABLE = "org.settings.sso.enable"
    ORG_SETTINGS_SSO_DISABLE = "org.settings.sso.disable"
    ORG_SSO_LOGIN = "org.sso_login"
    ORG_SSO_JOIN = "org.sso_join"
    INSTANCE_SSO_SETTINGS = "instance.sso.settings"
    INSTANCE_SSO_ENABLE = "instance.sso.enable"
    INSTANCE_SSO_DISABLE = "instance.sso.disable"
    USER_SSO_LOGIN = "user.sso_login"
    USER_SSO_LINK = "user.sso_link"
    USER_SSO_LOGIN_FAILED = "user.sso_login_failed"  # an instance SSO sign-in refused
    # SCIM (bastion.scim): the IdP's tokens (rotation: a create and a revoke), and what its client provisioned.
    SCIM_TOKEN_CREATE = "scim.token.create"
    SCIM_TOKEN_REVOKE = "scim.token.revoke"
    SCIM_USER_CREATE = "scim.user.create"  # an account created, or an existing one linked
    SCIM_USER_UPDATE = "scim.user.update"
    SCIM_USER_ACTIVATE = "scim.user.activate"
    SCIM_USER_DEACTIVATE = "scim.user.deactivate"
    SCIM_USER_DELETE = "scim.user.delete"
    SCIM_GROUP_CREATE = "scim.group.create"
    SCIM_GROUP_UPDATE = "scim.group.update"
    SCIM_GROUP_MEMBERS = "scim.group.members"
    SCIM_GROUP_DELETE = "scim.group.delete"
    SCIM_GROUP_LINK = "scim.group.link"  # an org admin linked a SCIM group to a role and resource groups
    ORG_SSO_LOGIN_FAILED = "org.sso_login_failed"  # a sign-in refused (bad token, reused state, e-mail mismatch)
    ORG_2FA_ENABLE = "org.settings.security.2fa.enable"
    ORG_2FA_DISABLE = "org.settings.security.2fa.disable"
    ORG_REPO_VISIBILITY = "org.settings.security.repo_visibility"
    ORG_BLOCK_UNSAFE = "org.settings.security.block_unsafe"
    ORG_SECRET_PUSH_PROTECTION = "org.settings.security.secret_push_protection"
    # Repo managers (not only org admins) may lower repo protections, or no longer may.
    ORG_DELEGATE_PROTECTION_CHANGES = "org.settings.security.delegate_protection_changes"
    ORG_MEMBERS_PRIVACY_ENABLE = "org.settings.security.members_privacy.enable"
    ORG_MEMBERS_PRIVACY_DISABLE = "org.settings.security.members_privacy.disable"
    ORG_TOKEN_APPROVAL_ENABLED = "org.token_approval.enabled"
    ORG_TOKEN_APPROVAL_DISABLED = "org.token_approval.disabled"
    ORG_TOKEN_APPROVAL_REQUEST = "org.token_approval.authorization_request"
    ORG_TOKEN_APPROVAL_AUTHORIZED = "org.token_approval.authorized"
    ORG_TOKEN_APPROVAL_DENIED = "org.token_approval.denied"
    ORG_TOKEN_APPROVAL_REVOKED = "org.token_approval.revoked"
    RESOURCE_GROUP_CREATE = "resource_group.create"
    RESOURCE_GROUP_DELETE = "resource_group.delete"
    RESOURCE_GROUP_SETTINGS = "resource_group.settings"
    RESOURCE_GROUP_ADD_USERS = "resource_group.add_users"
    RESOURCE_GROUP_REMOVE_USERS = "resource_group.remove_users"
    RESOURCE_GROUP_CHANGE_ROLE = "resource_group.change_role"
    REPO_UPDATE_RESOURCE_GROUP = "repo.update_resource_group"
    # The audit log itself (bastion.audit): retention chosen by an org, events removed by retention (instance-wide
    # or an org's), streaming sinks configured, dead-lettered deliveries sent again, the chain's key rotated.
    ORG_AUDIT_RETENTION = "org.audit_log.retention"
    ORG_AUDIT_PURGE = "org.audit_log.purge"
    INSTANCE_AUDIT_PURGE = "instance.audit_log.purge"
    INSTANCE_AUDIT_SINK_CREATE = "instance.audit_log.sink_create"
    INSTANCE_AUDIT_SINK_DELETE = "instance.audit_log.sink_delete"
    INSTANCE_AUDIT_REDRIVE = "instance.audit_log.redrive"
    INSTANCE_AUDIT_KEY_ROTATE = "instance.audit_log.key_rotate"
    # Reading the logs: an org's log exported (the Hub's name; hidden from the default view), the instance log's.
    ORG_AUDIT_LOG_EXPORT = "org.audit_log.export"
    INSTANCE_AUDIT_LOG_EXPORT = "instance.audit_log.export"
    # Storage regions: a repository moved to another region (after its bytes were copied and verified),
    # and the region new repositories of an org or a resource group are created in.
    REPO_UPDATE_REGION = "repo.update_region"
    ORG_DEFAULT_REGION = "org.settings.default_region"
    RESOURCE_GROUP_DEFAULT_REGION = "resource_group.settings.default_region"
