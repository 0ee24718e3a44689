"""Organization single sign-on in the browser: the SP-initiated sign-in (`/organizations/{org}/sso/login`,
also the SSO join link), the IdP's return (`/organizations/{org}/oidc/consume`) and the org's SSO settings
page ("Update and test", then "Enable"). Pages only: every decision is bastion.sso.service's.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from bastion.api.auth import current_principal, hub_of
from bastion.api.urls import base_url
from bastion.authz import Permission, Principal, capability, permission, require
from bastion.db import transaction
from bastion.errors import BadRequest, Forbidden
from bastion.orgs import service as orgs
from bastion.orgs.models import Organization
from bastion.sso import oidc, saml
from bastion.sso import service as sso
from bastion.web.org_views import SETTINGS_TABS
from bastion.web.pages import HtmlRoute, check_csrf, redirect, render, safe_next

router = APIRouter(route_class=HtmlRoute)


def _box(request: Request):  # type: ignore[no-untyped-def]
    return sso.secret_box(hub_of(request).settings.secret_key)


def _redirect_uri(request: Request, org: Organization) -> str:
    return f"{base_url(request)}/organizations/{quote(org.name, safe='')}/oidc/consume"


def _saml_urls(request: Request, org_name: str) -> saml.SpUrls:
    base = f"{base_url(request)}/organizations/{quote(org_name, safe='')}"
    return saml.SpUrls(entity_id=f"{base}/saml/metadata", acs=f"{base}/saml/consume")


@router.get("/organizations/{name}/sso/login")
@permission(Permission.ORG_MEMBERSHIP_SELF, Permission.ORG_WRITE)
def sso_login(name: str, request: Request, principal: Principal = Depends(current_principal)) -> Response:
    """Start a sign-in with the org's IdP (members, and people joining through the SSO join link); `test=1`:
    an admin tests the current settings (Update and test)."""
    test = request.query_params.get("test") == "1"
    next_path = safe_next(request.query_params.get("next") or f"/organizations/{name}")
    if principal.method != "session":
        # SSO is a layer on top of the normal sign-in: sign in to Bastion first, then come back here.
        require(principal, Permission.ORG_MEMBERSHIP_SELF)
        return redirect(f"/login?next={quote(str(request.url.path) + '?' + str(request.url.query), safe='/')}")
    with transaction(hub_of(request).sessions) as session:
        org, facts = orgs.org_with_facts(session, name)
        if test:
            require(principal, Permission.ORG_WRITE, facts)
        else:
            require(principal, Permission.ORG_MEMBERSHIP_SELF)
        assert principal.user_id is not None
        url = sso.start_login(session, _box(request), org, principal.user_id, test=test, next_path=next_path,
                              redirect_uri=_redirect_uri(request, org), saml_urls=_saml_urls(request, org.name))
    return redirect(url)


@router.get("/organizations/{name}/oidc/consume")
@permission(Permission.ORG_MEMBERSHIP_SELF)
async def oidc_consume(name: str, request: Request, principal: Principal = Depends(current_principal)) -> Response:
    params = request.query_params
    return await run_in_threadpool(_consume, request, principal, name, params.get("state") or "",
                                   params.get("code") or "", params.get("error") or "",
                                   params.get("error_description") or "")


def _consume(request: Request, principal: Principal, name: str, state: str, code: str, error: str,
             error_description: str) -> Response:
    hub = hub_of(request)
    refusal: sso.LoginRefused | None = None
    pending: sso.PendingLogin | None = None
    with transaction(hub.sessions) as session:
        org = orgs.get_org(session, name)
        require(principal, Permission.ORG_MEMBERSHIP_SELF)
        try:
            pending = sso.claim_state(session, org, principal.user_id, state)  # used once, even if refused below
        except sso.LoginRefused as exc:
            refusal = exc
        config = sso.get_config(session, org)
        client = sso.client(_box(request), config, _redirect_uri(request, org)) if config and pending else None
        org_name = org.name
    if refusal is None and error:
        refusal = sso.LoginRefused("idp_error", f"The identity provider refused the sign-in: {error} "
                                                f"{error_description}".strip()[:300])
    claims: dict[str, Any] = {}
    if refusal is None and (client is None or pending is None or not code):
        refusal = sso.LoginRefused("no_code", "The identity provider returned no sign-in code")
    if refusal is None and client is not None and pending is not None:
        try:
            claims = client.validate(client.exchange(code, pending.code_verifier), pending.nonce)
        except oidc.OidcError as exc:
            refusal = sso.LoginRefused(exc.reason, exc.message)
    outcome = ""
    if refusal is None and pending is not None:
        try:
            with transaction(hub.sessions) as session:
                outcome = sso.complete_login(session, orgs.get_org(session, name), pending, claims)
        except sso.LoginRefused as exc:
            refusal = exc
    if refusal is not None:
        with transaction(hub.sessions) as session:
            sso.record_refusal(session, orgs.get_org(session, name), principal.username, refusal.reason,
                               refusal.message)
        raise Forbidden(f"Single sign-on failed: {refusal.message}")
    assert pending is not None
    if outcome == "test":
        return redirect(f"/organizations/{quote(org_name, safe='')}/settings/sso?tested=1")
    return redirect(safe_next(pending.next_path))


# ---- SAML 2.0 ------------------------------------------------------------------------------------

@router.get("/organizations/{name}/saml/metadata")
@permission(Permission.PUBLIC)
def saml_metadata(name: str, request: Request, principal: Principal = Depends(current_principal)) -> Response:
    """The org's SP metadata (entity id = this URL, the ACS URL), for its IdP's administrators."""
    require(principal, Permission.PUBLIC)
    with transaction(hub_of(request).sessions, readonly=True) as session:
        org = orgs.get_org(session, name)
        return Response(saml.sp_metadata(_saml_urls(request, org.name)), media_type="application/samlmetadata+xml")


@router.post("/organizations/{name}/saml/consume")
@permission(Permission.PUBLIC)
async def saml_consume(name: str, request: Request, principal: Principal = Depends(current_principal)) -> Response:
    """The IdP posts here (cross-site: the session cookie does not come along). SP-initiated: the RelayState
    names the sign-in, and its user; IdP-initiated: the verified assertion goes on, signed and single-use, to
    /saml/finish, where the signed-in user completes it."""
    form = await request.form()
    require(principal, Permission.PUBLIC)  # the response's signatures and the sign-in's state are the authority
    response = form.get("SAMLResponse")
    relay = form.get("RelayState")
    return await run_in_threadpool(_saml_consume, request, principal, name,
                                   response if isinstance(response, str) else "",
                                   relay if isinstance(relay, str) else "")


def _saml_consume(request: Request, principal: Principal, name: str, saml_response: str, relay: str) -> Response:
    hub = hub_of(request)
    refusal: sso.LoginRefused | None = None
    pending: sso.PendingLogin | None = None
    user_name = principal.username
    with transaction(hub.sessions) as session:
        org = orgs.get_org(session, name)
        config = sso.get_config(session, org)
        if config is None or config.protocol != "saml":
            raise BadRequest(f"The organization {org.name!r} has no SAML single sign-on")
        idp = dict(config.discovery)
        if sso.saml_state_known(session, org, relay):
            try:
                pending = sso.claim_state(session, org, None, relay, bound_to_state=True)
            except sso.LoginRefused as exc:
                refusal = exc
    assertion: saml.Assertion | None = None
    if refusal is None:
        try:
            assertion = saml.parse_response(_saml_urls(request, name), idp, saml_response,
                                            pending.nonce if pending else None)
        except saml.SamlError as exc:
            refusal = sso.LoginRefused(exc.reason, exc.message)
    outcome = ""
    if refusal is None and assertion is not None:
        try:
            with transaction(hub.sessions) as session:
                org = orgs.get_org(session, name)
                sso.remember_assertion(session, org, assertion.assertion_id, saml.keep_until(assertion))
        except sso.LoginRefused as exc:
            refusal = exc
    if refusal is None and assertion is not None and pending is not None:
        try:
            with transaction(hub.sessions) as session:
                org = orgs.get_org(session, name)
                user_name = _user_name(session, pending.user_id)
                outcome = sso.complete_login(session, org, pending, sso.saml_claims(assertion))
        except sso.LoginRefused as exc:
            refusal = exc
    if refusal is not None:
        with transaction(hub.sessions) as session:
            sso.record_refusal(session, orgs.get_org(session, name), user_name, refusal.reason, refusal.message)
        raise Forbidden(f"Single sign-on failed: {refusal.message}")
    assert assertion is not None
    if pending is None:  # IdP-initiated: the signed-in user finishes it (a top-level GET carries the cookie)
        token = capability.sign(hub.settings.secret_key, "saml-finish",
                                {"org": name.lower(), "claims": sso.saml_claims(assertion),
                                 "aid": assertion.assertion_id}, saml.FINISH_TTL)
        return redirect(f"/organizations/{quote(name, safe='')}/saml/finish?t={quote(token, safe='')}")
    if outcome == "test":
        return redirect(f"/organizations/{quote(name, safe='')}/settings/sso?tested=1")
    return redirect(safe_next(pending.next_path))


def _user_name(session: Session, user_id: int) -> str | None:
    from bastion.accounts.service import user_by_id

    user = user_by_id(session, user_id)
    return user.name if user is not None else None


@router.get("/organizations/{name}/saml/finish")
@permission(Permission.ORG_MEMBERSHIP_SELF)
def saml_finish(name: str, request: Request, principal: Principal = Depends(current_principal)) -> Response:
    require(principal, Permission.ORG_MEMBERSHIP_SELF)
    hub = hub_of(request)
    try:
        claims = capability.verify(hub.settings.secret_key, "saml-finish", request.query_params.get("t") or "")
    except Forbidden:
        claims = {}
    refusal: sso.LoginRefused | None = None
    if claims.get("org") != name.lower() or principal.user_id is None:
        refusal = sso.LoginRefused("bad_finish", "This SAML sign-in link is invalid or has expired")
    else:
        try:
            with transaction(hub.sessions) as session:
                org = orgs.get_org(session, name)
                sso.remember_assertion(session, org, f"finish:{claims['aid']}", sso.now() + saml.finish_keep())
                pending = sso.PendingLogin(org.id, principal.user_id, "", "", "login", f"/organizations/{org.name}")
                sso.complete_login(session, org, pending, dict(claims["claims"]))
        except sso.LoginRefused as exc:
            refusal = exc
    if refusal is not None:
        with transaction(hub.sessions) as session:
            sso.record_refusal(session, orgs.get_org(session, name), principal.username, refusal.reason,
                               refusal.message)
        raise Forbidden(f"Single sign-on failed: {refusal.message}")
    return redirect(f"/organizations/{quote(name, safe='')}")


# ---- settings ------------------------------------------------------------------------------------

def _page(request: Request, session: Session, org: Organization, status: int = 200, **extra: Any) -> Response:
    view = sso.settings_view(session, org)
    sp = _saml_urls(request, org.name)
    return render(request, "orgs/settings_sso.html", status, org=org, tab="sso", tabs=SETTINGS_TABS, sso=view,
                  redirect_uri=_redirect_uri(request, org), sp_entity_id=sp.entity_id, acs_url=sp.acs,
                  join_link=f"{base_url(request)}/organizations/{quote(org.name, safe='')}/sso/login",
                  members=orgs.list_members(session, org), **extra)


@router.get("/organizations/{name}/settings/sso")
@permission(Permission.ORG_WRITE)
def sso_settings(name: str, request: Request, principal: Principal = Depends(current_principal)) -> Response:
    with transaction(hub_of(request).sessions, readonly=True) as session:
        org, facts = orgs.org_with_facts(session, name)
        require(principal, Permission.ORG_WRITE, facts)
        return _page(request, session, org)


def _text(form: Any, key: str, limit: int = 2000) -> str:
    value = form.get(key)
    return value.strip()[:limit] if isinstance(value, str) else ""


def _idp_metadata(form: Any) -> str:
    """The IdP's metadata XML, or metadata made from its entity id, sign-on URL and certificate."""
    xml = _text(form, "idp_metadata", saml.MAX_METADATA)
    if xml:
        return xml
    entity, url, cert = _text(form, "idp_entity_id", 1000), _text(form, "sign_on_url", 2000), \
        _text(form, "certificate", 20000)
    if not (entity and url and cert):
        raise BadRequest("Give the IdP's metadata, or its entity id, sign-on URL and certificate")
    return saml.idp_metadata_from_parts(entity, url, cert)


