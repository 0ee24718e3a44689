"""The decision: authorize(principal, permission, resource) -> Decision.

Pure: it reads only the principal and the resource handed to it (loaded by the caller).
`require()` turns a denial into the error the client must see; a private repo the caller may
not read is reported exactly like a missing one.

Over 500 lines on purpose: the whole policy (method table, users' rights, token restrictions, listing
clause) is one file so it is read, reviewed and tested as one decision.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, Protocol

from sqlalchemy import ColumnElement, and_, false, not_, or_, true

from bastion.audit import aggregate
from bastion.audit.actions import AuditAction
from bastion.authz.permissions import Permission
from bastion.errors import (
    AuthenticationRequired,
    BadRequest,
    Forbidden,
    GatedRepo,
    ReauthenticationRequired,
    RepoNotFound,
    SSORequired,
)
from bastion.timing import timed

WRITE_PERMISSIONS = frozenset({Permission.REPO_WRITE, Permission.REPO_CREATE, Permission.REPO_MANAGE,
                               Permission.REPO_PROTECTION_LOWER, Permission.REPO_DELETE, Permission.USER_KEYS_WRITE})

# Granted only by a signed, short-lived claim (never by an account token, so a leaked hub token
# cannot skip the repo check made when the claim was minted).
CAPABILITY_PERMISSIONS = frozenset({Permission.LFS_OBJECT_UPLOAD, Permission.XET_CAS_READ, Permission.XET_CAS_WRITE,
                                    Permission.XET_XORB_FETCH})

# Sensitive account changes (sudo mode): who controls an account's e-mails, signing keys, second factors
# and tokens controls its identity (password resets, "Verified" commits, sign-in), so each needs a
# password (or second factor) proven within `sudo_minutes` in this browser session: a session left open
# or stolen is not enough. Declaring a permission here is all a new route needs (SSO/SCIM settings too);
# authorize() refuses it without Principal.recently_authenticated, and the web pages send the browser to
# /settings/sudo. Every one of them is browser-only too (below): a token cannot re-authenticate.
SUDO_PERMISSIONS = frozenset({Permission.ACCOUNT_SECURITY, Permission.ACCOUNT_EMAILS_WRITE, Permission.TOKEN_MANAGE,
                              Permission.USER_KEYS_WRITE, Permission.ACCOUNT_DELETE, Permission.INSTANCE_USERS_WRITE,
                              Permission.ORG_SCIM_WRITE, Permission.INSTANCE_SCIM_WRITE})
# Instance administration from a browser session: the same recent confirmation (a token's holder chose to mint an
# administrator's token; a browser tab left open did not choose anything). Tokens are not asked: they cannot
# re-authenticate, and these also have API routes for automation.
SESSION_SUDO_PERMISSIONS = frozenset({Permission.INSTANCE_SSO_WRITE})
SUDO_REQUIRED = ("This change needs a recent password confirmation (sudo mode): confirm your password at "
                 "/settings/sudo, then try again.")

# Account security is changed only in a browser, where a password (and second factor) was just shown:
# a leaked token must not be able to change the password, remove 2FA or add a signing key or an e-mail
# address (the Hub manages keys only in its settings pages, never through its API).
BROWSER_ONLY_PERMISSIONS = frozenset({Permission.ACCOUNT_MANAGE, Permission.TOKEN_READ, Permission.ORG_DELETE,
                                      *SUDO_PERMISSIONS})
# Organization management from the web UI: every one of these pages posts a CSRF-protected form.
ORG_PERMISSIONS = frozenset({Permission.ORG_CREATE, Permission.ORG_READ, Permission.ORG_WRITE, Permission.ORG_DELETE,
                             Permission.ORG_MEMBERS_READ, Permission.ORG_MEMBERS_WRITE, Permission.ORG_MEMBERSHIP_SELF,
                             Permission.RESOURCE_GROUP_WRITE, Permission.REPO_RESOURCE_GROUP})

# The Community tab (discussions and pull requests, `_community_may`): what anyone who reads a repo may do
# there, and what depends on who wrote the discussion or comment acted on (a DiscussionRef).
COMMUNITY_PERMISSIONS = frozenset({Permission.REPO_CONTENT_UPLOAD, Permission.REPO_DISCUSSION_CREATE,
                                   Permission.REPO_DISCUSSION_COMMENT, Permission.REPO_DISCUSSION_COMMENT_EDIT,
                                   Permission.REPO_DISCUSSION_MODERATE, Permission.REPO_PR_WRITE,
                                   Permission.REPO_PR_MERGE})
# The Community pages post CSRF-checked forms (bastion.web.community_views): comment, close, reopen, merge.
COMMUNITY_FORM_PERMISSIONS = frozenset({Permission.REPO_DISCUSSION_CREATE, Permission.REPO_DISCUSSION_COMMENT,
                                        Permission.REPO_DISCUSSION_MODERATE, Permission.REPO_PR_MERGE})

# Which authentication method may grant which permissions (warehouse's security_policy table).
# A capability URL grants only what it was minted for; an anonymous caller only reads.
METHOD_GRANTS: dict[str, frozenset[Permission]] = {
    "anonymous": frozenset({Permission.PUBLIC, Permission.REPO_LIST, Permission.REPO_METADATA_READ,
                            Permission.REPO_READ, Permission.ORG_MEMBERS_READ}),
    # SCIM_PROVISION only ever by a SCIM token ("scim"), which grants nothing else: an IdP's token is no
    # account's credential, and no account's token or browser session may act as the IdP.
    "token": frozenset(Permission) - CAPABILITY_PERMISSIONS - BROWSER_ONLY_PERMISSIONS - {Permission.SCIM_PROVISION},
    "scim": frozenset({Permission.SCIM_PROVISION}),
    # A browser session reads what its user may read and manages its own account; repo writes and
    # admin stay with tokens until the UI has CSRF-protected forms for them.
    # Own signing keys too (in sudo mode): the keys settings page posts CSRF-checked forms
    # (bastion.web.key_views), and so do the gated-access forms (asking for access; reviewing requests:
    # bastion.web.gating_views). Instance admins read the instance's health page (read only, no forms) and use
    # the instance SSO page (CSRF-checked forms).
    # The Community pages' forms too (bastion.web.community_views): open a discussion, comment, close, reopen, merge.
    "session": frozenset({Permission.PUBLIC, Permission.USER_READ, Permission.REPO_LIST, Permission.REPO_METADATA_READ,
                          Permission.REPO_READ, Permission.REPO_ACCESS_REQUEST, Permission.REPO_ACCESS_READ,
                          Permission.REPO_ACCESS_WRITE, Permission.INSTANCE_STATUS_READ,
                          Permission.INSTANCE_SSO_WRITE, *BROWSER_ONLY_PERMISSIONS,
                          *ORG_PERMISSIONS, *COMMUNITY_FORM_PERMISSIONS, Permission.ORG_AUDIT_LOG_READ,
                          Permission.INSTANCE_AUDIT_LOG_READ, Permission.USER_SECURITY_LOG_READ,
                          Permission.USER_DATA_EXPORT}),
    "capability": CAPABILITY_PERMISSIONS,
}


@dataclass(frozen=True)
class Principal:
    method: str  # anonymous | token | session | capability | scim
    user_id: int | None = None
    username: str | None = None
    is_admin: bool = False
    token_id: int | None = None
    token_role: str | None = None  # read | write
    capability: dict[str, Any] = field(default_factory=dict)
    session_id: int | None = None
    recently_authenticated: bool = False  # session: password or second factor proven within sudo_minutes
    # Token restrictions (bastion.tokens.restrictions), re-applied on every decision: a token can only
    # narrow what its owner may do right now, never widen it.
    restrictions: tuple[Restriction, ...] = ()
    # A SCIM token (method "scim"): its id and the scope it was issued for ("instance" or "org:<id>").
    scim_token_id: int | None = None
    scim_scope: str | None = None

    @classmethod
    def anonymous(cls) -> Principal:
        return cls(method="anonymous")

    @property
    def authenticated(self) -> bool:
        return self.user_id is not None


# Organization roles, least to most privileged (the Hub's enum; `no_access`: member only through groups).
ORG_ROLES = ("no_access", "read", "contributor", "write", "admin")
READ_ROLES = frozenset({"read", "contributor", "write", "admin"})
WRITE_ROLES = frozenset({"write", "admin"})
CREATE_ROLES = frozenset({"contributor", "write", "admin"})
TOKEN_POLICIES = ("allow", "fine_grained", "approval")
REPO_VISIBILITY_POLICIES = ("public", "private", "private_only")
# What secret push protection refuses, loosest first (scanning.protection): secrets verified live or by
# their checksum; also high-confidence formats (distinctive provider tokens, AWS id + secret pairs);
# every finding of the secret scanner.
SECRET_PUSH_PROTECTION_MODES = ("verified-only", "high-confidence", "all")
DEFAULT_SECRET_PUSH_PROTECTION_MODE = "high-confidence"


def stricter_secret_mode(a: str, b: str) -> str:
    """The stricter of two secret push protection modes."""
    return max(a, b, key=SECRET_PUSH_PROTECTION_MODES.index)


def check_secret_mode(value: object, name: str = "secretPushProtectionMode") -> str:
    """`value` as a secret push protection mode, or BadRequest naming the valid ones."""
    if value not in SECRET_PUSH_PROTECTION_MODES:
        raise BadRequest(f"Invalid '{name}' {value!r}: expected one of {', '.join(SECRET_PUSH_PROTECTION_MODES)}")
    return str(value)

# The Hub's texts for tokens its organization's policy refuses (clients show them verbatim).
TOKEN_APPROVAL_REQUIRED = ("Due to the organization token policy, your token needs to be approved by the organization "
                           "before you can access this resource.")
TOKEN_REVOKED_BY_ORG = ("Your token has been revoked by the organization administrator, you can no longer access "
                        "organization resources. Please contact them for more information.")
TOKEN_FINE_GRAINED_REQUIRED = ("Due to the organization token policy, only fine-grained tokens can access this "
                               "resource. Create a fine-grained token scoped to the organization.")


@dataclass(frozen=True)
class OrgFacts:
    """What decisions about an organization's resources need, loaded by the caller (orgs.service.org_facts)."""

    id: int
    name: str
    roles: Mapping[int, str]  # user id → org role, for every member
    two_factor: frozenset[int] = frozenset()  # members with a second factor enrolled
    require_2fa: bool = False
    token_policy: str = "allow"  # allow | fine_grained | approval
    repo_visibility: str = "public"  # public | private | private_only
    hide_members: bool = False
    delegate_protection_changes: bool = False  # repo managers (not only org admins) may lower protections
    # SSO (bastion.sso through orgs.service.sso_gate): while enforced, membership gives rights only to members
    # in `sso_ok` (a live SSO session for this org, or an exempt external collaborator).
    sso_required: bool = False
    sso_ok: frozenset[int] = frozenset()


