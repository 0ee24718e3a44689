"""Organizations over HTTP: the Hub's member-role and resource-group APIs, invitations, settings and
token governance. Each route parses, calls authz.require() once, and calls orgs.service.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from bastion.accounts import service as accounts
from bastion.api.auth import current_principal, hub_of
from bastion.api.bodies import json_object
from bastion.authz import Permission, Principal, permission, require
from bastion.authz.policy import GroupRef
from bastion.db import transaction
from bastion.errors import BadRequest
from bastion.orgs import service as orgs
from bastion.orgs.models import Organization, ResourceGroup
from bastion.storage.regions import DEFAULT_REGION, check_region

router = APIRouter()
T = TypeVar("T")


def _str(data: dict[str, Any], key: str, *, required: bool = True) -> str:
    value = data.get(key)
    if value is None and not required:
        return ""
    if not isinstance(value, str):
        raise BadRequest(f"'{key}' must be a string")
    return value


def _bool(data: dict[str, Any], key: str) -> bool | None:
    value = data.get(key)
    if value is not None and not isinstance(value, bool):
        raise BadRequest(f"'{key}' must be a boolean")
    return value


async def _in_thread(fn: Callable[[], T]) -> T:
    return await run_in_threadpool(fn)


def group_payload(session: Session, group: ResourceGroup, principal: Principal, *,
                  detail: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = {"id": group.public_id, "name": group.name, "description": group.description,
                           "defaultRegion": group.default_region,
                           **{k: v for k, v in orgs.resource_group_payload(session, group).items() if k == "numUsers"}}
    if detail:
        out["users"] = [{"user": u.name, "role": role} for u, role in orgs.group_members(session, group)]
        for part in orgs.group_detail_parts:  # repos: the group's repos the caller may see
            out.update(part(session, group, principal))
    return out


def settings_payload(org: Organization) -> dict[str, Any]:
    return {"name": org.name, "fullname": org.fullname, "description": org.description,
            "defaultRole": org.default_role, "require2fa": org.require_2fa, "repoVisibility": org.repo_visibility,
            "hideMembers": org.hide_members, "tokenPolicy": org.token_policy, "blockUnsafeFiles": org.block_unsafe,
            "secretPushProtection": org.secret_push_protection,
            "secretPushProtectionMode": org.secret_push_protection_mode,
            "delegateProtectionChanges": org.delegate_protection_changes,
            "auditLogRetentionDays": org.audit_retention_days,
            "defaultRegion": org.default_region or DEFAULT_REGION,
            # Per repository type, over defaultRegion: only the types that have their own.
            "defaultRegions": orgs.default_regions(org)}


# ---- organizations --------------------------------------------------------------------------

@router.post("/api/organizations")
@permission(Permission.ORG_CREATE)
async def create_org(request: Request, principal: Principal = Depends(current_principal)) -> JSONResponse:
    data = await json_object(request)
    require(principal, Permission.ORG_CREATE)

    def run() -> dict[str, Any]:
        with transaction(hub_of(request).sessions) as session:
            org = orgs.create_org(session, accounts.acting_user(session, principal), _str(data, "name"),
                                  _str(data, "fullname", required=False))
            return settings_payload(org)

    return JSONResponse(await _in_thread(run), status_code=201)


@router.get("/api/organizations/{name}/overview")
@permission(Permission.PUBLIC)
def overview(name: str, request: Request, principal: Principal = Depends(current_principal)) -> JSONResponse:
    require(principal, Permission.PUBLIC)  # an org's profile is public, as on the Hub
    with transaction(hub_of(request).sessions, readonly=True) as session:
        org, facts = orgs.org_with_facts(session, name)
        return JSONResponse({"type": "org", "id": f"{org.id:024x}", "name": org.name, "fullname": org.fullname,
                             "description": org.description,
                             "numUsers": None if org.hide_members else len(facts.roles)})


@router.get("/api/organizations/{name}/members")
@permission(Permission.ORG_MEMBERS_READ)
def members(name: str, request: Request, principal: Principal = Depends(current_principal)) -> JSONResponse:
    with transaction(hub_of(request).sessions, readonly=True) as session:
        org, facts = orgs.org_with_facts(session, name)
        require(principal, Permission.ORG_MEMBERS_READ, facts)
        return JSONResponse([{"user": u.name, "fullname": u.fullname, "type": "user", "role": m.role}
                             for u, m in orgs.list_members(session, org)])


@router.post("/api/organizations/{name}/members")
@permission(Permission.ORG_MEMBERS_WRITE)
async def add_member(name: str, request: Request, principal: Principal = Depends(current_principal)) -> JSONResponse:
    data = await json_object(request)

    def run() -> dict[str, Any]:
        with transaction(hub_of(request).sessions) as session:
            org, facts = orgs.org_with_facts(session, name)
            require(principal, Permission.ORG_MEMBERS_WRITE, facts)
            user = orgs.user_by_name(session, _str(data, "username"))
            row = orgs.add_member(session, org, user, _str(data, "role", required=False) or None)
            return {"user": user.name, "role": row.role}

    return JSONResponse(await _in_thread(run))


@router.delete("/api/organizations/{name}/members/{username}")
@permission(Permission.ORG_MEMBERS_WRITE)
def remove_member(name: str, username: str, request: Request,
                  principal: Principal = Depends(current_principal)) -> JSONResponse:
    with transaction(hub_of(request).sessions) as session:
        org, facts = orgs.org_with_facts(session, name)
        require(principal, Permission.ORG_MEMBERS_WRITE, facts)
        orgs.remove_member(session, org, orgs.user_by_name(session, username))
    return JSONResponse({})


@router.put("/api/organizations/{name}/members/{username}/role")
@permission(Permission.ORG_MEMBERS_WRITE)
async def change_role(name: str, username: str, request: Request,
                      principal: Principal = Depends(current_principal)) -> JSONResponse:
    """The Hub's role API: `{role, resourceGroups: [{id, role}]}`; resourceGroups replaces all group roles."""
    data = await json_object(request)
    role = _str(data, "role")
    raw_groups = data.get("resourceGroups")
    if raw_groups is not None and not isinstance(raw_groups, list):
        raise BadRequest("'resourceGroups' must be a list of {id, role}")

    def run() -> None:
        with transaction(hub_of(request).sessions) as session:
            org, facts = orgs.org_with_facts(session, name)
            require(principal, Permission.ORG_MEMBERS_WRITE, facts)
            groups = None
            if raw_groups is not None:
                groups = []
                for item in raw_groups:
                    if not isinstance(item, dict):
                        raise BadRequest("'resourceGroups' entries must be objects {id, role}")
                    groups.append(orgs.GroupAssignment(orgs.get_group(session, org, item.get("id")),
                                                       _str(item, "role")))
            orgs.change_role(session, org, orgs.user_by_name(session, username), role, groups)

    await _in_thread(run)
    return JSONResponse({})


