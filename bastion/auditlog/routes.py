"""Audit logs over HTTP: the Hub's `GET /api/organizations/{name}/audit-log/export` (a JSON array, or NDJSON
with `format=ndjson`), a paginated `GET …/audit-log`, the same two for the instance log under
`/api/admin/audit-log`, and the caller's own security log at `GET /api/settings/audit-log`.

Each route parses, calls authz.require() once, and calls auditlog.service. Pages: `limit` (1–1000) and
`cursor` (from the `Link: <…>; rel="next"` header); filters: `q`, `start`, `end` (bastion.audit.query).
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from bastion.api.auth import current_principal, hub_of
from bastion.api.urls import int_param, next_link
from bastion.audit import export
from bastion.audit.query import Scope, instance_scope
from bastion.auditlog import service
from bastion.authz import Permission, Principal, permission, require
from bastion.db import transaction, utcnow
from bastion.orgs import service as orgs

router = APIRouter()
MAX_CURSOR = 2**63 - 1


def _page(request: Request, scope: Scope) -> JSONResponse:
    """A page of `scope`, after the caller was authorized for it."""
    hub = hub_of(request)
    f = service.parse_filter(hub.settings, request.query_params)
    limit = int_param(request, "limit", 50, 1, 1000)
    cursor = int_param(request, "cursor", MAX_CURSOR, 1, MAX_CURSOR)
    with transaction(hub.sessions, readonly=True) as session:
        found = service.page(session, hub.settings, scope, f, cursor=cursor, limit=limit)
    headers = {"Link": next_link(request, cursor=found.next_cursor)} if found.next_cursor is not None else {}
    return JSONResponse(found.records, headers=headers)


def _download(request: Request, scope: Scope, org: str | None) -> Response:
    """Record the export (in its own short transaction), then stream it."""
    hub = hub_of(request)
    params = request.query_params
    f = service.parse_filter(hub.settings, params)  # bad input is refused before the export is recorded
    fmt = service.parse_format(params.get("format"))
    with transaction(hub.sessions) as session:
        service.record_export(session, fmt, params, org=org)
    name = export.filename(scope.label, fmt, utcnow())
    return StreamingResponse(service.stream(hub.sessions, hub.settings, scope, f, fmt),
                             media_type=export.MEDIA_TYPES[fmt],
                             headers={"Content-Disposition": f'attachment; filename="{name}"',
                                      "Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"})


def _org_scope(request: Request, name: str, principal: Principal) -> tuple[Scope, str]:
    with transaction(hub_of(request).sessions, readonly=True) as session:
        org, facts = orgs.org_with_facts(session, name)
        require(principal, Permission.ORG_AUDIT_LOG_READ, facts)
        return service.org_scope(org.name, org.created_at), org.name


@router.get("/api/organizations/{name}/audit-log")
@permission(Permission.ORG_AUDIT_LOG_READ)
def org_log(name: str, request: Request, principal: Principal = Depends(current_principal)) -> Response:
    scope, _ = _org_scope(request, name, principal)
    return _page(request, scope)


@router.get("/api/organizations/{name}/audit-log/export")
@permission(Permission.ORG_AUDIT_LOG_READ)
def org_log_export(name: str, request: Request, principal: Principal = Depends(current_principal)) -> Response:
    scope, org = _org_scope(request, name, principal)
    return _download(request, scope, org)


@router.get("/api/admin/audit-log")
@permission(Permission.INSTANCE_AUDIT_LOG_READ)
def instance_log(request: Request, principal: Principal = Depends(current_principal)) -> Response:
    require(principal, Permission.INSTANCE_AUDIT_LOG_READ)
    return _page(request, instance_scope())


@router.get("/api/admin/audit-log/export")
@permission(Permission.INSTANCE_AUDIT_LOG_READ)
def instance_log_export(request: Request, principal: Principal = Depends(current_principal)) -> Response:
    require(principal, Permission.INSTANCE_AUDIT_LOG_READ)
    return _download(request, instance_scope(), None)


@router.get("/api/settings/audit-log")
@permission(Permission.USER_SECURITY_LOG_READ)
def own_log(request: Request, principal: Principal = Depends(current_principal)) -> Response:
    require(principal, Permission.USER_SECURITY_LOG_READ)
    with transaction(hub_of(request).sessions, readonly=True) as session:
        scope = service.own_scope(session, principal.user_id)
    return _page(request, scope)
