"""Repository lifecycle: create, look up, list, move, change settings, delete.

Every write records its audit event in the caller's transaction.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import re
import shutil
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import yaml
from sqlalchemy import Select, delete, func, select
from sqlalchemy.orm import Session, object_session

from bastion import audit
from bastion.accounts.models import User
from bastion.accounts.service import RESERVED_NAMES
from bastion.audit.actions import AuditAction
from bastion.authz import NamespaceRef, Permission, Principal, RepoRef, authorize, readable_repos_clause
from bastion.authz.policy import (
    DEFAULT_SECRET_PUSH_PROTECTION_MODE,
    SECRET_PUSH_PROTECTION_MODES,
    GateFacts,
    RepoColumns,
    RepoGroupMove,
    RepoTransfer,
    stricter_secret_mode,
)
from bastion.db import utcnow
from bastion.errors import BadRequest, Conflict, Forbidden, RepoNotFound
from bastion.hub import Hub
from bastion.orgs import models as orgs_models
from bastion.orgs import service as orgs
from bastion.repos import protection, tree_rules
from bastion.repos.models import REPO_TYPES, PurgedLfsObject, Repo, RepoRedirect
from bastion.storage.gitstore import GitRepo, signature
from bastion.storage.regions import DEFAULT_REGION, region_of_key

REPO_NAME_RE = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9]|[-_.](?=[A-Za-z0-9])){0,95}\Z")  # \Z: see accounts.NAME_RE
TYPE_BY_PLURAL = {"models": "model", "datasets": "dataset", "spaces": "space"}
PLURAL_BY_TYPE = {v: k for k, v in TYPE_BY_PLURAL.items()}
SORT_COLUMNS = {"lastModified": Repo.last_modified, "createdAt": Repo.created_at,
                "downloads": Repo.downloads, "likes": Repo.likes, "trendingScore": Repo.likes, "id": Repo.name_lower}


def _org_columns() -> dict[str, object]:
    """The organization columns of the listing filter, as correlated subqueries on the repo row."""
    from bastion.orgs.models import Organization, OrgMember, ResourceGroupMember
    from bastion.orgs.service import has_two_factor_clause

    def org_role(user_id: int) -> object:
        return func.coalesce(select(OrgMember.role).where(OrgMember.org_id == Repo.owner_org_id,
                                                          OrgMember.user_id == user_id).scalar_subquery(), "")

    def group_role(user_id: int) -> object:
        return func.coalesce(select(ResourceGroupMember.role).where(
            ResourceGroupMember.group_id == Repo.resource_group_id,
            ResourceGroupMember.user_id == user_id).scalar_subquery(), "")

    return {
        "owner_org_id": Repo.owner_org_id, "resource_group_id": Repo.resource_group_id,
        "org_require_2fa": select(Organization.require_2fa).where(
            Organization.id == Repo.owner_org_id).scalar_subquery(),
        "org_token_policy": select(Organization.token_policy).where(
            Organization.id == Repo.owner_org_id).scalar_subquery(),
        "org_role": org_role, "group_role": group_role, "has_2fa": has_two_factor_clause,
        "sso_ok": lambda user_id: orgs.sso().sso_ok_clause(user_id, Repo.owner_org_id),
    }


REPO_COLUMNS = RepoColumns(private=Repo.private, owner_user_id=Repo.owner_user_id, type=Repo.type,
                           namespace_lower=Repo.namespace_lower, name_lower=Repo.name_lower,
                           **_org_columns())  # type: ignore[arg-type]


def parse_repo_type(value: str | None) -> str:
    repo_type = value or "model"
    if repo_type not in REPO_TYPES:
        raise BadRequest(f"Invalid repo type {value!r}: expected one of {', '.join(REPO_TYPES)}")
    return repo_type


def validate_repo_name(name: str) -> None:
    if not isinstance(name, str) or not REPO_NAME_RE.match(name) or name.endswith(".git") or \
            name.lower() in RESERVED_NAMES:
        raise BadRequest(f"Invalid repo name {name!r}: use letters, digits, '-', '_' or '.' "
                         "(not first or last), at most 96 characters")


def split_repo_id(repo_id: str) -> tuple[str, str]:
    if not isinstance(repo_id, str) or repo_id.count("/") != 1:
        raise BadRequest(f"Invalid repo id {repo_id!r}: expected 'namespace/name'")
    ns, name = repo_id.split("/")
    return ns, name


# The gate of a gated repo as the policy needs it (its mode, the viewer's access request): gating, a
# feature above repos, owns access requests and sets this when imported (bastion.gating.service).
gate_facts: Callable[[Session, Repo, int | None], GateFacts | None] | None = None


def repo_ref(repo: Repo, viewer_id: int | None = None) -> RepoRef:
    """What the policy needs about a repo; for an org repo also the org's and its group's member roles;
    for a gated repo its gate and the access request of `viewer_id` (the caller: without it, reading
    the files is decided as for someone who never asked)."""
    org = group = gate = None
    if repo.owner_org_id is not None:
        from bastion.orgs.models import Organization, ResourceGroup

        session = object_session(repo)
        assert session is not None, "repo_ref() needs a repo loaded in a session"
        org_row = session.get(Organization, repo.owner_org_id)
        assert org_row is not None
        org = orgs.org_facts(session, org_row)
        group_row = session.get(ResourceGroup, repo.resource_group_id) if repo.resource_group_id else None
        group = orgs.group_facts(session, group_row) if group_row is not None else None
    if repo.gated is not None:
        if gate_facts is None:
            # Fail closed: a gated repo is never judged as an open one because gating is not loaded.
            raise RuntimeError("no gate facts provider: bastion.gating.service sets repos.service.gate_facts")
        session = object_session(repo)
        assert session is not None, "repo_ref() needs a repo loaded in a session"
        gate = gate_facts(session, repo, viewer_id)
    return RepoRef(id=repo.id, namespace=repo.namespace, owner_user_id=repo.owner_user_id, private=repo.private,
                   type=repo.type, name=repo.name, org=org, group=group, creator_user_id=repo.creator_user_id,
                   gate=gate)


def repo_region(hub: Hub, repo_id: int | None, session: Session | None = None) -> str:
    """The storage region of repository `repo_id` (the default for a repository gone meanwhile)."""
    if session is None:
        from bastion.db import transaction

        with transaction(hub.sessions, readonly=True) as own:
            return repo_region(hub, repo_id, own)
    key = session.scalar(select(Repo.storage_key).where(Repo.id == repo_id)) if repo_id is not None else None
    return region_of_key(key) if key else DEFAULT_REGION


def repo_by_id(session: Session, repo_id: object) -> Repo | None:
    """The repo with this id, None when there is none (capabilities, tokens and jobs name repos by id)."""
    return session.get(Repo, repo_id) if isinstance(repo_id, int) else None


def incarnation(storage_key: str) -> str:
    """What tells this repo from an earlier one with the same id (SQLite reuses the id of the newest
    row after it is deleted): part of its random storage key (without its region, which a move changes
    and which holds a "/"), fixed for the repo's life. Capabilities that name a repo by id carry it."""
    return storage_key.rpartition("/")[2][:16]