@router.post("/api/organizations/{name}/leave")
@permission(Permission.ORG_MEMBERSHIP_SELF)
def leave(name: str, request: Request, principal: Principal = Depends(current_principal)) -> JSONResponse:
    require(principal, Permission.ORG_MEMBERSHIP_SELF)
    with transaction(hub_of(request).sessions) as session:
        orgs.leave(session, orgs.get_org(session, name), accounts.acting_user(session, principal))
    return JSONResponse({})


# ---- invitations ----------------------------------------------------------------------------

@router.post("/api/organizations/{name}/invitations")
@permission(Permission.ORG_MEMBERS_WRITE)
async def invite(name: str, request: Request, principal: Principal = Depends(current_principal)) -> JSONResponse:
    data = await json_object(request)

    def run() -> dict[str, Any]:
        with transaction(hub_of(request).sessions) as session:
            org, facts = orgs.org_with_facts(session, name)
            require(principal, Permission.ORG_MEMBERS_WRITE, facts)
            inv, _secret = orgs.invite(session, request.app.state.mailer, org, accounts.acting_user(session, principal),
                                       _str(data, "email"), _str(data, "role", required=False) or None)
            return {"id": inv.id, "email": inv.email, "role": inv.role, "expiresAt": orgs.iso(inv.expires_at)}

    return JSONResponse(await _in_thread(run), status_code=201)


