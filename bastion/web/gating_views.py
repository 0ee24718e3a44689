"""The access requests page of a gated repo (`/{repo}/access-requests`): those who manage the repo see
the pending, accepted and rejected requests and accept, reject, reset or grant with CSRF-protected forms.
And the gate form's `POST /{repo}/ask-access`, where the requester shares their name, e-mail and fields.

Pages only: every change is the same service call the JSON API makes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from fastapi import APIRouter, Depends, Request, Response
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from bastion.accounts.service import get_user_by_name, user_by_id
from bastion.api.auth import current_principal
from bastion.api.bodies import json_object
from bastion.api.urls import URL_PREFIX, repo_url
from bastion.authz import Permission, Principal, permission
from bastion.db import transaction
from bastion.errors import BadRequest, BastionError, PayloadTooLarge, RepoNotFound
from bastion.gating import service
from bastion.gating.models import STATUSES
from bastion.repos.routes import load_repo
from bastion.repos.service import PLURAL_BY_TYPE
from bastion.web.pages import HtmlRoute, check_csrf, error_page, hub_of, redirect, render

if TYPE_CHECKING:
    from bastion.accounts.models import User

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
                actor = user_by_id(session, principal.user_id)
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


# ---- the requester's form ------------------------------------------------------------------------
# The gate form of the repo page posts here. Its errors are JSON for API callers and a page for a
# browser, so its routes are on a router of their own (not HtmlRoute), mounted before the repo routes.

form_router = APIRouter()
MAX_FORM_BYTES = 256 << 10


def _requester(session: Session, principal: Principal) -> User:
    user = user_by_id(session, principal.user_id)
    if user is None:
        raise RepoNotFound()
    return user


async def _form_fields(request: Request) -> tuple[dict[str, Any], Any]:
    """The gate form as a JSON object or a form post (the Hub takes both); the form's csrf_token apart."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > MAX_FORM_BYTES:
        raise PayloadTooLarge(f"Request body larger than {MAX_FORM_BYTES} bytes")
    if request.headers.get("content-type", "").startswith("application/json"):
        return await json_object(request, MAX_FORM_BYTES), None
    form = await request.form(max_files=0, max_fields=service.MAX_FIELDS + 1)
    fields = {k: v for k, v in form.multi_items() if k != "csrf_token"}
    return fields, form


def _register_form(prefix: str, plural: str) -> None:
    @form_router.post(f"/{prefix}{{ns}}/{{name}}/ask-access", name=f"ask_access_{plural}")
    @permission(Permission.REPO_ACCESS_REQUEST)
    async def ask_access(ns: str, name: str, request: Request,
                         principal: Principal = Depends(current_principal)) -> Response:
        """The gate form: the caller shares their name and e-mail (and the form's fields) with those who
        manage the repo; 303 back to the repo page, as on the Hub."""
        hub = hub_of(request)
        try:
            raw, form = await _form_fields(request)
            fields = service.parse_fields(raw)

            def run() -> str:
                with transaction(hub.sessions) as session:
                    repo = load_repo(hub, session, principal, plural, ns, name, Permission.REPO_ACCESS_REQUEST)
                    if principal.method == "session":
                        # A browser posts the form of our page: a cross-site form must not ask in its name.
                        if form is None:
                            raise BadRequest("Send the access request form")
                        check_csrf(request, form)
                    service.ask(session, hub.mailer, hub.settings.public_url, repo, _requester(session, principal),
                                fields)
                    return repo_url(request, repo.type, repo.repo_id)

            location = await run_in_threadpool(run)
        except BastionError as exc:
            if principal.method == "session":
                return error_page(request, exc)
            raise
        return Response(status_code=303, headers={"Location": location})


for _prefix, _plural in (("datasets/", "datasets"), ("spaces/", "spaces"), ("", "models")):
    _register_form(_prefix, _plural)