def repo_ref_by_id(session: Session, repo_id: object, viewer_id: int | None) -> RepoRef | None:
    """repo_ref() of the repo with this id as `viewer_id` sees it, None when there is none (capabilities
    name repos by id)."""
    repo = repo_by_id(session, repo_id)
    return repo_ref(repo, viewer_id) if repo is not None else None


def secrets_bypass_options(principal: Principal, repo: Repo, reason: str | None) -> dict[str, str]:
    """Commit options for an explicit bypass of secret push protection (API header or git push option).

    Only those who may lower the repo's protections (REPO_PROTECTION_LOWER: a user repo's owner, an org
    repo's org admins or, where the org delegates it, its managers) may push a secret past its protection;
    the follow-up check audits every bypass that let a secret through.
    """
    if reason is None:
        return {}
    if not reason.strip():
        raise BadRequest("A secret push-protection bypass needs a reason")
    decision = authorize(principal, Permission.REPO_PROTECTION_LOWER, repo_ref(repo))
    if not decision:
        raise Forbidden(f"Bypassing secret push protection is not allowed: {decision.reason}")
    return {"secrets_bypass": reason.strip()[:500]}


def namespace_ref(session: Session, namespace: str) -> NamespaceRef:
    """Who owns a namespace: a user or an organization (they share one namespace)."""
    owner = session.scalar(select(User).where(User.name_lower == namespace.lower()))
    if owner is None:

        org = orgs.find_org(session, namespace)
        if org is not None:
            return NamespaceRef(name=org.name, owner_user_id=None, org=orgs.org_facts(session, org))
    return NamespaceRef(name=owner.name if owner else namespace, owner_user_id=owner.id if owner else None)


