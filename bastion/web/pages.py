"""What every HTML page shares: rendering with the layout, CSRF tokens, cookies, and errors as pages.

Views call `render()`; forms carry `csrf_token`, checked by `check_csrf()` on every POST.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from functools import cache
from typing import Any
from urllib.parse import quote, urlsplit

from fastapi import Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.routing import APIRoute
from jinja2 import Environment, PackageLoader, select_autoescape
from starlette.datastructures import FormData

from bastion.accounts.twofactor import RelyingParty
from bastion.api.auth import DEVICE_COOKIE, SESSION_COOKIE
from bastion.api.urls import base_url
from bastion.authz import Principal
from bastion.errors import (
    AuthenticationRequired,
    BastionError,
    Forbidden,
    GatedRepo,
    NotFound,
    ReauthenticationRequired,
    SSORequired,
)
from bastion.hub import Hub

CSRF_COOKIE = "bastion_csrf"
# Pages may load only our own CSS, scripts and images (plus the QR code as a data: URI); forms post
# only to us, and no other site may frame us.
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'self'; script-src 'self'; img-src 'self' data:; "
                               "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    # Reset and verification tokens travel in URLs: never hand them to another site.
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}
FACTOR_ADDED = ("Two-factor authentication is on. Your other sessions were signed out; access tokens still work "
                "(revoke them in Access tokens if they may be in the wrong hands).")
NOTICES = {
    "email-added": "We sent a verification link to the new address.",
    "email-sent": "We sent a new verification link.",
    "email-removed": "The address was removed.",
    "email-primary": "Your primary address was changed.",
    "email-verified": "Your e-mail address is verified. Thank you!",
    "profile-saved": "Your profile was saved.",
    "password-changed": "Your password was changed. Your other sessions were signed out; access tokens still work.",
    "password-reset": "Your password was reset. Sign in with the new one.",
    "session-revoked": "The session was signed out.",
    "sessions-revoked": "All your other sessions were signed out.",
    "factor-added": FACTOR_ADDED,
    "totp-removed": "The authenticator app was removed.",
    "key-removed": "The security key was removed.",
    "sudo": "Confirmed. You can change your security settings (e-mails, signing keys, two-factor, tokens) for the "
            "next few minutes.",
    "signed-out": "You are signed out.",
    "account-deleted": "Your account was deleted: you are signed out and your access tokens no longer work.",
    "revoked": "The token was revoked.",
    "renamed": "The token was renamed.",
    "welcome": "Welcome to Bastion! We sent you an e-mail to verify your address.",
}


@cache
def _env() -> Environment:
    env = Environment(loader=PackageLoader("bastion.web", "templates"), autoescape=select_autoescape(default=True),
                      trim_blocks=True, lstrip_blocks=True)
    env.filters["q"] = lambda s: quote(str(s), safe="")
    env.filters["qpath"] = lambda s: quote(str(s), safe="/")
    env.filters["size"] = human_size
    env.filters["when"] = human_time
    return env


def human_time(value: object) -> str:
    """A timestamp as people read it ("2026-12-07 21:20 UTC"), from a datetime or an API's ISO 8601 string."""
    if value is None or value == "":
        return ""
    when = value if isinstance(value, datetime) else None
    if when is None:
        try:
            when = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
        except ValueError:
            return str(value)
    if when.tzinfo is not None:
        when = when.astimezone(UTC)
    return when.strftime("%Y-%m-%d %H:%M UTC")


def human_size(n: int | None) -> str:
    if n is None:
        return ""
    size = float(n)
    for unit in ("Bytes", "kB", "MB", "GB", "TB"):
        if size < 1000 or unit == "TB":
            return f"{int(size)} {unit}" if unit == "Bytes" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{n} Bytes"


def hub_of(request: Request) -> Hub:
    return request.app.state.hub  # type: ignore[no-any-return]


def is_https(request: Request) -> bool:
    return urlsplit(base_url(request)).scheme == "https"


def relying_party(request: Request) -> RelyingParty:
    parts = urlsplit(base_url(request))
    return RelyingParty(id=parts.hostname or "localhost", name="Bastion", origin=f"{parts.scheme}://{parts.netloc}")


# ---- CSRF ----------------------------------------------------------------------------------
# Synchronizer tokens: an HMAC (server key) of the signed-in session's id, or, before sign-in, of
# a random pre-session cookie. Another site can neither read nor compute one. Bound to the session
# id rather than its cookie secret, so a page rendered while the secret rotates stays usable.

def _csrf_binding(request: Request) -> str | None:
    principal = principal_of(request)
    if principal.method == "session" and principal.session_id is not None:
        return f"session:{principal.session_id}"
    cookie = request.cookies.get(CSRF_COOKIE)
    return f"browser:{cookie}" if cookie else None


