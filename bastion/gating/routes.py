"""Gated repos over HTTP at the Hub's URLs: `/api/{type}s/{repo}/user-access-request/…` (list, handle,
grant for managers; cancel for the requester). The gate form's `POST /{repo}/ask-access` is in
bastion.web.gating_views (a browser's form as well as a token's JSON).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from bastion.accounts.service import get_user_by_name, user_by_id
from bastion.api.auth import current_principal, hub_of
from bastion.api.bodies import json_object
from bastion.api.urls import next_link
from bastion.authz import Permission, Principal, permission
from bastion.db import transaction
from bastion.errors import BadRequest, NotFound, RepoNotFound
from bastion.gating import service
from bastion.repos.routes import load_repo
from bastion.repos.service import TYPE_BY_PLURAL

if TYPE_CHECKING:
    from bastion.accounts.models import User
    from bastion.repos.models import Repo

router = APIRouter()
MAX_PAGE = 1000


def _actor(session: Session, principal: Principal) -> User:
    user = user_by_id(session, principal.user_id)
    if user is None:
        raise RepoNotFound()
    return user


def _user(session: Session, data: dict[str, Any], repo: Repo) -> User:
    """The user a manager's request names: `user` (a name) or `requestId` (the Hub's request id)."""
    name, request_id = data.get("user"), data.get("requestId")
    if (name is None) == (request_id is None):
        raise BadRequest("Name the user ('user') or the request ('requestId'), not both")
    if request_id is not None:
        if not isinstance(request_id, str):
            raise BadRequest("'requestId' must be a string")
        row = service.request_by_public_id(session, repo, request_id)
        user = user_by_id(session, row.user_id)
        assert user is not None
        return user
    if not isinstance(name, str) or not name:
        raise BadRequest("'user' must be a username")
    return get_user_by_name(session, name)


def _plural(plural: str) -> str:
    if plural not in TYPE_BY_PLURAL:
        raise NotFound(f"Unknown repository type {plural!r}")
    return plural


@router.post("/api/{plural}/{ns}/{name}/user-access-request/cancel")
@permission(Permission.REPO_ACCESS_REQUEST)
def cancel_own_request(plural: str, ns: str, name: str, request: Request,
                       principal: Principal = Depends(current_principal)) -> JSONResponse:
    """The requester withdraws their pending request."""
    hub = hub_of(request)
    with transaction(hub.sessions) as session:
        repo = load_repo(hub, session, principal, _plural(plural), ns, name, Permission.REPO_ACCESS_REQUEST)
        service.withdraw(session, repo, _actor(session, principal))
    return JSONResponse({})


# ---- those who manage the repo ------------------------------------------------------------------


@router.get("/api/{plural}/{ns}/{name}/user-access-request/{status}")
@permission(Permission.REPO_ACCESS_READ)
def list_requests(plural: str, ns: str, name: str, status: str, request: Request,
                  principal: Principal = Depends(current_principal)) -> JSONResponse:
    hub = hub_of(request)
    qp = request.query_params
    try:
        limit = int(qp.get("limit") or MAX_PAGE)
        offset = int(qp.get("cursor") or 0)
    except ValueError:
        raise BadRequest("'limit' and 'cursor' must be integers") from None
    if not 1 <= limit <= MAX_PAGE or offset < 0:
        raise BadRequest(f"'limit' must be between 1 and {MAX_PAGE}, 'cursor' not negative")
    with transaction(hub.sessions, readonly=True) as session:
        repo = load_repo(hub, session, principal, _plural(plural), ns, name, Permission.REPO_ACCESS_READ)
        page = service.list_requests(session, repo, status, offset, limit)
        items = [service.request_payload(row, user, granter) for row, user, granter in page.rows]
    headers = {"Link": next_link(request, cursor=offset + limit)} if page.has_more else {}
    return JSONResponse(items, headers=headers)


@router.post("/api/{plural}/{ns}/{name}/user-access-request/handle")
@permission(Permission.REPO_ACCESS_WRITE)
async def handle_request(plural: str, ns: str, name: str, request: Request,
                         principal: Principal = Depends(current_principal)) -> JSONResponse:
    """Accept, reject (with an optional reason), or move back to pending one user's request."""
    data = await json_object(request, 64 << 10)
    hub = hub_of(request)
    status, reason = data.get("status"), data.get("rejectionReason")
    if not isinstance(status, str):
        raise BadRequest("'status' must be one of accepted, rejected, pending")

    def run() -> dict[str, Any]:
        with transaction(hub.sessions) as session:
            repo = load_repo(hub, session, principal, _plural(plural), ns, name, Permission.REPO_ACCESS_WRITE)
            user = _user(session, data, repo)
            row = service.review(session, hub.mailer, hub.settings.public_url, repo, _actor(session, principal),
                                 user, status, reason)
            return service.request_payload(row, user, None)

    return JSONResponse(await run_in_threadpool(run))


@router.post("/api/{plural}/{ns}/{name}/user-access-request/grant")
@permission(Permission.REPO_ACCESS_WRITE)
async def grant_access(plural: str, ns: str, name: str, request: Request,
                       principal: Principal = Depends(current_principal)) -> JSONResponse:
    """Give a user access without a request of theirs."""
    data = await json_object(request, 64 << 10)
    hub = hub_of(request)

    def run() -> dict[str, Any]:
        with transaction(hub.sessions) as session:
            repo = load_repo(hub, session, principal, _plural(plural), ns, name, Permission.REPO_ACCESS_WRITE)
            if not isinstance(data.get("user"), str):
                raise BadRequest("'user' (a username) is required")
            user = _user(session, {"user": data["user"]}, repo)
            actor = _actor(session, principal)
            row = service.grant(session, hub.mailer, hub.settings.public_url, repo, actor, user)
            return service.request_payload(row, user, actor)

    return JSONResponse(await run_in_threadpool(run))