@dataclass(frozen=True)
class GroupFacts:
    """A resource group and its members' group roles."""

    id: int
    org_id: int
    name: str
    roles: Mapping[int, str]  # user id → group role

    @property
    def public_id(self) -> str:
        return f"{self.id:024x}"  # the Hub's resource-group ids are 24 hex digits


@dataclass(frozen=True)
class GateFacts:
    """A gated repo's gate (repos.service.repo_ref loads it): its mode and the caller's access request.

    `statuses` holds the request status of the users it was loaded for (the caller), nobody else: a
    user missing from it has no request, so a ref loaded without the caller fails closed.
    """

    mode: str  # auto | manual
    org_members_gated: bool = False  # org repos: members must ask too (the Hub's "Also gate access for members")
    statuses: Mapping[int, str] = field(default_factory=dict)  # user id → pending | accepted | rejected


@dataclass(frozen=True)
class RepoRef:
    id: int
    namespace: str
    owner_user_id: int | None
    private: bool
    type: str = "model"
    name: str = ""
    org: OrgFacts | None = None  # set when an organization owns the namespace
    group: GroupFacts | None = None  # the resource group the repo is in (org repos only)
    creator_user_id: int | None = None  # who created it: contributors write only their own repos
    gate: GateFacts | None = None  # set when the repo is gated


