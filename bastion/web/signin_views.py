"""Sign-in (password, second factor, recovery code), sign-out, sign-up, e-mail verification, password reset.

Each view: one authz check, the CSRF check on POST, one service call per transaction, render.
"""

from __future__ import annotations

from urllib.parse import quote

from fastapi import APIRouter, Depends, Request, Response
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData

from bastion import audit
from bastion.accounts import service as accounts
from bastion.accounts import sessions, twofactor
from bastion.accounts.models import User, WebSession
from bastion.accounts.ratelimit import TooManyAttempts
from bastion.api.auth import DEVICE_COOKIE, SESSION_COOKIE, current_principal
from bastion.audit.actions import AuditAction
from bastion.authz import Permission, Principal, permission, require
from bastion.db import transaction
from bastion.errors import BadRequest, BastionError, MailLinksUnavailable
from bastion.sso import instance as instance_sso
from bastion.web.pages import (
    HtmlRoute,
    check_csrf,
    clear_session_cookie,
    hub_of,
    redirect,
    relying_party,
    render,
    safe_next,
    set_session_cookie,
)
from bastion.web.views import (
    _ip,
    _key,
    _mailer,
    _me,
    _pending,
    _signed_in,
    _text,
    _totp_box,
)

router = APIRouter(route_class=HtmlRoute)


# ---- sign-in -------------------------------------------------------------------------------

@router.get("/login")
@permission(Permission.PUBLIC)
def login_page(request: Request, principal: Principal = Depends(current_principal)) -> Response:
    require(principal, Permission.PUBLIC)
    with transaction(hub_of(request).sessions, readonly=True) as session:
        sso_enabled = instance_sso.enabled_config(session) is not None
    return render(request, "login.html", next=safe_next(request.query_params.get("next")), login="",
                  sso_enabled=sso_enabled, sso_link=request.query_params.get("m") == "sso-link")


def _links_sso(request: Request, user: User, target: str) -> bool:
    """This password sign-in proves the account for linking an SSO identity (the link flow's own target)."""
    from urllib.parse import parse_qs, urlsplit

    from bastion.authz import capability

    parts = urlsplit(target)
    if parts.path != "/login/sso/link":
        return False
    try:
        claims = capability.verify(hub_of(request).settings.secret_key, "sso-link",
                                   (parse_qs(parts.query).get("t") or [""])[0])
    except BastionError:
        return False
    return claims.get("user") == user.name_lower


@router.post("/login")
@permission(Permission.PUBLIC)
async def login_submit(request: Request, principal: Principal = Depends(current_principal)) -> Response:
    form = await request.form()
    return await run_in_threadpool(_login, request, principal, form)


def _login(request: Request, principal: Principal, form: FormData) -> Response:
    require(principal, Permission.PUBLIC)
    check_csrf(request, form)
    login, target = _text(form, "login", 320), safe_next(_text(form, "next"))
    hub = hub_of(request)
    try:
        with transaction(hub.sessions) as session:
            user = sessions.authenticate(session, login, _text(form, "password"), _ip(request))
            sso_only = user is not None and not instance_sso.password_sign_in_allowed(session, user) and \
                not _links_sso(request, user, target)
            if user is None or sso_only:
                secret = None
                if sso_only:
                    audit.record(session, AuditAction.USER_LOGIN_FAILED, target=("user", user.name),
                                 namespace=user.name, details={"reason": "sso_only"})
            else:
                two_factor = sessions.has_second_factor(session, user)
                ws, secret = sessions.start(session, user, pending=two_factor, ip=_ip(request),
                                            user_agent=request.headers.get("user-agent"),
                                            replaces=request.cookies.get(SESSION_COOKIE))
                if not two_factor:
                    secret, device = sessions.complete_login(session, _mailer(request), ws, user, method="password",
                                                             device=request.cookies.get(DEVICE_COOKIE))
    except TooManyAttempts as exc:
        return render(request, "login.html", 429, error=exc.message, login=login, next=target)
    if sso_only:
        return render(request, "login.html", 403, error="Password sign-in is disabled on this instance: sign in "
                      "with SSO.", login=login, next=target, sso_enabled=True)
    if user is None or secret is None:
        # One message for an unknown account and a wrong password.
        return render(request, "login.html", 400, error="Incorrect username or password.", login=login,
                      next=target)
    if two_factor:
        response = redirect(f"/login/two-factor?next={quote(target, safe='/')}")
        set_session_cookie(request, response, secret)
        return response
    return _signed_in(request, secret, device, target)


