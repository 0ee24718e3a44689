"""HTTP for repositories at the Hub's URLs: parse → authz.require (once) → service → JSON.

Revisions and paths arrive URL-quoted (`refs%2Fpr%2F1`); where a route has both, they are
split on the raw path so a revision containing '/' is never confused with a file path.

Over 500 lines on purpose: the Hub's repository routes overlap (`/api/models/{ns}/{name}/tree/...`
beside catch-all revision paths), and registering them from one module keeps their order visible.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from bastion.accounts.service import user_by_id
from bastion.api.auth import current_principal, hub_of
from bastion.api.bodies import json_object, parse_json
from bastion.api.urls import base_url, int_param, next_link, repo_url
from bastion.authz import Permission, Principal, permission, require
from bastion.authz.policy import check_secret_mode
from bastion.db import transaction
from bastion.errors import (
    AuthenticationRequired,
    BadRequest,
    Conflict,
    EntryNotFound,
    NotFound,
    PayloadTooLarge,
    RepoMoved,
    RepoNotFound,
)
from bastion.hub import Hub
from bastion.orgs import service as orgs
from bastion.repos import annotations, browse, cards, commit, protection, refs, service, upload_policy
from bastion.repos.models import Repo
from bastion.storage.gitstore import commit_datetime, validate_path
from bastion.storage.regions import DEFAULT_REGION, check_region

if TYPE_CHECKING:
    from bastion.accounts.models import User

router = APIRouter()
TYPES = service.TYPE_BY_PLURAL
DEFAULT_PAGE = 1000
MAX_PAGE = 10_000


def _type(plural: str) -> str:
    if plural not in TYPES:
        raise NotFound(f"Unknown repository type {plural!r}")
    return TYPES[plural]


def load_repo(hub: Hub, session: Session, principal: Principal, plural: str, ns: str, name: str,
          perm: Permission) -> Repo:
    """Find the repo and make the route's one authorization check on it.

    A name the repo had before it was moved redirects (307) to its current name, as the Hub does, but
    only after the same check on the repo itself: whoever may not read it gets the missing repo's 404,
    so an old name is no oracle for where a private repo went."""
    try:
        repo = service.find_repo(session, _type(plural), ns, name)
    except NotFound:
        moved = service.moved_repo(session, _type(plural), ns, name)
        if moved is None:
            raise RepoNotFound() from None
        require(principal, perm, service.repo_ref(moved, principal.user_id))
        raise RepoMoved(f"{ns}/{name}", moved.repo_id) from None
    require(principal, perm, service.repo_ref(repo, principal.user_id))
    return repo


def check_repo(request: Request, principal: Principal, plural: str, ns: str, name: str, perm: Permission) -> None:
    """load_repo()'s check alone, for routes that answer from the check itself (auth-check, likes)."""
    hub = hub_of(request)
    with transaction(hub.sessions, readonly=True) as session:
        load_repo(hub, session, principal, plural, ns, name, perm)


def _actor(session: Session, principal: Principal) -> User:
    user = user_by_id(session, principal.user_id)
    if user is None:
        raise RepoNotFound()
    return user


def raw_tail(request: Request, prefix: str) -> list[str]:
    """URL-decoded segments after `prefix` in the raw (still quoted) request path.

    Namespaces and names are plain ASCII (validated), so their raw and decoded forms agree and
    the prefix is located by position, never by searching for a word a repo could be named.
    """
    raw = request.scope.get("raw_path")
    path = (raw.decode("latin-1") if raw else request.url.path).split("?", 1)[0]
    if not path.startswith(prefix):
        return []
    return [unquote(seg) for seg in path[len(prefix):].split("/")]


def _truthy(value: str | None) -> bool:
    return (value or "").lower() in ("1", "true", "yes")


def _visibility(data: dict[str, Any]) -> bool | None:
    if "visibility" in data and data["visibility"] is not None:
        vis = data["visibility"]
        if vis not in ("public", "private", "protected"):
            raise BadRequest("'visibility' must be 'public', 'private' or 'protected'")
        return vis != "public"
    if "private" in data and data["private"] is not None:
        if not isinstance(data["private"], bool):
            raise BadRequest("'private' must be a boolean")
        return data["private"]
    return None


# ---- repository lifecycle ----------------------------------------------------------------------