@dataclass(frozen=True)
class NamespaceRef:
    name: str
    owner_user_id: int | None
    org: OrgFacts | None = None
    group: GroupFacts | None = None  # for REPO_CREATE: the resource group the new repo goes into
    # For REPO_CREATE (and moves): the repo that already has the requested name there, if any. Someone who
    # cannot read it may not learn of it: they are refused the name, not told it is taken (_name_free).
    taken_by: RepoRef | None = None


@dataclass(frozen=True)
class GroupRef:
    """A resource group as the target of RESOURCE_GROUP_WRITE; group None: creating one in `org`."""

    org: OrgFacts
    group: GroupFacts | None = None


@dataclass(frozen=True)
class RepoGroupMove:
    """Moving `repo` to resource group `target` (None: the organization root)."""

    repo: RepoRef
    target: GroupFacts | None


@dataclass(frozen=True)
class RepoTransfer:
    """Moving `repo` to the namespace `target` under a new name (a rename when its owner stays the same)."""

    repo: RepoRef
    target: NamespaceRef


@dataclass(frozen=True)
class DiscussionRef:
    """A discussion or pull request of `repo` as the target of the permissions that depend on who wrote what
    is acted on: `author_user_id` wrote the discussion (status, title, pushes to its pull request) or the
    comment (edit, hide); None when nobody is (a deleted account, a ref no pull request owns).
    `open`: a pull request still takes commits from its author (open or draft)."""

    repo: RepoRef
    author_user_id: int | None
    open: bool = True


@dataclass(frozen=True)
class ScimScope:
    """The SCIM endpoint a request addresses: the instance's (`org_id` None) or one organization's. Only the
    scope's key decides (a SCIM token works at its own endpoint): no member facts are loaded for it, which for
    an org of 20,000 members cost ~90 ms on every SCIM request."""

    org_id: int | None = None

    @property
    def key(self) -> str:
        return "instance" if self.org_id is None else f"org:{self.org_id}"


@dataclass(frozen=True)
class BoundCapability:
    """A request made with a capability bound to the credential that obtained it (Xet CAS tokens and
    the xorb fetch URLs they lead to): what the request asks for, plus the holder and the repo the
    capability names, both as they are now (loaded by the caller for this request)."""

    kind: str  # xet-cas | xet-fetch | lfs-upload
    claims: dict[str, Any]  # what this request asks for: repo_id; xorb and range for a fetch
    holder: Principal  # who obtained the capability: bastion.api.auth.bound_principal()
    repo: RepoRef | None  # the repo it was minted for; None once that repo is gone


@dataclass(frozen=True)
class Decision:
    allowed: bool
    reason: str = ""
    # A denial by an organization policy (2FA, token policy) given to someone who may otherwise see the
    # resource: its reason is shown as is, even for a private repo (which is otherwise a plain 404).
    disclose: bool = False
    # A gated repo's contents refused (errors.GatedRepo states): anonymous | none | pending | rejected | token.
    gated: str = ""
    # A sudo permission refused for want of a recent re-authentication (errors.ReauthenticationRequired).
    reauthenticate: bool = False
    # Refused for want of a live SSO session of this org (errors.SSORequired: browsers go to its SSO login).
    sso_org: str = ""

    def __bool__(self) -> bool:
        return self.allowed


ALLOW = Decision(True)


class Restriction(Protocol):
    """A token restriction: verify() may only deny; sql_filter() narrows listings the same way."""

    # Whether sql_filter() narrows public repos too (a disabled token) or only private ones.
    sql_filter_public: bool

    def verify(self, perm: Permission, resource: object) -> Decision: ...

    def sql_filter(self, cols: RepoColumns) -> ColumnElement[bool] | None: ...

    def to_json(self) -> dict[str, Any]: ...


@dataclass(frozen=True)
class RepoColumns:
    """The repo table's columns the listing filter needs (passed in: authz imports no models)."""

    private: Any
    owner_user_id: Any
    type: Any
    namespace_lower: Any
    name_lower: Any
    # Organizations (None where the caller has none, e.g. a test table). Role lookups are callables
    # because they depend on the principal: user id → correlated subquery of that user's role ('' if none).
    owner_org_id: Any = None
    resource_group_id: Any = None
    org_require_2fa: Any = None
    org_token_policy: Any = None
    org_role: Callable[[int], Any] | None = None
    group_role: Callable[[int], Any] | None = None
    has_2fa: Callable[[int], Any] | None = None
    sso_ok: Callable[[int], Any] | None = None  # true where the org does not enforce SSO or the user passes it


