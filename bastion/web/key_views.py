"""The signing-keys settings page: list, add and remove GPG and SSH signing keys; vigilant mode.

Pages only: every change goes through bastion.signing.service, the same calls the JSON API makes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from bastion.api.auth import current_principal, hub_of
from bastion.authz import Permission, Principal, permission, require
from bastion.db import transaction
from bastion.errors import BadRequest, Conflict, NotFound
from bastion.signing import service as signing
from bastion.web.pages import HtmlRoute, check_csrf, render
from bastion.web.views import _me, _text

if TYPE_CHECKING:
    from bastion.accounts.models import User

router = APIRouter(route_class=HtmlRoute)
KINDS = ("gpg", "ssh")
MAX_KEY_TEXT = 64 * 1024  # an armored GPG key with a few subkeys and UIDs fits with room to spare


def _page(request: Request, principal: Principal, status: int = 200, **extra: Any) -> Response:
    with transaction(hub_of(request).sessions) as session:
        user, _ws = _me(session, principal)
        return render(request, "settings/keys.html", status, user=user,
                      gpg_keys=[signing.gpg_key_json(k) for k in signing.list_gpg_keys(session, user.id)],
                      ssh_keys=[signing.ssh_key_json(k) for k in signing.list_ssh_keys(session, user.id)],
                      vigilant=signing.is_vigilant(session, user.id), **extra)


def _change(request: Request, principal: Principal, change: Callable[[Session, User], str]) -> Response:
    """Apply `change` for the signed-in user; a refusal the user can fix re-renders the page with it."""
    try:
        with transaction(hub_of(request).sessions) as session:
            user, _ws = _me(session, principal)
            done = change(session, user)
    except (BadRequest, Conflict, NotFound) as exc:
        return _page(request, principal, exc.status, error=exc.message)
    return _page(request, principal, done=done)


@router.get("/settings/keys")
@permission(Permission.USER_READ)
def keys_page(request: Request, principal: Principal = Depends(current_principal)) -> Response:
    require(principal, Permission.USER_READ)
    return _page(request, principal)


@router.post("/settings/keys")
@permission(Permission.USER_KEYS_WRITE)
async def keys_add(request: Request, principal: Principal = Depends(current_principal)) -> Response:
    form = await request.form()
    require(principal, Permission.USER_KEYS_WRITE)
    check_csrf(request, form)
    kind, text, title = _text(form, "kind", 8), _text(form, "key", MAX_KEY_TEXT), _text(form, "title", 100)
    if kind not in KINDS:
        raise BadRequest("Unknown key kind")
    hub = hub_of(request)

    def add(session: Session, user: User) -> str:
        if kind == "gpg":
            key = signing.add_gpg_key(session, user, text, hub.settings.tmp_dir)
            signing.notify_key_change(session, hub.mailer, user, "A GPG key was added to your account",
                                      f"the GPG key {key.key_id} was added to your account.")
            return f"GPG key {key.key_id} was added."
        ssh = signing.add_ssh_key(session, user, text, title)
        signing.notify_key_change(session, hub.mailer, user, "An SSH signing key was added to your account",
                                  f"the SSH signing key {ssh.fingerprint} was added to your account.")
        return f"SSH signing key {ssh.fingerprint} was added."

    return await run_in_threadpool(_change, request, principal, add)


@router.post("/settings/keys/{kind}/{key_id}/delete")
@permission(Permission.USER_KEYS_WRITE)
async def keys_remove(kind: str, key_id: int, request: Request,
                      principal: Principal = Depends(current_principal)) -> Response:
    form = await request.form()
    require(principal, Permission.USER_KEYS_WRITE)
    check_csrf(request, form)
    if kind not in KINDS:
        raise NotFound("Not found")
    hub = hub_of(request)

    def remove(session: Session, user: User) -> str:
        # The service looks keys up by owner too: another user's key id is "not found".
        if kind == "gpg":
            signing.remove_gpg_key(session, user, key_id)
            signing.notify_key_change(session, hub.mailer, user, "A GPG key was removed from your account",
                                      "a GPG key was removed from your account.")
            return "The GPG key was removed."
        signing.remove_ssh_key(session, user, key_id)
        signing.notify_key_change(session, hub.mailer, user, "An SSH signing key was removed from your account",
                                  "an SSH signing key was removed from your account.")
        return "The SSH signing key was removed."

    return await run_in_threadpool(_change, request, principal, remove)


@router.post("/settings/keys/vigilant")
@permission(Permission.USER_KEYS_WRITE)
async def keys_vigilant(request: Request, principal: Principal = Depends(current_principal)) -> Response:
    form = await request.form()
    require(principal, Permission.USER_KEYS_WRITE)
    check_csrf(request, form)
    on = _text(form, "vigilant", 8) == "on"
    hub = hub_of(request)

    def toggle(session: Session, user: User) -> str:
        signing.set_vigilant(session, user, on)
        signing.notify_key_change(session, hub.mailer, user, f"Vigilant mode was turned {'on' if on else 'off'}",
                                  f"vigilant mode was turned {'on' if on else 'off'} for your account.")
        return "Vigilant mode is on." if on else "Vigilant mode is off."

    return await run_in_threadpool(_change, request, principal, toggle)
