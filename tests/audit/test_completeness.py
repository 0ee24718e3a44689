"""Audit completeness, against a running server.

1. Every state-changing route of the app (POST/PUT/PATCH/DELETE, walked from `app.routes`) is in `ROUTES`:
   driven here (a request that performs its act; the events written under that request's id are read back
   and there must be at least one), or allowed with the reason it writes none (read-only POSTs), or proven by
   the named test file that asserts its event (flows that need git, a browser authenticator or mail).
2. Every `AuditAction` is in `ACTIONS`: written by a request driven here (the event read back), or by a
   code path that no route reaches (a worker, the CLI, the embedded clamd), exercised here or in the test
   file named, which must assert that event by name.
"""

from __future__ import annotations

import base64
import json
import re
import secrets
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from bastion.audit.actions import AuditAction
from tests.accounts.fixtures import PASSWORD, MailSink, csrf_of, link_in, mail_sink, web_server  # noqa: F401
from tests.conftest import BastionServer, wait_for
from tests.scanning.test_secret_pipeline import github_token

ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Driven:
    """Driven below: the route's request must write at least one event."""


@dataclass(frozen=True)
class ReadOnly:
    reason: str


@dataclass(frozen=True)
class Elsewhere:
    test_file: str
    action: str  # the event that file asserts, by name


DRIVEN = Driven()
R = "/api/{plural}/{ns}/{name}"
LFS_OBJECTS_READ = ReadOnly("the LFS batch API hands out transfer URLs and never stores a byte; the bytes become "
                            "the repo's at verify/complete, audited as repo.lfs_object_store")
SCIM_SEARCH = ReadOnly("a SCIM search (RFC 7644 §3.4.3) is a query sent as a POST body: reads only")
SCIM_UNKNOWN = ReadOnly("any other path under a SCIM prefix: a SCIM 404 or 405, nothing done")
LOCKS_READ = ReadOnly("lists the locks that are not the caller's (git lfs pre-push): reads only")
UPLOAD_PACK = ReadOnly("git fetch/clone: reads only")
LFS_VERIFY = ReadOnly("git-lfs asks whether an upload arrived: the upload itself linked the object to the repo and "
                      "was audited (repo.lfs_object_store)")

NOT_OFFERED = ReadOnly("a Hub product Bastion does not offer (bastion.api.not_offered): always a 400, nothing stored")
NOT_OFFERED_PATHS = [p for prefix in ("/api/buckets", "/api/collections", "/api/settings/webhooks", "/api/jobs")
                     for p in (prefix, prefix + "/{rest:path}")] + [
    p for verb in ("runtime", "restart", "pause", "hardware", "sleeptime", "secrets", "variables", "logs", "events",
                   "metrics")
    for p in (f"/api/spaces/{{ns}}/{{name}}/{verb}", f"/api/spaces/{{ns}}/{{name}}/{verb}/{{rest:path}}")]

