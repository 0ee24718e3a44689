"""Instance single sign-on in the browser: `GET /login/sso` (start), the IdP's return (`/login/oidc/consume`,
`/login/saml/consume`), the SP metadata (`/login/saml/metadata`), linking an IdP identity to an existing
account after the person proved it (`/login/sso/link`), and the instance admin's SSO page (`/admin/sso`).
Token and assertion checks are bastion.sso.oidc / bastion.sso.saml (the org SSO's); decisions are
bastion.sso.instance's.
"""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from bastion.accounts import sessions
from bastion.api.auth import DEVICE_COOKIE, SESSION_COOKIE, current_principal, hub_of
from bastion.api.urls import base_url
from bastion.authz import Permission, Principal, capability, permission, require
from bastion.db import transaction
from bastion.errors import BadRequest, Forbidden
from bastion.sso import instance, oidc, saml
from bastion.sso import service as sso
from bastion.web.pages import HtmlRoute, check_csrf, redirect, render, safe_next
from bastion.web.views import _ip, _mailer, _me, _signed_in

router = APIRouter(route_class=HtmlRoute)
LINK_TTL = 600


def _box(request: Request):  # type: ignore[no-untyped-def]
    return sso.secret_box(hub_of(request).settings.secret_key)


def _redirect_uri(request: Request) -> str:
    return f"{base_url(request)}/login/oidc/consume"


def _saml_urls(request: Request) -> saml.SpUrls:
    base = base_url(request)
    return saml.SpUrls(entity_id=f"{base}/login/saml/metadata", acs=f"{base}/login/saml/consume")


@router.get("/login/sso")
@permission(Permission.PUBLIC)
def sso_start(request: Request, principal: Principal = Depends(current_principal)) -> Response:
    require(principal, Permission.PUBLIC)
    next_path = safe_next(request.query_params.get("next"))
    with transaction(hub_of(request).sessions) as session:
        url = instance.start_login(session, _box(request), next_path=next_path, redirect_uri=_redirect_uri(request),
                                   saml_urls=_saml_urls(request))
    return redirect(url)


def _refuse(request: Request, refusal: sso.LoginRefused, user_name: str | None = None) -> Response:
    with transaction(hub_of(request).sessions) as session:
        instance.record_refusal(session, user_name, refusal.reason, refusal.message)
    raise Forbidden(f"Single sign-on failed: {refusal.message}")


def _finish(request: Request, claims: dict[str, Any], protocol: str, next_path: str) -> Response:
    """The verified claims → a signed-in session, or the link flow, or a refusal (audited)."""
    hub = hub_of(request)
    try:
        with transaction(hub.sessions) as session:
            outcome = instance.complete_login(session, claims, protocol)
            if outcome.user is not None:
                ws, _ = sessions.start(session, outcome.user, pending=False, ip=_ip(request),
                                       user_agent=request.headers.get("user-agent"),
                                       replaces=request.cookies.get(SESSION_COOKIE))
                secret, device = sessions.complete_login(session, _mailer(request), ws, outcome.user, method="sso",
                                                         device=request.cookies.get(DEVICE_COOKIE))
                return _signed_in(request, secret, device, safe_next(next_path))
    except sso.LoginRefused as exc:
        return _refuse(request, exc)
    # An account owns this e-mail: the person proves it (password + second factor), then links.
    token = capability.sign(hub.settings.secret_key, "sso-link",
                            {"sub": outcome.subject, "email": outcome.email, "user": outcome.link_to.lower(),
                             "iat": time.time(), "next": safe_next(next_path)}, LINK_TTL)
    link = f"/login/sso/link?t={quote(token, safe='')}"
    return redirect(f"/login?m=sso-link&next={quote(link, safe='')}")


@router.get("/login/oidc/consume")
@permission(Permission.PUBLIC)
async def oidc_consume(request: Request, principal: Principal = Depends(current_principal)) -> Response:
    require(principal, Permission.PUBLIC)  # the state, the code exchange and the ID token are the authority
    params = request.query_params
    return await run_in_threadpool(_oidc_consume, request, params.get("state") or "", params.get("code") or "",
                                   params.get("error") or "")


def _oidc_consume(request: Request, state: str, code: str, error: str) -> Response:
    hub = hub_of(request)
    try:
        with transaction(hub.sessions) as session:
            pending = instance.claim_state(session, state)  # used once, even if refused below
            config = instance.enabled_config(session)
            if config is None or config.protocol != "oidc":
                raise sso.LoginRefused("not_enabled", "OpenID Connect sign-in is not enabled on this instance")
            client = instance.client(_box(request), config, _redirect_uri(request))
    except sso.LoginRefused as exc:
        return _refuse(request, exc)
    if error or not code:
        return _refuse(request, sso.LoginRefused("idp_error" if error else "no_code",
                                                 f"The identity provider refused the sign-in: {error}"[:300]
                                                 if error else "The identity provider returned no sign-in code"))
    try:
        claims = client.validate(client.exchange(code, pending.code_verifier), pending.nonce)
    except oidc.OidcError as exc:
        return _refuse(request, sso.LoginRefused(exc.reason, exc.message))
    return _finish(request, claims, "oidc", pending.next_path)