def repo_named(session: Session, repo_type: str, namespace: str, name: str) -> Repo | None:
    return session.scalar(select(Repo).where(Repo.type == repo_type, Repo.namespace_lower == namespace.lower(),
                                             Repo.name_lower == name.lower()))


def find_repo(session: Session, repo_type: str, namespace: str, name: str) -> Repo:
    repo = repo_named(session, repo_type, namespace, name)
    if repo is None:
        raise RepoNotFound()
    return repo


def purged_lfs_oids(session: Session, repo_id: int, oids: Iterable[str]) -> set[str]:
    """Those of `oids` permanently deleted from the repo (bastion.objects.purge): every view of its
    history shows their files as deleted, and no download serves them."""
    wanted = list(dict.fromkeys(oids))
    if not wanted:
        return set()
    return set(session.scalars(select(PurgedLfsObject.oid).where(
        PurgedLfsObject.repo_id == repo_id, PurgedLfsObject.oid.in_(wanted))))


def mark_purged(session: Session, repo_id: int, entries: list[dict[str, Any]]) -> None:
    """Tree and paths-info entries of purged LFS files say `"deleted": true` (and offer no Xet hash)."""
    purged = purged_lfs_oids(session, repo_id, [e["lfs"]["oid"] for e in entries if "lfs" in e])
    for entry in entries:
        if "lfs" in entry and entry["lfs"]["oid"] in purged:
            entry["deleted"] = True
            entry.pop("xetHash", None)


def moved_repo(session: Session, repo_type: str, namespace: str, name: str) -> Repo | None:
    """The repo that had this name before it was moved (no repo has it now), or None. The caller
    decides, through the policy, whether the asker may learn where it went."""
    repo_id = session.scalar(select(RepoRedirect.repo_id).where(
        RepoRedirect.type == repo_type, RepoRedirect.namespace_lower == namespace.lower(),
        RepoRedirect.name_lower == name.lower()))
    return session.get(Repo, repo_id) if repo_id is not None else None


def _drop_redirect(session: Session, repo_type: str, namespace: str, name: str) -> None:
    """A name a repo now has (created or moved there) redirects nowhere: the repo takes precedence."""
    session.execute(delete(RepoRedirect).where(
        RepoRedirect.type == repo_type, RepoRedirect.namespace_lower == namespace.lower(),
        RepoRedirect.name_lower == name.lower()))


def for_new_name(session: Session, namespace: NamespaceRef, repo_type: str, name: str,
                 moving: Repo | None = None) -> NamespaceRef:
    """`namespace` as the target of creating (or moving `moving` to) `name`: with the repo that already has
    that name there, for the policy to decide what the caller may learn of it (authz.policy._name_free)."""
    taken = repo_named(session, repo_type, namespace.name, name) if isinstance(name, str) else None
    if taken is None or (moving is not None and taken.id == moving.id):
        return namespace
    return dataclasses.replace(namespace, taken_by=repo_ref(taken))


def transfer_ref(session: Session, repo: Repo, to_namespace: str, to_name: str) -> RepoTransfer:
    """What the policy needs to decide a move: the repo as it is and where it would go."""
    target = for_new_name(session, namespace_ref(session, to_namespace), repo.type, to_name, moving=repo)
    return RepoTransfer(repo_ref(repo), target)