ROUTES: dict[tuple[str, str], Driven | ReadOnly | Elsewhere] = {
    **{(method, path): NOT_OFFERED for path in NOT_OFFERED_PATHS for method in ("POST", "PUT", "PATCH", "DELETE")},
    ("POST", "/api/admin/audit/sinks"): DRIVEN,
    ("DELETE", "/api/admin/audit/sinks/{sink_id}"): DRIVEN,
    ("POST", "/api/admin/audit/dead-letters/redrive"): DRIVEN,
    ("POST", "/api/settings/tokens"): DRIVEN,
    ("PUT", "/api/settings/tokens/{token_id}"): DRIVEN,
    ("POST", "/api/settings/tokens/{token_id}/rotate"): DRIVEN,
    ("DELETE", "/api/settings/tokens/{token_id}"): DRIVEN,
    ("POST", "/api/organizations/{name}/settings/tokens/{token_id}/{verb}"): DRIVEN,
    ("POST", "/api/organizations/{name}/settings/tokens/revoke"): DRIVEN,
    ("POST", "/api/settings/gpg-keys"): Elsewhere("tests/signing/test_keys.py", "user.gpg_key_add"),
    ("DELETE", "/api/settings/gpg-keys/{key_id}"): Elsewhere("tests/signing/test_keys.py", "user.gpg_key_remove"),
    ("POST", "/api/settings/ssh-signing-keys"): DRIVEN,
    ("DELETE", "/api/settings/ssh-signing-keys/{key_id}"): DRIVEN,
    ("PUT", "/api/settings/signing"): DRIVEN,
    ("POST", "/api/organizations"): DRIVEN,
    ("POST", "/api/organizations/{name}/members"): DRIVEN,
    ("DELETE", "/api/organizations/{name}/members/{username}"): DRIVEN,
    ("PUT", "/api/organizations/{name}/members/{username}/role"): DRIVEN,
    ("POST", "/api/organizations/{name}/leave"): DRIVEN,
    ("POST", "/api/organizations/{name}/invitations"): DRIVEN,
    ("POST", "/api/organizations/invitations/{secret}/{verb}"): DRIVEN,
    ("PUT", "/api/organizations/{name}/settings"): DRIVEN,
    ("POST", "/api/organizations/{name}/resource-groups"): DRIVEN,
    ("PATCH", "/api/organizations/{name}/resource-groups/{group_id}"): DRIVEN,
    ("DELETE", "/api/organizations/{name}/resource-groups/{group_id}"): DRIVEN,
    ("POST", "/api/organizations/{name}/resource-groups/{group_id}/users"): DRIVEN,
    ("PATCH", "/api/organizations/{name}/resource-groups/{group_id}/users/{username}"): DRIVEN,
    ("DELETE", "/api/organizations/{name}/resource-groups/{group_id}/users/{username}"): DRIVEN,
    ("POST", f"{R}/user-access-request/cancel"): DRIVEN,
    ("POST", f"{R}/user-access-request/handle"): DRIVEN,
    ("POST", f"{R}/user-access-request/grant"): DRIVEN,
    ("POST", "/{ns}/{name}/ask-access"): DRIVEN,
    ("POST", "/datasets/{ns}/{name}/ask-access"): DRIVEN,
    ("POST", "/spaces/{ns}/{name}/ask-access"): Elsewhere("tests/security/test_gated_repos.py",
                                                          "repo.access_request.create"),
    ("POST", "/api/repos/create"): DRIVEN,
    ("DELETE", "/api/repos/delete"): DRIVEN,
    ("POST", "/api/repos/move"): DRIVEN,
    ("PUT", f"{R}/settings"): DRIVEN,
    ("POST", f"{R}/resource-group"): DRIVEN,
    ("POST", f"{R}/paths-info/{{revision:path}}"): ReadOnly("the Hub's paths-info: a read with a JSON body"),
    ("DELETE", f"{R}/like"): ReadOnly("Bastion has no likes: unliking changes nothing (tests/hub/test_hub_compat_upstream.py)"),
    ("POST", f"{R}/like"): ReadOnly("likes are not offered: always refused with 400, nothing stored"),
    ("POST", f"{R}/lfs-files/duplicate"): ReadOnly("cross-repo LFS copies are not offered: always refused with 400 "
                                                   "(or the missing repo's 404), nothing linked"),
    ("POST", f"{R}/duplicate"): ReadOnly("duplication is not offered: always refused with 400 (or the missing repo's "
                                         "404), nothing created"),
    ("POST", f"{R}/branch/{{branch:path}}"): DRIVEN,
    ("DELETE", f"{R}/branch/{{branch:path}}"): DRIVEN,
    ("POST", f"{R}/tag/{{revision:path}}"): DRIVEN,
    ("DELETE", f"{R}/tag/{{tag:path}}"): DRIVEN,
    ("POST", f"{R}/super-squash/{{branch:path}}"): DRIVEN,
    ("POST", f"{R}/preupload/{{revision:path}}"): ReadOnly("preupload only says how each file must be uploaded "
                                                           "(regular or LFS); nothing is stored"),
    ("POST", f"{R}/commit/{{revision:path}}"): DRIVEN,
    ("POST", "/api/validate-yaml"): ReadOnly("validates a README's YAML front matter; nothing is stored"),
    ("POST", "/{ns}/{name}.git/info/lfs/objects/batch"): LFS_OBJECTS_READ,
    ("POST", "/datasets/{ns}/{name}.git/info/lfs/objects/batch"): LFS_OBJECTS_READ,
    ("POST", "/spaces/{ns}/{name}.git/info/lfs/objects/batch"): LFS_OBJECTS_READ,
    ("POST", "/{ns}/{name}.git/info/lfs/objects/verify"): LFS_VERIFY,
    ("POST", "/datasets/{ns}/{name}.git/info/lfs/objects/verify"): LFS_VERIFY,
    ("POST", "/spaces/{ns}/{name}.git/info/lfs/objects/verify"): LFS_VERIFY,
    ("POST", "/{ns}/{name}.git/info/lfs/locks"): DRIVEN,
    ("POST", "/datasets/{ns}/{name}.git/info/lfs/locks"): DRIVEN,
    ("POST", "/spaces/{ns}/{name}.git/info/lfs/locks"): DRIVEN,
    ("POST", "/{ns}/{name}.git/info/lfs/locks/verify"): LOCKS_READ,
    ("POST", "/datasets/{ns}/{name}.git/info/lfs/locks/verify"): LOCKS_READ,
    ("POST", "/spaces/{ns}/{name}.git/info/lfs/locks/verify"): LOCKS_READ,
    ("POST", "/{ns}/{name}.git/info/lfs/locks/{lock_id}/unlock"): DRIVEN,
    ("POST", "/datasets/{ns}/{name}.git/info/lfs/locks/{lock_id}/unlock"): DRIVEN,
    ("POST", "/spaces/{ns}/{name}.git/info/lfs/locks/{lock_id}/unlock"): DRIVEN,
    ("PUT", "/api/lfs/upload/{token}"): DRIVEN,
    ("PUT", "/api/lfs/multipart/{token}"): ReadOnly("one part of a multipart upload (staging); the completion is "
                                                    "audited"),
    ("POST", "/api/lfs/complete/{token}"): Elsewhere("tests/security/test_auth_failure_audit.py",
                                                     "repo.lfs_object_store"),
    ("POST", f"{R}/scan"): DRIVEN,
    ("POST", f"{R}/scan/release"): DRIVEN,
    ("DELETE", f"{R}/scan/release/{{blob}}"): DRIVEN,
    ("POST", f"{R}/secrets/state"): DRIVEN,
    ("POST", "/api/credentials/revoke"): DRIVEN,
    ("POST", "/xet-cas/{scope}/v1/xorbs/{prefix}/{xorb_hash}"): Elsewhere("tests/security/test_auth_failure_audit.py",
                                                                          "repo.xet_upload"),
    ("POST", "/xet-cas/{scope}/v1/shards"): Elsewhere("tests/security/test_auth_failure_audit.py",
                                                      "repo.lfs_object_store"),
    ("POST", "/{ns}/{name}/git-upload-pack"): UPLOAD_PACK,
    ("POST", "/datasets/{ns}/{name}/git-upload-pack"): UPLOAD_PACK,
    ("POST", "/spaces/{ns}/{name}/git-upload-pack"): UPLOAD_PACK,
    ("POST", "/{ns}/{name}/git-receive-pack"): Elsewhere("tests/gitserver/test_push.py", "repo.push_rejected"),
    ("POST", "/datasets/{ns}/{name}/git-receive-pack"): Elsewhere("tests/gitserver/test_push.py",
                                                                  "repo.secret_push_blocked"),
    ("POST", "/spaces/{ns}/{name}/git-receive-pack"): Elsewhere("tests/gitserver/test_push.py",
                                                                "repo.secret_push_bypass"),
    ("POST", "/api/internal/git-hooks/pre-receive"): ReadOnly("git's pre-receive hook calling back: it judges the "
                                                              "push (refusals are audited as repo.push_rejected by "
                                                              "receive-pack), it changes nothing"),
    ("POST", "/api/internal/git-hooks/proc-receive"): Elsewhere("tests/gitserver/test_push.py",
                                                                "repo.secret_push_bypass"),
    ("POST", "/organizations/new"): DRIVEN,
    ("POST", "/organizations/{name}/leave"): DRIVEN,
    ("POST", "/organizations/invitations/{secret}"): DRIVEN,
    ("POST", "/organizations/{name}/settings/members/{username}/{verb}"): DRIVEN,
    ("POST", "/organizations/{name}/settings/invitations"): DRIVEN,
    ("POST", "/organizations/{name}/settings/default-role"): DRIVEN,
    ("POST", "/organizations/{name}/settings/resource-groups"): DRIVEN,
    ("POST", "/organizations/{name}/settings/resource-groups/{group_id}/{verb}"): DRIVEN,
    ("POST", "/organizations/{name}/settings/repo-group"): DRIVEN,
    ("POST", "/organizations/{name}/settings/security"): DRIVEN,
    ("POST", "/organizations/{name}/settings/delete"): DRIVEN,
    ("POST", "/organizations/{name}/settings/tokens/policy"): DRIVEN,
    ("POST", "/organizations/{name}/settings/tokens/{token_id}/{verb}"): DRIVEN,
    ("POST", "/{ns}/{name}/access-requests"): DRIVEN,
    ("POST", "/datasets/{ns}/{name}/access-requests"): DRIVEN,
    ("POST", "/spaces/{ns}/{name}/access-requests"): Elsewhere("tests/security/test_gated_repos.py",
                                                               "repo.access_request.reset"),
    ("POST", "/login"): DRIVEN,
    ("POST", "/api/admin/users/{name}/deactivate"): Elsewhere("tests/security/test_deprovisioning.py",
                                                              "user.deactivate"),
    ("POST", "/api/admin/users/{name}/reactivate"): Elsewhere("tests/security/test_deprovisioning.py",
                                                              "user.reactivate"),
    ("DELETE", "/api/admin/users/{name}"): Elsewhere("tests/security/test_account_deletion.py", "user.delete"),
    ("POST", "/settings/account/delete"): Elsewhere("tests/security/test_account_deletion.py", "user.delete"),
    ("POST", "/admin/users/{name}/{verb}"): Elsewhere("tests/security/test_account_deletion.py", "user.deactivate"),
    ("POST", "/login/two-factor"): DRIVEN,
    ("POST", "/login/webauthn"): Elsewhere("tests/web/test_browser.py", "user.login"),
    ("POST", "/login/recovery"): DRIVEN,
    ("POST", "/logout"): DRIVEN,
    ("POST", "/join"): DRIVEN,
    ("POST", "/login/forgot"): DRIVEN,
    ("POST", "/login/reset"): DRIVEN,
    ("POST", "/settings/profile"): DRIVEN,
    ("POST", "/settings/emails"): DRIVEN,
    ("POST", "/settings/emails/{email_id}/{verb}"): DRIVEN,
    ("POST", "/settings/password"): DRIVEN,
    ("POST", "/settings/sessions/revoke-others"): DRIVEN,
    ("POST", "/settings/sessions/{session_id}/revoke"): DRIVEN,
    ("POST", "/settings/sudo"): DRIVEN,
    ("POST", "/settings/two-factor/totp"): DRIVEN,
    ("POST", "/settings/two-factor/totp/delete"): DRIVEN,
    ("POST", "/settings/two-factor/webauthn"): Elsewhere("tests/web/test_browser.py", "user.2fa.webauthn_add"),
    ("POST", "/settings/two-factor/webauthn/{credential_id}/delete"): DRIVEN,
    ("POST", "/settings/two-factor/recovery-codes"): DRIVEN,
    ("POST", "/settings/tokens"): DRIVEN,
    ("POST", "/settings/tokens/{token_id}/{verb}"): DRIVEN,
    ("POST", "/settings/keys"): DRIVEN,
    ("POST", "/settings/keys/{kind}/{key_id}/delete"): DRIVEN,
    ("POST", "/settings/keys/vigilant"): DRIVEN,
    ("POST", f"{R}/lfs-files/batch"): DRIVEN,
    ("POST", f"{R}/discussions"): DRIVEN,
    ("POST", f"{R}/discussions/{{num}}/comment"): DRIVEN,
    ("POST", f"{R}/discussions/{{num}}/comment/{{comment_id}}/edit"): DRIVEN,
    ("POST", f"{R}/discussions/{{num}}/comment/{{comment_id}}/hide"): DRIVEN,
    ("POST", f"{R}/discussions/{{num}}/title"): DRIVEN,
    ("POST", f"{R}/discussions/{{num}}/status"): DRIVEN,
    ("POST", f"{R}/discussions/{{num}}/merge"): DRIVEN,
    **{("POST", f"/{prefix}{{ns}}/{{name}}/discussions{tail}"): DRIVEN
       for prefix in ("", "datasets/", "spaces/") for tail in ("", "/{num}/comment", "/{num}/status", "/{num}/merge")},
    ("PUT", "/api/organizations/{name}/settings/sso/external-collaborators/{username}"): DRIVEN,
    ("DELETE", "/api/organizations/{name}/settings/sso/external-collaborators/{username}"): DRIVEN,
    # SSO configuration needs an IdP (OIDC discovery, or a SAML IdP's signed metadata and a test sign-in)
    ("PUT", "/api/organizations/{name}/settings/sso"): Elsewhere("tests/sso/test_oidc.py", "org.settings.sso"),
    ("POST", "/api/organizations/{name}/settings/sso/{verb}"): Elsewhere("tests/sso/test_oidc.py",
                                                                        "org.settings.sso.enable"),
    ("POST", "/organizations/{name}/settings/sso/{verb}"): Elsewhere("tests/sso/test_oidc.py",
                                                                    "org.settings.sso.disable"),
    ("POST", "/organizations/{name}/saml/consume"): Elsewhere("tests/sso/test_saml.py", "org.sso_login"),
    # Instance SSO: configuring it needs an IdP (discovery or signed metadata); sign-in is the IdP's answer.
    ("PUT", "/api/admin/sso"): Elsewhere("tests/sso/test_instance_sso.py", "instance.sso.settings"),
    ("POST", "/api/admin/sso/{verb}"): Elsewhere("tests/sso/test_instance_sso.py", "instance.sso.enable"),
    ("POST", "/admin/sso/{verb}"): Elsewhere("tests/sso/test_instance_sso.py", "instance.sso.disable"),
    ("POST", "/login/saml/consume"): Elsewhere("tests/sso/test_instance_sso.py", "user.sso_login"),
    ("POST", "/login/saml/finish"): Elsewhere("tests/sso/test_instance_sso.py", "user.sso_login"),
    ("POST", "/login/sso/link"): Elsewhere("tests/sso/test_instance_sso.py", "user.sso_link"),
    # SCIM (tests/scim/test_scim.py drives each with SCIM tokens and asserts its event, the SCIM client as actor).
    ("POST", "/scim/v2/Users"): Elsewhere("tests/scim/test_scim.py", "scim.user.create"),
    ("PUT", "/scim/v2/Users/{uid}"): Elsewhere("tests/scim/test_scim.py", "scim.user.update"),
    ("PATCH", "/scim/v2/Users/{uid}"): Elsewhere("tests/scim/test_scim.py", "scim.user.deactivate"),
    ("DELETE", "/scim/v2/Users/{uid}"): Elsewhere("tests/scim/test_scim.py", "scim.user.delete"),
    ("POST", "/scim/v2/Groups"): Elsewhere("tests/scim/test_scim.py", "scim.group.create"),
    ("PUT", "/scim/v2/Groups/{gid}"): Elsewhere("tests/scim/test_scim.py", "scim.group.update"),
    ("PATCH", "/scim/v2/Groups/{gid}"): Elsewhere("tests/scim/test_scim.py", "scim.group.members"),
    ("DELETE", "/scim/v2/Groups/{gid}"): Elsewhere("tests/scim/test_scim.py", "scim.group.delete"),
    ("POST", "/scim/v2/.search"): SCIM_SEARCH,
    ("POST", "/scim/v2/Users/.search"): SCIM_SEARCH,
    ("POST", "/scim/v2/Groups/.search"): SCIM_SEARCH,
    ("POST", "/scim/v2/{rest:path}"): SCIM_UNKNOWN,
    ("PUT", "/scim/v2/{rest:path}"): SCIM_UNKNOWN,
    ("PATCH", "/scim/v2/{rest:path}"): SCIM_UNKNOWN,
    ("DELETE", "/scim/v2/{rest:path}"): SCIM_UNKNOWN,
    ("POST", "/api/organizations/{org}/scim/v2/Users"): Elsewhere("tests/scim/test_scim.py", "scim.user.create"),
    ("PUT", "/api/organizations/{org}/scim/v2/Users/{uid}"): Elsewhere("tests/scim/test_scim.py", "scim.user.update"),
    ("PATCH", "/api/organizations/{org}/scim/v2/Users/{uid}"): Elsewhere("tests/scim/test_scim.py", "scim.user.deactivate"),
    ("DELETE", "/api/organizations/{org}/scim/v2/Users/{uid}"): Elsewhere("tests/scim/test_scim.py", "scim.user.delete"),
    ("POST", "/api/organizations/{org}/scim/v2/Groups"): Elsewhere("tests/scim/test_scim.py", "scim.group.create"),
    ("PUT", "/api/organizations/{org}/scim/v2/Groups/{gid}"): Elsewhere("tests/scim/test_scim.py", "scim.group.update"),
    ("PATCH", "/api/organizations/{org}/scim/v2/Groups/{gid}"): Elsewhere("tests/scim/test_scim.py", "scim.group.members"),
    ("DELETE", "/api/organizations/{org}/scim/v2/Groups/{gid}"): Elsewhere("tests/scim/test_scim.py", "scim.group.delete"),
    ("POST", "/api/organizations/{org}/scim/v2/.search"): SCIM_SEARCH,
    ("POST", "/api/organizations/{org}/scim/v2/Users/.search"): SCIM_SEARCH,
    ("POST", "/api/organizations/{org}/scim/v2/Groups/.search"): SCIM_SEARCH,
    ("POST", "/api/organizations/{org}/scim/v2/{rest:path}"): SCIM_UNKNOWN,
    ("PUT", "/api/organizations/{org}/scim/v2/{rest:path}"): SCIM_UNKNOWN,
    ("PATCH", "/api/organizations/{org}/scim/v2/{rest:path}"): SCIM_UNKNOWN,
    ("DELETE", "/api/organizations/{org}/scim/v2/{rest:path}"): SCIM_UNKNOWN,
    ("PUT", "/api/organizations/{name}/settings/scim/groups/{gid}"): Elsewhere("tests/scim/test_scim.py", "scim.group.link"),
    ("POST", "/organizations/{name}/settings/scim/{verb}"): Elsewhere("tests/scim/test_pages.py", "scim.token.create"),
    ("POST", "/admin/scim/{verb}"): Elsewhere("tests/scim/test_pages.py", "scim.token.revoke"),
    # storage regions: this server has only the default region (a second one needs its own store)
    ("POST", "/organizations/{name}/settings/regions/default"): Elsewhere("tests/storage/test_region_settings.py",
                                                                         "org.settings.default_region"),
    ("POST", "/organizations/{name}/settings/regions/move"): Elsewhere("tests/storage/test_region_settings.py",
                                                                      "repo.update_region"),
}

