"""Account settings pages: profile, e-mail addresses, password, sessions.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request, Response
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from bastion.accounts import service as accounts
from bastion.accounts import sessions
from bastion.accounts.models import User, WebSession
from bastion.accounts.ratelimit import TooManyAttempts
from bastion.api.auth import current_principal
from bastion.authz import Permission, Principal, permission, require
from bastion.errors import BadRequest, NotFound
from bastion.web.pages import (
    HtmlRoute,
    hub_of,
    redirect,
    render,
)
from bastion.web.views import (
    _key,
    _mailer,
    _settings_page,
    _settings_post,
    _text,
)

router = APIRouter(route_class=HtmlRoute)


@router.get("/settings")
@permission(Permission.ACCOUNT_MANAGE)
def settings_root(request: Request, principal: Principal = Depends(current_principal)) -> Response:
    require(principal, Permission.ACCOUNT_MANAGE)
    return redirect("/settings/profile")


@router.get("/settings/profile")
@permission(Permission.ACCOUNT_MANAGE)
def profile_page(request: Request, principal: Principal = Depends(current_principal)) -> Response:
    return _settings_page(request, principal, "settings/profile.html")


@router.post("/settings/profile")
@permission(Permission.ACCOUNT_MANAGE)
async def profile_submit(request: Request, principal: Principal = Depends(current_principal)) -> Response:
    form = await request.form()

    def action(session: Session, user: User, ws: WebSession) -> str:
        accounts.update_profile(session, user, _text(form, "fullname", 400))
        return "/settings/profile?m=profile-saved"

    return await run_in_threadpool(_settings_post, request, principal, form, action)


@router.get("/settings/emails")
@permission(Permission.ACCOUNT_MANAGE)
def emails_page(request: Request, principal: Principal = Depends(current_principal)) -> Response:
    return _settings_page(request, principal, "settings/emails.html")


@router.post("/settings/emails")
@permission(Permission.ACCOUNT_EMAILS_WRITE)
async def emails_add(request: Request, principal: Principal = Depends(current_principal)) -> Response:
    form = await request.form()

    def action(session: Session, user: User, ws: WebSession) -> str:
        accounts.add_email(session, _mailer(request), _key(request), user, _text(form, "email", 320))
        return "/settings/emails?m=email-added"

    return await run_in_threadpool(_settings_post, request, principal, form, action, Permission.ACCOUNT_EMAILS_WRITE)


@router.post("/settings/emails/{email_id}/{verb}")
@permission(Permission.ACCOUNT_EMAILS_WRITE)
async def emails_change(email_id: int, verb: str, request: Request,
                        principal: Principal = Depends(current_principal)) -> Response:
    form = await request.form()

    def action(session: Session, user: User, ws: WebSession) -> str:
        if verb == "primary":
            accounts.make_primary(session, _mailer(request), user, email_id)
            return "/settings/emails?m=email-primary"
        if verb == "delete":
            accounts.remove_email(session, _mailer(request), user, email_id)
            return "/settings/emails?m=email-removed"
        if verb == "resend":
            accounts.resend_verification(session, _mailer(request), _key(request), user, email_id)
            return "/settings/emails?m=email-sent"
        raise NotFound("Not found")

    return await run_in_threadpool(_settings_post, request, principal, form, action, Permission.ACCOUNT_EMAILS_WRITE)


@router.get("/settings/password")
@permission(Permission.ACCOUNT_MANAGE)
def password_page(request: Request, principal: Principal = Depends(current_principal)) -> Response:
    return _settings_page(request, principal, "settings/password.html",
                          min_length=hub_of(request).settings.password_min_length)


@router.post("/settings/password")
@permission(Permission.ACCOUNT_MANAGE)
async def password_submit(request: Request, principal: Principal = Depends(current_principal)) -> Response:
    form = await request.form()
    min_length = hub_of(request).settings.password_min_length

    def action(session: Session, user: User, ws: WebSession) -> str | Response:
        try:
            if _text(form, "password") != _text(form, "password_confirm"):
                raise BadRequest("The two new passwords do not match.")
            ok = accounts.change_password(session, _mailer(request), user, _text(form, "current_password"),
                                          _text(form, "password"), min_length=min_length, keep_session_id=ws.id)
        except (BadRequest, TooManyAttempts) as exc:
            return render(request, "settings/password.html", exc.status, user=user, error=exc.message,
                          min_length=min_length)
        if not ok:
            return render(request, "settings/password.html", 400, user=user, min_length=min_length,
                          error="Your current password is not correct.")
        return "/settings/password?m=password-changed"

    return await run_in_threadpool(_settings_post, request, principal, form, action, Permission.ACCOUNT_MANAGE,
                                   True)


@router.get("/settings/sessions")
@permission(Permission.ACCOUNT_MANAGE)
def sessions_page(request: Request, principal: Principal = Depends(current_principal)) -> Response:
    return _settings_page(request, principal, "settings/sessions.html")


@router.post("/settings/sessions/revoke-others")
@permission(Permission.ACCOUNT_MANAGE)
async def sessions_revoke_others(request: Request, principal: Principal = Depends(current_principal)) -> Response:
    form = await request.form()

    def action(session: Session, user: User, ws: WebSession) -> str:
        sessions.revoke_others(session, user, keep_session_id=ws.id)
        return "/settings/sessions?m=sessions-revoked"

    return await run_in_threadpool(_settings_post, request, principal, form, action)


@router.post("/settings/sessions/{session_id}/revoke")
@permission(Permission.ACCOUNT_MANAGE)
async def sessions_revoke(session_id: int, request: Request,
                          principal: Principal = Depends(current_principal)) -> Response:
    form = await request.form()

    def action(session: Session, user: User, ws: WebSession) -> str:
        sessions.revoke(session, user, session_id)
        return "/settings/sessions?m=session-revoked" if session_id != ws.id else "/login?m=signed-out"

    return await run_in_threadpool(_settings_post, request, principal, form, action)