def create_repo(hub: Hub, session: Session, actor: User, namespace: NamespaceRef, name: str,
                repo_type: str, private: bool, *, sdk: str | None = None, region: str = DEFAULT_REGION) -> Repo:
    """A new repository with its initial commit. `sdk`: a Space's SDK (shown in its info). `region`: the
    storage region every byte of it lives in (named by its storage key)."""
    validate_repo_name(name)
    parse_repo_type(repo_type)
    if namespace.owner_user_id is None and namespace.org is None:
        raise BadRequest(f"Unknown namespace {namespace.name!r}")
    existing = session.scalar(select(Repo.id).where(
        Repo.type == repo_type, Repo.namespace_lower == namespace.name.lower(), Repo.name_lower == name.lower()))
    if existing is not None:
        raise Conflict(f"You already created this {repo_type} repo")
    repo = Repo(type=repo_type, namespace=namespace.name, namespace_lower=namespace.name.lower(), name=name,
                name_lower=name.lower(), owner_user_id=namespace.owner_user_id, private=private,
                storage_key=hub.new_storage_key(region), settings={"sdk": sdk} if sdk else {},
                creator_user_id=actor.id,
                owner_org_id=namespace.org.id if namespace.org else None,
                resource_group_id=namespace.group.id if namespace.group else None)
    session.add(repo)
    _drop_redirect(session, repo_type, namespace.name, name)
    session.flush()
    # The initial commit is a commit like any other: signed with the instance key when there is
    # one, and its files go through the same follow-up (scans, signature verdicts).
    from bastion.repos import commit as commit_path
    from bastion.repos.commit import CommitResult, post_commit_hooks

    git = GitRepo.init(hub.git_path(repo.storage_key), signature(actor.name, actor.email),
                       sign=commit_path.commit_signer,
                       files={"README.md": space_readme(name, sdk)} if repo_type == "space" else None)
    audit.record(session, AuditAction.REPO_CREATE, target=("repo", f"{repo_type}/{repo.repo_id}"),
                 namespace=repo.namespace, details={"private": private, "type": repo_type, "region": region,
                                                    **({"resourceGroupId": namespace.group.public_id}
                                                       if namespace.group else {})})

    head = git.repo.head.peel()
    initial = CommitResult(str(head.id), None, "refs/heads/main", None,
                           [(path, str(entry.id)) for path, entry in git.walk_files(head.tree)],
                           new_commits=[str(head.id)])
    for hook in post_commit_hooks:
        hook(hub, session, repo, initial)
    return repo


def space_readme(name: str, sdk: str | None) -> bytes:
    """The card a new Space starts with, as on the Hub (its configuration is the card's YAML front matter)."""
    config = {"title": name, "emoji": "🚀", "colorFrom": "blue", "colorTo": "indigo",
              **({"sdk": sdk} if sdk else {}), "pinned": False}
    front = yaml.safe_dump(config, sort_keys=False, allow_unicode=True)
    return (f"---\n{front}---\n\nCheck out the configuration reference at "
            "https://huggingface.co/docs/hub/spaces-config-reference\n").encode()


# Called in the deleting transaction, before the row goes (bastion.relocation: a move under way keeps
# what it must remove).
delete_hooks: list[Callable[[Hub, Session, Repo], None]] = []


def delete_repo(hub: Hub, session: Session, repo: Repo) -> None:
    for hook in delete_hooks:
        hook(hub, session, repo)
    audit.record(session, AuditAction.REPO_DELETE, target=("repo", f"{repo.type}/{repo.repo_id}"),
                 namespace=repo.namespace, details={"private": repo.private})
    session.delete(repo)
    session.flush()
    # The git directory goes only after the row: a failed flush keeps both.
    path = hub.git_path(repo.storage_key)
    trash = path.with_name(path.name + ".deleted")
    if path.exists():
        path.rename(trash)
        shutil.rmtree(trash, ignore_errors=True)


def move_repo(session: Session, repo: Repo, to_namespace: NamespaceRef, to_name: str) -> None:
    validate_repo_name(to_name)
    if to_namespace.owner_user_id is None and to_namespace.org is None:
        raise BadRequest(f"Unknown namespace {to_namespace.name!r}")
    clash = repo_named(session, repo.type, to_namespace.name, to_name)
    if clash is not None and clash.id != repo.id:
        # Only a caller who may read it gets here (the policy refuses the name to others).
        raise Conflict(f"A {repo.type} repository called {to_namespace.name}/{to_name} already exists")
    before = repo.repo_id
    if (repo.namespace_lower, repo.name_lower) != (to_namespace.name.lower(), to_name.lower()):
        # The old name keeps leading here (the Hub redirects a moved repo's URLs), until a repo takes it.
        _drop_redirect(session, repo.type, repo.namespace, repo.name)
        session.add(RepoRedirect(type=repo.type, namespace_lower=repo.namespace_lower, name_lower=repo.name_lower,
                                 repo_id=repo.id))
    _drop_redirect(session, repo.type, to_namespace.name, to_name)
    repo.namespace, repo.namespace_lower = to_namespace.name, to_namespace.name.lower()
    repo.name, repo.name_lower = to_name, to_name.lower()
    repo.owner_user_id = to_namespace.owner_user_id
    moved_org = (to_namespace.org.id if to_namespace.org else None) != repo.owner_org_id
    repo.owner_org_id = to_namespace.org.id if to_namespace.org else None
    if moved_org:
        repo.resource_group_id = None  # resource groups belong to one org: a moved repo starts at the root
    session.flush()
    audit.record(session, AuditAction.REPO_MOVE, target=("repo", f"{repo.type}/{repo.repo_id}"),
                 namespace=repo.namespace, details={"from": before, "to": repo.repo_id})