# Actions no route can write (or none reachable here), each with where it comes from and where it is exercised.
NOT_BY_ROUTE: dict[str, tuple[str, str]] = {
    "instance.clamd_start": ("the embedded clamd's supervisor thread in `bastion serve`",
                             "tests/scanning/test_embedded_clamd.py"),
    "instance.clamd_restart": ("the supervisor, after clamd died", "tests/scanning/test_embedded_clamd.py"),
    "instance.signatures_update": ("the supervisor, after freshclam changed the database (needs a mirror); its "
                                   "audit hook is called here", "tests/audit/test_completeness.py"),
    "instance.signatures_update_failed": ("the supervisor, after freshclam failed",
                                          "tests/scanning/test_embedded_clamd.py"),
    "instance.storage_gc": ("`bastion admin gc` (CLI)", "tests/hub/test_storage_gc.py"),
    "instance.storage_fsck": ("`bastion admin fsck` (CLI)", "tests/audit/test_completeness.py"),
    "instance.audit_log.purge": ("the audit worker's retention pass", "tests/audit/test_retention.py"),
    "org.audit_log.purge": ("the audit worker's retention pass", "tests/audit/test_retention.py"),
    "instance.audit_log.key_rotate": ("`bastion audit rotate-key` (CLI)", "tests/audit/test_completeness.py"),
    "repo.scan_finding": ("a scan worker's verdict", "tests/scanning/test_pipeline.py"),
    "user.email_verify": ("the mailed verification link (a GET)", "tests/audit/test_completeness.py"),
    "token.auth_failed": ("after the response, aggregated (audit.aggregate)",
                          "tests/security/test_auth_failure_audit.py"),
    "token.use_denied": ("after the response, aggregated", "tests/security/test_auth_failure_audit.py"),
    "user.login_failed": ("a failed sign-in (its own transaction after the refusal)",
                          "tests/security/test_auth_failure_audit.py"),
    "user.2fa.failed": ("a wrong second factor (its own transaction after the refusal)",
                        "tests/accounts/test_services.py"),
    "user.2fa.webauthn_add": ("WebAuthn needs a browser authenticator", "tests/web/test_browser.py"),
    "repo.push_rejected": ("a git push refused (git client)", "tests/gitserver/test_push.py"),
    "repo.secret_push_blocked": ("a git push with a secret", "tests/gitserver/test_push.py"),
    "repo.secret_push_bypass": ("a git push with secrets-bypass", "tests/gitserver/test_push.py"),
    "repo.lfs_object_store": ("LFS multipart and Xet uploads (basic uploads are driven here)",
                              "tests/security/test_auth_failure_audit.py"),
    "repo.xet_upload": ("a Xet xorb upload", "tests/security/test_auth_failure_audit.py"),
    "repo.scan_policy_reject": ("a commit refused by block-unsafe", "tests/scanning/test_pipeline.py"),
    "repo.protection.lower": ("lowering a protection", "tests/security/test_protection_lowering.py"),
    "org.token_approval.authorization_request": ("a fine-grained token naming an org under approval (CLI here)",
                                                 "tests/orgs/test_service.py"),
    "repo.access_request.reset": ("a reviewed request moved back", "tests/security/test_gated_repos.py"),
    "user.gpg_key_add": ("needs a GPG key made with gpg for a verified address", "tests/signing/test_keys.py"),
    "user.gpg_key_remove": ("needs a GPG key made with gpg for a verified address", "tests/signing/test_keys.py"),
    "org.settings.sso.enable": ("needs an IdP: a test sign-in must pass first", "tests/sso/test_oidc.py"),
    "org.settings.sso.disable": ("needs an IdP: SSO enabled first", "tests/sso/test_oidc.py"),
    "org.sso_login": ("an IdP's answer (the OIDC callback, a GET; SAML's consume)", "tests/sso/test_oidc.py"),
    "org.sso_join": ("an IdP's answer for someone not yet a member", "tests/sso/test_oidc.py"),
    "org.sso_login_failed": ("an IdP's answer refused", "tests/sso/test_oidc.py"),
    "org.settings.default_region": ("needs a second storage region", "tests/storage/test_region_settings.py"),
    "resource_group.settings.default_region": ("needs a second storage region",
                                               "tests/storage/test_region_settings.py"),
    "repo.update_region": ("the region-move worker's switch, after the copy is verified",
                           "tests/storage/test_region_move.py"),
    "instance.sso.settings": ("needs an IdP (discovery or signed metadata)", "tests/sso/test_instance_sso.py"),
    "instance.sso.enable": ("needs an IdP: settings saved first", "tests/sso/test_instance_sso.py"),
    "instance.sso.disable": ("needs an IdP: SSO enabled first", "tests/sso/test_instance_sso.py"),
    "user.sso_login": ("an IdP's answer (the OIDC callback, a GET; SAML's consume)", "tests/sso/test_instance_sso.py"),
    "user.sso_link": ("an IdP's answer, then the existing account proven", "tests/sso/test_instance_sso.py"),
    "user.sso_login_failed": ("an IdP's answer refused", "tests/sso/test_instance_sso.py"),
    "scim.token.create": ("`bastion admin scim-token` (CLI) and the SCIM settings pages", "tests/scim/test_pages.py"),
    "scim.token.revoke": ("rotation and revocation (CLI, SCIM settings pages)", "tests/scim/test_pages.py"),
    **{a: ("a SCIM client's request (a SCIM token: none is made in this file)", "tests/scim/test_scim.py")
       for a in ("scim.user.create", "scim.user.update", "scim.user.activate", "scim.user.deactivate", "scim.user.delete",
                 "scim.group.create", "scim.group.update", "scim.group.members", "scim.group.delete")},
    "scim.group.link": ("an org admin links a SCIM group (there must be one: a SCIM client's)", "tests/scim/test_scim.py"),
    "user.deactivate": ("an admin's deprovisioning (CLI, admin API, SCIM)", "tests/security/test_deprovisioning.py"),
    "user.reactivate": ("an admin's reactivation (CLI, admin API, SCIM)", "tests/security/test_deprovisioning.py"),
    "user.delete": ("an account deletion (CLI, admin API and page, the user's own page in sudo mode)",
                    "tests/security/test_account_deletion.py"),
    "user.audit_redact": ("written by every account deletion", "tests/security/test_account_deletion.py"),
    "user.repos_purge": ("the grace period's end (sweeper, or `bastion admin purge-deleted-accounts`)",
                         "tests/security/test_account_deletion.py"),
    "user.data_export": ("GET /api/settings/data-export (a GET, audited)", "tests/security/test_account_deletion.py"),
}


