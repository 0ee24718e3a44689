"""Organization SSO settings over the API (org admins): read, save (OIDC discovery or SAML IdP metadata
checked at once), enable / disable, external collaborators. Each route parses, calls authz.require() once, and calls
sso.service. The test sign-in that "enable" needs happens in a browser (/organizations/{org}/sso/login?test=1).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from bastion.api.auth import current_principal, hub_of
from bastion.api.bodies import json_object
from bastion.authz import Permission, Principal, permission, require
from bastion.db import transaction
from bastion.errors import BadRequest
from bastion.orgs import service as orgs
from bastion.sso import instance, oidc, saml
from bastion.sso import service as sso

router = APIRouter()


def _str(data: dict[str, Any], key: str, default: str = "") -> str:
    value = data.get(key, default)
    if not isinstance(value, str):
        raise BadRequest(f"'{key}' must be a string")
    return value


def _settings(data: dict[str, Any]) -> sso.Settings:
    role_map = data.get("roleMap") or {}
    group_map = data.get("groupMap") or {}
    domains = data.get("emailDomains") or []
    days = data.get("sessionDays", sso.DEFAULT_SESSION_DAYS)
    secret = data.get("clientSecret")
    if not isinstance(role_map, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                                 for k, v in role_map.items()):
        raise BadRequest("'roleMap' must map claim values to roles")
    if not isinstance(group_map, dict) or not all(
            isinstance(k, str) and isinstance(v, list) and all(isinstance(t, str) for t in v)
            for k, v in group_map.items()):
        raise BadRequest("'groupMap' must map claim values to lists of \"GROUP:ROLE\"")
    if not isinstance(domains, list) or not all(isinstance(d, str) for d in domains):
        raise BadRequest("'emailDomains' must be a list of domains")
    if not isinstance(days, int) or isinstance(days, bool):
        raise BadRequest("'sessionDays' must be a number of days")
    if secret is not None and not isinstance(secret, str):
        raise BadRequest("'clientSecret' must be a string")
    return sso.Settings(issuer=_str(data, "issuer"), client_id=_str(data, "clientId"), client_secret=secret,
                        token_auth_method=_str(data, "tokenAuthMethod", "client_secret_post"),
                        role_claim=_str(data, "roleClaim"), role_map=role_map, group_claim=_str(data, "groupClaim"),
                        group_map=group_map, email_domains=domains, session_days=days)


@router.get("/api/organizations/{name}/settings/sso")
@permission(Permission.ORG_WRITE)
def get_settings(name: str, request: Request, principal: Principal = Depends(current_principal)) -> JSONResponse:
    with transaction(hub_of(request).sessions, readonly=True) as session:
        org, facts = orgs.org_with_facts(session, name)
        require(principal, Permission.ORG_WRITE, facts)
        return JSONResponse(sso.settings_view(session, org) or {"protocol": None, "enabled": False})


@router.put("/api/organizations/{name}/settings/sso")
@permission(Permission.ORG_WRITE)
async def put_settings(name: str, request: Request, principal: Principal = Depends(current_principal)) -> JSONResponse:
    data = await json_object(request)

    def run() -> dict[str, Any]:
        hub = hub_of(request)
        with transaction(hub.sessions, readonly=True) as session:
            _org, facts = orgs.org_with_facts(session, name)
            require(principal, Permission.ORG_WRITE, facts)
        protocol = data.get("protocol", "oidc")
        if protocol not in ("oidc", "saml"):
            raise BadRequest("Unknown protocol: expected \"oidc\" or \"saml\"")
        common = {"protocol", "roleClaim", "roleMap", "groupClaim", "groupMap", "emailDomains", "sessionDays"}
        own = {"issuer", "clientId", "clientSecret", "tokenAuthMethod"} if protocol == "oidc" else \
            {"idpMetadata", "idpEntityId", "signOnUrl", "certificate"}
        unknown = sorted(set(data) - common - own)
        if unknown:
            raise BadRequest(f"Unknown {protocol} SSO settings (not built): {', '.join(unknown)}")
        if protocol == "saml":
            xml = data.get("idpMetadata")
            if xml is None:
                xml = saml.idp_metadata_from_parts(_str(data, "idpEntityId"), _str(data, "signOnUrl"),
                                                   _str(data, "certificate"))
            elif not isinstance(xml, str):
                raise BadRequest("'idpMetadata' must be the IdP's metadata XML")
            idp = saml.check_idp_metadata(xml)
            settings = _settings({**{k: v for k, v in data.items() if k in common}, "issuer": "", "clientId": ""})
            with transaction(hub.sessions) as session:
                org = orgs.get_org(session, name)
                sso.configure_saml(session, org, settings, idp)
                return sso.settings_view(session, org) or {}
        settings = _settings(data)
        discovery = oidc.discover(settings.issuer, settings.token_auth_method)  # outside any transaction
        with transaction(hub.sessions) as session:
            org = orgs.get_org(session, name)
            sso.configure(session, sso.secret_box(hub.settings.secret_key), org, settings, discovery)
            return sso.settings_view(session, org) or {}

    return JSONResponse(await run_in_threadpool(run))


@router.post("/api/organizations/{name}/settings/sso/{verb}")
@permission(Permission.ORG_WRITE)
def switch(name: str, verb: str, request: Request, principal: Principal = Depends(current_principal)) -> JSONResponse:
    with transaction(hub_of(request).sessions) as session:
        org, facts = orgs.org_with_facts(session, name)
        require(principal, Permission.ORG_WRITE, facts)
        if verb not in ("enable", "disable"):
            raise BadRequest("Unknown action: expected enable or disable")
        sso.set_enabled(session, org, verb == "enable")
        return JSONResponse(sso.settings_view(session, org) or {})


@router.put("/api/organizations/{name}/settings/sso/external-collaborators/{username}")
@permission(Permission.ORG_WRITE)
def add_external(name: str, username: str, request: Request,
                 principal: Principal = Depends(current_principal)) -> JSONResponse:
    with transaction(hub_of(request).sessions) as session:
        org, facts = orgs.org_with_facts(session, name)
        require(principal, Permission.ORG_WRITE, facts)
        sso.set_exempt(session, org, orgs.user_by_name(session, username), True)
        return JSONResponse(sso.settings_view(session, org) or {})


@router.delete("/api/organizations/{name}/settings/sso/external-collaborators/{username}")
@permission(Permission.ORG_WRITE)
def remove_external(name: str, username: str, request: Request,
                    principal: Principal = Depends(current_principal)) -> JSONResponse:
    with transaction(hub_of(request).sessions) as session:
        org, facts = orgs.org_with_facts(session, name)
        require(principal, Permission.ORG_WRITE, facts)
        sso.set_exempt(session, org, orgs.user_by_name(session, username), False)
        return JSONResponse(sso.settings_view(session, org) or {})


# ---- instance SSO (instance administrators) ---------------------------------------------------------

@router.get("/api/admin/sso")
@permission(Permission.ADMIN)
def get_instance_settings(request: Request, principal: Principal = Depends(current_principal)) -> JSONResponse:
    require(principal, Permission.ADMIN)
    with transaction(hub_of(request).sessions, readonly=True) as session:
        return JSONResponse(instance.settings_view(session))


@router.put("/api/admin/sso")
@permission(Permission.ADMIN)
async def put_instance_settings(request: Request, principal: Principal = Depends(current_principal)) -> JSONResponse:
    """{"protocol": "oidc", "issuer", "clientId", "clientSecret", "tokenAuthMethod", "usernameClaim"} or
    {"protocol": "saml", "idpMetadata", "usernameClaim"}; "ssoOnly" and "breakGlassAdmin" alone switch "SSO only"."""
    require(principal, Permission.ADMIN)
    data = await json_object(request)

    def run() -> dict[str, Any]:
        hub = hub_of(request)
        protocol = data.get("protocol")
        only = {"ssoOnly", "breakGlassAdmin"}
        own = {"oidc": {"issuer", "clientId", "clientSecret", "tokenAuthMethod", "usernameClaim"},
               "saml": {"idpMetadata", "usernameClaim"}, None: set()}
        if protocol not in own:
            raise BadRequest("Unknown protocol: expected \"oidc\" or \"saml\"")
        unknown = sorted(set(data) - {"protocol"} - own[protocol] - only)
        if unknown:
            raise BadRequest(f"Unknown instance SSO settings (not built): {', '.join(unknown)}")
        if protocol == "saml":
            xml = data.get("idpMetadata")
            if not isinstance(xml, str):
                raise BadRequest("'idpMetadata' must be the IdP's metadata XML")
            idp = saml.check_idp_metadata(xml)
            with transaction(hub.sessions) as session:
                instance.configure_saml(session, idp, _str(data, "usernameClaim"))
        elif protocol == "oidc":
            method = _str(data, "tokenAuthMethod", "client_secret_post")
            secret = data.get("clientSecret")
            if secret is not None and not isinstance(secret, str):
                raise BadRequest("'clientSecret' must be a string")
            discovery = oidc.discover(_str(data, "issuer"), method)  # outside any transaction
            with transaction(hub.sessions) as session:
                instance.configure_oidc(session, sso.secret_box(hub.settings.secret_key),
                                        client_id=_str(data, "clientId"), client_secret=secret,
                                        token_auth_method=method, username_claim=_str(data, "usernameClaim"),
                                        discovery=discovery)
        if only & set(data):
            flag = data.get("ssoOnly", False)
            if not isinstance(flag, bool):
                raise BadRequest("'ssoOnly' must be true or false")
            with transaction(hub.sessions) as session:
                instance.set_sso_only(session, flag, _str(data, "breakGlassAdmin") if "breakGlassAdmin" in data
                                      else None)
        with transaction(hub.sessions, readonly=True) as session:
            return instance.settings_view(session)

    return JSONResponse(await run_in_threadpool(run))


@router.post("/api/admin/sso/{verb}")
@permission(Permission.ADMIN)
def switch_instance(verb: str, request: Request, principal: Principal = Depends(current_principal)) -> JSONResponse:
    require(principal, Permission.ADMIN)
    if verb not in ("enable", "disable"):
        raise BadRequest("Unknown action: expected enable or disable")
    with transaction(hub_of(request).sessions) as session:
        instance.set_enabled(session, verb == "enable")
        return JSONResponse(instance.settings_view(session))
