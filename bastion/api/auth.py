"""Authentication: the request's credentials → a Principal (or a 401 for bad credentials).

Bearer tokens for the API; HTTP Basic with a token as password for git clients; the web session
cookie for browsers (only when no Authorization header is sent). Account passwords are never
accepted here.

This module reads credentials off the request; the features that own them (tokens, accounts'
web sessions) turn them into a Principal through the `Authenticators` the app installs at start-up
(`install`), so the API layer imports no feature.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from fastapi import Request
from sqlalchemy.orm import Session

from bastion.api.urls import base_url
from bastion.audit.context import set_actor
from bastion.authz import Principal
from bastion.errors import Forbidden, UnknownCredentials
from bastion.hub import Hub
from bastion.timing import timed

SESSION_COOKIE = "bastion_session"  # the browser's session (accounts.sessions)
DEVICE_COOKIE = "bastion_device"  # a browser seen before (new-sign-in notices)


@dataclass(frozen=True)
class Authenticators:
    """How presented credentials become principals; each raises UnknownCredentials for a bad one."""
    # (request, secret) -> the token's principal; may leave the token row on request.state.access_token
    token: Callable[[Request, str], Principal]
    # (hub, cookie) -> the signed-in browser, None for a stale or unknown cookie
    cookie: Callable[[Hub, str], Principal | None]
    # (session, token id) / (hub, session, web session id) -> that credential's principal as it is now
    token_by_id: Callable[[Session, int], Principal | None]
    session_by_id: Callable[[Hub, Session, int], Principal | None]
    # (client ip, reason, method, path): a request with unknown or malformed credentials (audited)
    failed: Callable[[str | None, str, str, str], None]


_installed: Authenticators | None = None


def install(authenticators: Authenticators) -> None:
    global _installed
    _installed = authenticators


def _authenticators() -> Authenticators:
    if _installed is None:
        raise RuntimeError("no authenticators installed (bastion.app.create_app installs them)")
    return _installed


def hub_of(request: Request) -> Hub:
    return request.app.state.hub  # type: ignore[no-any-return]


def presented_token(request: Request) -> str | None:
    header = request.headers.get("authorization")
    if header is None:
        return None
    scheme, _, value = header.strip().partition(" ")
    value = value.strip()
    if scheme.lower() == "bearer" and value:
        return value
    if scheme.lower() == "basic" and value:
        try:
            decoded = base64.b64decode(value, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            raise UnknownCredentials("undecodable basic credentials") from None
        _user, sep, password = decoded.partition(":")
        if sep and password:
            return password
    raise UnknownCredentials("unsupported Authorization header")


UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def refuse_cross_site(request: Request) -> None:
    """CSRF defence for everything a session cookie authorizes, API routes included.

    A browser names the page a request comes from (Origin; Sec-Fetch-Site in current browsers). A
    state-changing request carrying our cookie from any other site is refused, whatever its content
    type: a cross-site `text/plain` form must not be able to act as the signed-in user. Web forms
    also carry a synchronizer token (bastion.web.pages.check_csrf).
    """
    if request.method not in UNSAFE_METHODS:
        return
    origin = request.headers.get("origin")
    expected = urlsplit(base_url(request))
    if origin is not None and origin != f"{expected.scheme}://{expected.netloc}":
        raise Forbidden("Cross-site request refused: it was sent from another site (Origin mismatch)")
    if request.headers.get("sec-fetch-site", "same-origin") not in ("same-origin", "none"):
        raise Forbidden("Cross-site request refused: it was sent from another site (Sec-Fetch-Site)")


def session_principal(request: Request) -> Principal:
    """The signed-in browser behind the session cookie, else anonymous (a stale cookie is no error)."""
    cookie = request.cookies.get(SESSION_COOKIE)
    if not cookie:
        return Principal.anonymous()
    refuse_cross_site(request)
    found = _authenticators().cookie(hub_of(request), cookie)
    if found is None:
        return Principal.anonymous()
    set_actor(found.user_id, found.username, None)  # audit events name the signed-in user
    return found


def current_principal(request: Request) -> Principal:
    """FastAPI dependency: who is calling. Anonymous when no credentials are presented."""
    cached = getattr(request.state, "principal", None)
    if cached is not None:
        return cached  # type: ignore[no-any-return]
    with timed("auth"):
        principal = _authenticate(request)
    request.state.principal = principal
    return principal


def _authenticate(request: Request) -> Principal:
    try:
        return _principal_of(request)
    except UnknownCredentials as exc:
        # Revoked and expired tokens are audited as uses of their token (tokens.authenticate).
        _authenticators().failed(request.state.client_ip, exc.detail, request.method, request.url.path)
        raise


def _principal_of(request: Request) -> Principal:
    secret = presented_token(request)
    if secret is None:
        principal = session_principal(request)
    else:
        principal = _authenticators().token(request, secret)
        set_actor(principal.user_id, principal.username, principal.token_id)
    return principal


def credential_claims(principal: Principal) -> dict[str, Any]:
    """What a capability minted for `principal` carries so that each use can re-establish who that is
    (bound_principal): the kind of credential, its id and its user."""
    claims: dict[str, Any] = {"via": principal.method, "user_id": principal.user_id}
    if principal.method == "token":
        claims["token_id"] = principal.token_id
    elif principal.method == "session":
        claims["session_id"] = principal.session_id
    return claims


def bound_principal(hub: Hub, session: Session, claims: Mapping[str, Any]) -> Principal | None:
    """The principal a capability was minted for, as it is now: its access token or browser session
    read again by primary key, None once that credential was revoked, expired or signed out, or when
    it names another user (or nothing: capabilities minted before they were bound). An anonymous
    capability stays anonymous."""
    via = claims.get("via")
    if via == "anonymous":
        return Principal.anonymous() if claims.get("user_id") is None else None
    token_id, session_id = claims.get("token_id"), claims.get("session_id")
    if via == "token" and isinstance(token_id, int):
        found = _authenticators().token_by_id(session, token_id)
    elif via == "session" and isinstance(session_id, int):
        found = _authenticators().session_by_id(hub, session, session_id)
    else:
        return None
    return found if found is not None and found.user_id == claims.get("user_id") else None