@dataclass
class Run:
    server: BastionServer
    calls: list[tuple[str, str, str]] = field(default_factory=list)  # method, route, request id

    def call(self, route: str, method: str, url: str, *, token: str | None = None,
             client: httpx.Client | None = None, expect: tuple[int, ...] = (200, 201, 202, 204, 303), **kw: Any
             ) -> httpx.Response:
        headers = dict(kw.pop("headers", {}))
        if token:
            headers["authorization"] = f"Bearer {token}"
        if client is not None:
            r = client.request(method, url, headers=headers, **kw)
        else:
            r = httpx.request(method, f"{self.server.url}{url}", headers=headers, timeout=60, **kw)
        assert r.status_code in expect, (method, route, url, r.status_code, r.text[:400])
        self.calls.append((method, route, r.headers["x-request-id"]))
        return r


def _user(server: BastionServer, admin: bool = False) -> tuple[str, str]:
    """A user with a password (web) and a write token."""
    return server.create_user(f"c{secrets.token_hex(4)}", admin=admin, password=PASSWORD)


def _web(server: BastionServer, name: str) -> httpx.Client:
    client = httpx.Client(base_url=server.url, headers={"accept": "text/html"}, timeout=60)
    token = csrf_of(client.get("/login").text)
    r = client.post("/login", data={"csrf_token": token, "login": name, "password": PASSWORD})
    assert r.status_code == 303, r.text[:300]
    return client


def _csrf(client: httpx.Client) -> str:
    return csrf_of(client.get("/settings/profile").text)


SAME_ORIGIN = {"sec-fetch-site": "same-origin"}


def _commit(run: Run, token: str, repo: str, path: str, content: bytes, *, plural: str = "models",
            revision: str = "main", extra: dict | None = None, params: dict | None = None) -> httpx.Response:
    lines = [{"key": "header", "value": {"summary": f"add {path}", **(extra or {})}},
             {"key": "file", "value": {"path": path, "content": base64.b64encode(content).decode(),
                                       "encoding": "base64"}}]
    body = "\n".join(json.dumps(x) for x in lines).encode()
    return run.call(f"{R}/commit/{{revision:path}}", "POST", f"/api/{plural}/{repo}/commit/{revision}", token=token,
                    content=body, headers={"content-type": "application/x-ndjson"}, params=params or {})


def _ssh_key(tmp: Path) -> str:
    path = tmp / f"k{secrets.token_hex(3)}"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True, timeout=30)
    return path.with_suffix(".pub").read_text().strip()


