"""Access tokens over HTTP for their owner: list, create, rename, rotate, revoke.

Browser-only (a session cookie, never a token: a leaked token must not mint more), and changes
need a recent re-authentication. JSON bodies only, which a cross-site form cannot send.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from bastion.accounts import service as accounts
from bastion.accounts.service import user_by_id
from bastion.api.auth import current_principal, hub_of
from bastion.api.bodies import json_object
from bastion.authz import Permission, Principal, permission, require
from bastion.db import transaction
from bastion.errors import BadRequest, InvalidCredentials
from bastion.orgs import service as orgs
from bastion.tokens import governance, service
from bastion.tokens.models import AccessToken
from bastion.tokens.restrictions import InvalidRestriction, Scope, parse_scope

if TYPE_CHECKING:
    from bastion.accounts.models import User
    pass

router = APIRouter()


def parse_scopes(raw: Any) -> list[Scope] | None:
    """`fineGrained: {"scoped": [{"entity": {"type", "name"}, "permissions": [...]}]}` (the Hub's shape)."""
    if raw is None:
        return None
    if not isinstance(raw, dict) or not isinstance(raw.get("scoped", []), list):
        raise BadRequest("'fineGrained' must be {\"scoped\": [...]}")
    try:
        return [parse_scope((s.get("entity") or {}).get("type"), (s.get("entity") or {}).get("name"),
                            s.get("permissions"), group_by_name=True)
                for s in raw.get("scoped", []) if isinstance(s, dict)]
    except InvalidRestriction as exc:
        raise BadRequest(f"Invalid scope: {exc}") from None


def parse_expiry(raw: Any) -> datetime | None:
    if raw in (None, ""):
        return None
    if not isinstance(raw, str):
        raise BadRequest("'expiresAt' must be an ISO date or date-time")
    try:
        value = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise BadRequest(f"Invalid 'expiresAt' {raw!r}") from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


@router.get("/api/settings/tokens")
@permission(Permission.TOKEN_READ)
def list_tokens(request: Request, principal: Principal = Depends(current_principal)) -> JSONResponse:
    require(principal, Permission.TOKEN_READ)
    hub = hub_of(request)
    with transaction(hub.sessions, readonly=True) as session:
        user = user_by_id(session, principal.user_id)
        return JSONResponse([service.token_payload(t) for t in service.list_tokens(session, user)])


@router.post("/api/settings/tokens")
@permission(Permission.TOKEN_MANAGE)
async def create_token(request: Request, principal: Principal = Depends(current_principal)) -> JSONResponse:
    require(principal, Permission.TOKEN_MANAGE)
    data = await json_object(request, 1 << 16, json_content_type=True)
    hub = hub_of(request)
    name = data.get("displayName") or data.get("name")
    role = data.get("role", "read")
    if not isinstance(name, str) or not isinstance(role, str):
        raise BadRequest("'displayName' and 'role' must be strings")
    scopes, expires = parse_scopes(data.get("fineGrained")), parse_expiry(data.get("expiresAt"))
    gated = (data.get("fineGrained") or {}).get("canReadGatedRepos", False)
    if not isinstance(gated, bool):
        raise BadRequest("'fineGrained.canReadGatedRepos' must be a boolean")

    def run() -> dict[str, Any]:
        with transaction(hub.sessions) as session:
            issued = service.create_token(session, user_by_id(session, principal.user_id), name, role, expires, scopes,
                                          can_read_gated=gated, mailer=hub.mailer)
            return {**service.token_payload(issued.token), "token": issued.secret}

    return JSONResponse(await run_in_threadpool(run), status_code=201)


def _change(request: Request, principal: Principal, token_id: int, action: str, data: dict[str, Any]) -> JSONResponse:
    require(principal, Permission.TOKEN_MANAGE)
    hub = hub_of(request)
    with transaction(hub.sessions) as session:
        tok = service.get_own_token(session, user_by_id(session, principal.user_id), token_id)
        out: dict[str, Any] = {}
        if action == "rename":
            service.rename_token(session, tok, str(data.get("displayName") or data.get("name") or ""))
        elif action == "rotate":
            out["token"] = service.rotate_token(session, tok, hub.mailer)
        else:
            service.revoke_token(session, tok, reason="revoked by owner", mailer=hub.mailer)
        return JSONResponse({**service.token_payload(tok), **out})


@router.put("/api/settings/tokens/{token_id}")
@permission(Permission.TOKEN_MANAGE)
async def rename_token(token_id: int, request: Request, principal: Principal = Depends(current_principal),
                       ) -> JSONResponse:
    data = await json_object(request, 1 << 16, json_content_type=True)
    return await run_in_threadpool(_change, request, principal, token_id, "rename", data)


@router.post("/api/settings/tokens/{token_id}/rotate")
@permission(Permission.TOKEN_MANAGE)
def rotate_token(token_id: int, request: Request, principal: Principal = Depends(current_principal)) -> JSONResponse:
    return _change(request, principal, token_id, "rotate", {})


@router.delete("/api/settings/tokens/{token_id}")
@permission(Permission.TOKEN_MANAGE)
def revoke_token(token_id: int, request: Request, principal: Principal = Depends(current_principal)) -> JSONResponse:
    return _change(request, principal, token_id, "revoke", {})


# The caller's identity as the client asks for it (`HfApi.whoami`): who the presented token (or session)
# belongs to, their orgs, and what the token may do.
@router.get("/api/whoami-v2")
@permission(Permission.USER_READ)
def whoami(request: Request, principal: Principal = Depends(current_principal)) -> JSONResponse:
    if not principal.authenticated:
        # The client turns any 401 here into "Invalid user token".
        raise InvalidCredentials("no token")
    require(principal, Permission.USER_READ)
    hub = hub_of(request)
    with transaction(hub.sessions, readonly=True) as session:
        # Authentication read the token and its user a moment ago in this request: reuse those rows.
        token: AccessToken | None = getattr(request.state, "access_token", None)
        if token is not None:
            token = session.merge(token, load=False)
            user: User | None = token.user
        else:
            user = user_by_id(session, principal.user_id)
        assert user is not None
        payload = {
            "type": "user", "id": f"{user.id:024x}", "name": user.name, "fullname": user.fullname,
            "email": user.email, "emailVerified": accounts.primary_verified(user) is not None,
            "isPro": False, "canPay": False, "orgs": orgs.whoami_orgs(session, user),
            "avatarUrl": "", "periodEnd": None,
            "auth": {"type": "access_token", "accessToken": {
                "displayName": token.name if token else None, "role": token.role if token else None,
                "createdAt": token.created_at.isoformat().replace("+00:00", "Z") if token else None,
            }},
        }
        if token is not None and token.role == "fineGrained":
            payload["auth"]["accessToken"]["fineGrained"] = service.scopes_payload(token)
    return JSONResponse(payload)


# ---- org token governance: the org's admins review the tokens that reach it ----------------------

def _token_value(data: dict[str, Any]) -> str:
    value = data.get("token")
    if not isinstance(value, str):
        raise BadRequest("'token' must be a string")
    return value


@router.get("/api/organizations/{name}/settings/tokens")
@permission(Permission.ORG_WRITE)
def org_tokens(name: str, request: Request, principal: Principal = Depends(current_principal)) -> JSONResponse:
    include_revoked = request.query_params.get("revoked") in ("1", "true")
    with transaction(hub_of(request).sessions, readonly=True) as session:
        org, facts = orgs.org_with_facts(session, name)
        require(principal, Permission.ORG_WRITE, facts)
        return JSONResponse([governance.org_token_payload(org, t)
                             for t in governance.tokens_reaching(session, org, include_revoked=include_revoked)])


@router.post("/api/organizations/{name}/settings/tokens/{token_id}/{verb}")
@permission(Permission.ORG_WRITE)
def decide_token(name: str, token_id: int, verb: str, request: Request,
                 principal: Principal = Depends(current_principal)) -> JSONResponse:
    with transaction(hub_of(request).sessions) as session:
        org, facts = orgs.org_with_facts(session, name)
        require(principal, Permission.ORG_WRITE, facts)
        tok = governance.get_reaching_token(session, org, token_id)
        actor = accounts.acting_user(session, principal)
        state = governance.decide_token(session, request.app.state.mailer, org, tok, actor, verb)
        return JSONResponse({"id": tok.id, "state": state})


@router.post("/api/organizations/{name}/settings/tokens/revoke")
@permission(Permission.ORG_WRITE)
async def revoke_by_value(name: str, request: Request,
                          principal: Principal = Depends(current_principal)) -> JSONResponse:
    """Revoke a token for the org by its raw value (for secret-scanning automation)."""
    data = await json_object(request)

    def run() -> dict[str, Any]:
        with transaction(hub_of(request).sessions) as session:
            org, facts = orgs.org_with_facts(session, name)
            require(principal, Permission.ORG_WRITE, facts)
            tok = service.find_by_secret(session, _token_value(data))
            if tok is None or not governance.reaches_org(session, org, tok):
                raise BadRequest("This token cannot access the organization")
            if tok.user_id == principal.user_id:
                raise BadRequest("You cannot revoke your own token this way: delete it from your token settings")
            actor = accounts.acting_user(session, principal)
            state = governance.decide_token(session, request.app.state.mailer, org, tok, actor, "revoke")
            return {"id": tok.id, "state": state}

    return JSONResponse(await run_in_threadpool(run))