@router.post("/api/repos/create")
@permission(Permission.REPO_CREATE)
async def create_repo(request: Request, principal: Principal = Depends(current_principal)) -> JSONResponse:
    data = await json_object(request)
    hub = hub_of(request)
    name = data.get("name")
    if not isinstance(name, str):
        raise BadRequest("'name' is required")
    repo_type = service.parse_repo_type(data.get("type"))
    ns_name = data.get("organization") or principal.username
    if ns_name is not None and not isinstance(ns_name, str):
        raise BadRequest("'organization' must be a string")
    requested_private = _visibility(data)
    group_id = data.get("resourceGroupId")
    group_pk = None
    if group_id is not None:

        group_pk = orgs.parse_group_id(group_id)
    region = check_region(data.get("region"), hub.regions)
    sdk = _space_fields(data, repo_type)

    def run() -> Repo:

        with transaction(hub.sessions) as session:
            ns = service.namespace_ref(session, ns_name or "")
            group = None
            if group_pk is not None:
                if ns.org is None:
                    raise BadRequest("'resourceGroupId' applies only to organization repositories")
                # A group the org does not have is judged as the org root, and reported only to those
                # allowed there: no answer before authorization depends on what the org holds.
                group = orgs.find_group(session, ns.org.id, group_pk)
                ns = dataclasses.replace(ns, group=orgs.group_facts(session, group) if group else None)
            require(principal, Permission.REPO_CREATE, service.for_new_name(session, ns, repo_type, name))
            if group_pk is not None and group is None:
                raise NotFound("Resource group not found")
            private = orgs.repo_private_on_create(ns.org, requested_private) if ns.org is not None \
                else bool(requested_private)
            # The region asked for, else the resource group's, else the org's for the repo type, else the org's,
            # else the instance's default.
            where = region or (orgs.default_region(session, ns.org.id, group, repo_type) if ns.org is not None
                              else None)
            if where is not None and where not in hub.regions:
                raise BadRequest(f"The default storage region {where!r} of this organization is not configured on "
                                 f"this instance (regions: {', '.join(sorted(hub.regions))})")
            return service.create_repo(hub, session, _actor(session, principal), ns, name, repo_type, private,
                                       sdk=sdk, region=where or DEFAULT_REGION)

    try:
        repo = await _run(run)
    except Conflict as exc:
        # Only for a repo the caller can read (the policy answers 403 for one they cannot; docs/architecture.md):
        # the client reads the existing repo's url from the 409 body when exist_ok=True.
        exc.extra["url"] = repo_url(request, repo_type, f"{ns_name}/{name}")
        raise
    return JSONResponse({"url": repo_url(request, repo.type, repo.repo_id), "name": repo.repo_id,
                         "id": f"{repo.id:024x}"})


@router.delete("/api/repos/delete")
@permission(Permission.REPO_DELETE)
async def delete_repo(request: Request, principal: Principal = Depends(current_principal)) -> JSONResponse:
    data = await json_object(request)
    hub = hub_of(request)
    ns, name = _ns_name(data, principal)
    plural = service.PLURAL_BY_TYPE[service.parse_repo_type(data.get("type"))]

    def run() -> None:
        with transaction(hub.sessions) as session:
            repo = load_repo(hub, session, principal, plural, ns, name, Permission.REPO_DELETE)
            service.delete_repo(hub, session, repo)

    await _run(run)
    return JSONResponse({})


# What the Hub's create call may carry for a Space that Bastion, which stores Spaces but runs none, cannot
# honour: refused rather than accepted and dropped (secrets especially must not seem kept).
SPACE_RUNTIME_FIELDS = ("hardware", "sleepTimeSeconds", "secrets", "variables", "volumes", "template")
SPACE_SDKS = ("gradio", "streamlit", "docker", "static")


def _space_fields(data: dict[str, Any], repo_type: str) -> str | None:
    """The Space's `sdk` (stored and shown in its info); None for other repo types."""
    given = [key for key in SPACE_RUNTIME_FIELDS if data.get(key) is not None]
    if given:
        raise BadRequest(f"Bastion stores Spaces but does not run them: {', '.join(repr(k) for k in given)} "
                         "cannot be set")
    sdk = data.get("sdk")
    if sdk is None:
        return None
    if repo_type != "space":
        raise BadRequest("'sdk' applies only to Spaces")
    if sdk not in SPACE_SDKS:
        raise BadRequest(f"Invalid 'sdk': expected one of {', '.join(SPACE_SDKS)}")
    return str(sdk)


def _ns_name(data: dict[str, Any], principal: Principal) -> tuple[str, str]:
    name = data.get("name")
    ns = data.get("organization") or principal.username
    if not isinstance(name, str) or not name:
        raise BadRequest("'name' is required")
    if "/" in name:
        ns, name = service.split_repo_id(name)
    if not isinstance(ns, str) or not ns:
        raise RepoNotFound()
    return ns, name


@router.post("/api/repos/move")
@permission(Permission.REPO_MANAGE)
async def move_repo(request: Request, principal: Principal = Depends(current_principal)) -> JSONResponse:
    data = await json_object(request)
    hub = hub_of(request)
    from_ns, from_name = service.split_repo_id(data.get("fromRepo"))  # type: ignore[arg-type]
    to_ns, to_name = service.split_repo_id(data.get("toRepo"))  # type: ignore[arg-type]
    repo_type = service.parse_repo_type(data.get("type"))

    def run() -> None:
        with transaction(hub.sessions) as session:
            repo = service.find_repo(session, repo_type, from_ns, from_name)
            move = service.transfer_ref(session, repo, to_ns, to_name)
            require(principal, Permission.REPO_MANAGE, move)  # both ends, in the policy (authz.policy._transfer_may)
            service.move_repo(session, repo, move.target, to_name)

    await _run(run)
    return JSONResponse({})


@router.get("/api/{plural}/{ns}/{name}/settings")
@permission(Permission.REPO_MANAGE)
def get_settings(plural: str, ns: str, name: str, request: Request,
                 principal: Principal = Depends(current_principal)) -> JSONResponse:
    """What PUT …/settings set; for those who may change it (a private repo stays invisible to others)."""
    hub = hub_of(request)
    with transaction(hub.sessions, readonly=True) as session:
        repo = load_repo(hub, session, principal, plural, ns, name, Permission.REPO_MANAGE)
        return JSONResponse(service.settings_payload(repo))