def _owns(principal: Principal, owner_user_id: int | None) -> bool:
    return principal.user_id is not None and principal.user_id == owner_user_id


def authorize(principal: Principal, perm: Permission, resource: object = None) -> Decision:
    if perm not in METHOD_GRANTS.get(principal.method, frozenset()):
        return Decision(False, f"{principal.method} authentication cannot grant {perm}")
    if perm is Permission.PUBLIC:
        return ALLOW
    if perm in SUDO_PERMISSIONS or (perm in SESSION_SUDO_PERMISSIONS and principal.method == "session"):
        if not principal.authenticated:
            return Decision(False, "sign-in required")
        if not principal.recently_authenticated:
            return Decision(False, SUDO_REQUIRED, reauthenticate=True)
    if perm is Permission.LFS_OBJECT_UPLOAD:
        # An LFS upload URL is bound like a Xet token: it uploads only while whoever obtained it may still
        # upload to that repo (a revoked token, a signed-out session, a removed member: refused at once).
        if not isinstance(resource, BoundCapability) or resource.kind != "lfs-upload":
            return Decision(False, "not an upload capability")
        for key in ("repo_id", "oid", "size"):
            if principal.capability.get(key) != resource.claims.get(key):
                return Decision(False, f"upload URL was issued for another {key}")
        return _holder_may(principal, Permission.REPO_CONTENT_UPLOAD, resource)
    if perm in (Permission.XET_CAS_READ, Permission.XET_CAS_WRITE):
        return _authorize_xet_cas(principal, perm, resource)
    if perm is Permission.XET_XORB_FETCH:
        if not isinstance(resource, BoundCapability) or resource.kind != "xet-fetch":
            return Decision(False, "not a Xet fetch URL")
        for key in ("xorb", "range"):
            if principal.capability.get(key) != resource.claims.get(key):
                return Decision(False, f"fetch URL was signed for another {key}")
        return _holder_may(principal, Permission.REPO_READ, resource)
    if perm is Permission.SCIM_PROVISION:
        # A SCIM token works on the SCIM endpoint of the scope it was issued for, and nowhere else.
        if not isinstance(resource, ScimScope) or principal.scim_scope is None:
            return Decision(False, "not a SCIM request")
        if principal.scim_scope != resource.key:
            return Decision(False, "this SCIM token was issued for another SCIM endpoint")
        return ALLOW
    if principal.method == "token" and principal.token_role != "write" and not principal.restrictions:
        return Decision(False, "token without restrictions: refusing to guess its rights")  # fail closed
    if isinstance(resource, RepoTransfer):
        return _transfer_may(principal, perm, resource)  # its two ends, each through every step here
    decision = _user_may(principal, perm, resource)
    if not decision:
        return decision
    # A token is scoped to repos: what it may do in a repo's discussions is decided on the repo.
    restricted = resource.repo if isinstance(resource, DiscussionRef) else resource
    for restriction in principal.restrictions:
        decision = restriction.verify(perm, restricted)
        if not decision:
            return decision
    return ALLOW


