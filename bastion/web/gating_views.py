"""The access requests page of a gated repo (`/{repo}/access-requests`): those who manage the repo see
the pending, accepted and rejected requests and accept, reject, reset or grant with CSRF-protected forms.

Pages only: every change is the same service call the JSON API makes.
"""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import quote

from fastapi import APIRouter, Depends, Request, Response
from starlette.concurrency import run_in_threadpool

from bastion.accounts.models import User
from bastion.accounts.service import get_user_by_name
from bastion.api.auth import current_principal
from bastion.api.urls import URL_PREFIX
from bastion.authz import Permission, Principal, permission
from bastion.db import transaction
from bastion.errors import BadRequest, RepoNotFound
from bastion.gating import service
from bastion.gating.models import STATUSES
from bastion.repos.routes import load_repo
from bastion.repos.service import PLURAL_BY_TYPE
from bastion.web.pages import HtmlRoute, check_csrf, hub_of, redirect, render

router = APIRouter(route_class=HtmlRoute)
PAGE_SIZE = 100
PREFIXES = {"dataset": "/datasets", "space": "/spaces", "model": ""}
ACTIONS = ("accepted", "rejected", "pending", "grant")


def _page_path(repo_type: str, ns: str, name: str) -> str:
    return f"/{URL_PREFIX[repo_type]}{ns}/{name}/access-requests"


def _add_routes(repo_type: str) -> None:
    p = PREFIXES[repo_type]
    plural = PLURAL_BY_TYPE[repo_type]

    def access_requests(ns: str, name: str, request: Request,
                        principal: Principal = Depends(current_principal)) -> Response:
        status = request.query_params.get("status", "pending")
        if status not in STATUSES:
            status = "pending"
        try:
            cursor = max(0, int(request.query_params.get("cursor", "0")))
        except ValueError:
            cursor = 0
        hub = hub_of(request)
        with transaction(hub.sessions, readonly=True) as session:
            repo = load_repo(hub, session, principal, plural, ns, name, Permission.REPO_ACCESS_READ)
            page = service.list_requests(session, repo, status, cursor, PAGE_SIZE)
            return render(request, "access_requests.html", repo=repo, base=f"/{URL_PREFIX[repo.type]}{repo.repo_id}",
                          current=status, statuses=STATUSES, rows=page.rows, cursor=cursor,
                          next_cursor=cursor + PAGE_SIZE if page.has_more else None)

    async def decide(ns: str, name: str, request: Request,
                     principal: Principal = Depends(current_principal)) -> Response:
        form = await request.form(max_files=0, max_fields=16)
        hub = hub_of(request)
        action = form.get("action")
        username, reason = form.get("user"), form.get("reason") or None
        if action not in ACTIONS or not isinstance(username, str) or not username.strip():
            raise BadRequest("Choose an action (accepted, rejected, pending or grant) and a user")
        if reason is not None and not isinstance(reason, str):
            raise BadRequest("The reason must be a text")

        def run() -> str:
            with transaction(hub.sessions) as session:
                repo = load_repo(hub, session, principal, plural, ns, name, Permission.REPO_ACCESS_WRITE)
                check_csrf(request, form)
                actor = session.get(User, principal.user_id)
                if actor is None:
                    raise RepoNotFound()
                user = get_user_by_name(session, username.strip())
                if action == "grant":
                    service.grant(session, hub.mailer, hub.settings.public_url, repo, actor, user)
                    return "accepted"
                service.review(session, hub.mailer, hub.settings.public_url, repo, actor, user, str(action),
                               reason if action == "rejected" else None)
                return str(action)

        shown = await run_in_threadpool(run)
        return redirect(f"{_page_path(repo_type, ns, name)}?status={quote(shown)}")

    views: list[tuple[str, Callable[..., object], Permission, str]] = [
        ("/{ns}/{name}/access-requests", access_requests, Permission.REPO_ACCESS_READ, "GET"),
        ("/{ns}/{name}/access-requests", decide, Permission.REPO_ACCESS_WRITE, "POST")]
    for path, view, perm, method in views:
        view.__name__ = f"{repo_type}_{view.__name__}"
        router.add_api_route(p + path, permission(perm)(view), methods=[method])


for _type in ("dataset", "space", "model"):
    _add_routes(_type)
