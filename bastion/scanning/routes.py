"""Scan results over HTTP: repo scan status, rescans, owner-only secret notices, leaked-token reports."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from bastion.api.auth import current_principal, hub_of
from bastion.api.bodies import json_object, parse_json
from bastion.api.urls import int_param, next_link
from bastion.authz import Permission, Principal, permission, require
from bastion.db import transaction
from bastion.errors import BadRequest
from bastion.repos.routes import DEFAULT_PAGE, MAX_PAGE, load_repo
from bastion.scanning import clamd, enqueue, leaks, notices, policy, verdicts

router = APIRouter()
admin_router = APIRouter()  # mounted before the repo routes, whose /api/{plural}/… patterns would take /api/admin/…


@admin_router.get("/api/admin/clamd")
@permission(Permission.INSTANCE_STATUS_READ)
def clamd_status(request: Request, principal: Principal = Depends(current_principal)) -> JSONResponse:
    """The malware scanner's health: clamd's state, pid and restarts, signature version and age, freshclam."""
    require(principal, Permission.INSTANCE_STATUS_READ)
    return JSONResponse(clamd.instance_status(hub_of(request).settings))


@router.get("/api/{plural}/{ns}/{name}/scan")
@router.get("/api/{plural}/{ns}/{name}/scan/{revision:path}")
@permission(Permission.REPO_METADATA_READ)
def scan_status(plural: str, ns: str, name: str, request: Request, revision: str = "main",
                principal: Principal = Depends(current_principal)) -> JSONResponse:
    """The revision's summary (`scansDone`, `filesWithIssues`) and one page of per-file statuses:
    `limit` files (default and most as the tree API's) from `cursor`, the next page in `Link`."""
    hub = hub_of(request)
    limit = int_param(request, "limit", DEFAULT_PAGE, 1, MAX_PAGE)
    offset = int_param(request, "cursor", 0, 0, 10**9)
    with transaction(hub.sessions, readonly=True) as session:
        repo = load_repo(hub, session, principal, plural, ns, name, Permission.REPO_METADATA_READ)
        status, more = verdicts.repo_status(hub, session, repo, revision, verdicts.secrets_visible(principal, repo),
                                           offset=offset, limit=limit)
    headers = {"Link": next_link(request, cursor=offset + limit)} if more else {}
    return JSONResponse(status, headers=headers)


@router.post("/api/{plural}/{ns}/{name}/scan")
@permission(Permission.REPO_MANAGE)
def rescan(plural: str, ns: str, name: str, request: Request,
           principal: Principal = Depends(current_principal)) -> JSONResponse:
    hub = hub_of(request)
    history = request.query_params.get("history", "").lower() in ("1", "true")
    with transaction(hub.sessions) as session:
        repo = load_repo(hub, session, principal, plural, ns, name, Permission.REPO_MANAGE)
        # history: secret-scan every blob ever committed; otherwise rescan the current files fully.
        queued = enqueue.scan_history(hub, session, repo) if history else enqueue.rescan_repo(hub, session, repo)
    return JSONResponse({"queued": queued})


@router.post("/api/{plural}/{ns}/{name}/scan/release")
@permission(Permission.REPO_MANAGE)
async def release_file(plural: str, ns: str, name: str, request: Request,
                       principal: Principal = Depends(current_principal)) -> JSONResponse:
    """Release a file "block unsafe files" holds because no scanner could prove it safe (suspicious,
    could not open, error): {"path": str, "revision"?: str} or {"blob": sha256-or-git-oid}, "reason"?: str.
    Never a file judged unsafe. Audited."""
    hub = hub_of(request)
    data = await json_object(request)
    path, blob, revision, reason = data.get("path"), data.get("blob"), data.get("revision", "main"), \
        data.get("reason") or ""

    def run() -> dict[str, Any]:
        with transaction(hub.sessions) as session:
            # The repo first: a caller who may not manage it learns nothing from how the body is judged.
            repo = load_repo(hub, session, principal, plural, ns, name, Permission.REPO_MANAGE)
            if not (isinstance(path, str | None) and isinstance(blob, str | None) and isinstance(revision, str)
                    and isinstance(reason, str)):
                raise BadRequest("Expected {'path': str, 'revision'?: str} or {'blob': str}, "
                                 "with an optional 'reason': str")
            return policy.release_file(hub, session, repo, principal.user_id, blob=blob, path=path,
                                        revision=revision, reason=reason)

    return JSONResponse(await run_in_threadpool(run))


@router.delete("/api/{plural}/{ns}/{name}/scan/release/{blob}")
@permission(Permission.REPO_MANAGE)
def revoke_release(plural: str, ns: str, name: str, blob: str, request: Request,
                   principal: Principal = Depends(current_principal)) -> JSONResponse:
    hub = hub_of(request)
    with transaction(hub.sessions) as session:
        repo = load_repo(hub, session, principal, plural, ns, name, Permission.REPO_MANAGE)
        policy.revoke_release(session, repo, blob)
    return JSONResponse({"blob": blob.lower(), "released": False})


@router.get("/api/{plural}/{ns}/{name}/scan-releases")
@permission(Permission.REPO_MANAGE)
def list_releases(plural: str, ns: str, name: str, request: Request,
                  principal: Principal = Depends(current_principal)) -> JSONResponse:
    hub = hub_of(request)
    with transaction(hub.sessions, readonly=True) as session:
        repo = load_repo(hub, session, principal, plural, ns, name, Permission.REPO_MANAGE)
        return JSONResponse(policy.released_files(session, repo))


@router.get("/api/{plural}/{ns}/{name}/secrets")
@permission(Permission.REPO_MANAGE)
def list_secret_notices(plural: str, ns: str, name: str, request: Request,
                        principal: Principal = Depends(current_principal)) -> JSONResponse:
    """Secret findings: only for those who manage the repo (a reader must never learn where one is)."""
    hub = hub_of(request)
    with transaction(hub.sessions, readonly=True) as session:
        repo = load_repo(hub, session, principal, plural, ns, name, Permission.REPO_MANAGE)
        history = request.query_params.get("history", "").lower() in ("1", "true")
        return JSONResponse(notices.secret_notices(hub, session, repo, request.query_params.get("revision", "main"),
                                                   history=history))


@router.post("/api/{plural}/{ns}/{name}/secrets/state")
@permission(Permission.REPO_MANAGE)
async def set_secret_notice_state(plural: str, ns: str, name: str, request: Request,
                                  principal: Principal = Depends(current_principal)) -> JSONResponse:
    hub = hub_of(request)
    data = await json_object(request)
    fingerprint, state, reason = data.get("fingerprint"), data.get("state"), data.get("reason") or ""
    if not (isinstance(fingerprint, str) and isinstance(state, str) and isinstance(reason, str)):
        raise BadRequest("Expected {'fingerprint': str, 'state': 'open'|'dismissed'|'resolved', 'reason'?: str}")

    def run() -> None:
        with transaction(hub.sessions) as session:
            repo = load_repo(hub, session, principal, plural, ns, name, Permission.REPO_MANAGE)
            notices.set_notice_state(session, repo, principal.user_id, fingerprint, state, reason)

    await run_in_threadpool(run)
    return JSONResponse({"state": state})


@router.post("/api/credentials/revoke")
@permission(Permission.PUBLIC)
async def revoke_leaked_credentials(request: Request,
                                    principal: Principal = Depends(current_principal)) -> JSONResponse:
    """Anyone who found a Bastion token may report it here; live ones are revoked, always 202.

    The answer never says whether a token was real or live: the endpoint is no token oracle.
    """
    require(principal, Permission.PUBLIC)
    hub = hub_of(request)
    body = await request.body()
    candidates: list[str] = []
    if len(body) <= 1 << 20:
        try:
            data = parse_json(body or b"null", "Report")
        except BadRequest:
            data = body.decode("utf-8", "replace")
        if isinstance(data, dict):
            data = data.get("tokens") or data.get("credentials") or data.get("token") or []
        if isinstance(data, str):
            data = data.split()
        if isinstance(data, list):
            candidates = [t for t in data if isinstance(t, str)][:100]
    if candidates:
        await run_in_threadpool(leaks.revoke_leaked, hub, candidates, source="public report",
                                where=f"reported from {request.state.client_ip or 'unknown'}")
    return JSONResponse({"message": "Thank you. Any live Bastion token in this report has been revoked."},
                        status_code=202)