def _user_may(principal: Principal, perm: Permission, resource: object) -> Decision:
    """What the signed-in user (or anonymous caller) may do, before any token restriction."""
    if perm is Permission.USER_READ:
        return ALLOW if principal.authenticated else Decision(False, "sign-in required")
    if perm in (Permission.USER_KEYS_WRITE, Permission.ACCOUNT_EMAILS_WRITE):
        # Only the caller's own keys and addresses: routes act on principal.user_id, never on a named user.
        return ALLOW if principal.authenticated else Decision(False, "sign-in required")
    if perm is Permission.REPO_LIST:
        return ALLOW
    if perm is Permission.ACCOUNT_MANAGE:
        return ALLOW if principal.authenticated else Decision(False, "sign-in required")
    if perm is Permission.TOKEN_READ:
        return ALLOW if principal.authenticated else Decision(False, "sign-in required")
    if perm in (Permission.ACCOUNT_SECURITY, Permission.TOKEN_MANAGE):
        return ALLOW if principal.authenticated else Decision(False, "sign-in required")  # sudo: authorize()
    if perm is Permission.USER_SECURITY_LOG_READ:  # one's own: routes read principal.user_id's log only
        return ALLOW if principal.authenticated else Decision(False, "sign-in required")
    if perm in (Permission.USER_DATA_EXPORT, Permission.ACCOUNT_DELETE):  # one's own: routes act on principal.user_id
        return ALLOW if principal.authenticated else Decision(False, "sign-in required")  # sudo: authorize()
    if perm is Permission.INSTANCE_USERS_WRITE:
        return ALLOW if principal.is_admin else Decision(False, "instance administrators only")  # sudo: authorize()
    if perm in (Permission.ADMIN, Permission.INSTANCE_STATUS_READ, Permission.INSTANCE_AUDIT_LOG_READ,
                Permission.INSTANCE_SSO_WRITE, Permission.INSTANCE_SCIM_WRITE):
        return ALLOW if principal.is_admin else Decision(False, "instance administrators only")
    if perm in (Permission.ORG_CREATE, Permission.ORG_MEMBERSHIP_SELF):
        return ALLOW if principal.authenticated else Decision(False, "sign-in required")
    if perm is Permission.REPO_CREATE:
        if not isinstance(resource, NamespaceRef):
            return Decision(False, "no namespace")
        if resource.org is not None:
            decision = _org_may_create(principal, resource.org, resource.group)
        elif _owns(principal, resource.owner_user_id) or principal.is_admin:
            decision = ALLOW
        else:
            decision = Decision(False, f"you cannot create repositories in {resource.name!r}")
        return _name_free(principal, resource) if decision else decision
    if perm in COMMUNITY_PERMISSIONS:
        return _community_may(principal, perm, resource)
    if isinstance(resource, RepoRef) and perm is Permission.REPO_READ:
        seen = _user_may(principal, Permission.REPO_METADATA_READ, resource)
        return _through_gate(principal, resource) if seen else seen
    if isinstance(resource, RepoRef) and perm is Permission.REPO_ACCESS_REQUEST:
        if not principal.authenticated:
            return Decision(False, "sign in to ask for access")
        return _user_may(principal, Permission.REPO_METADATA_READ, resource)
    if isinstance(resource, RepoRef) and resource.org is not None:
        return _org_repo_may(principal, perm, resource, resource.org)
    if isinstance(resource, OrgFacts) and perm in (Permission.ORG_READ, Permission.ORG_WRITE, Permission.ORG_DELETE,
                                                   Permission.ORG_MEMBERS_READ, Permission.ORG_MEMBERS_WRITE,
                                                   Permission.ORG_AUDIT_LOG_READ, Permission.ORG_SCIM_WRITE):
        return _org_may(principal, perm, resource)
    if isinstance(resource, GroupRef) and perm is Permission.RESOURCE_GROUP_WRITE:
        return _group_may(principal, resource)
    if isinstance(resource, RepoGroupMove) and perm is Permission.REPO_RESOURCE_GROUP:
        return _move_may(principal, resource)
    if isinstance(resource, RepoRef):
        can_read = not resource.private or _owns(principal, resource.owner_user_id) or principal.is_admin
        if perm is Permission.REPO_METADATA_READ:
            return ALLOW if can_read else Decision(False, "private repository")
        if not can_read:
            return Decision(False, "private repository")
        if _owns(principal, resource.owner_user_id) or principal.is_admin:
            return ALLOW
        return Decision(False, "you do not have write access to this repository")
    return Decision(False, f"{perm} does not apply to {type(resource).__name__}")


# ---- organizations ----------------------------------------------------------------------------
# How org roles and resource-group roles combine (docs/architecture.md, "Organizations"): org admins
# have every right in the org; at the org root a member's org role applies; inside a resource group
# only the member's group role applies (the org role gives nothing there, so a private group repo is
# invisible to non-members of the group). Public repos stay readable by everyone. When the org requires
# 2FA, every right that comes from membership needs an enrolled second factor.

def _org_role(principal: Principal, org: OrgFacts) -> str | None:
    return org.roles.get(principal.user_id) if principal.user_id is not None else None


def _repo_role(principal: Principal, repo: RepoRef, org: OrgFacts) -> str | None:
    """The member's effective role on an org repo, None when membership gives nothing there."""
    role = _org_role(principal, org)
    if role is None:
        return None
    if role == "admin":
        return "admin"
    if repo.group is None:
        return role if role in READ_ROLES else None
    group_role = repo.group.roles.get(principal.user_id)  # type: ignore[arg-type]
    return group_role if group_role in READ_ROLES else None


def _member_conditions(principal: Principal, org: OrgFacts) -> Decision:
    """What every right that comes from membership needs besides the role: the org's 2FA requirement and,
    while it enforces SSO, a live SSO session of the member (external collaborators are exempt)."""
    if org.require_2fa and principal.user_id not in org.two_factor:
        return Decision(False, f"The organization {org.name!r} requires two-factor authentication. Enable it in "
                               "your account settings (Settings → Two-factor authentication) to access its "
                               "resources.", disclose=True)
    if org.sso_required and principal.user_id not in org.sso_ok:
        return Decision(False, sso_required_message(org.name), disclose=True, sso_org=org.name)
    return ALLOW


def sso_required_message(org: str) -> str:
    return (f"The organization {org!r} requires single sign-on (SSO): sign in with its identity provider at "
            f"/organizations/{org}/sso/login to access its resources.")


def _may_write(principal: Principal, role: str | None, creator_user_id: int | None) -> bool:
    return role in WRITE_ROLES or (role == "contributor" and creator_user_id is not None
                                   and creator_user_id == principal.user_id)


def _org_repo_may(principal: Principal, perm: Permission, repo: RepoRef, org: OrgFacts) -> Decision:
    if principal.is_admin:
        return ALLOW
    if perm is Permission.REPO_PROTECTION_LOWER:
        return _org_protection_lower(principal, repo, org)
    role = _repo_role(principal, repo, org)
    if perm is Permission.REPO_METADATA_READ:
        if not repo.private:
            return ALLOW
        return _member_conditions(principal, org) if role is not None else Decision(False, "private repository")
    if role is None:
        return Decision(False, "private repository" if repo.private else
                        "you do not have write access to this repository")
    if not _may_write(principal, role, repo.creator_user_id):
        where = f"resource group {repo.group.name!r}" if repo.group else f"organization {org.name!r}"
        return Decision(False, f"your role in the {where} ({role}) does not allow this")
    return _member_conditions(principal, org)