@router.put("/api/{plural}/{ns}/{name}/settings")
@permission(Permission.REPO_MANAGE)
async def update_settings(plural: str, ns: str, name: str, request: Request,
                          principal: Principal = Depends(current_principal)) -> JSONResponse:
    data = await json_object(request)
    hub = hub_of(request)
    private = _visibility(data)
    gated = data.get("gated")
    if gated is not None and not isinstance(gated, str | bool):
        raise BadRequest("'gated' must be 'auto', 'manual' or false")
    unbuilt = [k for k in ("gatedNotificationsMode", "gatedNotificationsEmail") if data.get(k) is not None]
    if unbuilt:
        # Managers are e-mailed about each manual request as it comes; other notification choices are not built.
        raise BadRequest(f"{', '.join(unbuilt)}: not supported by this server (each new request is e-mailed to "
                         "the repository's managers)")
    org_members_gated = data.get("orgMembersGated")
    if org_members_gated is not None and not isinstance(org_members_gated, bool):
        raise BadRequest("'orgMembersGated' must be a boolean")
    flags = {k: data[k] for k in service.REPO_FLAGS if data.get(k) is not None}
    for key, value in flags.items():
        if not isinstance(value, bool):
            raise BadRequest(f"'{key}' must be a boolean")
    secret_mode = data.get("secretPushProtectionMode")
    if secret_mode is not None:
        secret_mode = check_secret_mode(secret_mode)
    accept_instance = data.get("requireSignedCommitsAcceptInstance")
    if accept_instance is not None and not isinstance(accept_instance, bool):
        raise BadRequest("'requireSignedCommitsAcceptInstance' must be a boolean")
    signed_branches = data.get("requireSignedCommitsBranches")
    if signed_branches is not None:
        signed_branches = protection.normalize_patterns(signed_branches, "requireSignedCommitsBranches")
    protected = {key: protection.normalize_patterns(data[key], key) for key in protection.SETTINGS.values()
                 if data.get(key) is not None}

    def run() -> None:
        with transaction(hub.sessions) as session:
            repo = load_repo(hub, session, principal, plural, ns, name, Permission.REPO_MANAGE)
            if private is not None and repo.owner_org_id is not None:

                org = service.repo_ref(repo).org
                assert org is not None
                orgs.check_visibility_change(org, principal, private)
            lowered = service.protection_lowerings(repo, flags, signed_branches, protected, accept_instance,
                                                   secret_mode)
            service.authorize_protection_lowering(session, principal, repo, lowered)
            service.update_settings(session, repo, private, gated, flags, signed_branches, protected,
                                    org_members_gated, accept_instance, secret_mode)

    await _run(run)
    return JSONResponse({})


# ---- listing and info -----------------------------------------------------------------------------

# ---- likes, one's repositories, duplication -----------------------------------------------------
# Bastion has no likes (no one can like a repo: the client cannot either, "to prevent spam"), so every
# repo's likers and every user's likes are empty, truthfully; unliking is the no-op it then is, after the
# same checks the Hub makes (a repo the caller may not see is a 404 RepositoryNotFound).

@router.get("/api/users/{username}/likes")
@permission(Permission.REPO_LIST)
def user_likes(username: str, request: Request, principal: Principal = Depends(current_principal)) -> JSONResponse:
    hub = hub_of(request)
    require(principal, Permission.REPO_LIST)
    with transaction(hub.sessions, readonly=True) as session:
        if service.namespace_ref(session, username).owner_user_id is None:
            raise NotFound(f"User {username!r} not found")
    return JSONResponse([])


@router.get("/api/{plural}/{ns}/{name}/likers")
@permission(Permission.REPO_METADATA_READ)
def repo_likers(plural: str, ns: str, name: str, request: Request,
                principal: Principal = Depends(current_principal)) -> JSONResponse:
    check_repo(request, principal, plural, ns, name, Permission.REPO_METADATA_READ)
    return JSONResponse([])


@router.delete("/api/{plural}/{ns}/{name}/like")
@permission(Permission.REPO_METADATA_READ)
def unlike(plural: str, ns: str, name: str, request: Request,
           principal: Principal = Depends(current_principal)) -> JSONResponse:
    check_repo(request, principal, plural, ns, name, Permission.REPO_METADATA_READ)
    if principal.user_id is None:
        raise AuthenticationRequired("You must be signed in to unlike a repository")
    return JSONResponse({})


@router.post("/api/{plural}/{ns}/{name}/like")
@permission(Permission.REPO_METADATA_READ)
def like(plural: str, ns: str, name: str, request: Request,
         principal: Principal = Depends(current_principal)) -> JSONResponse:
    check_repo(request, principal, plural, ns, name, Permission.REPO_METADATA_READ)
    raise BadRequest("Likes are not offered by this Bastion instance")


