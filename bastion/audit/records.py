"""An audit event as the Hub's audit-log record, and the sentence (`message`) that describes it.

The record shape is the Hub's export schema (`../shared/hf-security-spec.md` (g)): `_id`, `createdAt`,
`type`, `data`, `message`, `author` always; `ip`, `location`, `userAgent`, `token` when known; no other
keys. Who the author and the token are *now* (renamed, deleted) is looked up by the caller in batches
and handed in, so this module reads no other feature's tables.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from bastion.audit.actions import AuditAction
from bastion.audit.geoip import Locator
from bastion.audit.query import anonymize_ip


class EventRow(Protocol):
    """An audit event as the ORM or a plain row gives it (exports read rows: no ORM objects)."""

    id: int
    created_at: datetime
    action: str
    actor_id: int | None
    actor_name: str | None
    ip: str | None
    user_agent: str | None
    token_id: int | None
    via: str
    target_type: str
    target_id: str
    details: Any


@dataclass(frozen=True)
class AuthorFacts:
    name: str
    deleted: bool = False  # a deleted account's tombstone: `name` is its pseudonym


@dataclass(frozen=True)
class TokenFacts:
    role: str  # read | write | fineGrained
    last4: str


# One sentence per event name. Fields: {author}, {target} (what was acted on: a repo id, a user, a token id,
# an org), and the event's own details by name; a detail an event lacks reads as empty.
MESSAGES: dict[AuditAction, str] = {
    AuditAction.USER_CREATE: "Account {target} was created",
    AuditAction.USER_LOGIN: "{target} signed in",  # recorded before the session names its actor
    AuditAction.USER_LOGIN_FAILED: "Failed sign-in to {target} ({reason})",
    AuditAction.USER_LOGOUT: "{target} signed out",
    AuditAction.USER_SUDO: "{target} confirmed their password to change security settings",
    AuditAction.USER_SESSION_REVOKE: "A session of {target} was signed out",
    AuditAction.USER_PROFILE_UPDATE: "{author} updated the profile of {target}",
    AuditAction.USER_EMAIL_ADD: "An e-mail address was added to {target}",
    AuditAction.USER_EMAIL_VERIFY: "An e-mail address of {target} was verified",
    AuditAction.USER_EMAIL_REMOVE: "An e-mail address was removed from {target}",
    AuditAction.USER_EMAIL_PRIMARY: "The primary e-mail address of {target} was changed",
    AuditAction.USER_PASSWORD_CHANGE: "The password of {target} was changed",
    AuditAction.USER_PASSWORD_RESET_REQUEST: "A password reset was requested for {target}",
    AuditAction.USER_PASSWORD_RESET: "The password of {target} was reset",
    AuditAction.USER_2FA_TOTP_ADD: "An authenticator app was added to {target}",
    AuditAction.USER_2FA_TOTP_REMOVE: "The authenticator app of {target} was removed",
    AuditAction.USER_2FA_WEBAUTHN_ADD: "A security key was added to {target}",
    AuditAction.USER_2FA_WEBAUTHN_REMOVE: "A security key was removed from {target}",
    AuditAction.USER_2FA_RECOVERY_GENERATE: "New recovery codes were generated for {target}",
    AuditAction.USER_2FA_RECOVERY_USE: "A recovery code of {target} was used",
    AuditAction.USER_2FA_FAILED: "A second-factor check for {target} failed",
    AuditAction.USER_DEACTIVATE: "{author} deactivated {target} and revoked every credential ({reason})",
    AuditAction.USER_REACTIVATE: "{author} reactivated {target} ({reason})",
    AuditAction.USER_DELETE: "{author} deleted the account {target}",
    AuditAction.USER_AUDIT_REDACT: "The personal data of {redacted_count} audit events of the deleted account "
                                   "{target} was replaced by its pseudonym",
    AuditAction.USER_REPOS_PURGE: "The repositories of the deleted account {target} were deleted after the grace "
                                  "period",
    AuditAction.USER_DATA_EXPORT: "{author} exported their personal data",
    AuditAction.TOKEN_CREATE: "{author} created the access token {name}",
    AuditAction.TOKEN_REVOKE: "The access token {name} was revoked ({reason})",
    AuditAction.TOKEN_ROTATE: "{author} rotated an access token",
    AuditAction.TOKEN_RENAME: "{author} renamed an access token to {name}",
    AuditAction.TOKEN_USE_DENIED: "An access token was refused {permission} ({reason})",
    AuditAction.TOKEN_AUTH_FAILED: "A presented credential matched no valid token ({reason})",
    AuditAction.REPO_CREATE: "{author} created the repository {target}",
    AuditAction.REPO_DELETE: "{author} deleted the repository {target}",
    AuditAction.REPO_MOVE: "{author} moved the repository {target}",
    AuditAction.REPO_UPDATE_SETTINGS: "{author} updated the settings of {target}",
    AuditAction.REPO_PROTECTION_LOWER: "{author} lowered a protection of {target}",
    AuditAction.REPO_UPDATE_VISIBILITY: "{author} changed the visibility of {target}",
    AuditAction.REPO_UPDATE_GATED: "{author} changed the access gate of {target}",
    AuditAction.REPO_ACCESS_REQUEST_CREATE: "{author} asked for access to {target}",
    AuditAction.REPO_ACCESS_REQUEST_ACCEPT: "{author} accepted an access request to {target}",
    AuditAction.REPO_ACCESS_REQUEST_REJECT: "{author} rejected an access request to {target}",
    AuditAction.REPO_ACCESS_REQUEST_RESET: "{author} moved an access request to {target} back to pending",
    AuditAction.REPO_ACCESS_REQUEST_GRANT: "{author} granted access to {target}",
    AuditAction.REPO_ACCESS_REQUEST_WITHDRAW: "{author} withdrew their access request to {target}",
    AuditAction.REPO_COMMIT: "{author} committed to {target}",
    AuditAction.REPO_SQUASH: "{author} squashed the history of {target}",
    AuditAction.REPO_BRANCH_CREATE: "{author} created a branch in {target}",
    AuditAction.REPO_BRANCH_DELETE: "{author} deleted a branch of {target}",
    AuditAction.REPO_TAG_CREATE: "{author} created a tag in {target}",
    AuditAction.REPO_TAG_DELETE: "{author} deleted a tag of {target}",
    AuditAction.REPO_PR_CREATE: "{author} opened a pull request on {target}",
    AuditAction.LFS_OBJECT_STORE: "{author} stored a large file in {target}",
    AuditAction.XET_UPLOAD: "{author} uploaded Xet data to {target}",
    AuditAction.REPO_PUSH_REJECTED: "A git push by {author} to {target} was refused",
    AuditAction.SCAN_FINDING: "The {scanner} scanner found an issue in {path} of {target}",
    AuditAction.SCAN_POLICY_REJECT: "A change to {target} was refused by the unsafe-files policy",
    AuditAction.SCAN_RESCAN: "{author} asked for {target} to be scanned again",
    AuditAction.STORAGE_GC: "{author} freed unreachable stored objects",
    AuditAction.STORAGE_FSCK: "{author} verified every stored object",
    AuditAction.CLAMD_START: "The malware scanner (clamd) was started",
    AuditAction.CLAMD_RESTART: "The malware scanner (clamd) was restarted",
    AuditAction.SIGNATURES_UPDATE: "The malware signatures were updated",
    AuditAction.SIGNATURES_UPDATE_FAILED: "Updating the malware signatures failed",
    AuditAction.SECRET_PUSH_BLOCKED: "A push to {target} containing a secret was blocked",
    AuditAction.SECRET_PUSH_BYPASS: "{author} bypassed secret push protection on {target}",
    AuditAction.SECRET_NOTICE_DISMISS: "{author} dismissed a secret notice on {target}",
    AuditAction.SECRET_NOTICE_RESOLVE: "{author} resolved a secret notice on {target}",
    AuditAction.SCAN_RELEASE: "{author} released a file of {target} that could not be proven safe",
    AuditAction.SCAN_RELEASE_REVOKE: "{author} withdrew the release of a file of {target}",
    AuditAction.USER_GPG_KEY_ADD: "A GPG key was added to {target}",
    AuditAction.USER_GPG_KEY_REMOVE: "A GPG key was removed from {target}",
    AuditAction.USER_SSH_SIGNING_KEY_ADD: "An SSH signing key was added to {target}",
    AuditAction.USER_SSH_SIGNING_KEY_REMOVE: "An SSH signing key was removed from {target}",
    AuditAction.USER_VIGILANT_MODE: "{author} changed vigilant mode of {target}",
    AuditAction.ORG_CREATE: "{author} created the organization {target}",
    AuditAction.ORG_DELETE: "{author} deleted the organization {target}",
    AuditAction.ORG_PROFILE: "{author} updated the organization profile",
    AuditAction.ORG_UPDATE_SETTINGS: "{author} updated the organization settings",
    AuditAction.ORG_ADD_USER: "{author} added {target} to the organization",
    AuditAction.ORG_REMOVE_USER: "{author} removed {target} from the organization",
    AuditAction.ORG_CHANGE_ROLE: "{author} changed the role of {target}",
    AuditAction.ORG_LEAVE: "{target} left the organization",
    AuditAction.ORG_INVITE_USER: "{author} invited {target} to the organization",
    AuditAction.ORG_INVITE_EMAIL: "An invitation e-mail was sent to {target}",
    AuditAction.ORG_INVITE_ACCEPT: "{target} accepted the invitation to the organization",
    AuditAction.ORG_INVITE_DECLINE: "{target} declined the invitation to the organization",
    AuditAction.ORG_2FA_ENABLE: "{author} required two-factor authentication for members",
    AuditAction.ORG_2FA_DISABLE: "{author} stopped requiring two-factor authentication for members",
    AuditAction.ORG_REPO_VISIBILITY: "{author} changed the repository visibility policy",
    AuditAction.ORG_BLOCK_UNSAFE: "{author} changed the unsafe-files policy",
    AuditAction.ORG_SECRET_PUSH_PROTECTION: "{author} changed secret push protection",
    AuditAction.ORG_DELEGATE_PROTECTION_CHANGES: "{author} changed who may lower repository protections",
    AuditAction.ORG_MEMBERS_PRIVACY_ENABLE: "{author} hid the members list",
    AuditAction.ORG_MEMBERS_PRIVACY_DISABLE: "{author} made the members list public",
    AuditAction.ORG_TOKEN_APPROVAL_ENABLED: "{author} required administrator approval for tokens",
    AuditAction.ORG_TOKEN_APPROVAL_DISABLED: "{author} stopped requiring administrator approval for tokens",
    AuditAction.ORG_TOKEN_APPROVAL_REQUEST: "An access token asked for approval to reach the organization",
    AuditAction.ORG_TOKEN_APPROVAL_AUTHORIZED: "{author} approved an access token",
    AuditAction.ORG_TOKEN_APPROVAL_DENIED: "{author} denied an access token",
    AuditAction.ORG_TOKEN_APPROVAL_REVOKED: "{author} revoked an access token's access to the organization",
    AuditAction.RESOURCE_GROUP_CREATE: "{author} created a resource group",
    AuditAction.RESOURCE_GROUP_DELETE: "{author} deleted a resource group",
    AuditAction.RESOURCE_GROUP_SETTINGS: "{author} updated a resource group",
    AuditAction.RESOURCE_GROUP_ADD_USERS: "{author} added members to a resource group",
    AuditAction.RESOURCE_GROUP_REMOVE_USERS: "{author} removed members from a resource group",
    AuditAction.RESOURCE_GROUP_CHANGE_ROLE: "{author} changed roles in a resource group",
    AuditAction.REPO_UPDATE_RESOURCE_GROUP: "{author} moved {target} to another resource group",
    AuditAction.ORG_AUDIT_LOG_EXPORT: "{author} exported the organization's audit log",
    AuditAction.INSTANCE_AUDIT_LOG_EXPORT: "{author} exported the instance audit log",
    AuditAction.REPO_DELETE_LFS_FILE: "{author} permanently deleted LFS files from {target}",
    AuditAction.REPO_PR_MERGE: "{author} merged pull request #{number} of {target}",
    AuditAction.REPO_DISCUSSION_CREATE: "{author} opened #{num} on {target}: {title}",
    AuditAction.REPO_DISCUSSION_COMMENT: "{author} commented on #{num} of {target}",
    AuditAction.REPO_DISCUSSION_COMMENT_EDIT: "{author} edited a comment on #{num} of {target}",
    AuditAction.REPO_DISCUSSION_COMMENT_HIDE: "{author} hid a comment on #{num} of {target}",
    AuditAction.REPO_DISCUSSION_STATUS: "{author} changed the status of #{num} of {target} to {to}",
    AuditAction.REPO_DISCUSSION_TITLE: "{author} renamed #{num} of {target} to {to}",
    AuditAction.LFS_LOCK_CREATE: "{author} locked {path} in {target}",
    AuditAction.LFS_LOCK_DELETE: "{author} unlocked {path} in {target}",
    AuditAction.ORG_SETTINGS_SSO: "{author} updated the SSO settings of {target}",
    AuditAction.ORG_SETTINGS_SSO_ENABLE: "{author} enabled SSO for {target}",
    AuditAction.ORG_SETTINGS_SSO_DISABLE: "{author} disabled SSO for {target}",
    AuditAction.ORG_SSO_LOGIN: "{author} signed in to {target} with SSO",
    AuditAction.ORG_SSO_JOIN: "{author} joined {target} through SSO",
    AuditAction.ORG_SSO_LOGIN_FAILED: "An SSO sign-in to {target} was refused ({reason})",
    AuditAction.ORG_AUDIT_RETENTION: "{author} set the audit log retention of {target} to {to} days",
    AuditAction.ORG_AUDIT_PURGE: "{emptied} audit events of {target} older than {retentionDays} days were removed",
    AuditAction.INSTANCE_AUDIT_PURGE: ("{deleted} audit events older than {retentionDays} days were archived, "
                                       "then removed"),
    AuditAction.INSTANCE_AUDIT_SINK_CREATE: "{author} added a {kind} audit log sink",
    AuditAction.INSTANCE_AUDIT_SINK_DELETE: "{author} removed an audit log sink",
    AuditAction.INSTANCE_AUDIT_REDRIVE: "{author} sent dead-lettered audit events again",
    AuditAction.INSTANCE_AUDIT_KEY_ROTATE: "{author} rotated the audit chain's key",
    AuditAction.REPO_UPDATE_REGION: "{target} was moved from region {from} to region {to}",
    AuditAction.ORG_DEFAULT_REGION: "{author} set the default storage region of {target} to {to}",
    AuditAction.INSTANCE_SSO_SETTINGS: "{author} updated the instance's SSO settings",
    AuditAction.INSTANCE_SSO_ENABLE: "{author} enabled SSO for the instance",
    AuditAction.INSTANCE_SSO_DISABLE: "{author} disabled SSO for the instance",
    AuditAction.USER_SSO_LOGIN: "{target} signed in with SSO",
    AuditAction.USER_SSO_LINK: "{target} linked their account to an SSO identity",
    AuditAction.USER_SSO_LOGIN_FAILED: "An SSO sign-in was refused ({reason})",
    AuditAction.RESOURCE_GROUP_DEFAULT_REGION: "{author} set a resource group's default storage region to {to}",
    AuditAction.SCIM_TOKEN_CREATE: "{author} created the SCIM token {label} ({scope})",
    AuditAction.SCIM_TOKEN_REVOKE: "The SCIM token {label} was revoked ({reason})",
    AuditAction.SCIM_USER_CREATE: "{author} provisioned {target} through SCIM",
    AuditAction.SCIM_USER_UPDATE: "{author} updated {target} through SCIM",
    AuditAction.SCIM_USER_ACTIVATE: "{author} activated {target} through SCIM",
    AuditAction.SCIM_USER_DEACTIVATE: "{author} deactivated {target} through SCIM",
    AuditAction.SCIM_USER_DELETE: "{author} deprovisioned {target} through SCIM",
    AuditAction.SCIM_GROUP_CREATE: "{author} created the SCIM group {name}",
    AuditAction.SCIM_GROUP_UPDATE: "{author} renamed a SCIM group to {name}",
    AuditAction.SCIM_GROUP_MEMBERS: "{author} changed the members of the SCIM group {name}",
    AuditAction.SCIM_GROUP_DELETE: "{author} deleted the SCIM group {name}",
    AuditAction.SCIM_GROUP_LINK: "{author} linked the SCIM group {name} to roles",
}
class _Fields(dict[str, str]):
    def __missing__(self, key: str) -> str:
        return ""  # a detail this event lacks


def message(ev: EventRow, author: str) -> str:
    template = MESSAGES.get(ev.action)  # type: ignore[call-overload]
    if template is None:
        return f"{author} performed {ev.action} on {ev.target_type} {ev.target_id}"
    details = ev.details if isinstance(ev.details, dict) else {}
    fields = _Fields({k: str(v)[:200] for k, v in details.items() if isinstance(v, str | int | float)})
    fields.update(author=author, target=ev.target_id)
    text = template.format_map(fields)
    return " ".join(text.replace(" ()", "").split())  # a detail the event lacks leaves no gap


def hex_id(n: int) -> str:
    return f"{n:024x}"  # the Hub's ids are 24 hex digits


@dataclass
class RecordContext:
    """What serialising needs besides the events: the current authors and tokens (loaded by the caller per
    batch), the locator, and whether addresses are shown anonymised."""

    authors: Mapping[int, AuthorFacts]
    tokens: Mapping[int, TokenFacts]
    locator: Locator
    anonymize: bool = False


def hub_record(ev: EventRow, ctx: RecordContext) -> dict[str, Any]:
    author = _author(ev, ctx)
    # Failed authentications from an address name it as their target: shown like every other address.
    target_id = anonymize_ip(ev.target_id) if ctx.anonymize and ev.target_type == "ip" else ev.target_id
    out: dict[str, Any] = {
        "_id": hex_id(ev.id),
        "createdAt": ev.created_at.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "type": ev.action,
        "data": {**(ev.details if isinstance(ev.details, dict) else {}),
                 "target": {"type": ev.target_type, "id": target_id}, "via": ev.via},
        "message": message(ev, author["user"]),
        "author": author,
    }
    if ev.ip:
        out["ip"] = anonymize_ip(ev.ip) if ctx.anonymize else ev.ip
        location = ctx.locator.locate(ev.ip)  # located by the full address, shown anonymised or not
        if location is not None:
            out["location"] = location
    if ev.user_agent:
        out["userAgent"] = ev.user_agent
    if ev.token_id is not None:
        tok = ctx.tokens.get(ev.token_id)
        token: dict[str, Any] = {"type": "access_token", "id": hex_id(ev.token_id), "deleted": tok is None}
        if tok is not None:
            token.update(role=tok.role, last4=tok.last4)
        out["token"] = token
    return out


def _author(ev: EventRow, ctx: RecordContext) -> dict[str, Any]:
    if ev.actor_id is None:
        return {"_id": hex_id(0), "user": ev.actor_name or "system", "type": "system"}
    now = ctx.authors.get(ev.actor_id)
    author: dict[str, Any] = {"_id": hex_id(ev.actor_id), "user": now.name if now else (ev.actor_name or "?"),
                              "type": "user"}
    if now is None or now.deleted:
        author["deleted"] = True  # gone, or a deleted account's tombstone (named by its pseudonym)
    return author
