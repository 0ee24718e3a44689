"""Sign-up, sign-in (password, second factor, recovery code), sign-out, password reset, settings.

Each view: one authz check, the CSRF check on POST, one service call per transaction, render.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, Depends, Request, Response
from sqlalchemy import select
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData

from bastion.accounts import service as accounts
from bastion.accounts import sessions, twofactor
from bastion.accounts.models import RecoveryCode, User, WebSession
from bastion.accounts.ratelimit import TooManyAttempts
from bastion.accounts.sessions import DEVICE_COOKIE, SESSION_COOKIE, Timeouts
from bastion.api.auth import current_principal
from bastion.authz import Permission, Principal, permission, require
from bastion.db import transaction
from bastion.errors import AuthenticationRequired, BadRequest, BastionError, MailLinksUnavailable, NotFound
from bastion.mail import Mailer
from bastion.secretbox import SealedValueError, SecretBox
from bastion.web.pages import (
    FACTOR_ADDED,
    HtmlRoute,
    check_csrf,
    clear_session_cookie,
    hub_of,
    redirect,
    relying_party,
    render,
    safe_next,
    set_device_cookie,
    set_session_cookie,
)

router = APIRouter(route_class=HtmlRoute)


def _mailer(request: Request) -> Mailer:
    return request.app.state.mailer  # type: ignore[no-any-return]


def _totp_box(request: Request) -> SecretBox:
    return twofactor.totp_box(hub_of(request).settings.secret_key)


def _key(request: Request) -> bytes:
    return hub_of(request).settings.secret_key


def _timeouts(request: Request) -> Timeouts:
    return Timeouts.from_settings(hub_of(request).settings)


def _ip(request: Request) -> str | None:
    return request.state.client_ip  # type: ignore[no-any-return]


def _text(form: FormData, key: str, limit: int = 4096) -> str:
    value = form.get(key)
    return value[:limit] if isinstance(value, str) else ""


def _me(session: Session, principal: Principal) -> tuple[User, WebSession]:
    user = session.get(User, principal.user_id)
    ws = session.get(WebSession, principal.session_id) if principal.session_id else None
    if user is None or ws is None:
        raise AuthenticationRequired("Sign in to continue.")
    return user, ws


def _pending(request: Request, session: Session) -> tuple[User, WebSession] | None:
    """The user half-way through sign-in (password accepted, second factor outstanding)."""
    ws = sessions.find(session, request.cookies.get(SESSION_COOKIE, ""), _timeouts(request), state="pending")
    if ws is None:
        return None
    user = session.get(User, ws.user_id)
    return (user, ws) if user is not None and user.is_active else None


def _signed_in(request: Request, secret: str, device: str, target: str) -> Response:
    response = redirect(target)
    set_session_cookie(request, response, secret)
    set_device_cookie(request, response, device)
    return response


@router.get("/")
@permission(Permission.PUBLIC)
def home(request: Request, principal: Principal = Depends(current_principal)) -> Response:
    require(principal, Permission.PUBLIC)
    if principal.authenticated and principal.username:
        return redirect(f"/{quote(principal.username, safe='')}")
    return render(request, "home.html")


# ---- sign-in -------------------------------------------------------------------------------

@router.get("/login")
@permission(Permission.PUBLIC)
def login_page(request: Request, principal: Principal = Depends(current_principal)) -> Response:
    require(principal, Permission.PUBLIC)
    return render(request, "login.html", next=safe_next(request.query_params.get("next")), login="")


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
            if user is None:
                secret = None
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


# ---- settings ------------------------------------------------------------------------------

def _settings_page(request: Request, principal: Principal, template: str, perm: Permission = Permission.ACCOUNT_MANAGE,
                   **extra: Any) -> Response:
    require(principal, perm)
    with transaction(hub_of(request).sessions) as session:
        user, ws = _me(session, principal)
        context = _settings_context(request, session, user, ws)
        return render(request, template, user=user, **context, **extra)


def _settings_context(request: Request, session: Session, user: User, ws: WebSession) -> dict[str, Any]:
    if not request.url.path.startswith(("/settings/sessions", "/settings/two-factor")):
        return {}
    rows = sessions.active_sessions(session, user, _timeouts(request))
    return {
        "current_session": ws.id,
        "sessions": [{"id": r.id, "device": sessions.device_label(r.user_agent), "ip": r.ip or "unknown",
                      "last_seen": sessions.last_seen_text(r.last_seen_at), "created": r.created_at} for r in rows],
        "keys": twofactor.credentials(session, user),
        "recovery_left": sessions.recovery_codes_left(session, user),
        "has_recovery": session.scalar(select(RecoveryCode.id).where(RecoveryCode.user_id == user.id).limit(1))
        is not None,
    }


def _settings_post(request: Request, principal: Principal, form: FormData, action: Any,
                   perm: Permission = Permission.ACCOUNT_MANAGE, rotate: bool = False) -> Response:
    """Run `action(session, user, ws)` for the signed-in user; it returns a redirect target or a Response.
    With `rotate`, the session gets a new secret afterwards (privilege change).
    """
    require(principal, perm)
    check_csrf(request, form)
    with transaction(hub_of(request).sessions) as session:
        user, ws = _me(session, principal)
        result = action(session, user, ws)
        secret = sessions.rotate(session, ws) if rotate else None
    response = redirect(result) if isinstance(result, str) else result
    if secret is not None:
        set_session_cookie(request, response, secret)
    return response


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


# ---- sudo mode and second factors ----------------------------------------------------------

@router.get("/settings/sudo")
@permission(Permission.ACCOUNT_MANAGE)
def sudo_page(request: Request, principal: Principal = Depends(current_principal)) -> Response:
    return _settings_page(request, principal, "settings/sudo.html",
                          next=safe_next(request.query_params.get("next") or "/settings/two-factor"))


@router.post("/settings/sudo")
@permission(Permission.ACCOUNT_MANAGE)
async def sudo_submit(request: Request, principal: Principal = Depends(current_principal)) -> Response:
    form = await request.form()
    target = safe_next(_text(form, "next") or "/settings/two-factor")

    def action(session: Session, user: User, ws: WebSession) -> str | Response:
        try:
            ok = sessions.reauthenticate(session, ws, user, _text(form, "password"))
        except TooManyAttempts as exc:
            return render(request, "settings/sudo.html", 429, user=user, next=target, error=exc.message)
        if not ok:
            return render(request, "settings/sudo.html", 400, user=user, next=target,
                          error="That password is not correct.")
        # A privilege change, like sign-in: the session gets a new secret and the old cookie stops working.
        response = redirect(f"{target}{'&' if '?' in target else '?'}m=sudo")
        set_session_cookie(request, response, sessions.rotate(session, ws))
        return response

    return await run_in_threadpool(_settings_post, request, principal, form, action)


@router.get("/settings/two-factor")
@permission(Permission.ACCOUNT_MANAGE)
def two_factor_settings(request: Request, principal: Principal = Depends(current_principal)) -> Response:
    return _settings_page(request, principal, "settings/two_factor.html")


@router.get("/settings/two-factor/totp")
@permission(Permission.ACCOUNT_SECURITY)
def totp_enroll_page(request: Request, principal: Principal = Depends(current_principal)) -> Response:
    require(principal, Permission.ACCOUNT_SECURITY)
    with transaction(hub_of(request).sessions) as session:
        user, ws = _me(session, principal)
        if user.totp_secret:
            return redirect("/settings/two-factor")
        secret = twofactor.new_totp_secret()
        # Kept sealed in the session row until the user confirms it with a code.
        ws.pending = {**ws.pending, "totp": _totp_box(request).seal(secret, f"pending:{user.id}")}
        uri = twofactor.provisioning_uri(secret, user.name)
        return render(request, "settings/totp.html", user=user, secret=secret, qr=twofactor.qr_data_uri(uri))


def _recovery_codes_page(request: Request, user: User, codes: list[str], *, factor_added: bool = False) -> Response:
    return render(request, "settings/recovery_codes.html", user=user, codes=codes,
                  factor_added=FACTOR_ADDED if factor_added else None,
                  download="\n".join(["Bastion recovery codes for " + user.name, "", *codes, ""]))


@router.post("/settings/two-factor/totp")
@permission(Permission.ACCOUNT_SECURITY)
async def totp_enroll_submit(request: Request, principal: Principal = Depends(current_principal)) -> Response:
    form = await request.form()

    def action(session: Session, user: User, ws: WebSession) -> str | Response:
        box = _totp_box(request)
        try:
            secret = box.open(ws.pending.get("totp") or "", f"pending:{user.id}")
        except SealedValueError:  # none pending, or not this user's: start over
            return "/settings/two-factor/totp"
        try:
            codes = twofactor.enable_totp(session, _mailer(request), box, user, secret, _text(form, "code", 32),
                                          keep_session_id=ws.id)
        except BadRequest as exc:
            return render(request, "settings/totp.html", 400, user=user, secret=secret, error=exc.message,
                          qr=twofactor.qr_data_uri(twofactor.provisioning_uri(secret, user.name)))
        ws.pending = {k: v for k, v in ws.pending.items() if k != "totp"}
        return _recovery_codes_page(request, user, codes, factor_added=True) if codes \
            else "/settings/two-factor?m=factor-added"

    return await run_in_threadpool(_settings_post, request, principal, form, action, Permission.ACCOUNT_SECURITY,
                                   True)


@router.post("/settings/two-factor/totp/delete")
@permission(Permission.ACCOUNT_SECURITY)
async def totp_remove(request: Request, principal: Principal = Depends(current_principal)) -> Response:
    form = await request.form()

    def action(session: Session, user: User, ws: WebSession) -> str:
        twofactor.disable_totp(session, _mailer(request), user)
        return "/settings/two-factor?m=totp-removed"

    return await run_in_threadpool(_settings_post, request, principal, form, action, Permission.ACCOUNT_SECURITY,
                                   True)


@router.get("/settings/two-factor/webauthn")
@permission(Permission.ACCOUNT_SECURITY)
def webauthn_enroll_page(request: Request, principal: Principal = Depends(current_principal)) -> Response:
    require(principal, Permission.ACCOUNT_SECURITY)
    with transaction(hub_of(request).sessions) as session:
        user, ws = _me(session, principal)
        options, challenge = twofactor.registration_options(session, user, relying_party(request))
        ws.pending = {**ws.pending, "webauthn_register": challenge}
        return render(request, "settings/webauthn.html", user=user, options=options)


@router.post("/settings/two-factor/webauthn")
@permission(Permission.ACCOUNT_SECURITY)
async def webauthn_enroll_submit(request: Request, principal: Principal = Depends(current_principal)) -> Response:
    form = await request.form()

    def action(session: Session, user: User, ws: WebSession) -> str | Response:
        challenge = ws.pending.get("webauthn_register")
        ws.pending = {k: v for k, v in ws.pending.items() if k != "webauthn_register"}  # one attempt per challenge
        codes = twofactor.register_credential(session, _mailer(request), user, relying_party(request),
                                              label=_text(form, "label", 64),
                                              credential_json=_text(form, "credential", 65536), challenge=challenge,
                                              keep_session_id=ws.id)
        return _recovery_codes_page(request, user, codes, factor_added=True) if codes \
            else "/settings/two-factor?m=factor-added"

    return await run_in_threadpool(_settings_post, request, principal, form, action, Permission.ACCOUNT_SECURITY,
                                   True)


@router.post("/settings/two-factor/webauthn/{credential_id}/delete")
@permission(Permission.ACCOUNT_SECURITY)
async def webauthn_remove(credential_id: int, request: Request,
                          principal: Principal = Depends(current_principal)) -> Response:
    form = await request.form()

    def action(session: Session, user: User, ws: WebSession) -> str:
        twofactor.remove_credential(session, _mailer(request), user, credential_id)
        return "/settings/two-factor?m=key-removed"

    return await run_in_threadpool(_settings_post, request, principal, form, action, Permission.ACCOUNT_SECURITY,
                                   True)


@router.post("/settings/two-factor/recovery-codes")
@permission(Permission.ACCOUNT_SECURITY)
async def recovery_regenerate(request: Request, principal: Principal = Depends(current_principal)) -> Response:
    form = await request.form()

    def action(session: Session, user: User, ws: WebSession) -> Response:
        if not sessions.has_second_factor(session, user):
            raise BadRequest("Set up a second factor first; recovery codes stand in for it.")
        return _recovery_codes_page(request, user, twofactor.generate_recovery_codes(session, user))

    return await run_in_threadpool(_settings_post, request, principal, form, action, Permission.ACCOUNT_SECURITY)


# ---- static assets -------------------------------------------------------------------------

STATIC_DIR = Path(__file__).parent / "static"
STATIC_TYPES = {".css": "text/css; charset=utf-8", ".js": "text/javascript; charset=utf-8"}


@cache
def _static(name: str) -> bytes | None:
    if "/" in name or name.startswith(".") or Path(name).suffix not in STATIC_TYPES:
        return None
    path = STATIC_DIR / name
    return path.read_bytes() if path.is_file() else None


@router.get("/static/{name}")
@permission(Permission.PUBLIC)
def static_asset(name: str) -> Response:
    # Assets are the same for everyone: no session lookup.
    require(Principal.anonymous(), Permission.PUBLIC)
    body = _static(name)
    if body is None:
        raise NotFound("Not found")
    return Response(body, media_type=STATIC_TYPES[Path(name).suffix],
                    headers={"Cache-Control": "public, max-age=300", "X-Content-Type-Options": "nosniff"})
