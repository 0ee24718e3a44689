"""SCIM settings in the browser: an org's (org admins) and the instance's (instance admins). Create, rotate and
revoke the IdP's tokens (a new secret is shown once, on the answer to the form), the SCIM base URL, the
provisioned accounts and groups; in an org, SCIM groups linked to an org role and resource groups.
Sudo mode (authz SUDO_PERMISSIONS): a SCIM token can create and deactivate accounts. Pages only: every
decision is bastion.scim.service's.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from bastion.accounts.service import acting_user
from bastion.api.auth import current_principal, hub_of
from bastion.api.urls import base_url
from bastion.authz import Permission, Principal, permission, require
from bastion.authz.policy import ORG_ROLES
from bastion.db import transaction
from bastion.errors import BadRequest, NotFound
from bastion.orgs import service as orgs
from bastion.scim import routes as scim_routes
from bastion.scim import service as scim
from bastion.web.org_views import SETTINGS_TABS
from bastion.web.pages import HtmlRoute, check_csrf, redirect, render

router = APIRouter(route_class=HtmlRoute)


def _text(form: Any, key: str, limit: int = 2000) -> str:
    value = form.get(key)
    return value.strip()[:limit] if isinstance(value, str) else ""


def _org_page(request: Request, session: Session, scope: scim.Scope, status: int = 200, **extra: Any) -> Response:
    org = scope.org
    assert org is not None
    view = scim.settings_view(session, scope, base_url(request) + scim_routes.ORG_PREFIX.replace("{org}", org.name))
    return render(request, "orgs/settings_scim.html", status, org=org, tab="scim", tabs=SETTINGS_TABS, scim=view,
                  roles=ORG_ROLES, resource_groups=orgs.list_groups(session, org), **extra)


def _admin_page(request: Request, session: Session, status: int = 200, **extra: Any) -> Response:
    view = scim.settings_view(session, scim.Scope(None), base_url(request) + scim_routes.INSTANCE_PREFIX)
    return render(request, "admin_scim.html", status, scim=view, **extra)


def _token_id(form: Any) -> int:
    raw = _text(form, "token", 20)
    if not raw.isdigit():
        raise BadRequest("Choose a SCIM token")
    return int(raw)


def _act(session: Session, principal: Principal, scope: scim.Scope, verb: str, form: Any) -> str | None:
    """Do `verb`; the new secret for create and rotate (shown once)."""
    actor = acting_user(session, principal)
    if verb == "create":
        return scim.issue_token(session, scope, _text(form, "label", 100), actor).secret
    if verb == "rotate":
        return scim.rotate_token(session, scope, scim.get_token(session, scope, _token_id(form)), actor).secret
    if verb == "revoke":
        scim.revoke_token(session, scope, scim.get_token(session, scope, _token_id(form)),
                          reason=f"revoked by {actor.name}")
        return None
    if verb == "link" and scope.org is not None:
        group = scim.find_org_group(session, scope.org, _text(form, "group", 24))
        role = _text(form, "role", 16)
        scim.link_group(session, scope.org, group, role or None,
                        scim.parse_link_text(session, scope.org, _text(form, "resource_groups")))
        return None
    raise NotFound("Unknown action")


@router.get("/organizations/{name}/settings/scim")
@permission(Permission.ORG_SCIM_WRITE)
def org_scim(name: str, request: Request, principal: Principal = Depends(current_principal)) -> Response:
    with transaction(hub_of(request).sessions, readonly=True) as session:
        org, facts = orgs.org_with_facts(session, name)
        require(principal, Permission.ORG_SCIM_WRITE, facts)
        return _org_page(request, session, scim.Scope(org))


@router.post("/organizations/{name}/settings/scim/{verb}")
@permission(Permission.ORG_SCIM_WRITE)
async def org_scim_post(name: str, verb: str, request: Request,
                        principal: Principal = Depends(current_principal)) -> Response:
    form = await request.form()

    def run() -> Response:
        with transaction(hub_of(request).sessions) as session:
            org, facts = orgs.org_with_facts(session, name)
            require(principal, Permission.ORG_SCIM_WRITE, facts)
            check_csrf(request, form)
            scope = scim.Scope(org)
            try:
                with session.begin_nested():
                    secret = _act(session, principal, scope, verb, form)
            except BadRequest as exc:
                return _org_page(request, session, scope, 400, error=exc.message)
            if secret is not None:
                return _org_page(request, session, scope, new_secret=secret)
        return redirect(f"/organizations/{quote(name, safe='')}/settings/scim?done={verb}")

    return await run_in_threadpool(run)


@router.get("/admin/scim")
@permission(Permission.INSTANCE_SCIM_WRITE)
def admin_scim(request: Request, principal: Principal = Depends(current_principal)) -> Response:
    with transaction(hub_of(request).sessions, readonly=True) as session:
        require(principal, Permission.INSTANCE_SCIM_WRITE)
        return _admin_page(request, session)


@router.post("/admin/scim/{verb}")
@permission(Permission.INSTANCE_SCIM_WRITE)
async def admin_scim_post(verb: str, request: Request, principal: Principal = Depends(current_principal)) -> Response:
    form = await request.form()

    def run() -> Response:
        with transaction(hub_of(request).sessions) as session:
            require(principal, Permission.INSTANCE_SCIM_WRITE)
            check_csrf(request, form)
            if verb == "link":
                raise NotFound("Unknown action")
            try:
                with session.begin_nested():
                    secret = _act(session, principal, scim.Scope(None), verb, form)
            except BadRequest as exc:
                return _admin_page(request, session, 400, error=exc.message)
            if secret is not None:
                return _admin_page(request, session, new_secret=secret)
        return redirect(f"/admin/scim?done={verb}")

    return await run_in_threadpool(run)
