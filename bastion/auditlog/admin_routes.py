"""The audit log's integrity and delivery for instance administrators (tokens, Permission.ADMIN): the signed
checkpoints (`GET /api/admin/audit/checkpoints`, what `bastion audit verify --checkpoints` reads), the sinks
events stream to (`/api/admin/audit/sinks`), and the dead letters (`/api/admin/audit/dead-letters`, re-driven
with `POST …/dead-letters/redrive`). Each change is audited.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from bastion import audit
from bastion.api.auth import current_principal, hub_of
from bastion.api.bodies import json_object
from bastion.audit import checkpoints, delivery
from bastion.audit.actions import AuditAction
from bastion.authz import Permission, Principal, permission, require
from bastion.db import transaction, utcnow
from bastion.errors import BadRequest

router = APIRouter()
TARGET = ("instance", "audit_log")


@router.get("/api/admin/audit/checkpoints")
@permission(Permission.ADMIN)
def list_checkpoints(request: Request, principal: Principal = Depends(current_principal)) -> JSONResponse:
    require(principal, Permission.ADMIN)
    with transaction(hub_of(request).sessions, readonly=True) as session:
        return JSONResponse(checkpoints.export_document(session), headers={
            "Content-Disposition": 'attachment; filename="audit-checkpoints.json"'})


@router.get("/api/admin/audit/sinks")
@permission(Permission.ADMIN)
def list_sinks(request: Request, principal: Principal = Depends(current_principal)) -> JSONResponse:
    require(principal, Permission.ADMIN)
    with transaction(hub_of(request).sessions, readonly=True) as session:
        return JSONResponse([delivery.sink_json(s, session) for s in delivery.list_sinks(session)])


@router.post("/api/admin/audit/sinks")
@permission(Permission.ADMIN)
async def create_sink(request: Request, principal: Principal = Depends(current_principal)) -> JSONResponse:
    data = await json_object(request, json_content_type=True)
    hub = hub_of(request)

    def run() -> dict[str, Any]:
        with transaction(hub.sessions) as session:
            require(principal, Permission.ADMIN)
            sink = delivery.create_sink(session, hub.settings.secret_key, data.get("kind"), data.get("url"),
                                        data.get("secret"), data.get("namespace"))
            audit.record(session, AuditAction.INSTANCE_AUDIT_SINK_CREATE, target=TARGET,
                         details={"sink": sink.id, "kind": sink.kind, "url": sink.url, "namespace": sink.namespace})
            return delivery.sink_json(sink, session)

    return JSONResponse(await run_in_threadpool(run), status_code=201)


@router.delete("/api/admin/audit/sinks/{sink_id}")
@permission(Permission.ADMIN)
def delete_sink(sink_id: int, request: Request, principal: Principal = Depends(current_principal)) -> JSONResponse:
    with transaction(hub_of(request).sessions) as session:
        require(principal, Permission.ADMIN)
        sink = delivery.delete_sink(session, sink_id)
        audit.record(session, AuditAction.INSTANCE_AUDIT_SINK_DELETE, target=TARGET,
                     details={"sink": sink_id, "kind": sink.kind, "url": sink.url})
    return JSONResponse({"deleted": sink_id})


@router.get("/api/admin/audit/dead-letters")
@permission(Permission.ADMIN)
def list_dead_letters(request: Request, principal: Principal = Depends(current_principal)) -> JSONResponse:
    require(principal, Permission.ADMIN)
    with transaction(hub_of(request).sessions, readonly=True) as session:
        return JSONResponse(delivery.dead_letters(session))


@router.post("/api/admin/audit/dead-letters/redrive")
@permission(Permission.ADMIN)
async def redrive(request: Request, principal: Principal = Depends(current_principal)) -> JSONResponse:
    """Send dead letters again: all of them, one sink's (`sinkId`) or these (`ids`)."""
    data = await json_object(request, json_content_type=True)
    sink_id, ids = data.get("sinkId"), data.get("ids")
    if sink_id is not None and (isinstance(sink_id, bool) or not isinstance(sink_id, int)):
        raise BadRequest("'sinkId' must be a sink's id")
    if ids is not None and (not isinstance(ids, list) or len(ids) > 10_000
                            or not all(isinstance(i, int) and not isinstance(i, bool) for i in ids)):
        raise BadRequest("'ids' must be a list of at most 10,000 dead-letter ids")
    hub = hub_of(request)

    def run() -> int:
        with transaction(hub.sessions) as session:
            require(principal, Permission.ADMIN)
            n = delivery.redrive(session, utcnow(), sink_id=sink_id, ids=ids)
            audit.record(session, AuditAction.INSTANCE_AUDIT_REDRIVE, target=TARGET,
                         details={"redriven": n, "sinkId": sink_id, "ids": (ids or [])[:100]})
            return n

    return JSONResponse({"redriven": await run_in_threadpool(run)})