@router.post("/organizations/{name}/settings/sso/{verb}")
@permission(Permission.ORG_WRITE)
async def sso_settings_post(name: str, verb: str, request: Request,
                            principal: Principal = Depends(current_principal)) -> Response:
    form = await request.form()

    def run() -> Response:
        hub = hub_of(request)
        discovery: dict[str, Any] | None = None
        error = ""
        protocol = _text(form, "protocol", 8) or "oidc"
        idp: dict[str, Any] | None = None
        if verb == "update" and protocol not in ("oidc", "saml"):
            error = "Unknown protocol: expected oidc or saml"
        elif verb == "update" and protocol == "saml":
            try:
                idp = saml.check_idp_metadata(_idp_metadata(form))
            except BadRequest as exc:
                error = exc.message
        elif verb == "update":
            try:
                discovery = oidc.discover(_text(form, "issuer", 1000), _text(form, "token_auth_method", 32)
                                          or "client_secret_post")
            except BadRequest as exc:
                error = exc.message
        with transaction(hub.sessions) as session:
            org, facts = orgs.org_with_facts(session, name)
            require(principal, Permission.ORG_WRITE, facts)
            check_csrf(request, form)
            if error:
                return _page(request, session, org, 400, error=error)
            try:
                with session.begin_nested():
                    if verb == "update":
                        days = _text(form, "session_days", 4) or str(sso.DEFAULT_SESSION_DAYS)
                        if not days.isdigit():
                            raise BadRequest("The SSO session length must be a number of days")
                        if idp is not None:
                            sso.configure_saml(session, org, sso.Settings(
                                issuer="", client_id="", client_secret=None,
                                role_claim=_text(form, "role_claim", 300),
                                role_map=sso.parse_role_map(_text(form, "role_map")),
                                group_claim=_text(form, "group_claim", 300),
                                group_map=sso.parse_group_map(_text(form, "group_map")),
                                email_domains=_text(form, "email_domains").replace(",", " ").split(),
                                session_days=int(days)), idp)
                            return redirect(f"/organizations/{quote(org.name, safe='')}/sso/login?test=1")
                        assert discovery is not None
                        secret = _text(form, "client_secret", 1000)
                        sso.configure(session, _box(request), org, sso.Settings(
                            issuer=_text(form, "issuer", 1000), client_id=_text(form, "client_id", 500),
                            client_secret=secret or None,
                            token_auth_method=_text(form, "token_auth_method", 32) or "client_secret_post",
                            role_claim=_text(form, "role_claim", 300),
                            role_map=sso.parse_role_map(_text(form, "role_map")),
                            group_claim=_text(form, "group_claim", 300),
                            group_map=sso.parse_group_map(_text(form, "group_map")),
                            email_domains=_text(form, "email_domains").replace(",", " ").split(),
                            session_days=int(days)), discovery)
                        # Update and test: straight to the IdP with the new settings.
                        return redirect(f"/organizations/{quote(org.name, safe='')}/sso/login?test=1")
                    if verb in ("enable", "disable"):
                        sso.set_enabled(session, org, verb == "enable")
                    elif verb in ("exempt", "unexempt"):
                        sso.set_exempt(session, org, orgs.user_by_name(session, _text(form, "user", 96)),
                                       verb == "exempt")
                    else:
                        raise BadRequest("Unknown action")
            except BadRequest as exc:
                return _page(request, session, org, 400, error=exc.message)
        return redirect(f"/organizations/{quote(org.name, safe='')}/settings/sso?done={verb}")

    return await run_in_threadpool(run)
