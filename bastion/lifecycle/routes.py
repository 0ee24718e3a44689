"""The identity lifecycle over HTTP: instance administrators deactivate, reactivate and delete accounts
(`/api/admin/users/{name}/…`, Permission.ADMIN), and a signed-in user exports their own data
(`GET /api/settings/data-export`). Routes parse, authorize once, and call bastion.lifecycle.service.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from bastion.accounts import service as accounts
from bastion.api.auth import current_principal, hub_of
from bastion.api.bodies import json_object
from bastion.authz import Permission, Principal, permission, require
from bastion.db import transaction
from bastion.errors import BadRequest, Conflict
from bastion.lifecycle import deletion, export, service

router = APIRouter()


def _reason(data: dict[str, Any]) -> str:
    reason = data.get("reason", "")
    if not isinstance(reason, str):
        raise BadRequest("'reason' must be a string")
    return reason


@router.post("/api/admin/users/{name}/deactivate")
@permission(Permission.ADMIN)
async def deactivate(name: str, request: Request, principal: Principal = Depends(current_principal)) -> JSONResponse:
    """Deprovision an account: inactive, every credential revoked in one transaction. Body: {"reason": …}."""
    data = await json_object(request, json_content_type=True)
    hub = hub_of(request)

    def run() -> dict[str, Any]:
        with transaction(hub.sessions) as session:
            require(principal, Permission.ADMIN)
            user = accounts.get_user_by_name(session, name)
            if user.id == principal.user_id:
                raise Conflict("An administrator cannot deactivate their own account here (use the CLI)")
            revoked = service.deactivate_user(session, user, reason=_reason(data))
            return {"name": user.name, "active": False, "revoked": revoked.as_json()}

    return JSONResponse(await run_in_threadpool(run))


@router.post("/api/admin/users/{name}/reactivate")
@permission(Permission.ADMIN)
async def reactivate(name: str, request: Request, principal: Principal = Depends(current_principal)) -> JSONResponse:
    """Let a deactivated account sign in again; none of its revoked credentials come back."""
    data = await json_object(request, json_content_type=True)
    hub = hub_of(request)

    def run() -> dict[str, Any]:
        with transaction(hub.sessions) as session:
            require(principal, Permission.ADMIN)
            user = accounts.get_user_by_name(session, name)
            service.reactivate_user(session, user, reason=_reason(data))
            return {"name": user.name, "active": True}

    return JSONResponse(await run_in_threadpool(run))


@router.delete("/api/admin/users/{name}")
@permission(Permission.ADMIN)
async def delete_user(name: str, request: Request, principal: Principal = Depends(current_principal)) -> JSONResponse:
    """Delete an account: personal data removed, audit events pseudonymised, its repos transferred now
    (`{"transferTo": "user-or-org"}`) or deleted after the grace period."""
    data = await json_object(request, json_content_type=True) if await request.body() else {}
    transfer_to = data.get("transferTo")
    if transfer_to is not None and (not isinstance(transfer_to, str) or not transfer_to.strip()):
        raise BadRequest("'transferTo' must name a user or an organization")
    hub = hub_of(request)

    def run() -> dict[str, Any]:
        with transaction(hub.sessions) as session:
            require(principal, Permission.ADMIN)
            user = accounts.get_user_by_name(session, name)
            if user.id == principal.user_id:
                raise Conflict("An administrator cannot delete their own account here")
            done = deletion.delete_account(hub, session, user, grace_days=hub.settings.account_deletion_grace_days,
                                           transfer_to=transfer_to)
            return {"deleted": True, **done.as_json()}

    return JSONResponse(await run_in_threadpool(run))


@router.get("/api/settings/data-export")
@permission(Permission.USER_DATA_EXPORT)
def data_export(request: Request, principal: Principal = Depends(current_principal)) -> JSONResponse:
    """The caller's own personal data as JSON (a token that reads, or the browser); audited."""
    with transaction(hub_of(request).sessions) as session:
        require(principal, Permission.USER_DATA_EXPORT)
        user = accounts.acting_user(session, principal)
        doc = export.export_user_data(session, user)
    return JSONResponse(doc, headers={"Content-Disposition": f'attachment; filename="{user.name}-personal-data.json"',
                                      "Cache-Control": "no-store"})