# Boolean repo settings: API name (PUT …/settings) → key in repos.settings. One table, one code path.
REPO_FLAGS = {
    "blockUnsafeFiles": "block_unsafe",  # reject commits whose inline scan finds malware/dangerous pickles
    "secretPushProtection": "secret_push_protection",  # reject commits adding verified secrets
    "requireSignedCommits": "require_signed_commits",  # reject unsigned or unverified commits
    "allowCaseCollidingPaths": tree_rules.CASE_SETTING,  # accept `A.txt` beside `a.txt`
}
SIGNED_BRANCHES = "require_signed_commits_branches"  # patterns limiting requireSignedCommits to some branches
# Whether commits Bastion signs with the instance key (API commits, super-squash) satisfy requireSignedCommits:
# on unless set false (they are made by an authenticated writer, so attributable).
SIGNED_ACCEPT_INSTANCE = "require_signed_commits_accept_instance"
ORG_MEMBERS_GATED = "org_members_gated"  # an org repo's gate applies to the org's members too
# What secret push protection refuses on this repo (authz.policy.SECRET_PUSH_PROTECTION_MODES); unset: the
# org's mode for an org repo, else the default.
SECRET_MODE = "secret_push_protection_mode"


def _org_row(repo: Repo) -> Any:
    if repo.owner_org_id is None:
        return None
    from bastion.orgs.models import Organization

    session = object_session(repo)
    assert session is not None, "needs a repo loaded in a session"
    return session.get(Organization, repo.owner_org_id)


def secret_mode_setting(repo: Repo, org: Any = None) -> str:
    """The repo's secretPushProtectionMode as set: its own, else (org repo) the org's, else the default."""
    own = (repo.settings or {}).get(SECRET_MODE)
    if own in SECRET_PUSH_PROTECTION_MODES:
        return str(own)
    org = org if org is not None else _org_row(repo)
    return org.secret_push_protection_mode if org is not None else DEFAULT_SECRET_PUSH_PROTECTION_MODE


def secret_push_protection_mode(repo: Repo, org: Any) -> str | None:
    """What secret push protection refuses on `repo` (None: it is off). On when the repo or its org turns it
    on, as `secretPushProtection` always was; while the org has it on, the org's mode is the loosest an org
    repo gets (a repo may be stricter than its org, never looser: the org's protection cannot be lowered
    from a repo, as the flag cannot be switched off from one)."""
    org_on = org is not None and org.secret_push_protection
    if not ((repo.settings or {}).get("secret_push_protection") or org_on):
        return None
    mode = secret_mode_setting(repo, org)
    return stricter_secret_mode(mode, org.secret_push_protection_mode) if org_on else mode


def settings_payload(repo: Repo) -> dict[str, Any]:
    """The repo's settings as PUT …/settings takes them (GET …/settings)."""
    stored = repo.settings or {}
    payload: dict[str, Any] = {"private": repo.private, "gated": repo.gated or False}
    if repo.owner_org_id is not None:
        payload["orgMembersGated"] = bool(stored.get(ORG_MEMBERS_GATED))
    payload.update({api_name: bool(stored.get(key)) for api_name, key in REPO_FLAGS.items()})
    payload["secretPushProtectionMode"] = secret_mode_setting(repo)
    payload["requireSignedCommitsBranches"] = list(stored.get(SIGNED_BRANCHES) or [])
    payload["requireSignedCommitsAcceptInstance"] = accepts_instance_commits(repo)
    payload.update({key: protection.patterns(repo, kind) for kind, key in protection.SETTINGS.items()})
    return payload