def _drive(server: BastionServer, mail: MailSink, tmp: Path) -> Run:  # noqa: PLR0915 - one story, in order
    run = Run(server)
    # ---- sign-up, password reset by mail -------------------------------------------------------------
    joiner = f"j{secrets.token_hex(4)}"
    with httpx.Client(base_url=server.url, headers={"accept": "text/html"}, timeout=60) as client:
        run.call("/join", "POST", "/join", client=client, data={
            "csrf_token": csrf_of(client.get("/login").text), "name": joiner, "email": f"{joiner}@example.com",
            "password": PASSWORD, "password_confirm": PASSWORD})
        verify = client.get(link_in(mail.wait_for(f"{joiner}@example.com", "Verify your e-mail address")))
        assert verify.status_code in (200, 303), verify.text[:300]
    with httpx.Client(base_url=server.url, headers={"accept": "text/html"}, timeout=60) as client:
        before = mail.count()
        run.call("/login/forgot", "POST", "/login/forgot", client=client, expect=(200,), data={
            "csrf_token": csrf_of(client.get("/login/forgot").text), "email": f"{joiner}@example.com"})
        link = link_in(mail.wait_for(f"{joiner}@example.com", "Reset your password", after=before))
        page = client.get(link)
        run.call("/login/reset", "POST", "/login/reset", client=client, data={
            "csrf_token": csrf_of(page.text), "token": link.split("token=")[1], "password": PASSWORD,
            "password_confirm": PASSWORD}, expect=(303,))
    owner, tok = _user(server)
    write_tok = tok
    other, other_tok = _user(server)
    _admin, admin_tok = _user(server, admin=True)

    # ---- repos -----------------------------------------------------------------------------------
    run.call("/api/repos/create", "POST", "/api/repos/create", token=tok, json={"name": "m1", "private": True})
    repo = f"{owner}/m1"
    _commit(run, tok, repo, "a.txt", b"hello")
    _commit(run, tok, repo, "pr.txt", b"a pull request", params={"create_pr": "1"})
    _commit(run, tok, repo, "leak.py", f"client = Github('{github_token('c0mp')}')\n".encode())
    auth = {"authorization": f"Bearer {tok}"}
    notices = wait_for(lambda: httpx.get(f"{server.url}/api/models/{repo}/secrets", headers=auth).json(), timeout=60)
    for state in ("dismissed", "resolved"):
        run.call(f"{R}/secrets/state", "POST", f"/api/models/{repo}/secrets/state", token=tok,
                 json={"fingerprint": notices[0]["fingerprint"], "state": state, "reason": "rotated"})
    run.call(f"{R}/settings", "PUT", f"/api/models/{repo}/settings", token=tok, json={"private": False})
    run.call(f"{R}/settings", "PUT", f"/api/models/{repo}/settings", token=tok, json={"allowCaseCollidingPaths": True})
    run.call(f"{R}/branch/{{branch:path}}", "POST", f"/api/models/{repo}/branch/dev", token=tok, json={})
    run.call(f"{R}/branch/{{branch:path}}", "DELETE", f"/api/models/{repo}/branch/dev", token=tok)
    run.call(f"{R}/tag/{{revision:path}}", "POST", f"/api/models/{repo}/tag/main", token=tok, json={"tag": "v1"})
    run.call(f"{R}/tag/{{tag:path}}", "DELETE", f"/api/models/{repo}/tag/v1", token=tok)
    run.call(f"{R}/super-squash/{{branch:path}}", "POST", f"/api/models/{repo}/super-squash/main", token=tok,
             json={"message": "squash"})
    run.call(f"{R}/scan", "POST", f"/api/models/{repo}/scan", token=tok, json={})
    released = run.call(f"{R}/scan/release", "POST", f"/api/models/{repo}/scan/release", token=tok,
                        json={"path": "a.txt", "reason": "checked by hand"}, expect=(200, 400))
    if released.status_code == 200:
        blob = released.json().get("blob")
        run.call(f"{R}/scan/release/{{blob}}", "DELETE", f"/api/models/{repo}/scan/release/{blob}", token=tok)
    run.call("/api/repos/move", "POST", "/api/repos/move", token=tok,
             json={"fromRepo": repo, "toRepo": f"{owner}/m2"})
    repo = f"{owner}/m2"

    # LFS locks, for each repo type (all three register the same endpoint)
    for plural, prefix in (("models", ""), ("datasets", "datasets/"), ("spaces", "spaces/")):
        kind = plural[:-1]
        run.call("/api/repos/create", "POST", "/api/repos/create", token=tok,
                 json={"name": f"l{kind}", "type": kind, **({"sdk": "static"} if kind == "space" else {})})
        base = f"/{prefix}{owner}/l{kind}.git/info/lfs/locks"
        route = "/" + (prefix or "") + "{ns}/{name}.git/info/lfs/locks"
        lfs_headers = {"accept": "application/vnd.git-lfs+json", "content-type": "application/vnd.git-lfs+json"}
        lock = run.call(route, "POST", base, token=tok, json={"path": "w.bin"}, headers=lfs_headers).json()["lock"]
        run.call(route + "/{lock_id}/unlock", "POST", f"{base}/{lock['id']}/unlock", token=tok, json={"force": True},
                 headers=lfs_headers)

    # LFS verify of an object uploaded through the batch API (model and dataset)
    import hashlib

    uploaded: dict[str, str] = {}
    for prefix, kind in (("", "model"), ("datasets/", "dataset")):
        data = secrets.token_bytes(64)
        oid = hashlib.sha256(data).hexdigest()
        base = f"{server.url}/{prefix}{owner}/l{kind}.git/info/lfs/objects"
        lfs_headers = {"accept": "application/vnd.git-lfs+json", "content-type": "application/vnd.git-lfs+json",
                       "authorization": f"Bearer {tok}"}
        batch = httpx.post(f"{base}/batch", headers=lfs_headers, json={
            "operation": "upload", "transfers": ["basic"], "objects": [{"oid": oid, "size": len(data)}]}).json()
        actions = batch["objects"][0]["actions"]
        up = actions["upload"]
        run.call("/api/lfs/upload/{token}", "PUT", up["href"][len(server.url):], content=data,
                 headers=up.get("header", {}))
        uploaded[kind] = oid
    # the Hub's permanently_delete_lfs_files: the object the upload linked to the repo
    run.call(f"{R}/lfs-files/batch", "POST", f"/api/models/{owner}/lmodel/lfs-files/batch", token=tok,
             json={"deletions": {"sha": [uploaded["model"]], "rewriteHistory": False}})

    # ---- discussions and pull requests: the JSON API, then the web forms of each repo type --------
    D = f"{R}/discussions"
    drepo = f"{owner}/lmodel"
    opened = run.call(D, "POST", f"/api/models/{drepo}/discussions", token=tok,
                      json={"title": "a question", "description": "why?"}).json()
    dn = f"/api/models/{drepo}/discussions/{opened['num']}"
    said = run.call(D + "/{num}/comment", "POST", f"{dn}/comment", token=tok, json={"comment": "because"}).json()
    cid = said["newMessage"]["id"]
    run.call(D + "/{num}/comment/{comment_id}/edit", "POST", f"{dn}/comment/{cid}/edit", token=tok,
             json={"content": "because, edited"})
    run.call(D + "/{num}/comment/{comment_id}/hide", "POST", f"{dn}/comment/{cid}/hide", token=tok, json={})
    run.call(D + "/{num}/title", "POST", f"{dn}/title", token=tok, json={"title": "a better question"})
    run.call(D + "/{num}/status", "POST", f"{dn}/status", token=tok, json={"status": "closed"})

    def _pr(plural: str, repo_id: str, path: str) -> int:
        made = _commit(run, tok, repo_id, path, path.encode(), plural=plural, params={"create_pr": "1"}).json()
        return int(made["pullRequestUrl"].rstrip("/").rsplit("/", 1)[1])

    run.call(D + "/{num}/merge", "POST", f"/api/models/{drepo}/discussions/{_pr('models', drepo, 'api-pr.txt')}"
             "/merge", token=tok, json={"comment": "merged"})
    dweb = _web(server, owner)
    for plural, prefix in (("models", ""), ("datasets", "datasets/"), ("spaces", "spaces/")):
        repo_id = f"{owner}/l{plural[:-1]}"
        route = "/" + prefix + "{ns}/{name}/discussions"
        form = {"csrf_token": _csrf(dweb)}
        where = run.call(route, "POST", f"/{prefix}{repo_id}/discussions", client=dweb, headers=SAME_ORIGIN,
                         data={**form, "title": "from the web", "description": "hello"}, expect=(303,))
        page = where.headers["location"]
        run.call(route + "/{num}/comment", "POST", f"{page}/comment", client=dweb, headers=SAME_ORIGIN,
                 data={**form, "comment": "a reply"}, expect=(303,))
        run.call(route + "/{num}/status", "POST", f"{page}/status", client=dweb, headers=SAME_ORIGIN,
                 data={**form, "status": "closed"}, expect=(303,))
        pr = _pr(plural, repo_id, f"web-pr-{plural}.txt")
        run.call(route + "/{num}/merge", "POST", f"/{prefix}{repo_id}/discussions/{pr}/merge", client=dweb,
                 headers=SAME_ORIGIN, data=form, expect=(303,))
    dweb.close()

    # ---- gating ----------------------------------------------------------------------------------
    for plural, prefix in (("models", ""), ("datasets", "datasets/")):
        kind = plural[:-1]
        run.call("/api/repos/create", "POST", "/api/repos/create", token=tok, json={"name": f"g{kind}", "type": kind})
        gated = f"{owner}/g{kind}"
        run.call(f"{R}/settings", "PUT", f"/api/{plural}/{gated}/settings", token=tok, json={"gated": "manual"})
        run.call("/" + prefix + "{ns}/{name}/ask-access", "POST", f"/{prefix}{gated}/ask-access", token=other_tok,
                 json={"reason": "research"})
        reviewer = _web(server, owner)
        page = reviewer.get(f"/{prefix}{gated}/access-requests")
        run.call("/" + prefix + "{ns}/{name}/access-requests", "POST", f"/{prefix}{gated}/access-requests",
                 client=reviewer, data={"csrf_token": csrf_of(page.text), "user": other, "action": "rejected"},
                 headers=SAME_ORIGIN)
        reviewer.close()
        run.call(f"{R}/user-access-request/handle", "POST", f"/api/{plural}/{gated}/user-access-request/handle",
                 token=tok, json={"user": other, "status": "accepted"})
    gated = f"{owner}/gmodel"
    third, third_tok = _user(server)
    run.call(f"{R}/user-access-request/grant", "POST", f"/api/models/{gated}/user-access-request/grant", token=tok,
             json={"user": third})
    fourth, fourth_tok = _user(server)
    run.call("/{ns}/{name}/ask-access", "POST", f"/{gated}/ask-access", token=fourth_tok, json={})
    run.call(f"{R}/user-access-request/cancel", "POST", f"/api/models/{gated}/user-access-request/cancel",
             token=fourth_tok, json={})

    # ---- orgs (API) ------------------------------------------------------------------------------
    org = f"o{secrets.token_hex(3)}"
    run.call("/api/organizations", "POST", "/api/organizations", token=tok, json={"name": org})
    run.call("/api/organizations/{name}/members", "POST", f"/api/organizations/{org}/members", token=tok,
             json={"username": other, "role": "read"})
    run.call("/api/organizations/{name}/members/{username}/role", "PUT",
             f"/api/organizations/{org}/members/{other}/role", token=tok, json={"role": "write"})
    run.call("/api/organizations/{name}/leave", "POST", f"/api/organizations/{org}/leave", token=other_tok, json={})
    run.call("/api/organizations/{name}/members", "POST", f"/api/organizations/{org}/members", token=tok,
             json={"username": third, "role": "read"})
    run.call("/api/organizations/{name}/members/{username}", "DELETE", f"/api/organizations/{org}/members/{third}",
             token=tok)
    run.call("/api/organizations/{name}/settings", "PUT", f"/api/organizations/{org}/settings", token=tok,
             json={"require2fa": False, "hideMembers": True, "blockUnsafeFiles": True, "fullname": "Org Co",
                   "repoVisibility": "private", "secretPushProtection": True, "delegateProtectionChanges": True,
                   "defaultRole": "write", "auditLogRetentionDays": 90})
    run.call("/api/organizations/{name}/settings", "PUT", f"/api/organizations/{org}/settings", token=tok,
             json={"require2fa": True})
    # the org's 2FA now binds its admins too; instance admins stay outside it
    run.call("/api/organizations/{name}/settings", "PUT", f"/api/organizations/{org}/settings", token=admin_tok,
             json={"require2fa": False, "hideMembers": False})
    group = run.call("/api/organizations/{name}/resource-groups", "POST",
                     f"/api/organizations/{org}/resource-groups", token=tok, json={"name": "team"}).json()
    gid = group["id"]
    run.call("/api/organizations/{name}/resource-groups/{group_id}", "PATCH",
             f"/api/organizations/{org}/resource-groups/{gid}", token=tok, json={"name": "team2"})
    run.call("/api/organizations/{name}/members", "POST", f"/api/organizations/{org}/members", token=tok,
             json={"username": fourth, "role": "read"})
    run.call("/api/organizations/{name}/resource-groups/{group_id}/users", "POST",
             f"/api/organizations/{org}/resource-groups/{gid}/users", token=tok,
             json={"users": [{"user": fourth, "role": "read"}]})
    run.call("/api/organizations/{name}/resource-groups/{group_id}/users/{username}", "PATCH",
             f"/api/organizations/{org}/resource-groups/{gid}/users/{fourth}", token=tok, json={"role": "write"})
    run.call("/api/organizations/{name}/resource-groups/{group_id}/users/{username}", "DELETE",
             f"/api/organizations/{org}/resource-groups/{gid}/users/{fourth}", token=tok)
    run.call("/api/repos/create", "POST", "/api/repos/create", token=tok, json={"name": "orgrepo", "organization": org})
    run.call(f"{R}/resource-group", "POST", f"/api/models/{org}/orgrepo/resource-group", token=tok,
             json={"resourceGroupId": gid})
    run.call(f"{R}/resource-group", "POST", f"/api/models/{org}/orgrepo/resource-group", token=tok,
             json={"resourceGroupId": None})
    run.call("/api/organizations/{name}/resource-groups/{group_id}", "DELETE",
             f"/api/organizations/{org}/resource-groups/{gid}", token=tok)
    # invitations: the secret is in the mailed link (mail is logged when no SMTP server is configured)
    invitee, invitee_tok = _user(server)
    run.call("/api/organizations/{name}/invitations", "POST", f"/api/organizations/{org}/invitations", token=tok,
             json={"email": f"{invitee}@example.com", "role": "read"})
    secret = _invitation(mail, invitee)
    run.call("/api/organizations/invitations/{secret}/{verb}", "POST",
             f"/api/organizations/invitations/{secret}/accept", token=invitee_tok, json={})
    # org token governance: a fine-grained token that names the org waits for approval
    run.call("/api/organizations/{name}/settings", "PUT", f"/api/organizations/{org}/settings", token=tok,
             json={"tokenPolicy": "approval"})
    fg = server.admin("create-token", fourth, "--name", "fg", "--role", "fineGrained", "--scope",
                    f"org:{org}=repo.content.read").stdout.strip()
    # under the approval policy the owner manages the org with a fine-grained token (its own: auto-approved)
    tok = server.admin("create-token", owner, "--name", "org-admin", "--role", "fineGrained", "--scope",
                     f"org:{org}=org.write").stdout.strip()
    listed = httpx.get(f"{server.url}/api/organizations/{org}/settings/tokens", headers={
        "authorization": f"Bearer {tok}"}).json()
    fg_id = next(t["id"] for t in listed if t["user"] == fourth)
    run.call("/api/organizations/{name}/settings/tokens/{token_id}/{verb}", "POST",
             f"/api/organizations/{org}/settings/tokens/{fg_id}/approve", token=tok, json={})
    run.call("/api/organizations/{name}/settings/tokens/{token_id}/{verb}", "POST",
             f"/api/organizations/{org}/settings/tokens/{fg_id}/deny", token=tok, json={})
    run.call("/api/organizations/{name}/settings/tokens/revoke", "POST",
             f"/api/organizations/{org}/settings/tokens/revoke", token=tok, json={"token": fg})
    run.call("/api/organizations/{name}/settings", "PUT", f"/api/organizations/{org}/settings", token=tok,
             json={"tokenPolicy": "allow"})
    tok = write_tok
    # SSO external collaborators (members who sign in without the org's IdP): no IdP is needed to name them
    sso = f"/api/organizations/{org}/settings/sso/external-collaborators"
    run.call("/api/organizations/{name}/settings/sso/external-collaborators/{username}", "PUT", f"{sso}/{invitee}",
             token=tok)
    run.call("/api/organizations/{name}/settings/sso/external-collaborators/{username}", "DELETE",
             f"{sso}/{invitee}", token=tok)
    # audit-log exports (GET routes, but reading the whole log out is itself audited)
    run.call("/api/organizations/{name}/audit-log/export", "GET", f"/api/organizations/{org}/audit-log/export",
             token=tok)
    run.call("/api/admin/audit-log/export", "GET", "/api/admin/audit-log/export", token=admin_tok)

    # ---- leaked credentials, admin streaming ----------------------------------------------------
    leaked = server.admin("create-token", third, "--name", "leak", "--role", "read").stdout.strip()
    run.call("/api/credentials/revoke", "POST", "/api/credentials/revoke", token=third_tok, json={"tokens": [leaked]})
    sink = run.call("/api/admin/audit/sinks", "POST", "/api/admin/audit/sinks", token=admin_tok,
                    json={"kind": "syslog", "url": "tcp://127.0.0.1:9", "namespace": "nobody-here"}).json()
    run.call("/api/admin/audit/dead-letters/redrive", "POST", "/api/admin/audit/dead-letters/redrive",
             token=admin_tok, json={"sinkId": sink["id"]})
    run.call("/api/admin/audit/sinks/{sink_id}", "DELETE", f"/api/admin/audit/sinks/{sink['id']}", token=admin_tok)

    # ---- the browser: account, second factors, tokens, keys --------------------------------------
    with httpx.Client(base_url=server.url, headers={"accept": "text/html"}, timeout=60) as plain:
        run.call("/login", "POST", "/login", client=plain, data={
            "csrf_token": csrf_of(plain.get("/login").text), "login": third, "password": PASSWORD}, expect=(303,))
    web = _web(server, owner)
    run.call("/settings/profile", "POST", "/settings/profile", client=web,
             data={"csrf_token": _csrf(web), "fullname": "Owner Person"})
    run.call("/settings/sudo", "POST", "/settings/sudo", client=web,
             data={"csrf_token": _csrf(web), "password": PASSWORD, "next": "/settings/tokens"})
    run.call("/settings/emails", "POST", "/settings/emails", client=web,
             data={"csrf_token": _csrf(web), "email": f"{owner}.two@example.com"})
    link = link_in(mail.wait_for(f"{owner}.two@example.com", "Verify your e-mail address"))
    assert web.get(link).status_code in (200, 303)
    emails = web.get("/settings/emails").text
    new_id = re.search(r'/settings/emails/(\d+)/primary', emails)
    assert new_id, emails[:800]
    run.call("/settings/emails/{email_id}/{verb}", "POST", f"/settings/emails/{new_id.group(1)}/primary", client=web,
             data={"csrf_token": csrf_of(emails)})
    emails = web.get("/settings/emails").text
    old_id = re.search(r'/settings/emails/(\d+)/primary', emails)
    assert old_id, emails[:800]
    run.call("/settings/emails/{email_id}/{verb}", "POST", f"/settings/emails/{old_id.group(1)}/primary", client=web,
             data={"csrf_token": csrf_of(emails)})
    run.call("/settings/emails/{email_id}/{verb}", "POST", f"/settings/emails/{new_id.group(1)}/delete", client=web,
             data={"csrf_token": _csrf(web)})
    made = run.call("/settings/tokens", "POST", "/settings/tokens", client=web,
                    data={"csrf_token": _csrf(web), "name": "web-made", "role": "read"})
    page = web.get("/settings/tokens").text
    listed_tokens = web.get("/api/settings/tokens", headers={"accept": "application/json"}).json()
    web_made = next(t["id"] for t in listed_tokens if t["displayName"] == "web-made")
    assert made.status_code in (200, 303)
    run.call("/settings/tokens/{token_id}/{verb}", "POST", f"/settings/tokens/{web_made}/rename", client=web,
             data={"csrf_token": csrf_of(page), "name": "renamed"})
    run.call("/settings/tokens/{token_id}/{verb}", "POST", f"/settings/tokens/{web_made}/revoke", client=web,
             data={"csrf_token": csrf_of(page)})
    # the same token routes as JSON, with the browser session (token management is never a token's)
    api = {"sec-fetch-site": "same-origin", "accept": "application/json"}
    created = run.call("/api/settings/tokens", "POST", "/api/settings/tokens", client=web, headers=api,
                       json={"displayName": "json-made", "role": "read"}).json()
    tid = created.get("id") or created.get("token", {}).get("id")
    run.call("/api/settings/tokens/{token_id}", "PUT", f"/api/settings/tokens/{tid}", client=web, headers=api,
             json={"displayName": "json-renamed"})
    run.call("/api/settings/tokens/{token_id}/rotate", "POST", f"/api/settings/tokens/{tid}/rotate", client=web,
             headers=api, json={})
    run.call("/api/settings/tokens/{token_id}", "DELETE", f"/api/settings/tokens/{tid}", client=web, headers=api)
    # signing keys: the JSON API and the form
    key = run.call("/api/settings/ssh-signing-keys", "POST", "/api/settings/ssh-signing-keys", client=web,
                   headers=api, json={"key": _ssh_key(tmp), "title": "laptop"}).json()
    run.call("/api/settings/ssh-signing-keys/{key_id}", "DELETE", f"/api/settings/ssh-signing-keys/{key['id']}",
             client=web, headers=api)
    run.call("/api/settings/signing", "PUT", "/api/settings/signing", client=web, headers=api,
             json={"vigilantMode": True})
    run.call("/settings/keys", "POST", "/settings/keys", client=web,
             data={"csrf_token": _csrf(web), "kind": "ssh", "key": _ssh_key(tmp)})
    keys_page = web.get("/settings/keys").text
    key_path = re.search(r'/settings/keys/(ssh)/(\d+)/delete', keys_page)
    assert key_path, keys_page[:800]
    run.call("/settings/keys/{kind}/{key_id}/delete", "POST", key_path.group(0), client=web,
             data={"csrf_token": csrf_of(keys_page)})
    run.call("/settings/keys/vigilant", "POST", "/settings/keys/vigilant", client=web,
             data={"csrf_token": _csrf(web)})
    # second factors
    import pyotp

    from tests.accounts.fixtures import away_from_totp_step_edge

    page = web.get("/settings/two-factor/totp")
    totp_key = re.search(r'id="totp-secret">([A-Z2-7]+)<', page.text).group(1)  # type: ignore[union-attr]
    away_from_totp_step_edge()
    import time

    enrolled = run.call("/settings/two-factor/totp", "POST", "/settings/two-factor/totp", client=web,
                        data={"csrf_token": csrf_of(page.text), "code": pyotp.TOTP(totp_key).at(time.time() - 30)},
                        expect=(200,))
    codes = re.findall(r"<li><code>([a-z2-7-]+)</code></li>", enrolled.text)
    regenerated = run.call("/settings/two-factor/recovery-codes", "POST", "/settings/two-factor/recovery-codes",
                           client=web, data={"csrf_token": _csrf(web)}, expect=(200, 303))
    codes = re.findall(r"<li><code>([a-z2-7-]+)</code></li>", regenerated.text) or codes
    # sign in again with the second factor, and with a recovery code
    second = httpx.Client(base_url=server.url, headers={"accept": "text/html"}, timeout=60)
    # the password step of a two-factor sign-in signs no one in (no event): the second step does
    r = second.post("/login", data={"csrf_token": csrf_of(second.get("/login").text), "login": owner,
                                    "password": PASSWORD})
    assert r.status_code == 303
    away_from_totp_step_edge()
    run.call("/login/two-factor", "POST", "/login/two-factor", client=second,
             data={"csrf_token": csrf_of(second.get(r.headers["location"]).text),
                   "code": pyotp.TOTP(totp_key).now()})
    third_client = httpx.Client(base_url=server.url, headers={"accept": "text/html"}, timeout=60)
    r = third_client.post("/login", data={"csrf_token": csrf_of(third_client.get("/login").text), "login": owner,
                                          "password": PASSWORD})
    run.call("/login/recovery", "POST", "/login/recovery", client=third_client,
             data={"csrf_token": csrf_of(third_client.get("/login/recovery").text), "code": codes[0]})
    engine = sa.create_engine(f"sqlite:///{server.data_dir / 'bastion.sqlite3'}")
    with engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO webauthn_credentials (user_id, label, credential_id, public_key, sign_count, "
                             "transports, created_at) SELECT id, 'old key', :c, :k, 0, '[]', :t FROM users "
                             "WHERE name = :n"), {"c": secrets.token_urlsafe(16), "k": b"\x00" * 32,
                                                  "t": "2026-01-01 00:00:00", "n": owner})
        cred = conn.execute(sa.text("SELECT w.id FROM webauthn_credentials w JOIN users u ON u.id = w.user_id "
                                    "WHERE u.name = :n"), {"n": owner}).scalar()
    engine.dispose()
    run.call("/settings/two-factor/webauthn/{credential_id}/delete", "POST",
             f"/settings/two-factor/webauthn/{cred}/delete", client=web,
             data={"csrf_token": csrf_of(web.get("/settings/two-factor").text)})
    sessions_page = web.get("/settings/sessions").text
    # another session of this user (not this browser's): the rows without the "this browser" badge
    sid = [m.group(1) for m in re.finditer(r'<tr data-session="([^"]+)">\s*<td>(?:(?!this browser).)*?</td>',
                                           sessions_page, re.S)]
    assert sid, sessions_page[:800]
    run.call("/settings/sessions/{session_id}/revoke", "POST", f"/settings/sessions/{sid[0]}/revoke", client=web,
             data={"csrf_token": csrf_of(sessions_page)})
    run.call("/settings/sessions/revoke-others", "POST", "/settings/sessions/revoke-others", client=web,
             data={"csrf_token": _csrf(web)})
    run.call("/settings/two-factor/totp/delete", "POST", "/settings/two-factor/totp/delete", client=web,
             data={"csrf_token": csrf_of(web.get("/settings/two-factor").text)})
    run.call("/settings/password", "POST", "/settings/password", client=web,
             data={"csrf_token": _csrf(web), "current_password": PASSWORD, "password": PASSWORD + "-x",
                   "password_confirm": PASSWORD + "-x"})
    for c in (second, third_client):
        c.close()

    # ---- orgs (web forms) ------------------------------------------------------------------------
    worg = f"w{secrets.token_hex(3)}"
    run.call("/organizations/new", "POST", "/organizations/new", client=web,
             data={"csrf_token": _csrf(web), "name": worg})
    run.call("/api/organizations/{name}/members", "POST", f"/api/organizations/{worg}/members", token=tok,
             json={"username": other, "role": "read"})
    base = f"/organizations/{worg}/settings"
    csrf = _csrf(web)
    run.call("/organizations/{name}/settings/members/{username}/{verb}", "POST", f"{base}/members/{other}/role",
             client=web, data={"csrf_token": csrf, "role": "write"})
    run.call("/organizations/{name}/settings/default-role", "POST", f"{base}/default-role", client=web,
             data={"csrf_token": csrf, "role": "write"})
    run.call("/organizations/{name}/settings/security", "POST", f"{base}/security", client=web,
             data={"csrf_token": csrf, "repo_visibility": "private", "hide_members": "on",
                   "audit_retention_days": "30"})
    run.call("/organizations/{name}/settings/resource-groups", "POST", f"{base}/resource-groups", client=web,
             data={"csrf_token": csrf, "name": "wteam"})
    groups = httpx.get(f"{server.url}/api/organizations/{worg}/resource-groups",
                       headers={"authorization": f"Bearer {tok}"}).json()
    wgid = groups[0]["id"]
    run.call("/organizations/{name}/settings/resource-groups/{group_id}/{verb}", "POST",
             f"{base}/resource-groups/{wgid}/rename", client=web, data={"csrf_token": csrf, "name": "wteam2"})
    run.call("/api/repos/create", "POST", "/api/repos/create", token=tok, json={"name": "wrepo", "organization": worg})
    run.call("/organizations/{name}/settings/repo-group", "POST", f"{base}/repo-group", client=web,
             data={"csrf_token": csrf, "repo": "model:wrepo", "group": wgid})
    run.call("/organizations/{name}/settings/invitations", "POST", f"{base}/invitations", client=web,
             data={"csrf_token": csrf, "email": f"{fourth}@example.com", "role": "read"})
    secret = _invitation(mail, fourth)
    fourth_web = _web(server, fourth)
    run.call("/organizations/invitations/{secret}", "POST", f"/organizations/invitations/{secret}",
             client=fourth_web, data={"csrf_token": _csrf(fourth_web), "answer": "decline"})
    fourth_web.close()
    run.call("/api/repos/delete", "DELETE", "/api/repos/delete", token=tok, json={"name": "wrepo", "organization": worg})
    run.call("/organizations/{name}/settings/tokens/policy", "POST", f"{base}/tokens/policy", client=web,
             data={"csrf_token": csrf, "policy": "approval"})
    fg2 = server.admin("create-token", other, "--name", "fg2", "--role", "fineGrained", "--scope",
                     f"org:{worg}=repo.content.read").stdout.strip()
    assert fg2
    listed = web.get(f"/api/organizations/{worg}/settings/tokens", headers={"accept": "application/json"}).json()
    fg2_id = next(t["id"] for t in listed if t["user"] == other)
    run.call("/organizations/{name}/settings/tokens/{token_id}/{verb}", "POST", f"{base}/tokens/{fg2_id}/revoke",
             client=web, data={"csrf_token": csrf})
    other_web = _web(server, other)
    run.call("/organizations/{name}/leave", "POST", f"/organizations/{worg}/leave", client=other_web,
             data={"csrf_token": _csrf(other_web)})
    other_web.close()
    run.call("/organizations/{name}/settings/resource-groups/{group_id}/{verb}", "POST",
             f"{base}/resource-groups/{wgid}/delete", client=web, data={"csrf_token": csrf})
    run.call("/organizations/{name}/settings/delete", "POST", f"{base}/delete", client=web,
             data={"csrf_token": csrf, "confirm": worg})
    run.call("/logout", "POST", "/logout", client=web, data={"csrf_token": _csrf(web)})
    web.close()
    run.call("/api/repos/delete", "DELETE", "/api/repos/delete", token=tok, json={"name": "m2"})
    return run


