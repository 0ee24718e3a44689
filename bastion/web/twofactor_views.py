"""Sudo mode (re-authentication) and second factors: TOTP, security keys, recovery codes.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request, Response
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from bastion.accounts import sessions, twofactor
from bastion.accounts.models import User, WebSession
from bastion.accounts.ratelimit import TooManyAttempts
from bastion.api.auth import current_principal
from bastion.authz import Permission, Principal, permission, require
from bastion.db import transaction
from bastion.errors import BadRequest
from bastion.secretbox import SealedValueError
from bastion.web.pages import (
    FACTOR_ADDED,
    HtmlRoute,
    hub_of,
    redirect,
    relying_party,
    render,
    safe_next,
    set_session_cookie,
)
from bastion.web.views import (
    _mailer,
    _me,
    _settings_page,
    _settings_post,
    _text,
    _totp_box,
)

router = APIRouter(route_class=HtmlRoute)


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