def accepts_instance_commits(repo: Repo) -> bool:
    """Whether instance-signed commits satisfy the repo's signed-commits rule (requireSignedCommitsAcceptInstance)."""
    return (repo.settings or {}).get(SIGNED_ACCEPT_INSTANCE) is not False


def signed_commits_required(repo: Repo, ref: str) -> bool:
    """Whether `ref` of `repo` accepts only verified commits (requireSignedCommits, on the branches of
    requireSignedCommitsBranches when that names any)."""
    settings = repo.settings or {}
    if settings.get(REPO_FLAGS["requireSignedCommits"]) is not True:
        return False
    patterns = settings.get(SIGNED_BRANCHES) or []
    if not isinstance(patterns, list) or not patterns:
        return True
    branch = ref.removeprefix("refs/heads/")
    return ref.startswith("refs/heads/") and any(isinstance(p, str) and fnmatch.fnmatchcase(branch, p)
                                                 for p in patterns)


def _narrowed(before: list[str], after: list[str], empty_is_all: bool) -> bool:
    if empty_is_all and not before:
        return bool(after)  # every ref → some refs
    if empty_is_all and not after:
        return False  # some refs → every ref
    return not set(before) <= set(after)


def protection_lowerings(repo: Repo, flags: dict[str, bool] | None = None, signed_branches: list[str] | None = None,
                         protected: dict[str, list[str]] | None = None,
                         accept_instance: bool | None = None,
                         secret_mode: str | None = None) -> dict[str, dict[str, Any]]:
    """The changes among these settings that lower a protection, as {API name: {"from": …, "to": …}}: a
    protection switched off, a rule's or a protected-ref list's patterns narrowed, instance-signed commits
    accepted by the signed-commits rule. They need REPO_PROTECTION_LOWER; raising one is REPO_MANAGE."""
    stored = repo.settings or {}
    out: dict[str, dict[str, Any]] = {}
    for api_name, value in (flags or {}).items():
        if bool(stored.get(REPO_FLAGS[api_name])) and not value:
            out[api_name] = {"from": True, "to": False}
    if signed_branches is not None:
        before = list(stored.get(SIGNED_BRANCHES) or [])
        if _narrowed(before, signed_branches, empty_is_all=True):
            out["requireSignedCommitsBranches"] = {"from": before, "to": signed_branches}
    for key, value in (protected or {}).items():
        before = [p for p in stored.get(key) or [] if isinstance(p, str)]
        if _narrowed(before, value, empty_is_all=False):
            out[key] = {"from": before, "to": value}
    if accept_instance is True and not accepts_instance_commits(repo):
        out["requireSignedCommitsAcceptInstance"] = {"from": False, "to": True}
    before_mode = secret_mode_setting(repo)
    if secret_mode is not None and stricter_secret_mode(before_mode, secret_mode) != secret_mode:
        out["secretPushProtectionMode"] = {"from": before_mode, "to": secret_mode}
    return out


def authorize_protection_lowering(session: Session, principal: Principal, repo: Repo,
                                  changes: dict[str, Any]) -> None:
    """Raise Forbidden unless `principal` may lower `repo`'s protections (on an org repo: an org admin, or a
    repo manager where the org delegates it); else audit what is lowered (REPO_PROTECTION_LOWER)."""
    if not changes:
        return
    decision = authorize(principal, Permission.REPO_PROTECTION_LOWER, repo_ref(repo))
    if not decision:
        raise Forbidden(f"Forbidden: {decision.reason}")
    audit.record(session, AuditAction.REPO_PROTECTION_LOWER, target=("repo", f"{repo.type}/{repo.repo_id}"),
                 namespace=repo.namespace, details=changes)