def _two_factor_page(request: Request, session: Session, user: User, ws: WebSession, status: int = 200,
                     error: str | None = None) -> Response:
    options = twofactor.authentication_options(session, user, relying_party(request))
    if options is not None:
        ws.pending = {**ws.pending, "webauthn": options[1]}
    return render(request, "two_factor.html", status, error=error, has_totp=bool(user.totp_secret),
                  webauthn_options=options[0] if options else None,
                  next=safe_next(request.query_params.get("next")))


@router.get("/login/two-factor")
@permission(Permission.PUBLIC)
def two_factor_page(request: Request, principal: Principal = Depends(current_principal)) -> Response:
    require(principal, Permission.PUBLIC)
    with transaction(hub_of(request).sessions) as session:
        found = _pending(request, session)
        if found is None:
            return redirect("/login")
        return _two_factor_page(request, session, *found)


@router.post("/login/two-factor")
@permission(Permission.PUBLIC)
async def two_factor_submit(request: Request, principal: Principal = Depends(current_principal)) -> Response:
    form = await request.form()
    return await run_in_threadpool(_second_factor, request, principal, form, "totp")


@router.post("/login/webauthn")
@permission(Permission.PUBLIC)
async def webauthn_submit(request: Request, principal: Principal = Depends(current_principal)) -> Response:
    form = await request.form()
    return await run_in_threadpool(_second_factor, request, principal, form, "webauthn")


@router.post("/login/recovery")
@permission(Permission.PUBLIC)
async def recovery_submit(request: Request, principal: Principal = Depends(current_principal)) -> Response:
    form = await request.form()
    return await run_in_threadpool(_second_factor, request, principal, form, "recovery_code")


def _second_factor(request: Request, principal: Principal, form: FormData, method: str) -> Response:
    require(principal, Permission.PUBLIC)
    check_csrf(request, form)
    target = safe_next(_text(form, "next"))
    mailer = _mailer(request)
    template = "recovery.html" if method == "recovery_code" else None
    try:
        with transaction(hub_of(request).sessions) as session:
            found = _pending(request, session)
            if found is None:
                return redirect("/login")
            user, ws = found
            if method == "totp":
                ok = twofactor.verify_totp(session, _totp_box(request), user, _text(form, "code", 32), _ip(request))
            elif method == "webauthn":
                ok = twofactor.verify_assertion(session, user, relying_party(request),
                                                credential_json=_text(form, "credential", 65536),
                                                challenge=ws.pending.get("webauthn"), ip=_ip(request))
            else:
                ok = twofactor.use_recovery_code(session, mailer, user, _text(form, "code", 64), _ip(request))
            if ok:
                secret, device = sessions.complete_login(session, mailer, ws, user, method=method,
                                                         device=request.cookies.get(DEVICE_COOKIE))
                return _signed_in(request, secret, device, target)
            error = {"totp": "That code is not valid (or was already used).",
                     "webauthn": "The security key could not be verified.",
                     "recovery_code": "That recovery code is not valid (or was already used)."}[method]
            if template:
                return render(request, template, 400, error=error, next=target)
            return _two_factor_page(request, session, user, ws, 400, error)
    except TooManyAttempts as exc:
        if template:
            return render(request, template, 429, error=exc.message, next=target)
        return render(request, "error.html", 429, title="Too many attempts", message=exc.message)


@router.get("/login/recovery")
@permission(Permission.PUBLIC)
def recovery_page(request: Request, principal: Principal = Depends(current_principal)) -> Response:
    require(principal, Permission.PUBLIC)
    with transaction(hub_of(request).sessions) as session:
        if _pending(request, session) is None:
            return redirect("/login")
    return render(request, "recovery.html", next=safe_next(request.query_params.get("next")))


@router.post("/logout")
@permission(Permission.PUBLIC)
async def logout(request: Request, principal: Principal = Depends(current_principal)) -> Response:
    form = await request.form()
    return await run_in_threadpool(_logout, request, principal, form)


def _logout(request: Request, principal: Principal, form: FormData) -> Response:
    require(principal, Permission.PUBLIC)
    check_csrf(request, form)
    if principal.method == "session":
        with transaction(hub_of(request).sessions) as session:
            user, ws = _me(session, principal)
            sessions.end(session, ws, user)
    response = redirect("/login?m=signed-out")
    clear_session_cookie(request, response)
    return response


# ---- sign-up, verification, password reset -------------------------------------------------

@router.get("/join")
@permission(Permission.PUBLIC)
def join_page(request: Request, principal: Principal = Depends(current_principal)) -> Response:
    require(principal, Permission.PUBLIC)
    settings = hub_of(request).settings
    invite = request.query_params.get("invite", "")
    email = ""
    if settings.signup == "invite" and invite:
        email = accounts.invited_email(settings.secret_key, invite)
    return render(request, "join.html", mode=settings.signup, invite=invite, email=email, name="", fullname="",
                  min_length=settings.password_min_length)