@router.get("/api/organizations/{name}/invitations")
@permission(Permission.ORG_MEMBERS_WRITE)
def invitations(name: str, request: Request, principal: Principal = Depends(current_principal)) -> JSONResponse:
    with transaction(hub_of(request).sessions, readonly=True) as session:
        org, facts = orgs.org_with_facts(session, name)
        require(principal, Permission.ORG_MEMBERS_WRITE, facts)
        return JSONResponse([{"id": i.id, "email": i.email, "role": i.role, "expiresAt": orgs.iso(i.expires_at)}
                             for i in orgs.pending_invitations(session, org)])


@router.post("/api/organizations/invitations/{secret}/{verb}")
@permission(Permission.ORG_MEMBERSHIP_SELF)
def answer_invitation(secret: str, verb: str, request: Request,
                      principal: Principal = Depends(current_principal)) -> JSONResponse:
    require(principal, Permission.ORG_MEMBERSHIP_SELF)
    if verb not in ("accept", "decline"):
        raise BadRequest("Expected accept or decline")
    with transaction(hub_of(request).sessions) as session:
        user = accounts.acting_user(session, principal)
        org = (orgs.accept_invitation if verb == "accept" else orgs.decline_invitation)(session, secret, user)
        return JSONResponse({"organization": org.name})


# ---- settings ---------------------------------------------------------------------------------

@router.get("/api/organizations/{name}/settings")
@permission(Permission.ORG_READ)
def get_settings(name: str, request: Request, principal: Principal = Depends(current_principal)) -> JSONResponse:
    with transaction(hub_of(request).sessions, readonly=True) as session:
        org, facts = orgs.org_with_facts(session, name)
        require(principal, Permission.ORG_READ, facts)
        return JSONResponse(settings_payload(org))


@router.put("/api/organizations/{name}/settings")
@permission(Permission.ORG_WRITE)
async def put_settings(name: str, request: Request, principal: Principal = Depends(current_principal)) -> JSONResponse:
    data = await json_object(request)

    def run() -> dict[str, Any]:
        with transaction(hub_of(request).sessions) as session:
            org, facts = orgs.org_with_facts(session, name)
            require(principal, Permission.ORG_WRITE, facts)
            apply_settings(session, org, data)
            if "auditLogRetentionDays" in data:
                orgs.set_audit_retention(session, org, data["auditLogRetentionDays"],
                                         hub_of(request).settings.audit_retention_days)
            if "defaultRegion" in data:
                orgs.set_default_region(session, org, _region_setting(request, data["defaultRegion"]))
            if "defaultRegions" in data:
                for repo_type, region in _type_regions(request, data["defaultRegions"]).items():
                    orgs.set_type_default_region(session, org, repo_type, region)
            return settings_payload(org)

    return JSONResponse(await _in_thread(run))


def _region_setting(request: Request, value: object) -> str | None:
    """A default region as stored: None for the instance's default; a 400 naming the regions for another."""
    region = check_region(value, hub_of(request).regions)
    return None if region in (None, DEFAULT_REGION) else region