@router.post("/api/{plural}/{ns}/{name}/duplicate")
@permission(Permission.REPO_READ)
def duplicate(plural: str, ns: str, name: str, request: Request,
              principal: Principal = Depends(current_principal)) -> JSONResponse:
    """`duplicate_repo` / `duplicate_space`: not built. A repo the caller may not read is the Hub's 404
    RepositoryNotFound; one they may read is refused with a 400 that says how to copy it instead."""
    hub = hub_of(request)
    with transaction(hub.sessions, readonly=True) as session:
        repo = load_repo(hub, session, principal, plural, ns, name, Permission.REPO_READ)
        repo_id = repo.repo_id
    raise BadRequest(f"Duplicating a repository is not offered by this Bastion instance: create the new "
                     f"repository and push {repo_id}'s history to it (git clone --mirror, git push --mirror)")


@router.get("/api/settings/repositories")
@permission(Permission.USER_READ)
def my_repositories(request: Request, principal: Principal = Depends(current_principal)) -> JSONResponse:
    """`list_user_repos()` (`hf repos ls`): the caller's own repositories."""
    if not principal.authenticated:
        raise AuthenticationRequired("You must be signed in to list your repositories")
    require(principal, Permission.USER_READ)
    hub = hub_of(request)
    with transaction(hub.sessions, readonly=True) as session:
        return _repositories_storage(request, hub, session, principal, _actor(session, principal).name)


@router.get("/api/organizations/{org}/settings/repositories")
@permission(Permission.ORG_READ)
def org_repositories(org: str, request: Request, principal: Principal = Depends(current_principal)) -> JSONResponse:
    """`list_user_repos(namespace=org)` (`hf repos ls --namespace`): for the org's members, the org's
    repositories each may read."""
    hub = hub_of(request)
    with transaction(hub.sessions, readonly=True) as session:
        found, facts = orgs.org_with_facts(session, org)
        require(principal, Permission.ORG_READ, facts)
        return _repositories_storage(request, hub, session, principal, found.name)


def _repositories_storage(request: Request, hub: Hub, session: Session, principal: Principal,
                          namespace: str) -> JSONResponse:
    """The repos of `namespace` the caller may read, newest first, with the bytes each holds at its main
    branch's head (the `usedStorage` of its info) and that share of the page's total."""
    limit = int_param(request, "limit", DEFAULT_PAGE, 1, MAX_PAGE)
    offset = int_param(request, "cursor", 0, 0, 10**9)
    listing = service.list_owned_repos(session, principal, namespace, limit=limit, offset=offset)
    items: list[dict[str, Any]] = []
    for repo in listing.repos:
        git = hub.git(repo.storage_key)
        head = git.resolve("main")
        storage = sum(f.get("size", 0) for f in browse.siblings(git, head, True))
        items.append({"id": repo.repo_id, "type": repo.type, "updatedAt": browse.iso(commit_datetime(head)),
                      "visibility": "private" if repo.private else "public", "storage": storage})
    total = sum(item["storage"] for item in items) or 1
    for item in items:
        item["storagePercent"] = round(100 * item["storage"] / total, 2)
    headers = {"Link": next_link(request, cursor=offset + limit)} if listing.has_more else {}
    return JSONResponse(items, headers=headers)


@router.get("/api/{plural}")
@permission(Permission.REPO_LIST)
def list_repos(plural: str, request: Request, principal: Principal = Depends(current_principal)) -> Response:
    hub = hub_of(request)
    repo_type = _type(plural)
    require(principal, Permission.REPO_LIST)
    qp = request.query_params
    limit = int_param(request, "limit", 1000, 1, MAX_PAGE)
    offset = int_param(request, "cursor", 0, 0, 10**9)
    direction = int_param(request, "direction", -1, -1, 1)
    expand = qp.getlist("expand")
    _check_expand(repo_type, expand)
    gated = qp.get("gated")
    if gated is not None and gated.lower() not in ("true", "false"):
        raise BadRequest("'gated' must be true or false")
    with transaction(hub.sessions, readonly=True) as session:
        listing = service.list_repos(session, principal, repo_type, author=qp.get("author"),
                                     search=qp.getlist("search"), sort=qp.get("sort"), direction=direction,
                                     limit=limit, offset=offset,
                                     gated=None if gated is None else gated.lower() == "true")
        items = []
        full = _truthy(qp.get("full"))
        for repo in listing.repos:
            git = hub.git(repo.storage_key)
            head = git.resolve("main")
            info = browse.repo_info(repo, git, head, expand=expand, blobs=False, security_status=None)
            if not expand and not full:
                info.pop("siblings", None)
            items.append(info)
    headers = {"Link": next_link(request, cursor=offset + limit)} if listing.has_more else {}
    return JSONResponse(items, headers=headers)


def _check_expand(repo_type: str, expand: list[str]) -> None:
    unknown = [e for e in expand if e not in browse.EXPANDS[repo_type]]
    if unknown:
        raise BadRequest(f"Invalid expand value(s): {', '.join(unknown)}")


def _info(plural: str, ns: str, name: str, revision: str, request: Request, principal: Principal) -> JSONResponse:
    hub = hub_of(request)
    qp = request.query_params
    expand = qp.getlist("expand")
    with transaction(hub.sessions, readonly=True) as session:
        repo = load_repo(hub, session, principal, plural, ns, name, Permission.REPO_METADATA_READ)
        _check_expand(repo.type, expand)
        git = hub.git(repo.storage_key)
        head = git.resolve(revision)
        wants_security = _truthy(qp.get("securityStatus")) or "securityRepoStatus" in expand
        security = annotations.need(annotations.security_status, "security_status")(
            hub, session, repo, head, principal) if wants_security else None
        group = None
        if repo.resource_group_id is not None:

            found = orgs.find_group(session, repo.owner_org_id, repo.resource_group_id)
            group = orgs.resource_group_payload(session, found) if found is not None else None
        return JSONResponse(browse.repo_info(repo, git, head, expand=expand, blobs=_truthy(qp.get("blobs")),
                                             security_status=security, resource_group=group))