def _org_protection_lower(principal: Principal, repo: RepoRef, org: OrgFacts) -> Decision:
    """Lowering an org repo's protections is the org's decision: its admins, or the repo's managers where the
    org delegated it (`delegate_protection_changes`). Raising them is REPO_MANAGE."""
    decision = _org_repo_may(principal, Permission.REPO_MANAGE, repo, org)
    if not decision:
        return decision
    if _org_role(principal, org) == "admin" or org.delegate_protection_changes:
        return ALLOW
    return Decision(False, f"only administrators of the organization {org.name!r} can lower this repository's "
                           "protections (switch off or narrow secret push protection, block-unsafe, signed commits "
                           "or protected refs, bypass secret push protection, super-squash a signed branch)",
                    disclose=True)


# ---- the Community tab ----------------------------------------------------------------------
# Anyone signed in who reads a repo may open discussions and pull requests there, comment, and upload
# the contents of their pull request's commits; the author of a discussion closes, reopens and renames
# it and pushes to its pull request while open; a comment's author edits it; the repo's writers do all
# of that to anyone's and merge. On an org repo, a member is held to the org's 2FA and SSO rules as for any right
# that membership gives; tokens meet the org's token policy through their restrictions (authorize()).

def _community_may(principal: Principal, perm: Permission, resource: object) -> Decision:
    repo = resource.repo if isinstance(resource, DiscussionRef) else resource
    if not isinstance(repo, RepoRef):
        return Decision(False, f"{perm} does not apply to {type(resource).__name__}")
    if not principal.authenticated:
        return Decision(False, "sign in to take part in discussions")
    seen = _user_may(principal, Permission.REPO_METADATA_READ, repo)
    if not seen:
        return seen
    if repo.org is not None and _org_role(principal, repo.org) is not None and not principal.is_admin:
        member_rule = _member_conditions(principal, repo.org)
        if not member_rule:
            return member_rule
    if perm in (Permission.REPO_CONTENT_UPLOAD, Permission.REPO_DISCUSSION_CREATE, Permission.REPO_DISCUSSION_COMMENT):
        return ALLOW
    if perm is Permission.REPO_PR_MERGE:
        return _user_may(principal, Permission.REPO_WRITE, repo)
    if not isinstance(resource, DiscussionRef):
        return Decision(False, f"{perm} needs a discussion")
    own = resource.author_user_id is not None and resource.author_user_id == principal.user_id
    if perm is Permission.REPO_DISCUSSION_COMMENT_EDIT:
        return ALLOW if own else Decision(False, "only its author can edit a comment")
    if own and (perm is Permission.REPO_DISCUSSION_MODERATE or resource.open):
        return ALLOW
    writer = _user_may(principal, Permission.REPO_WRITE, repo)
    if writer:
        return ALLOW
    if perm is Permission.REPO_PR_WRITE:
        return Decision(False, "only the pull request's author (while it is open) and the repository's writers can "
                               "commit to it")
    return Decision(False, "only its author and the repository's writers can do this")


# ---- gated repos ------------------------------------------------------------------------------
# A gated repo's metadata is read like any repo's; its contents need an accepted access request, except
# for those who pass the gate: instance admins, a user repo's owner, and in an organization its admins,
# the repo's creator (while a member), the admins of the repo's resource group and, unless the repo
# also gates the org's members, every member whose role reads the repo (docs/architecture.md).

def _through_gate(principal: Principal, repo: RepoRef) -> Decision:
    gate = repo.gate
    if gate is None or principal.is_admin:
        return ALLOW
    if principal.user_id is None:
        return Decision(False, "gated repository: sign in and ask for access", gated="anonymous")
    if _passes_gate(principal, repo, gate):
        return ALLOW
    status = gate.statuses.get(principal.user_id)
    if status == "accepted":
        return ALLOW
    state = status if status in ("pending", "rejected") else "none"
    return Decision(False, f"gated repository: access request {state}", gated=state)


def _passes_gate(principal: Principal, repo: RepoRef, gate: GateFacts) -> bool:
    org = repo.org
    if org is None:
        return _owns(principal, repo.owner_user_id)
    role = _org_role(principal, org)
    if role is None or not _member_conditions(principal, org):
        return False  # membership gives nothing here (2FA governs every right that comes from it)
    if role == "admin" or (repo.creator_user_id is not None and repo.creator_user_id == principal.user_id):
        return True
    if repo.group is not None and repo.group.roles.get(principal.user_id) == "admin":  # type: ignore[arg-type]
        return True
    return not gate.org_members_gated and _repo_role(principal, repo, org) is not None


def _org_may_create(principal: Principal, org: OrgFacts, group: GroupFacts | None) -> Decision:
    if principal.is_admin:
        return ALLOW
    role = _org_role(principal, org)
    if role == "admin":
        ok = True
    elif role is None:
        ok = False
    elif group is not None:
        ok = group.roles.get(principal.user_id) in CREATE_ROLES  # type: ignore[arg-type]
    else:
        ok = role in CREATE_ROLES
    if not ok:
        where = f"resource group {group.name!r}" if group else f"organization {org.name!r}"
        return Decision(False, f"you cannot create repositories in the {where}")
    return _member_conditions(principal, org)


def _org_may(principal: Principal, perm: Permission, org: OrgFacts) -> Decision:
    if perm is Permission.ORG_MEMBERS_READ and not org.hide_members:
        return ALLOW
    if principal.is_admin:
        return ALLOW
    role = _org_role(principal, org)
    if role is None:
        return Decision(False, f"you are not a member of the organization {org.name!r}")
    if perm is Permission.ORG_MEMBERS_READ:
        ok = True  # a hidden members list is still shown to members
    elif perm is Permission.ORG_READ:
        ok = role in READ_ROLES
    else:
        ok = role == "admin"
    if not ok:
        return Decision(False, f"only administrators of {org.name!r} can do this" if perm is not Permission.ORG_READ
                        else f"your role in {org.name!r} ({role}) does not include its settings")
    return _member_conditions(principal, org)