def _type_regions(request: Request, value: object) -> dict[str, str | None]:
    """`defaultRegions`: {"model"|"dataset"|"space": region name, or null for the org's defaultRegion}."""
    if not isinstance(value, dict):
        raise BadRequest("'defaultRegions' must be an object mapping repository types (model, dataset, space) "
                         "to region names")
    out: dict[str, str | None] = {}
    for repo_type, region in value.items():
        if repo_type not in orgs.REGION_REPO_TYPES:
            raise BadRequest(f"'defaultRegions': unknown repository type {str(repo_type)[:40]!r} "
                             "(model, dataset, space)")
        out[repo_type] = check_region(region, hub_of(request).regions)
    return out


def apply_settings(session: Session, org: Organization, data: dict[str, Any]) -> None:
    if "fullname" in data or "description" in data:
        orgs.update_profile(session, org, _str(data, "fullname", required=False) or org.fullname,
                            _str(data, "description", required=False) or org.description)
    if data.get("defaultRole") is not None:
        orgs.set_default_role(session, org, _str(data, "defaultRole"))
    orgs.set_security(session, org, require_2fa=_bool(data, "require2fa"),
                      repo_visibility=_str(data, "repoVisibility") if data.get("repoVisibility") is not None else None,
                      hide_members=_bool(data, "hideMembers"), block_unsafe=_bool(data, "blockUnsafeFiles"),
                      secret_push_protection=_bool(data, "secretPushProtection"),
                      delegate_protection_changes=_bool(data, "delegateProtectionChanges"),
                      secret_push_protection_mode=data.get("secretPushProtectionMode"))
    if data.get("tokenPolicy") is not None:
        orgs.set_token_policy(session, org, _str(data, "tokenPolicy"))


# ---- resource groups --------------------------------------------------------------------------

@router.get("/api/organizations/{name}/resource-groups")
@permission(Permission.ORG_READ)
def list_groups(name: str, request: Request, principal: Principal = Depends(current_principal)) -> JSONResponse:
    with transaction(hub_of(request).sessions, readonly=True) as session:
        org, facts = orgs.org_with_facts(session, name)
        require(principal, Permission.ORG_READ, facts)
        return JSONResponse([group_payload(session, g, principal) for g in orgs.list_groups(session, org)])


@router.post("/api/organizations/{name}/resource-groups")
@permission(Permission.RESOURCE_GROUP_WRITE)
async def create_group(name: str, request: Request, principal: Principal = Depends(current_principal)) -> JSONResponse:
    data = await json_object(request)
    raw_users = data.get("users") or []
    if not isinstance(raw_users, list):
        raise BadRequest("'users' must be a list of {user, role}")

    def run() -> dict[str, Any]:
        with transaction(hub_of(request).sessions) as session:
            org, facts = orgs.org_with_facts(session, name)
            require(principal, Permission.RESOURCE_GROUP_WRITE, GroupRef(facts))
            users = [(orgs.user_by_name(session, _str(u, "user")), _str(u, "role")) for u in raw_users
                     if isinstance(u, dict)]
            group = orgs.create_group(session, org, _str(data, "name"), _str(data, "description", required=False),
                                      users)
            return group_payload(session, group, principal, detail=True)

    return JSONResponse(await _in_thread(run), status_code=201)


@router.get("/api/organizations/{name}/resource-groups/{group_id}")
@permission(Permission.ORG_READ)
def get_group(name: str, group_id: str, request: Request,
              principal: Principal = Depends(current_principal)) -> JSONResponse:
    with transaction(hub_of(request).sessions, readonly=True) as session:
        org, facts = orgs.org_with_facts(session, name)
        require(principal, Permission.ORG_READ, facts)
        return JSONResponse(group_payload(session, orgs.get_group(session, org, group_id), principal, detail=True))