@router.get("/api/{plural}/{ns}/{name}")
@permission(Permission.REPO_METADATA_READ)
def repo_info(plural: str, ns: str, name: str, request: Request,
              principal: Principal = Depends(current_principal)) -> JSONResponse:
    return _info(plural, ns, name, "main", request, principal)


@router.get("/api/{plural}/{ns}/{name}/revision/{revision:path}")
@permission(Permission.REPO_METADATA_READ)
def repo_info_revision(plural: str, ns: str, name: str, revision: str, request: Request,
                       principal: Principal = Depends(current_principal)) -> JSONResponse:
    return _info(plural, ns, name, revision, request, principal)


# ---- trees, paths, refs, history -------------------------------------------------------------------

@router.get("/api/{plural}/{ns}/{name}/tree/{rest:path}")
@permission(Permission.REPO_METADATA_READ)
def list_tree(plural: str, ns: str, name: str, rest: str, request: Request,
              principal: Principal = Depends(current_principal)) -> JSONResponse:
    hub = hub_of(request)
    segments = raw_tail(request, f"/api/{plural}/{ns}/{name}/tree/") or [rest]
    revision, path = segments[0], "/".join(s for s in segments[1:] if s)
    recursive = _truthy(request.query_params.get("recursive"))
    expand = _truthy(request.query_params.get("expand"))
    limit = int_param(request, "limit", DEFAULT_PAGE if not expand else 100, 1, MAX_PAGE)
    offset = int_param(request, "cursor", 0, 0, 10**9)
    with transaction(hub.sessions, readonly=True) as session:
        repo = load_repo(hub, session, principal, plural, ns, name, Permission.REPO_METADATA_READ)
        git = hub.git(repo.storage_key)
        head = git.resolve(revision)
        if path:
            validate_path(path)
        tree = git.tree_at(head, path)
        if tree.type_str != "tree":
            raise EntryNotFound(f"{path} is not a folder", headers={"X-Repo-Commit": str(head.id)})
        entries, has_more = browse.tree_page(git, tree, path, recursive, offset, limit)
        service.mark_purged(session, repo.id, entries)
        if expand:
            _expand_entries(hub, session, repo, git, head, entries, principal)
    headers = {"Link": next_link(request, cursor=offset + limit)} if has_more else {}
    return JSONResponse(entries, headers=headers)


def _expand_entries(hub: Hub, session: Session, repo: Repo, git: Any, head: Any, entries: list[dict[str, Any]],
                    principal: Principal) -> None:
    last = browse.last_commits(git, head, [e["path"] for e in entries])
    statuses = annotations.need(annotations.file_statuses, "file_statuses")(
        hub, session, repo, [scan_key(e) for e in entries if e["type"] == "file"], principal)
    for entry in entries:
        if entry["path"] in last:
            entry["lastCommit"] = browse.commit_summary(last[entry["path"]])
        if entry["type"] == "file":
            # Per-file scan status; `unscanned` until every enabled scanner has actually run on the blob.
            entry["securityFileStatus"] = statuses[scan_key(entry)]


def scan_key(entry: dict[str, Any]) -> str:
    """What a file's verdicts are keyed by: the LFS sha256, or the git blob id of a regular file."""
    return str(entry["lfs"]["oid"] if "lfs" in entry else entry["oid"])


@router.post("/api/{plural}/{ns}/{name}/resource-group")
@permission(Permission.REPO_RESOURCE_GROUP)
async def set_repo_group(plural: str, ns: str, name: str, request: Request,
                         principal: Principal = Depends(current_principal)) -> JSONResponse:
    """The Hub's `{resourceGroupId: <24-hex> | null}`; null moves the repo to the org root."""
    data = await json_object(request)
    if plural not in TYPES:
        raise BadRequest(f"Unknown repository type {plural!r}")
    raw = data.get("resourceGroupId")
    group_pk = orgs.parse_group_id(raw) if raw is not None else None  # the id's form: no repo needed

    def run() -> dict[str, Any]:
        with transaction(hub_of(request).sessions) as session:
            repo = service.find_repo(session, TYPES[plural], ns, name)
            group, move = service.group_move(session, repo, group_pk)
            require(principal, Permission.REPO_RESOURCE_GROUP, move)
            if group_pk is not None and group is None:
                raise NotFound("Resource group not found")  # said only to those who may move the repo
            service.set_repo_group(session, repo, group)
            return {"resourceGroup": orgs.resource_group_payload(session, group) if group else None}

    return JSONResponse(await run_in_threadpool(run))