def update_settings(session: Session, repo: Repo, private: bool | None, gated: str | bool | None,
                    flags: dict[str, bool] | None = None, signed_branches: list[str] | None = None,
                    protected: dict[str, list[str]] | None = None, org_members_gated: bool | None = None,
                    accept_instance: bool | None = None, secret_mode: str | None = None) -> None:
    """`protected`: {"protectedBranches": [...], "protectedTags": [...]} (bastion.repos.protection).
    `org_members_gated`: an org repo's gate applies to the org's members too (bastion.authz, gated repos).
    `accept_instance`: requireSignedCommitsAcceptInstance. `secret_mode`: secretPushProtectionMode (checked by
    the caller against SECRET_PUSH_PROTECTION_MODES). The caller checked protection_lowerings()."""
    target = ("repo", f"{repo.type}/{repo.repo_id}")
    if private is not None and private != repo.private:
        repo.private = private
        audit.record(session, AuditAction.REPO_UPDATE_VISIBILITY, target=target, namespace=repo.namespace,
                     details={"private": private})
    if gated is not None:
        value = None if gated is False or gated == "false" else gated
        if value not in (None, "auto", "manual"):
            raise BadRequest("Invalid 'gated' value: expected 'auto', 'manual' or false")
        if value != repo.gated:
            before, repo.gated = repo.gated, value
            audit.record(session, AuditAction.REPO_UPDATE_GATED, target=target, namespace=repo.namespace,
                         details={"gated": value or False, "from": before or False})
    if org_members_gated is not None:
        if repo.owner_org_id is None:
            raise BadRequest("'orgMembersGated' applies only to organization repositories")
        if org_members_gated != bool((repo.settings or {}).get(ORG_MEMBERS_GATED)):
            repo.settings = {**(repo.settings or {}), ORG_MEMBERS_GATED: org_members_gated}
            audit.record(session, AuditAction.REPO_UPDATE_GATED, target=target, namespace=repo.namespace,
                         details={"orgMembersGated": org_members_gated})
    for api_name, value in (flags or {}).items():
        key = REPO_FLAGS[api_name]
        if value != bool((repo.settings or {}).get(key)):
            # Reassign, not mutate: the JSON column only notices a new value.
            repo.settings = {**(repo.settings or {}), key: value}
            audit.record(session, AuditAction.REPO_UPDATE_SETTINGS, target=target, namespace=repo.namespace,
                         details={api_name: value})
    if secret_mode is not None and secret_mode != (repo.settings or {}).get(SECRET_MODE):
        before = secret_mode_setting(repo)
        repo.settings = {**(repo.settings or {}), SECRET_MODE: secret_mode}
        audit.record(session, AuditAction.REPO_UPDATE_SETTINGS, target=target, namespace=repo.namespace,
                     details={"secretPushProtectionMode": secret_mode, "from": before})
    if signed_branches is not None and signed_branches != (repo.settings or {}).get(SIGNED_BRANCHES):
        # Branch patterns the signed-commits rule covers; empty: every ref (bastion.signing reads it).
        repo.settings = {**(repo.settings or {}), SIGNED_BRANCHES: signed_branches}
        audit.record(session, AuditAction.REPO_UPDATE_SETTINGS, target=target, namespace=repo.namespace,
                     details={"requireSignedCommitsBranches": signed_branches})
    if accept_instance is not None and accept_instance != accepts_instance_commits(repo):
        repo.settings = {**(repo.settings or {}), SIGNED_ACCEPT_INSTANCE: accept_instance}
        audit.record(session, AuditAction.REPO_UPDATE_SETTINGS, target=target, namespace=repo.namespace,
                     details={"requireSignedCommitsAcceptInstance": accept_instance})
    for key, value in (protected or {}).items():
        if value != (repo.settings or {}).get(key, []):
            repo.settings = {**(repo.settings or {}), key: value}
            audit.record(session, AuditAction.REPO_UPDATE_SETTINGS, target=target, namespace=repo.namespace,
                         details={key: value})
    repo.last_modified = utcnow()


@dataclass(frozen=True)
class RepoListing:
    repos: list[Repo]
    has_more: bool


