"""Token restrictions: small self-verifying values stored with a token and re-checked at every use.

Wire-format rules (the JSON in access_tokens.scopes / .restrictions):
- Each restriction is a JSON object whose "t" tag names its class. Tags are never renamed or reused.
- A class may gain fields only with defaults, so rows written earlier still load.
- A row that does not load (unknown tag, bad field) makes the token deny everything: fail closed.
Restrictions only ever take rights away: the user's own rights are decided by the policy first.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, ClassVar

from sqlalchemy import ColumnElement, and_, false, not_, or_

from bastion.authz.permissions import Permission
from bastion.authz.policy import (
    ALLOW,
    TOKEN_APPROVAL_REQUIRED,
    TOKEN_FINE_GRAINED_REQUIRED,
    TOKEN_REVOKED_BY_ORG,
    Decision,
    GroupFacts,
    GroupRef,
    NamespaceRef,
    OrgFacts,
    RepoColumns,
    RepoGroupMove,
    RepoRef,
    Restriction,
)

READ_PERMISSIONS = frozenset({Permission.REPO_METADATA_READ, Permission.REPO_READ, Permission.REPO_LIST,
                              Permission.USER_READ, Permission.PUBLIC, Permission.ORG_READ,
                              Permission.ORG_MEMBERS_READ, Permission.INSTANCE_STATUS_READ,
                              Permission.ORG_AUDIT_LOG_READ, Permission.INSTANCE_AUDIT_LOG_READ,
                              Permission.USER_SECURITY_LOG_READ, Permission.USER_DATA_EXPORT})

# Fine-grained permission names (the Hub's where they apply to Bastion) → what they allow.
SCOPE_PERMISSIONS: dict[str, frozenset[Permission]] = {
    # Reading a repo's contents includes asking for access to it when it is gated.
    "repo.content.read": frozenset({Permission.REPO_METADATA_READ, Permission.REPO_READ,
                                    Permission.REPO_ACCESS_REQUEST}),
    # The Hub's rule: reviewing a gated repo's access requests takes write access to it.
    "repo.write": frozenset({Permission.REPO_METADATA_READ, Permission.REPO_READ, Permission.REPO_ACCESS_REQUEST,
                             Permission.REPO_WRITE, Permission.REPO_CREATE, Permission.REPO_MANAGE,
                             Permission.REPO_PROTECTION_LOWER, Permission.REPO_DELETE, Permission.REPO_ACCESS_READ,
                             Permission.REPO_ACCESS_WRITE, Permission.REPO_CONTENT_UPLOAD,
                             Permission.REPO_DISCUSSION_CREATE, Permission.REPO_DISCUSSION_COMMENT,
                             Permission.REPO_DISCUSSION_COMMENT_EDIT, Permission.REPO_DISCUSSION_MODERATE,
                             Permission.REPO_PR_WRITE, Permission.REPO_PR_MERGE}),
    # The Hub's "Interact with discussions / Open pull requests": everything in the Community tab but merging.
    "discussion.write": frozenset({Permission.REPO_METADATA_READ, Permission.REPO_CONTENT_UPLOAD,
                                   Permission.REPO_DISCUSSION_CREATE, Permission.REPO_DISCUSSION_COMMENT,
                                   Permission.REPO_DISCUSSION_COMMENT_EDIT, Permission.REPO_DISCUSSION_MODERATE,
                                   Permission.REPO_PR_WRITE}),
    "repo.access.read": frozenset({Permission.REPO_ACCESS_READ}),  # the requests (names, e-mails), no files
    # Organization permissions (on an `org` entity; resourceGroup.write also on a `resource-group`).
    "org.read": frozenset({Permission.ORG_READ, Permission.ORG_MEMBERS_READ}),
    "org.write": frozenset({Permission.ORG_READ, Permission.ORG_WRITE, Permission.ORG_MEMBERS_READ,
                            Permission.ORG_AUDIT_LOG_READ}),  # the audit log: an admin's org-scoped token
    "org.members.read": frozenset({Permission.ORG_MEMBERS_READ}),
    "org.members.write": frozenset({Permission.ORG_MEMBERS_READ, Permission.ORG_MEMBERS_WRITE}),
    "resourceGroup.write": frozenset({Permission.RESOURCE_GROUP_WRITE, Permission.REPO_RESOURCE_GROUP}),
}
ENTITY_TYPES = ("user", "org", "model", "dataset", "space", "resource-group")
REPO_ENTITY_TYPES = ("model", "dataset", "space")
GLOBAL_PERMISSIONS: dict[str, frozenset[Permission]] = {}


class InvalidRestriction(ValueError):
    pass


@dataclass(frozen=True)
class ReadOnly:
    """A `read` token: reads whatever its owner may read, writes nothing."""

    tag: ClassVar[str] = "read-only"
    sql_filter_public: ClassVar[bool] = False

    def verify(self, perm: Permission, resource: object) -> Decision:
        if perm in READ_PERMISSIONS:
            return ALLOW
        return Decision(False, "this token is read-only")

    def sql_filter(self, cols: RepoColumns) -> ColumnElement[bool] | None:
        return None  # reads everything its owner reads

    def to_json(self) -> dict[str, Any]:
        return {"t": self.tag}


@dataclass(frozen=True)
class Scope:
    entity_type: str  # user | org | model | dataset | space | resource-group
    # user or org name, "ns/name" for repos, "org/<24-hex group id>" for resource groups (the id, not
    # the group's name: a rename, or a new group under an old name, must not change what a token reaches)
    name: str
    permissions: frozenset[str]

    def _is_group(self, org_name: str, group: GroupFacts | None) -> bool:
        return (self.entity_type == "resource-group" and group is not None
                and self.name.lower() == f"{org_name}/{group.public_id}".lower())

    def _is_namespace(self, name: str) -> bool:
        return self.entity_type in ("user", "org") and name.lower() == self.name.lower()

    def covers(self, resource: object) -> bool:
        if isinstance(resource, RepoRef):
            if self.entity_type in ("user", "org"):
                return resource.namespace.lower() == self.name.lower()
            if self.entity_type in REPO_ENTITY_TYPES:
                return (self.entity_type == resource.type
                        and f"{resource.namespace}/{resource.name}".lower() == self.name.lower())
            return self._is_group(resource.namespace, resource.group)
        if isinstance(resource, NamespaceRef):
            return self._is_namespace(resource.name) or self._is_group(resource.name, resource.group)
        if isinstance(resource, OrgFacts):
            return self.entity_type == "org" and self._is_namespace(resource.name)
        if isinstance(resource, GroupRef):
            return (self.entity_type == "org" and self._is_namespace(resource.org.name)) or \
                self._is_group(resource.org.name, resource.group)
        if isinstance(resource, RepoGroupMove):
            if self.entity_type == "org":
                return self._is_namespace(resource.repo.namespace)
            # a group-scoped token moves repos only between groups it names (never from the org root)
            ends = [g for g in (resource.repo.group, resource.target) if g is not None]
            return resource.repo.group is not None and all(self._is_group(resource.repo.namespace, g) for g in ends)
        return False

    def allows(self) -> frozenset[Permission]:
        out: set[Permission] = set()
        for name in self.permissions:
            out |= SCOPE_PERMISSIONS.get(name, frozenset())
        return frozenset(out)

    def sql_covers(self, cols: RepoColumns) -> ColumnElement[bool]:
        """covers() for RepoRefs, as SQL over the repo table."""
        if self.entity_type in ("user", "org"):
            return cols.namespace_lower == self.name.lower()
        if self.entity_type in REPO_ENTITY_TYPES:
            ns, _, name = self.name.lower().partition("/")
            return and_(cols.type == self.entity_type, cols.namespace_lower == ns, cols.name_lower == name)
        if self.entity_type == "resource-group" and cols.resource_group_id is not None:
            org, _, hex_id = self.name.lower().partition("/")
            return and_(cols.namespace_lower == org, cols.resource_group_id == int(hex_id, 16))
        return false()


@dataclass(frozen=True)
class Scoped:
    """A fine-grained token: only what some scope grants on a resource it covers.

    Every token reads public repos; a public *gated* repo's files only through a scope that names it,
    or with `can_read_gated` (the Hub's canReadGatedRepos: "access to all public gated repos to which
    the user has access"). Whether the user has access is the policy's, decided before this.
    """

    scopes: tuple[Scope, ...]
    global_permissions: frozenset[str] = frozenset()
    can_read_gated: bool = False
    tag: ClassVar[str] = "scoped"
    sql_filter_public: ClassVar[bool] = False

    def verify(self, perm: Permission, resource: object) -> Decision:
        if perm in (Permission.USER_READ, Permission.PUBLIC, Permission.REPO_LIST):
            return ALLOW  # who am I; listings are filtered by what the token may read
        public_repo = isinstance(resource, RepoRef) and not resource.private
        if perm is Permission.REPO_METADATA_READ and public_repo:
            return ALLOW  # every token can read public repositories
        if perm is Permission.REPO_READ and public_repo and (resource.gate is None  # type: ignore[union-attr]
                                                             or self.can_read_gated):
            return ALLOW
        if perm is Permission.ORG_MEMBERS_READ and isinstance(resource, OrgFacts) and not resource.hide_members:
            return ALLOW  # a public members list is public
        for scope in self.scopes:
            if scope.covers(resource) and perm in scope.allows():
                return ALLOW
        if perm is Permission.REPO_READ and public_repo:
            return Decision(False, "this fine-grained token cannot read gated repositories (canReadGatedRepos)",
                            gated="token")
        return Decision(False, f"this fine-grained token has no scope granting {perm} here")

    def sql_filter(self, cols: RepoColumns) -> ColumnElement[bool] | None:
        readable = [s.sql_covers(cols) for s in self.scopes if Permission.REPO_METADATA_READ in s.allows()]
        return or_(*readable) if readable else false()

    def to_json(self) -> dict[str, Any]:
        return {"t": self.tag, "global": sorted(self.global_permissions),
                "scoped": [{"entity": {"type": s.entity_type, "name": s.name}, "permissions": sorted(s.permissions)}
                           for s in self.scopes],
                "canReadGatedRepos": self.can_read_gated}


@dataclass(frozen=True)
class DenyAll:
    """What an unreadable restriction row becomes: nothing is allowed."""

    reason: str
    tag: ClassVar[str] = "deny-all"
    sql_filter_public: ClassVar[bool] = True

    def verify(self, perm: Permission, resource: object) -> Decision:
        if perm is Permission.USER_READ:
            return ALLOW  # the owner can still see which token this is, to replace it
        return Decision(False, self.reason)

    def sql_filter(self, cols: RepoColumns) -> ColumnElement[bool] | None:
        return false()

    def to_json(self) -> dict[str, Any]:
        return {"t": self.tag, "reason": self.reason}


@dataclass(frozen=True)
class OrgTokenPolicy:
    """Each organization's token policy, applied to this token on that org's resources.

    Never stored: principal_for_token() adds it on every use with the token's approval states as
    they are now, and the org's policy comes with the resource (OrgFacts), so a policy change, an
    approval, a denial or a revocation applies to live tokens at once, without reissuing them.
    """

    user_id: int
    fine_grained: bool
    states: dict[int, str]  # org id → pending | approved | denied | revoked (no entry: never reviewed)
    tag: ClassVar[str] = "org-token-policy"
    sql_filter_public: ClassVar[bool] = False

    def decide(self, org: OrgFacts) -> Decision:
        state = self.states.get(org.id)
        if state == "revoked":
            return Decision(False, TOKEN_REVOKED_BY_ORG, disclose=True)  # permanent, whatever the policy
        if org.token_policy == "allow":
            return ALLOW
        if not self.fine_grained:
            return Decision(False, TOKEN_FINE_GRAINED_REQUIRED, disclose=True)
        if org.token_policy == "fine_grained":
            return ALLOW
        # approval: never reviewed counts as pending, except for the org's admins (auto-approved)
        if state == "approved" or (state is None and org.roles.get(self.user_id) == "admin"):
            return ALLOW
        return Decision(False, TOKEN_APPROVAL_REQUIRED, disclose=True)

    def verify(self, perm: Permission, resource: object) -> Decision:
        if perm in (Permission.USER_READ, Permission.PUBLIC, Permission.REPO_LIST, Permission.ORG_CREATE,
                    Permission.ORG_MEMBERSHIP_SELF):
            return ALLOW  # not an org resource (leaving an org is always possible)
        org = _org_of(resource)
        if org is None:
            return ALLOW
        if perm in (Permission.REPO_METADATA_READ, Permission.REPO_READ) and isinstance(resource, RepoRef) \
                and not resource.private:
            return ALLOW  # public content is readable without any token (a gate is the policy's)
        if perm is Permission.ORG_MEMBERS_READ and not org.hide_members:
            return ALLOW
        return self.decide(org)

    def sql_filter(self, cols: RepoColumns) -> ColumnElement[bool] | None:
        if cols.owner_org_id is None or cols.org_token_policy is None or cols.org_role is None:
            return None
        by_state = {s: [o for o, st in self.states.items() if st == s] for s in ("approved", "revoked")}
        reviewed = list(self.states)
        approved = or_(cols.owner_org_id.in_(by_state["approved"]),
                       and_(cols.owner_org_id.not_in(reviewed), cols.org_role(self.user_id) == "admin"))
        allowed = or_(cols.org_token_policy == "allow",
                      and_(cols.org_token_policy == "fine_grained") if self.fine_grained else false(),
                      and_(cols.org_token_policy == "approval", approved) if self.fine_grained else false())
        return or_(cols.owner_org_id.is_(None), and_(not_(cols.owner_org_id.in_(by_state["revoked"])), allowed))

    def to_json(self) -> dict[str, Any]:
        return {"t": self.tag, "states": {str(k): v for k, v in self.states.items()}}


def _org_of(resource: object) -> OrgFacts | None:
    if isinstance(resource, RepoRef | NamespaceRef):
        return resource.org
    if isinstance(resource, OrgFacts):
        return resource
    if isinstance(resource, GroupRef):
        return resource.org
    if isinstance(resource, RepoGroupMove):
        return resource.repo.org
    return None


GROUP_SCOPE_RE = re.compile(r"^[^/]+/[0-9a-f]{24}\Z")
GROUP_NAME_SCOPE_RE = re.compile(r"^[^/]+/[^/]+\Z")


def parse_scope(entity_type: Any, name: Any, permissions: Any, *, group_by_name: bool = False) -> Scope:
    """One scope. Stored scopes name a resource group `org/<24-hex id>` (a group can be renamed); input
    from people may name it `org/group-name` (`group_by_name`), which tokens.governance.resolve_group_scopes turns
    into the id form before the token is stored."""
    if entity_type not in ENTITY_TYPES:
        raise InvalidRestriction(f"unknown entity type {entity_type!r}: expected one of {', '.join(ENTITY_TYPES)}")
    if not isinstance(name, str) or not name or len(name) > 200:
        raise InvalidRestriction("a scope needs an entity name")
    if entity_type in REPO_ENTITY_TYPES and name.count("/") != 1:
        raise InvalidRestriction(f"{entity_type} scopes name a repository as 'namespace/name', not {name!r}")
    if (entity_type == "resource-group" and not GROUP_SCOPE_RE.match(name.lower())
            and not (group_by_name and GROUP_NAME_SCOPE_RE.match(name))):
        raise InvalidRestriction(f"resource-group scopes name a group as 'org/group-name' or "
                                 f"'org/<24-hex group id>', not {name!r}")
    if not isinstance(permissions, list | tuple | set | frozenset) or not permissions:
        raise InvalidRestriction("a scope needs at least one permission")
    unknown = [p for p in permissions if p not in SCOPE_PERMISSIONS]
    if unknown:
        raise InvalidRestriction(f"unknown permission(s) {', '.join(map(str, unknown))}; known: "
                                 f"{', '.join(SCOPE_PERMISSIONS)}")
    return Scope(entity_type, name, frozenset(permissions))


def load(data: Any) -> Restriction:
    """One restriction from its JSON; anything unreadable becomes DenyAll (fail closed)."""
    try:
        if not isinstance(data, dict):
            raise InvalidRestriction("not an object")
        tag = data.get("t")
        if tag == ReadOnly.tag:
            return ReadOnly()
        if tag == Scoped.tag:
            scopes = tuple(parse_scope((s.get("entity") or {}).get("type"), (s.get("entity") or {}).get("name"),
                                       s.get("permissions")) for s in data.get("scoped", []))
            glob = data.get("global", [])
            if not isinstance(glob, list) or any(g not in GLOBAL_PERMISSIONS for g in glob):
                raise InvalidRestriction("unknown global permission")
            gated = data.get("canReadGatedRepos", False)  # absent in rows written before it existed
            if not isinstance(gated, bool):
                raise InvalidRestriction("canReadGatedRepos must be a boolean")
            return Scoped(scopes, frozenset(glob), gated)
        if tag == DenyAll.tag:
            return DenyAll(str(data.get("reason", "token disabled")))
        raise InvalidRestriction(f"unknown restriction {tag!r}")
    except (InvalidRestriction, AttributeError, TypeError) as exc:
        return DenyAll(f"token restriction could not be read ({exc}); the token is disabled")


def load_all(items: Iterable[Any]) -> tuple[Restriction, ...]:
    return tuple(load(item) for item in items)