def _group_may(principal: Principal, ref: GroupRef) -> Decision:
    """Org admins create, rename and delete groups; a group's admins manage its members."""
    if principal.is_admin:
        return ALLOW
    ok = _org_role(principal, ref.org) == "admin" or (
        ref.group is not None and ref.group.roles.get(principal.user_id) == "admin")  # type: ignore[arg-type]
    if not ok:
        return Decision(False, "only organization administrators (or this group's administrators, for its "
                               "members) can manage resource groups")
    return _member_conditions(principal, ref.org)


def _move_may(principal: Principal, move: RepoGroupMove) -> Decision:
    """Org admins move any repo; group admins move repos out of, into and between groups they administer.
    Taking a repo from the org root also needs write access to it there."""
    org = move.repo.org
    if org is None:
        return Decision(False, "only organization repositories belong to resource groups")
    if principal.is_admin:
        return ALLOW
    role = _org_role(principal, org)
    if role != "admin":
        ends = [g for g in (move.repo.group, move.target) if g is not None]
        ok = bool(ends) and role is not None and all(g.roles.get(principal.user_id) == "admin"  # type: ignore[arg-type]
                                                     for g in ends)
        if ok and move.repo.group is None:
            ok = _may_write(principal, role if role in READ_ROLES else None, move.repo.creator_user_id)
        if not ok:
            return Decision(False, "moving this repository needs administrator rights on the resource groups "
                                   "involved (or on the organization)")
    return _member_conditions(principal, org)


NAME_UNAVAILABLE = "you cannot create a repository with this name here"


def _name_free(principal: Principal, ns: NamespaceRef) -> Decision:
    """A name taken by a repo the caller cannot read is refused like any name they may not use, so the
    answer (403) says nothing about that repo; one they can read is the Hub's 409 with its URL (the route's).
    Asked only of callers who may create in the namespace: others are refused before, whatever the name."""
    if ns.taken_by is None or authorize(principal, Permission.REPO_METADATA_READ, ns.taken_by):
        return ALLOW
    return Decision(False, NAME_UNAVAILABLE)


def _same_owner(repo: RepoRef, ns: NamespaceRef) -> bool:
    if repo.org is not None or ns.org is not None:
        return repo.org is not None and ns.org is not None and repo.org.id == ns.org.id
    return repo.owner_user_id is not None and repo.owner_user_id == ns.owner_user_id


def _transfer_may(principal: Principal, perm: Permission, move: RepoTransfer) -> Decision:
    """Renaming needs the right to manage the repo; moving it to another owner also (the Hub's rule for
    transfers) administrator rights in its organization, so no member can take an org's repo out of its
    policies, and the right to create at the destination (its 2FA, token policy and scopes), where it lands at
    the organization root and must meet its visibility policy. Each end goes through authorize() whole, token
    restrictions included."""
    if perm is not Permission.REPO_MANAGE:
        return Decision(False, f"{perm} does not apply to a repository move")
    decision = authorize(principal, Permission.REPO_MANAGE, move.repo)
    if not decision:
        return decision
    if _same_owner(move.repo, move.target):
        return _name_free(principal, move.target)  # a rename keeps its org, group and policies
    org = move.repo.org
    if org is not None and not principal.is_admin and _org_role(principal, org) != "admin":
        return Decision(False, f"only administrators of the organization {org.name!r} can move its repositories "
                               "to another owner")
    decision = authorize(principal, Permission.REPO_CREATE, dataclasses.replace(move.target, group=None))
    if not decision:
        return decision
    dest = move.target.org
    if dest is not None and dest.repo_visibility == "private_only" and not move.repo.private:
        # As for a new repo: refused, not made private behind the mover's back.
        return Decision(False, f"The organization {dest.name!r} allows only private repositories: make the "
                               "repository private before moving it there")
    return ALLOW


def _authorize_xet_cas(principal: Principal, perm: Permission, resource: object) -> Decision:
    """A Xet CAS token works only for the repo it was minted for, only while its holder may still read
    (write) that repo; only a write token uploads."""
    if not isinstance(resource, BoundCapability) or resource.kind != "xet-cas":
        return Decision(False, "not a Xet CAS request")
    claims = principal.capability
    if claims.get("p") != "xet-cas":
        return Decision(False, "not a Xet CAS token")
    if claims.get("repo_id") != resource.claims.get("repo_id"):
        return Decision(False, "this Xet token was issued for another repository")
    if perm is Permission.XET_CAS_WRITE and claims.get("scope") != "write":
        return Decision(False, "this Xet token is read-only; request one from the xet-write-token route")
    if claims.get("scope") not in ("read", "write"):
        return Decision(False, "unknown Xet token scope")
    # Reconstructions are file contents: whatever the token's scope, its holder must be allowed to read the
    # files now. Dedupe answers and xorb sizes describe what the repo holds, not its bytes: seeing the repo
    # is enough (a gated repo's writer uploads, and dedupes against what it uploaded, without passing).
    if perm is Permission.XET_CAS_WRITE:
        # Uploading: write access, or for a token minted for a pull request's contents (`pr`), the right to
        # upload for one (the commit that uses the bytes is decided on its own: refs/pr/N needs its author).
        holder_perm = Permission.REPO_CONTENT_UPLOAD if claims.get("pr") is True else Permission.REPO_WRITE
    elif resource.claims.get("content"):
        holder_perm = Permission.REPO_READ
    else:
        holder_perm = Permission.REPO_METADATA_READ
    return _holder_may(principal, holder_perm, resource)