def list_repos(session: Session, principal: Principal, repo_type: str, *, author: str | None,
               search: list[str], sort: str | None, direction: int, limit: int, offset: int,
               gated: bool | None = None) -> RepoListing:
    query: Select[tuple[Repo]] = select(Repo).where(
        Repo.type == repo_type, readable_repos_clause(principal, REPO_COLUMNS))
    if gated is not None:
        query = query.where(Repo.gated.is_not(None) if gated else Repo.gated.is_(None))
    if author:
        query = query.where(Repo.namespace_lower == author.lower())
    for term in search:
        if term:
            like = "%" + term.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
            query = query.where(func.lower(Repo.namespace + "/" + Repo.name).like(like, escape="\\"))
    if sort and sort not in SORT_COLUMNS:
        raise BadRequest(f"Invalid sort {sort!r}: expected one of {', '.join(SORT_COLUMNS)}")
    column = SORT_COLUMNS.get(sort or "", Repo.created_at)
    order = column.asc() if direction > 0 else column.desc()
    query = query.order_by(order, Repo.id.desc() if direction <= 0 else Repo.id.asc())
    rows = list(session.scalars(query.offset(offset).limit(limit + 1)))
    return RepoListing(rows[:limit], len(rows) > limit)


def list_owned_repos(session: Session, principal: Principal, namespace: str, *, limit: int,
                     offset: int) -> RepoListing:
    """The repos of every type in `namespace` that `principal` may read, newest first."""
    query = (select(Repo).where(Repo.namespace_lower == namespace.lower(),
                                readable_repos_clause(principal, REPO_COLUMNS))
             .order_by(Repo.created_at.desc(), Repo.id.desc()))
    rows = list(session.scalars(query.offset(offset).limit(limit + 1)))
    return RepoListing(rows[:limit], len(rows) > limit)


# ---- repos in an org's resource groups ----------------------------------------------------------
# Orgs own the groups; which repos a group holds is repos' (orgs sits below repos and asks through
# the hooks registered at the end of this section).

def group_move(session: Session, repo: Repo, group_pk: int | None,
               ) -> tuple[orgs_models.ResourceGroup | None, RepoGroupMove]:
    """Moving `repo` to the group `group_pk` of its org (None: the org root), for the policy to judge. A group
    its org does not have is judged as the root, so nothing about the repo or its org is told before the
    decision; the caller reports the missing group after it."""
    group = orgs.find_group(session, repo.owner_org_id, group_pk) if group_pk is not None else None
    return group, RepoGroupMove(repo_ref(repo), orgs.group_facts(session, group) if group is not None else None)


def group_repos(session: Session, group: orgs_models.ResourceGroup) -> list[Repo]:
    return list(session.scalars(select(Repo).where(Repo.resource_group_id == group.id).order_by(Repo.name_lower)))


def set_repo_group(session: Session, repo: Repo, group: orgs_models.ResourceGroup | None) -> None:
    """Put an org repo into `group` (None: the org root); a repo is in at most one group."""
    if repo.owner_org_id is None:
        raise BadRequest("Only organization repositories belong to resource groups")
    if group is not None and group.org_id != repo.owner_org_id:
        raise BadRequest("The resource group belongs to another organization")
    before = repo.resource_group_id
    new = group.id if group is not None else None
    if before == new:
        return
    repo.resource_group_id = new
    audit.record(session, AuditAction.REPO_UPDATE_RESOURCE_GROUP, target=("repo", f"{repo.type}/{repo.repo_id}"),
                 namespace=repo.namespace, details={"from": f"{before:024x}" if before else None,
                                                    "to": group.public_id if group else None})


def _org_holds_repos(session: Session, org: orgs_models.Organization) -> None:
    count = session.scalar(select(func.count(Repo.id)).where(Repo.owner_org_id == org.id)) or 0
    if count:
        raise Conflict(f"The organization still owns {count} repositories: delete or move them first")


def _group_holds_repos(session: Session, group: orgs_models.ResourceGroup) -> None:
    count = session.scalar(select(func.count(Repo.id)).where(Repo.resource_group_id == group.id)) or 0
    if count:
        raise Conflict(f"The resource group still holds {count} repositories: move them out first")


def _group_repos_part(session: Session, group: orgs_models.ResourceGroup, principal: Principal) -> dict[str, Any]:
    # private repos of the group only for those who may read them: the same policy as everywhere
    return {"repos": [{"type": r.type, "name": r.repo_id, "private": r.private} for r in group_repos(session, group)
                      if authorize(principal, Permission.REPO_METADATA_READ, repo_ref(r))]}


for _registry, _hook in ((orgs.org_delete_checks, _org_holds_repos), (orgs.group_delete_checks, _group_holds_repos),
                         (orgs.group_detail_parts, _group_repos_part)):
    if _hook not in _registry:
        _registry.append(_hook)  # type: ignore[attr-defined]
