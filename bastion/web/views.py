"""What the account pages share (their helpers), the home page and static assets.

The pages themselves, one module per part: `signin_views` (sign-in, sign-up, reset), `settings_views`
(profile, e-mails, password, sessions), `twofactor_views` (sudo mode, second factors). Each view: one
authz check, the CSRF check on POST, one service call per transaction, render.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, Depends, Request, Response
from sqlalchemy import select
from sqlalchemy.orm import Session
from starlette.datastructures import FormData

from bastion.accounts import sessions, twofactor
from bastion.accounts.models import RecoveryCode, User, WebSession
from bastion.accounts.sessions import Timeouts
from bastion.api.auth import SESSION_COOKIE, current_principal
from bastion.authz import Permission, Principal, permission, require
from bastion.db import transaction
from bastion.errors import AuthenticationRequired, NotFound
from bastion.mail import Mailer
from bastion.secretbox import SecretBox
from bastion.web.pages import (
    HtmlRoute,
    check_csrf,
    hub_of,
    redirect,
    render,
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