def _holder_may(principal: Principal, perm: Permission, target: BoundCapability) -> Decision:
    """A bound capability grants nothing its holder could not do right now: the holder's rights on the
    repo are decided again by this same policy, so removal from the org, a role or visibility change, a
    token restriction, an org token policy or a gate binds capabilities handed out before it."""
    holder, repo = target.holder, target.repo
    if holder.method not in ("anonymous", "token", "session"):
        return Decision(False, "a capability cannot vouch for another capability")
    if holder.user_id != principal.capability.get("user_id"):
        return Decision(False, "this capability was minted for another user")
    if repo is None or repo.id != principal.capability.get("repo_id"):
        return Decision(False, "the repository this capability was minted for no longer exists")
    decision = authorize(holder, perm, repo)
    if not decision:
        what = "read this repository's file contents" if perm is Permission.REPO_READ else f"use {perm} here"
        return Decision(False, f"whoever obtained this capability may not {what} now: {decision.reason}")
    return ALLOW


def readable_repos_clause(principal: Principal, cols: RepoColumns) -> ColumnElement[bool]:
    """The REPO_METADATA_READ rule of authorize() as a SQL filter, for listings (tested against it): gated
    repos are listed like any other."""
    if principal.method not in ("anonymous", "token", "session"):
        return false()
    public = cols.private.is_(False)
    if principal.user_id is None:
        return public
    private_ok: ColumnElement[bool] = true() if principal.is_admin else (cols.owner_user_id == principal.user_id)
    if not principal.is_admin and cols.owner_org_id is not None:
        private_ok = or_(private_ok, _org_readable_clause(principal.user_id, cols))
    for restriction in principal.restrictions:
        narrowed = restriction.sql_filter(cols)
        if narrowed is not None:
            private_ok = and_(private_ok, narrowed)
            public = and_(public, narrowed) if restriction.sql_filter_public else public
    return or_(public, private_ok)


def _org_readable_clause(user_id: int, cols: RepoColumns) -> ColumnElement[bool]:
    """_org_repo_may(REPO_METADATA_READ) for private org repos, as SQL (roles are '' where the user has none)."""
    assert cols.org_role is not None and cols.group_role is not None and cols.has_2fa is not None
    role, group_role = cols.org_role(user_id), cols.group_role(user_id)
    by_role = or_(role == "admin",
                  and_(cols.resource_group_id.is_(None), role.in_(sorted(READ_ROLES))),
                  and_(cols.resource_group_id.is_not(None), role != "", group_role.in_(sorted(READ_ROLES))))
    clause = and_(cols.owner_org_id.is_not(None), by_role,
                  or_(not_(cols.org_require_2fa), cols.has_2fa(user_id)))
    return and_(clause, cols.sso_ok(user_id)) if cols.sso_ok is not None else clause


# Every request counts its authz checks; strict mode (tests) rejects a request with != 1.
_checks: ContextVar[list[Permission] | None] = ContextVar("bastion_authz_checks", default=None)


def start_request_checks() -> list[Permission]:
    checks: list[Permission] = []
    _checks.set(checks)
    return checks


def checks_in_request() -> list[Permission] | None:
    return _checks.get()


def note_token_denial(token_id: int, username: str | None, perm: str, reason: str) -> None:
    """Audit a denied token use once the response has gone out: one event per token and reason a
    window, with a count (bastion.audit.aggregate)."""
    aggregate.defer(AuditAction.TOKEN_USE_DENIED, key=f"{AuditAction.TOKEN_USE_DENIED}:{token_id}:{reason}",
                    target=("token", str(token_id)), namespace=username,
                    details={"permission": perm, "reason": reason[:300]})


def require(principal: Principal, perm: Permission, resource: object = None) -> None:
    checks = _checks.get()
    if checks is not None:
        checks.append(perm)
    with timed("authz"):
        decision = authorize(principal, perm, resource)
    if decision:
        return
    # A bound capability's denial is its holder's token's denial too.
    acting = resource.holder if isinstance(resource, BoundCapability) else principal
    if acting.token_id is not None:
        note_token_denial(acting.token_id, acting.username, str(perm), decision.reason)
    repo = resource.repo if isinstance(resource, RepoGroupMove | RepoTransfer | DiscussionRef) else resource
    if isinstance(repo, RepoRef):
        can_read = authorize(principal, Permission.REPO_METADATA_READ, repo)
        if not can_read:
            if can_read.sso_org:
                raise SSORequired(can_read.sso_org, can_read.reason)
            if can_read.disclose:
                raise Forbidden(can_read.reason)  # a member blocked by an org policy is told why
            raise RepoNotFound()  # private means invisible
        if decision.gated:
            raise GatedRepo(decision.gated, repo.type, f"{repo.namespace}/{repo.name}")
    if decision.sso_org:
        raise SSORequired(decision.sso_org, decision.reason)
    if decision.disclose:
        raise Forbidden(decision.reason)
    if decision.reauthenticate:
        raise ReauthenticationRequired(decision.reason)
    if not principal.authenticated and principal.method not in ("capability", "scim"):
        raise AuthenticationRequired(f"Authentication required: {decision.reason}")
    raise Forbidden(f"Forbidden: {decision.reason}")