@router.post("/join")
@permission(Permission.PUBLIC)
async def join_submit(request: Request, principal: Principal = Depends(current_principal)) -> Response:
    form = await request.form()
    return await run_in_threadpool(_join, request, principal, form)


def _join(request: Request, principal: Principal, form: FormData) -> Response:
    require(principal, Permission.PUBLIC)
    check_csrf(request, form)
    settings = hub_of(request).settings
    name, email, invite = _text(form, "name", 96), _text(form, "email", 320), _text(form, "invite")
    password = _text(form, "password")
    try:
        if password != _text(form, "password_confirm"):
            raise BadRequest("The two passwords do not match.")
        with transaction(hub_of(request).sessions) as session:
            user = accounts.signup(session, _mailer(request), _key(request), mode=settings.signup, name=name,
                                   email=email, password=password, min_password_length=settings.password_min_length,
                                   invite=invite or None)
            ws, _ = sessions.start(session, user, pending=False, ip=_ip(request),
                                   user_agent=request.headers.get("user-agent"),
                                   replaces=request.cookies.get(SESSION_COOKIE))
            secret, device = sessions.complete_login(session, None, ws, user, method="signup",
                                                     device=request.cookies.get(DEVICE_COOKIE))
    except BastionError as exc:
        return render(request, "join.html", exc.status, error=exc.message, mode=settings.signup, invite=invite,
                      email=email, name=name, min_length=settings.password_min_length)
    return _signed_in(request, secret, device, "/settings/emails?m=welcome")


@router.get("/join/verify")
@permission(Permission.PUBLIC)
def verify_email(request: Request, principal: Principal = Depends(current_principal)) -> Response:
    require(principal, Permission.PUBLIC)
    with transaction(hub_of(request).sessions) as session:
        accounts.verify_email(session, hub_of(request).settings.secret_key, request.query_params.get("token", ""))
    return redirect("/settings/emails?m=email-verified" if principal.authenticated else "/login?m=email-verified")


@router.get("/login/forgot")
@permission(Permission.PUBLIC)
def forgot_page(request: Request, principal: Principal = Depends(current_principal)) -> Response:
    require(principal, Permission.PUBLIC)
    return render(request, "forgot.html", sent=False)


@router.post("/login/forgot")
@permission(Permission.PUBLIC)
async def forgot_submit(request: Request, principal: Principal = Depends(current_principal)) -> Response:
    form = await request.form()
    return await run_in_threadpool(_forgot, request, principal, form)


def _forgot(request: Request, principal: Principal, form: FormData) -> Response:
    require(principal, Permission.PUBLIC)
    check_csrf(request, form)
    try:
        with transaction(hub_of(request).sessions) as session:
            accounts.request_password_reset(session, _mailer(request), _key(request), _text(form, "email", 320),
                                            _ip(request))
    except (TooManyAttempts, MailLinksUnavailable) as exc:
        return render(request, "forgot.html", exc.status, sent=False, error=exc.message)
    # The same page whether or not the address belongs to an account.
    return render(request, "forgot.html", sent=True)


@router.get("/login/reset")
@permission(Permission.PUBLIC)
def reset_page(request: Request, principal: Principal = Depends(current_principal)) -> Response:
    require(principal, Permission.PUBLIC)
    token = request.query_params.get("token", "")
    with transaction(hub_of(request).sessions) as session:
        accounts.user_for_reset(session, hub_of(request).settings.secret_key, token)
    return render(request, "reset.html", token=token, min_length=hub_of(request).settings.password_min_length)


@router.post("/login/reset")
@permission(Permission.PUBLIC)
async def reset_submit(request: Request, principal: Principal = Depends(current_principal)) -> Response:
    form = await request.form()
    return await run_in_threadpool(_reset, request, principal, form)


def _reset(request: Request, principal: Principal, form: FormData) -> Response:
    require(principal, Permission.PUBLIC)
    check_csrf(request, form)
    settings = hub_of(request).settings
    token, password = _text(form, "token"), _text(form, "password")
    try:
        if password != _text(form, "password_confirm"):
            raise BadRequest("The two passwords do not match.")
        with transaction(hub_of(request).sessions) as session:
            accounts.reset_password(session, _mailer(request), settings.secret_key, token, password,
                                    min_length=settings.password_min_length)
    except BadRequest as exc:
        return render(request, "reset.html", 400, token=token, error=exc.message,
                      min_length=settings.password_min_length)
    response = redirect("/login?m=password-reset")
    clear_session_cookie(request, response)
    return response