def _invitation(mail: MailSink, invitee: str) -> str:
    """The secret in the invitation mailed to `invitee`."""
    link = link_in(mail.wait_for(f"{invitee}@example.com", "invited you"))
    found = re.search(r"/organizations/invitations/([^/?#\s]+)", link)
    assert found, link
    return found.group(1)


@pytest.fixture(scope="module")
def driven(web_server: BastionServer, mail_sink: MailSink,  # noqa: F811
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Run, dict]]:
    server = web_server
    run = _drive(server, mail_sink, tmp_path_factory.mktemp("completeness"))
    engine = sa.create_engine(f"sqlite:///{server.data_dir / 'bastion.sqlite3'}")
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT request_id, action FROM audit_events WHERE request_id IN :ids")
                            .bindparams(sa.bindparam("ids", expanding=True)),
                            {"ids": [rid for _, _, rid in run.calls]}).all()
    engine.dispose()
    by_request: dict[str, list[str]] = {}
    for rid, action in rows:
        by_request.setdefault(rid, []).append(action)
    yield run, by_request


def _state_changing_routes() -> set[tuple[str, str]]:
    import tempfile

    from bastion.app import create_app
    from bastion.config import Settings
    from tests.authz.test_policy import _api_routes

    app = create_app(Settings(data_dir=Path(tempfile.mkdtemp(prefix="bastion-routes-")), scanners=[]))
    return {(m, r.path) for r in _api_routes(app.routes) for m in r.methods - {"GET", "HEAD", "OPTIONS"}}