@router.get("/login/saml/metadata")
@permission(Permission.PUBLIC)
def saml_metadata(request: Request, principal: Principal = Depends(current_principal)) -> Response:
    require(principal, Permission.PUBLIC)
    return Response(saml.sp_metadata(_saml_urls(request)), media_type="application/samlmetadata+xml")


@router.post("/login/saml/consume")
@permission(Permission.PUBLIC)
async def saml_consume(request: Request, principal: Principal = Depends(current_principal)) -> Response:
    """The IdP posts here (SP-initiated: RelayState names the sign-in; IdP-initiated: no RelayState)."""
    form = await request.form()
    require(principal, Permission.PUBLIC)  # the response's signatures and the sign-in's state are the authority
    response, relay = form.get("SAMLResponse"), form.get("RelayState")
    return await run_in_threadpool(_saml_consume, request, response if isinstance(response, str) else "",
                                   relay if isinstance(relay, str) else "")


def _saml_consume(request: Request, saml_response: str, relay: str) -> Response:
    hub = hub_of(request)
    pending: instance.Pending | None = None
    try:
        with transaction(hub.sessions) as session:
            config = instance.enabled_config(session)
            if config is None or config.protocol != "saml":
                raise BadRequest("SAML sign-in is not enabled on this instance")
            idp = dict(config.discovery)
            if instance.state_known(session, relay):
                pending = instance.claim_state(session, relay)
        assertion = saml.parse_response(_saml_urls(request), idp, saml_response, pending.nonce if pending else None)
        with transaction(hub.sessions) as session:
            instance.remember_assertion(session, assertion.assertion_id, saml.keep_until(assertion))
    except sso.LoginRefused as exc:
        return _refuse(request, exc)
    except saml.SamlError as exc:
        return _refuse(request, sso.LoginRefused(exc.reason, exc.message))
    if pending is None:
        # IdP-initiated: nothing ties this POST to the browser it came through (anyone's valid response can be
        # posted from anywhere: login CSRF into the poster's account). The person confirms who they become.
        token = capability.sign(hub.settings.secret_key, "instance-saml-finish",
                                {"claims": sso.saml_claims(assertion), "aid": assertion.assertion_id},
                                saml.FINISH_TTL)
        return redirect(f"/login/saml/finish?t={quote(token, safe='')}")
    return _finish(request, sso.saml_claims(assertion), "saml", pending.next_path)


def _signed_claims(request: Request, purpose: str, token: str, refusal: str) -> dict[str, Any]:
    """The claims of one of this module's signed links (`refusal`: the 403's text for a bad or expired one)."""
    try:
        return capability.verify(hub_of(request).settings.secret_key, purpose, token)
    except Forbidden:
        raise Forbidden(refusal) from None


def _finish_claims(request: Request, token: str) -> dict[str, Any]:
    return _signed_claims(request, "instance-saml-finish", token,
                          "This single sign-on link is invalid or has expired: sign in again")


@router.get("/login/saml/finish")
@permission(Permission.PUBLIC)
def saml_finish_page(request: Request, principal: Principal = Depends(current_principal)) -> Response:
    """An IdP-initiated sign-in, shown before it happens: the identity it signs this browser in as."""
    require(principal, Permission.PUBLIC)
    token = request.query_params.get("t") or ""
    claims = _finish_claims(request, token)["claims"]
    return render(request, "login_saml_finish.html", email=str(claims.get("email") or ""),
                  subject=str(claims.get("sub") or ""), token=token)


@router.post("/login/saml/finish")
@permission(Permission.PUBLIC)
async def saml_finish(request: Request, principal: Principal = Depends(current_principal)) -> Response:
    form = await request.form()
    require(principal, Permission.PUBLIC)  # the signed finish link (single use) and the form's CSRF token
    return await run_in_threadpool(_saml_finish, request, form)


def _saml_finish(request: Request, form: Any) -> Response:
    check_csrf(request, form)
    token = form.get("t") if isinstance(form.get("t"), str) else ""
    found = _finish_claims(request, token)
    try:
        with transaction(hub_of(request).sessions) as session:
            instance.remember_assertion(session, f"finish:{found['aid']}", sso.now() + saml.finish_keep())
    except sso.LoginRefused as exc:
        return _refuse(request, exc)
    return _finish(request, dict(found["claims"]), "saml", "/")


