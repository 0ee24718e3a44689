"""Identity lifecycle in the browser: the user's "Account" settings page (download one's personal data, delete
one's account: sudo mode plus the username typed again) and the instance admin's users page (deactivate,
reactivate, delete: admins in sudo mode). Decisions and writes are bastion.lifecycle's.
"""

from __future__ import annotations

from urllib.parse import quote

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from bastion.accounts import service as accounts
from bastion.api.auth import current_principal, hub_of
from bastion.authz import Permission, Principal, permission, require
from bastion.db import transaction
from bastion.errors import BadRequest, BastionError, NotFound
from bastion.lifecycle import deletion, service
from bastion.web.pages import HtmlRoute, check_csrf, clear_session_cookie, redirect, render
from bastion.web.views import _me, _text

router = APIRouter(route_class=HtmlRoute)


def _account_page(request: Request, principal: Principal, status: int = 200, error: str | None = None) -> Response:
    hub = hub_of(request)
    with transaction(hub.sessions, readonly=True) as session:
        user, _ = _me(session, principal)
        kept = len(deletion.own_repos(session, user))
        return render(request, "settings/account.html", status, user=user, error=error, own_repos=kept,
                      grace_days=hub.settings.account_deletion_grace_days)


@router.get("/settings/account")
@permission(Permission.ACCOUNT_MANAGE)
def account_page(request: Request, principal: Principal = Depends(current_principal)) -> Response:
    require(principal, Permission.ACCOUNT_MANAGE)
    return _account_page(request, principal)


@router.post("/settings/account/delete")
@permission(Permission.ACCOUNT_DELETE)
async def account_delete(request: Request, principal: Principal = Depends(current_principal)) -> Response:
    """Delete one's own account: in sudo mode (password, and second factor when there is one, proven just
    now), with the username typed again. The repos are kept for the grace period, then deleted."""
    form = await request.form()

    def run() -> Response:
        require(principal, Permission.ACCOUNT_DELETE)
        check_csrf(request, form)
        hub = hub_of(request)
        try:
            with transaction(hub.sessions) as session:
                user, _ = _me(session, principal)
                if _text(form, "confirm", 100).strip() != user.name:
                    raise BadRequest("Type your username exactly to confirm the deletion.")
                deletion.delete_account(hub, session, user, grace_days=hub.settings.account_deletion_grace_days)
        except BadRequest as exc:
            return _account_page(request, principal, 400, exc.message)
        response = redirect("/login?m=account-deleted")
        clear_session_cookie(request, response)
        return response

    return await run_in_threadpool(run)


@router.get("/admin/users")
@permission(Permission.INSTANCE_STATUS_READ)
def admin_users(request: Request, principal: Principal = Depends(current_principal)) -> Response:
    require(principal, Permission.INSTANCE_STATUS_READ)
    return _users_page(request)


def _users_page(request: Request, status: int = 200, error: str | None = None, done: str | None = None) -> Response:
    hub = hub_of(request)
    with transaction(hub.sessions, readonly=True) as session:
        rows = service.list_accounts(session)
    return render(request, "admin_users.html", status, users=rows, error=error,
                  done=done or request.query_params.get("done"), grace_days=hub.settings.account_deletion_grace_days)


VERBS = ("deactivate", "reactivate", "delete")


@router.post("/admin/users/{name}/{verb}")
@permission(Permission.INSTANCE_USERS_WRITE)
async def admin_users_post(name: str, verb: str, request: Request,
                           principal: Principal = Depends(current_principal)) -> Response:
    """Deactivate (every credential revoked), reactivate or delete an account, as `bastion admin …-user` does."""
    form = await request.form()

    def run() -> Response:
        require(principal, Permission.INSTANCE_USERS_WRITE)
        check_csrf(request, form)
        if verb not in VERBS:
            raise NotFound("Not found")
        hub = hub_of(request)
        try:
            with transaction(hub.sessions) as session:
                user = accounts.get_user_by_name(session, name)
                if user.id == principal.user_id:
                    raise BadRequest("You cannot deactivate or delete your own account here.")
                reason = _text(form, "reason", service.REASON_MAX)
                if verb == "deactivate":
                    service.deactivate_user(session, user, reason=reason)
                elif verb == "reactivate":
                    service.reactivate_user(session, user, reason=reason)
                else:
                    if _text(form, "confirm", 100).strip() != user.name:
                        raise BadRequest(f"Type {user.name} exactly to confirm the deletion.")
                    transfer = _text(form, "transfer_to", 96).strip() or None
                    deletion.delete_account(hub, session, user, grace_days=hub.settings.account_deletion_grace_days,
                                            transfer_to=transfer)
        except BastionError as exc:
            if exc.status >= 500 or isinstance(exc, NotFound):
                raise
            return _users_page(request, exc.status, exc.message)
        return redirect(f"/admin/users?done={quote(verb)}")

    return await run_in_threadpool(run)