def _csrf_token(request: Request, binding: str) -> str:
    key = hub_of(request).settings.secret_key
    return hmac.new(key, b"csrf:" + binding.encode(), hashlib.sha256).hexdigest()


def check_csrf(request: Request, form: FormData) -> None:
    """Reject a state-changing form post that did not come from one of our pages."""
    origin = request.headers.get("origin")
    if origin and origin != relying_party(request).origin:
        raise Forbidden("This form was sent from another site (Origin mismatch) and was rejected.")
    binding = _csrf_binding(request)
    sent = form.get("csrf_token")
    if not binding or not isinstance(sent, str) or not hmac.compare_digest(sent, _csrf_token(request, binding)):
        raise Forbidden("The form's security token is missing or out of date (CSRF check). "
                        "Reload the page and try again.")


# ---- rendering -----------------------------------------------------------------------------

def principal_of(request: Request) -> Principal:
    found = getattr(request.state, "principal", None)
    return found if isinstance(found, Principal) else Principal.anonymous()


def render(request: Request, template: str, status: int = 200, **context: Any) -> HTMLResponse:
    binding = _csrf_binding(request)
    new_cookie = None
    if binding is None:
        new_cookie = secrets.token_urlsafe(32)
        binding = f"browser:{new_cookie}"
    notice = NOTICES.get(request.query_params.get("m", ""))
    html = _env().get_template(template).render(
        request=request, principal=principal_of(request), csrf_token=_csrf_token(request, binding),
        notice=notice, **context)
    response = HTMLResponse(html, status_code=status, headers=SECURITY_HEADERS)
    if new_cookie is not None:
        response.set_cookie(CSRF_COOKIE, new_cookie, httponly=True, samesite="lax", secure=is_https(request),
                            path="/")
    return response


def redirect(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=303, headers={"Cache-Control": "no-store"})


def set_session_cookie(request: Request, response: Response, secret: str) -> None:
    # No Max-Age: the server enforces idle and absolute timeouts; the cookie ends with the browser.
    response.set_cookie(SESSION_COOKIE, secret, httponly=True, samesite="lax", secure=is_https(request), path="/")


def clear_session_cookie(request: Request, response: Response) -> None:
    response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="lax", secure=is_https(request))


def set_device_cookie(request: Request, response: Response, device: str) -> None:
    response.set_cookie(DEVICE_COOKIE, device, max_age=400 * 86400, httponly=True, samesite="lax",
                        secure=is_https(request), path="/")


def safe_next(target: str | None) -> str:
    """Only same-site paths: an open redirect after sign-in would be a phishing aid."""
    if target and target.startswith("/") and not target.startswith("//") and "\\" not in target:
        return target
    return "/"


def sudo_return_path(request: Request) -> str:
    """Where the sudo page sends the browser back to: the page itself for a GET, for a form post the
    settings or admin page it belongs to (/settings/keys/ssh/3/delete → /settings/keys, /admin/sso/update →
    /admin/sso)."""
    path = request.url.path
    if request.method == "GET":
        return path
    parts = path.split("/")
    return "/".join(parts[:3]) if path.startswith(("/settings/", "/admin/")) else "/settings"


def error_page(request: Request, exc: BastionError) -> Response:
    if isinstance(exc, ReauthenticationRequired):
        # Sudo mode: confirm the password, then come back to the page (a form post returns to the settings
        # page it was sent from, where the change can be made again).
        return redirect(f"/settings/sudo?next={quote(sudo_return_path(request), safe='/')}")
    if isinstance(exc, SSORequired) and request.method == "GET":
        # A member without a live SSO session for the org: through its identity provider, then back here.
        return redirect(f"/organizations/{quote(exc.org, safe='')}/sso/login?next="
                        f"{quote(request.url.path, safe='/')}")
    if request.method == "GET" and (isinstance(exc, AuthenticationRequired)
                                    or (isinstance(exc, GatedRepo) and exc.status == 401)):
        return redirect(f"/login?next={quote(request.url.path, safe='/')}")
    if isinstance(exc, NotFound):
        # Same page for a missing and a private repository: nothing tells them apart.
        title = "Repository not found" if exc.code == "RepoNotFound" else "Not found"
    else:
        title = {401: "Sign-in required", 403: "Not allowed", 429: "Too many attempts"}.get(exc.status, "Error")
    response = render(request, "error.html", exc.status, title=title, message=exc.message)
    for key, value in exc.headers.items():
        if key.lower() == "retry-after":
            response.headers[key] = value
    return response


class HtmlRoute(APIRoute):
    """Routes of the web UI: domain errors become HTML pages (or a redirect to sign in)."""

    def get_route_handler(self) -> Callable[[Request], Awaitable[Response]]:
        handler = super().get_route_handler()

        async def route(request: Request) -> Response:
            try:
                return await handler(request)
            except BastionError as exc:
                return error_page(request, exc)

        return route