def test_every_state_changing_route_is_classified() -> None:
    routes = _state_changing_routes()
    assert sorted(routes - set(ROUTES)) == [], "classify these routes in ROUTES"
    assert sorted(set(ROUTES) - routes) == [], "these routes are gone: remove them from ROUTES"


def test_every_driven_route_writes_an_event(driven: tuple[Run, dict]) -> None:
    run, by_request = driven
    silent = sorted({(m, route) for m, route, rid in run.calls if not by_request.get(rid)})
    assert silent == [], f"these requests wrote no audit event: {silent}"
    driven_routes = {(m, route) for m, route, _ in run.calls}
    missing = sorted(k for k, v in ROUTES.items() if isinstance(v, Driven) and k not in driven_routes)
    assert missing == [], f"routes marked driven that no request here drove: {missing}"


def test_every_audit_action_is_written_by_its_route_or_its_code_path(driven: tuple[Run, dict]) -> None:
    _run, by_request = driven
    seen = {a for actions in by_request.values() for a in actions}
    names = {str(a) for a in AuditAction}
    missing = sorted(names - seen - set(NOT_BY_ROUTE))
    assert missing == [], f"no driven request wrote these actions, and NOT_BY_ROUTE does not list them: {missing}"
    assert sorted(set(NOT_BY_ROUTE) - names) == []