@router.post("/api/{plural}/{ns}/{name}/paths-info/{revision:path}")
@permission(Permission.REPO_METADATA_READ)
async def paths_info(plural: str, ns: str, name: str, revision: str, request: Request,
                     principal: Principal = Depends(current_principal)) -> JSONResponse:
    hub = hub_of(request)
    form = await request.form()
    paths = [p for p in form.getlist("paths") if isinstance(p, str)]
    if len(paths) > 1000:
        raise BadRequest("At most 1000 paths per request")
    expand = _truthy(str(form.get("expand") or ""))

    def run() -> list[dict[str, Any]]:
        with transaction(hub.sessions, readonly=True) as session:
            repo = load_repo(hub, session, principal, plural, ns, name, Permission.REPO_METADATA_READ)
            git = hub.git(repo.storage_key)
            head = git.resolve(revision)
            for p in paths:
                validate_path(p.strip("/"))
            entries = browse.paths_info(git, head, paths)
            service.mark_purged(session, repo.id, entries)
            if expand:
                _expand_entries(hub, session, repo, git, head, entries, principal)
            return entries

    return JSONResponse(await _run(run))


@router.get("/api/{plural}/{ns}/{name}/auth-check")
@permission(Permission.REPO_READ)
def auth_check(plural: str, ns: str, name: str, request: Request,
               principal: Principal = Depends(current_principal)) -> JSONResponse:
    """`auth_check`: 200 when the caller may read the repo's files; else the answer a download would
    get (404 RepoNotFound for a repo they may not see, 401/403 GatedRepo behind a gate)."""
    check_repo(request, principal, plural, ns, name, Permission.REPO_READ)
    return JSONResponse({})


@router.get("/api/{plural}/{ns}/{name}/auth-check/write")
@permission(Permission.REPO_WRITE)
def auth_check_write(plural: str, ns: str, name: str, request: Request,
                     principal: Principal = Depends(current_principal)) -> JSONResponse:
    """`auth_check(write=True)`: 200 when the caller may write to the repo."""
    check_repo(request, principal, plural, ns, name, Permission.REPO_WRITE)
    return JSONResponse({})


@router.get("/api/{plural}/{ns}/{name}/refs")
@permission(Permission.REPO_METADATA_READ)
def list_refs(plural: str, ns: str, name: str, request: Request,
              principal: Principal = Depends(current_principal)) -> JSONResponse:
    hub = hub_of(request)
    with transaction(hub.sessions, readonly=True) as session:
        repo = load_repo(hub, session, principal, plural, ns, name, Permission.REPO_METADATA_READ)
    git = hub.git(repo.storage_key)
    return JSONResponse(browse.refs_payload(git, _truthy(request.query_params.get("include_prs"))))


@router.get("/api/{plural}/{ns}/{name}/commits/{revision:path}")
@permission(Permission.REPO_METADATA_READ)
def list_commits(plural: str, ns: str, name: str, revision: str, request: Request,
                 principal: Principal = Depends(current_principal)) -> JSONResponse:
    hub = hub_of(request)
    limit = int_param(request, "limit", 50, 1, 1000)
    page = int_param(request, "p", 0, 0, 10**7)
    formatted = "formatted" in request.query_params.getlist("expand[]") + request.query_params.getlist("expand")
    with transaction(hub.sessions, readonly=True) as session:
        repo = load_repo(hub, session, principal, plural, ns, name, Permission.REPO_METADATA_READ)
    git = hub.git(repo.storage_key)
    start = git.resolve(revision)
    commits, has_more = browse.history(git, start, page * limit, limit)
    headers = {"Link": next_link(request, p=page + 1)} if has_more else {}
    signatures = annotations.need(annotations.signatures, "signatures")(hub, repo, commits)
    return JSONResponse([browse.history_entry(c, formatted, signatures[str(c.id)]) for c in commits],
                        headers=headers)


@router.post("/api/{plural}/{ns}/{name}/branch/{branch:path}")
@permission(Permission.REPO_WRITE)
async def create_branch(plural: str, ns: str, name: str, branch: str, request: Request,
                        principal: Principal = Depends(current_principal)) -> JSONResponse:
    data = await json_object(request)
    hub = hub_of(request)
    start = data.get("startingPoint")
    if start is not None and not isinstance(start, str):
        raise BadRequest("'startingPoint' must be a string")

    def run() -> None:
        with transaction(hub.sessions) as session:
            repo = load_repo(hub, session, principal, plural, ns, name, Permission.REPO_WRITE)
            refs.create_branch(hub, session, repo, branch, start)

    await _run(run)
    return JSONResponse({})


@router.delete("/api/{plural}/{ns}/{name}/branch/{branch:path}")
@permission(Permission.REPO_WRITE)
def delete_branch(plural: str, ns: str, name: str, branch: str, request: Request,
                  principal: Principal = Depends(current_principal)) -> JSONResponse:
    hub = hub_of(request)
    with transaction(hub.sessions) as session:
        repo = load_repo(hub, session, principal, plural, ns, name, Permission.REPO_WRITE)
        refs.delete_branch(hub, session, repo, branch)
    return JSONResponse({})


@router.post("/api/{plural}/{ns}/{name}/tag/{revision:path}")
@permission(Permission.REPO_WRITE)
async def create_tag(plural: str, ns: str, name: str, revision: str, request: Request,
                     principal: Principal = Depends(current_principal)) -> JSONResponse:
    data = await json_object(request)
    hub = hub_of(request)
    tag, message = data.get("tag"), data.get("message")
    if not isinstance(tag, str) or not tag:
        raise BadRequest("'tag' is required")
    if message is not None and not isinstance(message, str):
        raise BadRequest("'message' must be a string")

    def run() -> None:
        with transaction(hub.sessions) as session:
            repo = load_repo(hub, session, principal, plural, ns, name, Permission.REPO_WRITE)
            refs.create_tag(hub, session, repo, _actor(session, principal), revision, tag, message)

    await _run(run)
    return JSONResponse({})


