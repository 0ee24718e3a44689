"""The access-tokens settings page: list, create (read, write or fine-grained), rename, rotate, revoke.

Pages only: every change goes through bastion.tokens.service, the same calls the JSON API makes.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from bastion.api.auth import current_principal, hub_of
from bastion.authz import Permission, Principal, authorize, permission, require
from bastion.db import transaction
from bastion.errors import BadRequest
from bastion.tokens import service as tokens
from bastion.tokens.restrictions import InvalidRestriction, parse_scope
from bastion.tokens.routes import parse_expiry
from bastion.web.pages import check_csrf, redirect, render
from bastion.web.views import _me, _text

router = APIRouter()


def _page(request: Request, principal: Principal, status: int = 200, **extra: Any) -> Response:
    with transaction(hub_of(request).sessions) as session:
        user, _ws = _me(session, principal)
        rows = [tokens.token_payload(t) for t in tokens.list_tokens(session, user)]
        return render(request, "settings/tokens.html", status, user=user, tokens=rows,
                      can_manage=bool(authorize(principal, Permission.TOKEN_MANAGE)), **extra)


def parse_scope_lines(text: str) -> list[Any]:
    """One scope a line: `ENTITY:NAME=PERM[,PERM…]`, the same form as the CLI's --scope."""
    scopes = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line:
            continue
        entity, _, perms = line.partition("=")
        kind, _, name = entity.partition(":")
        try:
            scopes.append(parse_scope(kind.strip(), name.strip(), [p.strip() for p in perms.split(",") if p.strip()],
                                      group_by_name=True))
        except InvalidRestriction as exc:
            raise BadRequest(f"Scope {line!r}: {exc}") from None
    return scopes


@router.get("/settings/tokens")
@permission(Permission.TOKEN_READ)
def tokens_page(request: Request, principal: Principal = Depends(current_principal)) -> Response:
    require(principal, Permission.TOKEN_READ)
    return _page(request, principal)


@router.post("/settings/tokens")
@permission(Permission.TOKEN_MANAGE)
async def tokens_create(request: Request, principal: Principal = Depends(current_principal)) -> Response:
    form = await request.form()
    require(principal, Permission.TOKEN_MANAGE)  # without a recent re-authentication: 403, the page links to it
    check_csrf(request, form)

    def run() -> Response:
        try:
            role = _text(form, "role", 16)
            scopes = parse_scope_lines(_text(form, "scopes", 8000)) if role == "fineGrained" else None
            with transaction(hub_of(request).sessions) as session:
                user, _ws = _me(session, principal)
                issued = tokens.create_token(session, user, _text(form, "name", 100), role,
                                             parse_expiry(_text(form, "expires", 40) or None), scopes,
                                             can_read_gated=bool(_text(form, "can_read_gated", 8)),
                                             mailer=hub_of(request).mailer)
                secret = issued.secret
        except BadRequest as exc:
            return _page(request, principal, 400, error=exc.message)
        # Shown exactly once, on this response; never stored or shown again.
        return _page(request, principal, new_secret=secret)

    return await run_in_threadpool(run)


@router.post("/settings/tokens/{token_id}/{verb}")
@permission(Permission.TOKEN_MANAGE)
async def tokens_change(token_id: int, verb: str, request: Request,
                        principal: Principal = Depends(current_principal)) -> Response:
    form = await request.form()
    require(principal, Permission.TOKEN_MANAGE)
    check_csrf(request, form)
    if verb not in ("rename", "rotate", "revoke"):
        raise BadRequest("Unknown action")

    def run() -> Response:
        secret = None
        try:
            with transaction(hub_of(request).sessions) as session:
                user, _ws = _me(session, principal)
                tok = tokens.get_own_token(session, user, token_id)
                if verb == "rename":  # the JSON API's rename, audited there as token.rename
                    tokens.rename_token(session, tok, _text(form, "name", 200))
                elif verb == "rotate":
                    secret = tokens.rotate_token(session, tok, hub_of(request).mailer)
                else:
                    tokens.revoke_token(session, tok, reason="revoked by owner", mailer=hub_of(request).mailer)
        except BadRequest as exc:
            return _page(request, principal, 400, error=exc.message)
        if secret:
            return _page(request, principal, new_secret=secret)
        return redirect(f"/settings/tokens?m={'renamed' if verb == 'rename' else 'revoked'}")

    return await run_in_threadpool(run)
