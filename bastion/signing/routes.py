"""HTTP for signing keys: the caller's own GPG and SSH signing keys, vigilant mode, and the
instance's public signing key. Parse → authz.require (once) → signing.service → JSON.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from bastion.accounts.service import user_by_id
from bastion.api.auth import current_principal, hub_of
from bastion.api.bodies import json_object
from bastion.authz import Permission, Principal, permission, require
from bastion.db import transaction
from bastion.errors import AuthenticationRequired, BadRequest, NotImplementedFeature
from bastion.signing import service
from bastion.signing.verify import INSTANCE_PRINCIPAL

if TYPE_CHECKING:
    from bastion.accounts.models import User

router = APIRouter()
MAX_BODY = 512 * 1024


def _me(session: Session, principal: Principal, perm: Permission) -> User:
    """The route's one authorization check; keys are only ever the caller's own."""
    require(principal, perm)
    user = user_by_id(session, principal.user_id)
    if user is None or not user.is_active:
        raise AuthenticationRequired("Authentication required")
    return user


@router.get("/api/signing-key")
@permission(Permission.PUBLIC)
def instance_signing_key(request: Request, principal: Principal = Depends(current_principal)) -> Response:
    """The public half of the key Bastion signs its own commits with (API uploads, squashes)."""
    require(principal, Permission.PUBLIC)
    key = service.instance_key()
    if key is None:
        raise NotImplementedFeature("This server does not sign its commits")
    if request.query_params.get("format") == "allowed-signers":
        return Response(key.allowed_signers, media_type="text/plain; charset=utf-8")
    return JSONResponse({"type": "ssh", "publicKey": key.public_key, "fingerprint": key.fingerprint,
                         "principal": INSTANCE_PRINCIPAL, "namespace": "git", "allowedSigners": key.allowed_signers,
                         "signer": service.INSTANCE_SIGNER})


@router.get("/api/settings/gpg-keys")
@permission(Permission.USER_READ)
def list_gpg_keys(request: Request, principal: Principal = Depends(current_principal)) -> JSONResponse:
    with transaction(hub_of(request).sessions, readonly=True) as session:
        user = _me(session, principal, Permission.USER_READ)
        return JSONResponse([service.gpg_key_json(k) for k in service.list_gpg_keys(session, user.id)])


@router.post("/api/settings/gpg-keys")
@permission(Permission.USER_KEYS_WRITE)
async def add_gpg_key(request: Request, principal: Principal = Depends(current_principal)) -> JSONResponse:
    data = await json_object(request, MAX_BODY, json_content_type=True)
    hub = hub_of(request)
    armored = data.get("key", data.get("armoredPublicKey"))

    def run() -> dict[str, Any]:
        with transaction(hub.sessions) as session:
            user = _me(session, principal, Permission.USER_KEYS_WRITE)
            key = service.add_gpg_key(session, user, armored, hub.settings.tmp_dir)
            service.notify_key_change(session, hub.mailer, user, "A GPG key was added to your account",
                                      f"the GPG key {key.key_id} was added to your account.")
            return service.gpg_key_json(key)

    return JSONResponse(await run_in_threadpool(run), status_code=201)


@router.delete("/api/settings/gpg-keys/{key_id}")
@permission(Permission.USER_KEYS_WRITE)
def remove_gpg_key(key_id: int, request: Request, principal: Principal = Depends(current_principal)) -> JSONResponse:
    hub = hub_of(request)
    with transaction(hub.sessions) as session:
        user = _me(session, principal, Permission.USER_KEYS_WRITE)
        service.remove_gpg_key(session, user, key_id)
        service.notify_key_change(session, hub.mailer, user, "A GPG key was removed from your account",
                                  "a GPG key was removed from your account.")
    return JSONResponse({})


@router.get("/api/settings/ssh-signing-keys")
@permission(Permission.USER_READ)
def list_ssh_keys(request: Request, principal: Principal = Depends(current_principal)) -> JSONResponse:
    with transaction(hub_of(request).sessions, readonly=True) as session:
        user = _me(session, principal, Permission.USER_READ)
        return JSONResponse([service.ssh_key_json(k) for k in service.list_ssh_keys(session, user.id)])


@router.post("/api/settings/ssh-signing-keys")
@permission(Permission.USER_KEYS_WRITE)
async def add_ssh_key(request: Request, principal: Principal = Depends(current_principal)) -> JSONResponse:
    data = await json_object(request, MAX_BODY, json_content_type=True)
    hub = hub_of(request)

    def run() -> dict[str, Any]:
        with transaction(hub.sessions) as session:
            user = _me(session, principal, Permission.USER_KEYS_WRITE)
            key = service.add_ssh_key(session, user, data.get("key"), data.get("title") or "")
            service.notify_key_change(session, hub.mailer, user, "An SSH signing key was added to your account",
                                      f"the SSH signing key {key.fingerprint} was added to your account.")
            return service.ssh_key_json(key)

    return JSONResponse(await run_in_threadpool(run), status_code=201)


@router.delete("/api/settings/ssh-signing-keys/{key_id}")
@permission(Permission.USER_KEYS_WRITE)
def remove_ssh_key(key_id: int, request: Request, principal: Principal = Depends(current_principal)) -> JSONResponse:
    hub = hub_of(request)
    with transaction(hub.sessions) as session:
        user = _me(session, principal, Permission.USER_KEYS_WRITE)
        service.remove_ssh_key(session, user, key_id)
        service.notify_key_change(session, hub.mailer, user, "An SSH signing key was removed from your account",
                                  "an SSH signing key was removed from your account.")
    return JSONResponse({})


@router.get("/api/settings/signing")
@permission(Permission.USER_READ)
def get_signing_settings(request: Request, principal: Principal = Depends(current_principal)) -> JSONResponse:
    with transaction(hub_of(request).sessions, readonly=True) as session:
        user = _me(session, principal, Permission.USER_READ)
        return JSONResponse({"vigilantMode": service.is_vigilant(session, user.id)})


@router.put("/api/settings/signing")
@permission(Permission.USER_KEYS_WRITE)
async def update_signing_settings(request: Request, principal: Principal = Depends(current_principal)) -> JSONResponse:
    data = await json_object(request, MAX_BODY, json_content_type=True)
    vigilant = data.get("vigilantMode")
    if not isinstance(vigilant, bool):
        raise BadRequest("'vigilantMode' must be a boolean")
    hub = hub_of(request)

    def run() -> None:
        with transaction(hub.sessions) as session:
            user = _me(session, principal, Permission.USER_KEYS_WRITE)
            service.set_vigilant(session, user, vigilant)
            state = "on" if vigilant else "off"
            service.notify_key_change(session, hub.mailer, user, f"Vigilant mode was turned {state}",
                                      f"vigilant mode was turned {state} for your account.")

    await run_in_threadpool(run)
    return JSONResponse({"vigilantMode": vigilant})