@router.delete("/api/{plural}/{ns}/{name}/tag/{tag:path}")
@permission(Permission.REPO_WRITE)
def delete_tag(plural: str, ns: str, name: str, tag: str, request: Request,
               principal: Principal = Depends(current_principal)) -> JSONResponse:
    hub = hub_of(request)
    with transaction(hub.sessions) as session:
        repo = load_repo(hub, session, principal, plural, ns, name, Permission.REPO_WRITE)
        refs.delete_tag(hub, session, repo, tag)
    return JSONResponse({})


@router.post("/api/{plural}/{ns}/{name}/super-squash/{branch:path}")
@permission(Permission.REPO_WRITE)
async def super_squash(plural: str, ns: str, name: str, branch: str, request: Request,
                       principal: Principal = Depends(current_principal)) -> JSONResponse:
    data = await json_object(request)
    hub = hub_of(request)
    message = data.get("message") or "Super-squash branch"
    if not isinstance(message, str):
        raise BadRequest("'message' must be a string")

    def run() -> str:
        with transaction(hub.sessions) as session:
            repo = load_repo(hub, session, principal, plural, ns, name, Permission.REPO_WRITE)
            ref = hub.git(repo.storage_key).branch_ref_name(branch)
            if service.signed_commits_required(repo, ref):
                # Replacing a signed branch's history with one instance-signed commit sets the rule aside.
                service.authorize_protection_lowering(session, principal, repo, {"superSquash": {
                    "branch": branch, "rule": "requireSignedCommits"}})
            return commit.squash_history(hub, session, repo, _actor(session, principal), branch, message)

    return JSONResponse({"commitId": await _run(run)})


# ---- uploads and commits -----------------------------------------------------------------------

@router.post("/api/{plural}/{ns}/{name}/preupload/{revision:path}")
@permission(Permission.REPO_CONTENT_UPLOAD)  # which files go through LFS: writers and pull requests' authors
async def preupload(plural: str, ns: str, name: str, revision: str, request: Request,
                    principal: Principal = Depends(current_principal)) -> JSONResponse:
    data = await json_object(request, 8 << 20)
    hub = hub_of(request)
    gitignore = data.get("gitIgnore")
    if gitignore is not None and not isinstance(gitignore, str):
        raise BadRequest("'gitIgnore' must be a string")

    def run() -> list[dict[str, Any]]:
        with transaction(hub.sessions, readonly=True) as session:
            repo = load_repo(hub, session, principal, plural, ns, name, Permission.REPO_CONTENT_UPLOAD)
        git = hub.git(repo.storage_key)
        head = git.resolve(revision)
        decided = upload_policy.decide(git, head, data.get("files"), gitignore, hub.settings.lfs_threshold,
                                       hub.settings.max_commit_body)
        # A card whose sample is the whole file is checked here already (the commit checks every card).
        for item in data.get("files") or []:
            if item.get("path") == cards.CARD_PATH and (sample := upload_policy.whole_sample(item)) is not None:
                cards.check_card(sample, repo.type)
        return decided

    return JSONResponse({"files": await _run(run)})


async def _read_limited(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"Commit payload larger than {limit} bytes; upload large files through LFS")
    chunks: list[bytes] = []
    total = 0
    stream: AsyncIterator[bytes] = request.stream()
    async for chunk in stream:
        total += len(chunk)
        if total > limit:
            raise PayloadTooLarge(f"Commit payload larger than {limit} bytes; upload large files through LFS")
        chunks.append(chunk)
    return b"".join(chunks)


def parse_ndjson_commit(body: bytes, max_regular: int) -> tuple[dict[str, Any], list[commit.Operation]]:
    header: dict[str, Any] | None = None
    ops: list[commit.Operation] = []
    for lineno, line in enumerate(body.splitlines(), 1):
        if not line.strip():
            continue
        item = parse_json(line, f"Line {lineno} of the commit payload")
        if not isinstance(item, dict) or not isinstance(item.get("value"), dict):
            raise BadRequest(f"Line {lineno}: expected {{\"key\": ..., \"value\": {{...}}}}")
        key, value = item.get("key"), item["value"]
        if key == "header":
            if header is not None or ops:
                raise BadRequest("The header must come first, once")
            header = value
            continue
        if header is None:
            raise BadRequest("The commit payload must start with a header line")
        path = value.get("path")
        if not isinstance(path, str):
            raise BadRequest(f"Line {lineno}: 'path' must be a string")
        if key == "file":
            encoding = value.get("encoding", "base64")
            content = value.get("content")
            if not isinstance(content, str):
                raise BadRequest(f"Line {lineno}: 'content' must be a string")
            if encoding == "base64":
                try:
                    data = base64.b64decode(content, validate=True)
                except (binascii.Error, ValueError):
                    raise BadRequest(f"Line {lineno}: invalid base64 content for {path!r}") from None
            elif encoding in ("utf-8", "utf8"):
                data = content.encode()
            else:
                raise BadRequest(f"Line {lineno}: unsupported encoding {encoding!r}")
            if len(data) > max_regular:
                raise BadRequest(f"{path!r} is {len(data)} bytes: files over {max_regular} bytes must be "
                                 "uploaded through LFS")
            ops.append(commit.AddFile(path, data))
        elif key == "lfsFile":
            oid, size, algo = value.get("oid"), value.get("size"), value.get("algo", "sha256")
            if algo != "sha256" or not isinstance(oid, str) or len(oid) != 64 or \
                    any(c not in "0123456789abcdef" for c in oid):
                raise BadRequest(f"Line {lineno}: 'oid' must be a lowercase sha256 hex digest")
            if size is not None and (not isinstance(size, int) or isinstance(size, bool) or size < 0):
                raise BadRequest(f"Line {lineno}: 'size' must be a non-negative integer")
            ops.append(commit.AddLfsFile(path, oid, size))
        elif key == "deletedFile":
            ops.append(commit.DeleteFile(path))
        elif key == "deletedFolder":
            ops.append(commit.DeleteFolder(path))
        else:
            raise BadRequest(f"Line {lineno}: unknown operation {key!r}")
    if header is None:
        raise BadRequest("Empty commit payload: a header line is required")
    return header, ops