# ---- linking an existing account ---------------------------------------------------------------------

def _link_claims(request: Request, token: str) -> dict[str, Any]:
    return _signed_claims(request, "sso-link", token,
                          "This account-linking link is invalid or has expired: sign in with SSO again")


@router.get("/login/sso/link")
@permission(Permission.ACCOUNT_MANAGE)
def link_page(request: Request, principal: Principal = Depends(current_principal)) -> Response:
    require(principal, Permission.ACCOUNT_MANAGE)
    token = request.query_params.get("t") or ""
    claims = _link_claims(request, token)
    return render(request, "login_sso_link.html", email=claims["email"], token=token,
                  ok=(principal.username or "").lower() == claims["user"])


@router.post("/login/sso/link")
@permission(Permission.ACCOUNT_MANAGE)
async def link_submit(request: Request, principal: Principal = Depends(current_principal)) -> Response:
    form = await request.form()
    return await run_in_threadpool(_link, request, principal, form)


def _link(request: Request, principal: Principal, form: Any) -> Response:
    require(principal, Permission.ACCOUNT_MANAGE)
    check_csrf(request, form)
    token = form.get("t") if isinstance(form.get("t"), str) else ""
    claims = _link_claims(request, token)
    try:
        with transaction(hub_of(request).sessions) as session:
            user, ws = _me(session, principal)
            # Proven in this flow: the account's own sign-in (password and second factor) after the IdP's.
            if user.name_lower != claims["user"] or ws.authenticated_at.timestamp() < float(claims["iat"]):
                raise sso.LoginRefused("not_proven", "Sign in with the password (and second factor) of the account "
                                                     "that owns this address, from the SSO sign-in, to link it")
            instance.link(session, user, str(claims["sub"]), str(claims["email"]))
    except sso.LoginRefused as exc:
        return _refuse(request, exc, principal.username)
    return redirect(safe_next(str(claims.get("next") or "/")))


# ---- the instance admin's SSO page -------------------------------------------------------------------

def _page(request: Request, status: int = 200, **extra: Any) -> Response:
    with transaction(hub_of(request).sessions, readonly=True) as session:
        view = instance.settings_view(session)
    sp = _saml_urls(request)
    return render(request, "admin_sso.html", status, sso=view, redirect_uri=_redirect_uri(request),
                  sp_entity_id=sp.entity_id, acs_url=sp.acs, **extra)


@router.get("/admin/sso")
@permission(Permission.INSTANCE_SSO_WRITE)
def admin_sso(request: Request, principal: Principal = Depends(current_principal)) -> Response:
    require(principal, Permission.INSTANCE_SSO_WRITE)
    return _page(request, done=request.query_params.get("done") or "")


def _text(form: Any, key: str, limit: int = 2000) -> str:
    value = form.get(key)
    return value.strip()[:limit] if isinstance(value, str) else ""


@router.post("/admin/sso/{verb}")
@permission(Permission.INSTANCE_SSO_WRITE)
async def admin_sso_post(verb: str, request: Request, principal: Principal = Depends(current_principal)) -> Response:
    form = await request.form()

    def run() -> Response:
        require(principal, Permission.INSTANCE_SSO_WRITE)
        check_csrf(request, form)
        hub = hub_of(request)
        try:
            if verb == "update":
                protocol = _text(form, "protocol", 8) or "oidc"
                claim = _text(form, "username_claim", 300)
                if protocol == "saml":
                    idp = saml.check_idp_metadata(_text(form, "idp_metadata", saml.MAX_METADATA))
                    with transaction(hub.sessions) as session:
                        instance.configure_saml(session, idp, claim)
                elif protocol == "oidc":
                    method = _text(form, "token_auth_method", 32) or "client_secret_post"
                    discovery = oidc.discover(_text(form, "issuer", 1000), method)
                    with transaction(hub.sessions) as session:
                        instance.configure_oidc(session, _box(request), client_id=_text(form, "client_id", 500),
                                                client_secret=_text(form, "client_secret", 1000) or None,
                                                token_auth_method=method, username_claim=claim, discovery=discovery)
                else:
                    raise BadRequest("Unknown protocol: expected oidc or saml")
            elif verb in ("enable", "disable"):
                with transaction(hub.sessions) as session:
                    instance.set_enabled(session, verb == "enable")
            elif verb == "sso-only":
                with transaction(hub.sessions) as session:
                    instance.set_sso_only(session, _text(form, "sso_only", 8) == "on",
                                          _text(form, "break_glass_admin", 96))
            else:
                raise BadRequest("Unknown action")
        except BadRequest as exc:
            return _page(request, 400, error=exc.message)
        return redirect(f"/admin/sso?done={quote(verb)}")

    return await run_in_threadpool(run)