def test_what_is_proven_elsewhere_is_asserted_there() -> None:
    """Each referenced test file names the event it proves (a renamed or deleted test fails here)."""
    refs = [(v.test_file, v.action) for v in ROUTES.values() if isinstance(v, Elsewhere)]
    refs += [(where, action) for action, (_why, where) in NOT_BY_ROUTE.items()]
    unproven = sorted({(f, a) for f, a in refs if a not in (ROOT / f).read_text()})
    assert unproven == [], unproven


def test_actions_no_route_writes_are_written_by_their_code_path(web_server: BastionServer) -> None:  # noqa: F811
    """The ones this file exercises itself: the CLI commands and the clamd supervisor's audit hook."""
    from bastion.audit import chain
    from bastion.config import Settings
    from bastion.db import make_engine
    from bastion.scanning.clamd import audit_to

    server = web_server
    url = f"sqlite:///{server.data_dir / 'bastion.sqlite3'}"
    engine = make_engine(url)
    chain.install(engine, Settings(data_dir=server.data_dir).resolved_audit_key_file)  # as `bastion serve` does
    engine.dispose()
    before = _max_id(server)
    server.cli("admin", "fsck")
    server.cli("audit", "rotate-key")
    audit_to(url)("instance.signatures_update", {"databaseVersion": 27000})
    actions = _actions_since(server, before)
    for action in ("instance.storage_fsck", "instance.audit_log.key_rotate", "instance.signatures_update"):
        assert action in actions, action


def test_the_email_verification_link_is_audited(driven: tuple[Run, dict], web_server: BastionServer) -> None:  # noqa: F811
    assert "user.email_verify" in _actions_since(web_server, 0)


def _max_id(server: BastionServer) -> int:
    engine = sa.create_engine(f"sqlite:///{server.data_dir / 'bastion.sqlite3'}")
    with engine.connect() as conn:
        value = conn.execute(sa.text("SELECT max(id) FROM audit_events")).scalar() or 0
    engine.dispose()
    return int(value)


def _actions_since(server: BastionServer, after: int) -> set[str]:
    engine = sa.create_engine(f"sqlite:///{server.data_dir / 'bastion.sqlite3'}")
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT action FROM audit_events WHERE id > :a"), {"a": after}).all()
    engine.dispose()
    return {r.action for r in rows}
