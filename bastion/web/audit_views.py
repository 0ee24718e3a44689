"""Audit log pages: an organization's (settings → Audit logs), the instance's (Instance → Audit log) and the
signed-in user's own security log (settings → Security log). Read only: a filter form (the Hub's `q`
syntax, a date range), a table newest first with older pages, and download links to the API export.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from bastion.api.auth import current_principal, hub_of
from bastion.api.urls import int_param
from bastion.audit.query import Scope, instance_scope
from bastion.auditlog import service
from bastion.authz import Permission, Principal, permission, require
from bastion.db import transaction
from bastion.errors import BadRequest
from bastion.orgs import service as orgs
from bastion.web.org_views import SETTINGS_TABS
from bastion.web.pages import HtmlRoute, render

router = APIRouter(route_class=HtmlRoute)
PAGE = 50
MAX_CURSOR = 2**63 - 1


def _table(request: Request, scope: Scope) -> dict[str, Any]:
    """The filter form's values, one page of the log, and the links to the next page and the downloads.
    A bad filter is shown on the page (400) with an empty table."""
    hub = hub_of(request)
    params = {k: request.query_params.get(k, "") for k in ("q", "start", "end")}
    kept = {k: v for k, v in params.items() if v}
    ctx: dict[str, Any] = {"params": params, "records": [], "next_url": None,
                           "anonymized": hub.settings.audit_anonymize_ips, "query": urlencode(kept)}
    try:
        f = service.parse_filter(hub.settings, request.query_params)
        cursor = int_param(request, "cursor", MAX_CURSOR, 1, MAX_CURSOR)
    except BadRequest as exc:
        ctx.update(error=exc.message, status=400)
        return ctx
    with transaction(hub.sessions, readonly=True) as session:
        found = service.page(session, hub.settings, scope, f, cursor=cursor, limit=PAGE)
    ctx["records"] = found.records
    if found.next_cursor is not None:
        ctx["next_url"] = f"{request.url.path}?{urlencode({**kept, 'cursor': found.next_cursor})}"
    return ctx


def _show(request: Request, template: str, ctx: dict[str, Any], **extra: Any) -> Response:
    status = ctx.pop("status", 200)
    return render(request, template, status, **ctx, **extra)


@router.get("/organizations/{name}/settings/audit-logs")
@permission(Permission.ORG_AUDIT_LOG_READ)
def org_audit_page(name: str, request: Request, principal: Principal = Depends(current_principal)) -> Response:
    with transaction(hub_of(request).sessions, readonly=True) as session:
        org, facts = orgs.org_with_facts(session, name)
        require(principal, Permission.ORG_AUDIT_LOG_READ, facts)
    ctx = _table(request, service.org_scope(org.name, org.created_at))
    return _show(request, "orgs/settings_audit_logs.html", ctx, org=org, tab="audit-logs", tabs=SETTINGS_TABS,
                 export_url=f"/api/organizations/{org.name}/audit-log/export")


@router.get("/admin/audit-log")
@permission(Permission.INSTANCE_AUDIT_LOG_READ)
def instance_audit_page(request: Request, principal: Principal = Depends(current_principal)) -> Response:
    require(principal, Permission.INSTANCE_AUDIT_LOG_READ)
    return _show(request, "admin_audit_log.html", _table(request, instance_scope()),
                 export_url="/api/admin/audit-log/export")


@router.get("/settings/security-log")
@permission(Permission.USER_SECURITY_LOG_READ)
def security_log_page(request: Request, principal: Principal = Depends(current_principal)) -> Response:
    require(principal, Permission.USER_SECURITY_LOG_READ)
    with transaction(hub_of(request).sessions, readonly=True) as session:
        scope = service.own_scope(session, principal.user_id)
    return _show(request, "settings/security_log.html", _table(request, scope), export_url=None)
