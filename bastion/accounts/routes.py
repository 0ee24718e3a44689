"""Identity over HTTP: `GET /api/whoami-v2`, as huggingface_hub and the hf CLI read it."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

from bastion.accounts import service as accounts
from bastion.accounts.models import User
from bastion.api.auth import current_principal, hub_of
from bastion.authz import Permission, Principal, permission, require
from bastion.db import transaction
from bastion.errors import InvalidCredentials
from bastion.orgs import service as orgs
from bastion.tokens import service as tokens
from bastion.tokens.models import AccessToken

router = APIRouter()


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
            user = session.get(User, principal.user_id)
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
            payload["auth"]["accessToken"]["fineGrained"] = tokens.scopes_payload(token)
    return JSONResponse(payload)