def load_repo_for_commit(hub: Hub, session: Session, principal: Principal, plural: str, ns: str, name: str,
                         revision: str, create_pr: bool) -> Repo:
    """Find the repo and make the one check a commit to `revision` needs: opening a pull request is for
    anyone who reads the repo, a commit to refs/pr/N for its author (while open) and the writers, a commit
    to a branch for the writers (protections are the commit path's). An old name of a moved repo redirects
    after the same check, as in load_repo."""
    moved_from = None
    try:
        repo = service.find_repo(session, _type(plural), ns, name)
    except NotFound:
        moved = service.moved_repo(session, _type(plural), ns, name)
        if moved is None:
            raise RepoNotFound() from None
        repo, moved_from = moved, f"{ns}/{name}"
    require(principal, *commit.commit_right(session, repo, service.repo_ref(repo, principal.user_id), revision,
                                            create_pr=create_pr))
    if moved_from is not None:
        raise RepoMoved(moved_from, repo.repo_id)
    return repo


@router.post("/api/{plural}/{ns}/{name}/commit/{revision:path}")
@permission(Permission.REPO_WRITE, Permission.REPO_DISCUSSION_CREATE, Permission.REPO_PR_WRITE)
async def create_commit(plural: str, ns: str, name: str, revision: str, request: Request,
                        principal: Principal = Depends(current_principal)) -> JSONResponse:
    hub = hub_of(request)
    body = await _read_limited(request, hub.settings.max_commit_body)
    header, ops = parse_ndjson_commit(body, hub.settings.max_regular_file_size)
    summary, description = header.get("summary"), header.get("description") or ""
    parent = header.get("parentCommit")
    if not isinstance(summary, str) or not isinstance(description, str):
        raise BadRequest("'summary' and 'description' must be strings")
    if parent is not None and (not isinstance(parent, str) or not 5 <= len(parent) <= 40 or
                               any(c not in "0123456789abcdefABCDEF" for c in parent)):
        raise BadRequest("'parentCommit' must be a hex commit id")
    create_pr = _truthy(request.query_params.get("create_pr"))
    bypass = header.get("secretsBypassReason")
    if bypass is not None and (not isinstance(bypass, str) or not bypass.strip()):
        raise BadRequest("'secretsBypassReason' must be a non-empty string")

    def run() -> tuple[Repo, commit.CommitResult]:
        with transaction(hub.sessions) as session:
            repo = load_repo_for_commit(hub, session, principal, plural, ns, name, revision, create_pr)
            options = service.secrets_bypass_options(principal, repo, bypass)
            result = commit.create_commit(hub, session, repo, _actor(session, principal), revision, ops,
                                          summary, description, parent, create_pr, options)
            return repo, result

    repo, result = await _run(run)
    url = repo_url(request, repo.type, repo.repo_id)
    payload: dict[str, Any] = {"commitUrl": f"{url}/commit/{result.commit_oid}", "commitOid": result.commit_oid,
                               "commitMessage": summary, "success": True}
    if result.pr_number is not None:
        payload["pullRequestUrl"] = f"{url}/discussions/{result.pr_number}"
    return JSONResponse(payload)


@router.post("/api/validate-yaml")
@permission(Permission.PUBLIC)
async def validate_yaml(request: Request, principal: Principal = Depends(current_principal)) -> JSONResponse:
    require(principal, Permission.PUBLIC)
    data = await json_object(request, 8 << 20)
    content, repo_type = data.get("content"), data.get("repoType") or "model"
    if not isinstance(content, str):
        return JSONResponse({"errors": [{"message": "'content' must be a string"}], "warnings": []},
                            status_code=400)
    errors, warnings = cards.metadata_problems(content, service.parse_repo_type(repo_type))
    return JSONResponse({"errors": [{"message": e} for e in errors], "warnings": [{"message": w} for w in warnings]},
                        status_code=400 if errors else 200)


async def _run(fn: Any) -> Any:
    """Database and git work is blocking: run it off the event loop."""
    return await run_in_threadpool(fn)


__all__ = ["base_url", "router"]