@router.patch("/api/organizations/{name}/resource-groups/{group_id}")
@permission(Permission.RESOURCE_GROUP_WRITE)
async def rename_group(name: str, group_id: str, request: Request,
                       principal: Principal = Depends(current_principal)) -> JSONResponse:
    data = await json_object(request)

    def run() -> dict[str, Any]:
        with transaction(hub_of(request).sessions) as session:
            org, facts = orgs.org_with_facts(session, name)
            require(principal, Permission.RESOURCE_GROUP_WRITE, GroupRef(facts))  # renaming: org admins
            group = orgs.get_group(session, org, group_id)
            orgs.rename_group(session, org, group, _str(data, "name") if "name" in data else group.name,
                              _str(data, "description") if "description" in data else None)
            if "defaultRegion" in data:  # beyond the Hub: new repositories of the group go to this region
                orgs.set_group_default_region(session, org, group, check_region(data["defaultRegion"],
                                                                                hub_of(request).regions))
            return group_payload(session, group, principal)

    return JSONResponse(await _in_thread(run))


@router.delete("/api/organizations/{name}/resource-groups/{group_id}")
@permission(Permission.RESOURCE_GROUP_WRITE)
def delete_group(name: str, group_id: str, request: Request,
                 principal: Principal = Depends(current_principal)) -> JSONResponse:
    with transaction(hub_of(request).sessions) as session:
        org, facts = orgs.org_with_facts(session, name)
        require(principal, Permission.RESOURCE_GROUP_WRITE, GroupRef(facts))  # deleting: org admins
        orgs.delete_group(session, org, orgs.get_group(session, org, group_id))
    return JSONResponse({})


@router.post("/api/organizations/{name}/resource-groups/{group_id}/users")
@permission(Permission.RESOURCE_GROUP_WRITE)
async def add_group_users(name: str, group_id: str, request: Request,
                          principal: Principal = Depends(current_principal)) -> JSONResponse:
    data = await json_object(request)
    raw_users = data.get("users")
    if not isinstance(raw_users, list):
        raise BadRequest("'users' must be a list of {user, role}")

    def run() -> dict[str, Any]:
        with transaction(hub_of(request).sessions) as session:
            org, facts = orgs.org_with_facts(session, name)
            group = orgs.get_group(session, org, group_id)
            require(principal, Permission.RESOURCE_GROUP_WRITE, GroupRef(facts, orgs.group_facts(session, group)))
            for u in raw_users:
                if not isinstance(u, dict):
                    raise BadRequest("'users' entries must be objects {user, role}")
                orgs.set_group_member(session, org, group, orgs.user_by_name(session, _str(u, "user")),
                                      _str(u, "role"))
            return group_payload(session, group, principal, detail=True)

    return JSONResponse(await _in_thread(run))


@router.patch("/api/organizations/{name}/resource-groups/{group_id}/users/{username}")
@permission(Permission.RESOURCE_GROUP_WRITE)
async def change_group_role(name: str, group_id: str, username: str, request: Request,
                            principal: Principal = Depends(current_principal)) -> JSONResponse:
    data = await json_object(request)

    def run() -> None:
        with transaction(hub_of(request).sessions) as session:
            org, facts = orgs.org_with_facts(session, name)
            group = orgs.get_group(session, org, group_id)
            require(principal, Permission.RESOURCE_GROUP_WRITE, GroupRef(facts, orgs.group_facts(session, group)))
            orgs.set_group_member(session, org, group, orgs.user_by_name(session, username), _str(data, "role"))

    await _in_thread(run)
    return JSONResponse({})


@router.delete("/api/organizations/{name}/resource-groups/{group_id}/users/{username}")
@permission(Permission.RESOURCE_GROUP_WRITE)
def remove_group_user(name: str, group_id: str, username: str, request: Request,
                      principal: Principal = Depends(current_principal)) -> JSONResponse:
    with transaction(hub_of(request).sessions) as session:
        org, facts = orgs.org_with_facts(session, name)
        group = orgs.get_group(session, org, group_id)
        require(principal, Permission.RESOURCE_GROUP_WRITE, GroupRef(facts, orgs.group_facts(session, group)))
        orgs.remove_group_member(session, org, group, orgs.user_by_name(session, username))
    return JSONResponse({})
