"""Git LFS HTTP: the batch API at `{repo}.git/info/lfs/objects/batch`, verify, and the
pre-signed upload URLs (basic PUT, multipart part PUT, multipart completion POST).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from bastion.accounts.service import user_by_id
from bastion.api.auth import bound_principal, credential_claims, current_principal, hub_of
from bastion.api.bodies import json_object
from bastion.api.params import decimal
from bastion.api.urls import base_url
from bastion.audit.context import set_actor
from bastion.authz import Permission, Principal, authorize, permission, require
from bastion.authz import capability as cap
from bastion.authz.policy import BoundCapability
from bastion.db import transaction
from bastion.errors import BadRequest, Forbidden, NotFound
from bastion.lfs import locks, service
from bastion.lfs.audit_events import object_stored
from bastion.lfs.content import object_response
from bastion.lfs.models import LfsMultipartUpload
from bastion.repos import guards
from bastion.repos.routes import load_repo
from bastion.repos.service import incarnation, repo_by_id, repo_ref, repo_region
from bastion.storage import BlobMismatch

router = APIRouter()
LFS_JSON = "application/vnd.git-lfs+json"


def _lfs_json(data: Any, status: int = 200) -> JSONResponse:
    return JSONResponse(data, status_code=status, media_type=LFS_JSON)


def _register(prefix: str, plural: str) -> None:
    @router.post(f"/{prefix}{{ns}}/{{name}}.git/info/lfs/objects/batch", name=f"lfs_batch_{plural}")
    # Download / upload: an upload links bytes to the repo for a commit, which is decided on its own (a branch
    # needs write access; a pull request is opened by anyone who reads the repo), so it needs REPO_CONTENT_UPLOAD.
    @permission(Permission.REPO_READ, Permission.REPO_CONTENT_UPLOAD)
    async def batch(ns: str, name: str, request: Request,
                    principal: Principal = Depends(current_principal)) -> JSONResponse:
        data = await json_object(request, 4 << 20)
        hub = hub_of(request)
        operation = data.get("operation")
        if operation not in ("upload", "download"):
            raise BadRequest("'operation' must be 'upload' or 'download'")
        transfers = data.get("transfers") or ["basic"]
        if not isinstance(transfers, list):
            raise BadRequest("'transfers' must be a list")
        if data.get("hash_algo", "sha256") != "sha256":
            raise BadRequest("Only sha256 is supported")
        objects = service.parse_objects(data.get("objects"))
        root = base_url(request)
        auth = request.headers.get("authorization")

        def run() -> dict[str, Any]:
            with transaction(hub.sessions) as session:
                perm = Permission.REPO_CONTENT_UPLOAD if operation == "upload" else Permission.REPO_READ
                repo = load_repo(hub, session, principal, plural, ns, name, perm)
                if operation == "upload":
                    # Pull-request content from someone who cannot write here is charged to their allowance.
                    writer = bool(authorize(principal, Permission.REPO_WRITE, repo_ref(repo, principal.user_id)))
                    return service.upload_batch(hub, session, repo, principal.user_id or 0, objects,
                                                [str(t) for t in transfers], root, auth,
                                                holder=credential_claims(principal), contributor=not writer)
                blocked = {o.oid: reason for o in objects
                           if (reason := guards.download_refusal(hub, session, repo, o.oid, principal))}
                return service.download_batch(session, repo, objects, root, auth, blocked)

        return _lfs_json(await run_in_threadpool(run))

    @router.post(f"/{prefix}{{ns}}/{{name}}.git/info/lfs/objects/verify", name=f"lfs_verify_{plural}")
    @permission(Permission.REPO_CONTENT_UPLOAD)
    async def verify(ns: str, name: str, request: Request,
                     principal: Principal = Depends(current_principal)) -> JSONResponse:
        data = await json_object(request, 4 << 20)
        hub = hub_of(request)
        (obj,) = service.parse_objects([{"oid": data.get("oid"), "size": data.get("size")}])

        def run() -> None:
            with transaction(hub.sessions) as session:
                repo = load_repo(hub, session, principal, plural, ns, name, Permission.REPO_CONTENT_UPLOAD)
                service.verify_object(session, repo, obj.oid, obj.size)

        await run_in_threadpool(run)
        return _lfs_json({"message": "ok"})


    @router.get(f"/{prefix}{{ns}}/{{name}}.git/info/lfs/objects/{{oid}}", name=f"lfs_download_{plural}")
    @permission(Permission.REPO_READ)
    def download(ns: str, name: str, oid: str, request: Request,
                 principal: Principal = Depends(current_principal)) -> Response:
        hub = hub_of(request)
        if not service.OID_RE.match(oid):
            raise NotFound(f"Object {oid} does not exist in this repository")
        with transaction(hub.sessions, readonly=True) as session:
            repo = load_repo(hub, session, principal, plural, ns, name, Permission.REPO_READ)
            guards.refuse_download(hub, session, repo, oid, principal, f"Object {oid}")
        # Served only if this repo holds a link to it (ObjectNotLinked, a 404, otherwise).
        response = object_response(hub, repo.id, oid, request, {"ETag": f'"{oid}"'})
        if response is None:
            raise NotFound(f"Object {oid} is not available in storage")
        return response

_register("datasets/", "datasets")
_register("spaces/", "spaces")
_register("", "models")


def _ref_name(data: dict[str, Any]) -> str | None:
    ref = data.get("ref")
    name = ref.get("name") if isinstance(ref, dict) else None
    return name if isinstance(name, str) else None


def _register_locks(prefix: str, plural: str) -> None:
    """The Git LFS locking API (git lfs lock/unlock/locks; `git lfs push` calls /verify)."""
    base = f"/{prefix}{{ns}}/{{name}}.git/info/lfs/locks"

    @router.post(base, name=f"lfs_lock_create_{plural}")
    @permission(Permission.REPO_WRITE)
    async def create_lock(ns: str, name: str, request: Request,
                          principal: Principal = Depends(current_principal)) -> JSONResponse:
        data = await json_object(request, 4 << 20)
        hub = hub_of(request)
        path = data.get("path")
        if not isinstance(path, str):
            raise BadRequest("'path' is required")

        def run() -> dict[str, Any]:
            with transaction(hub.sessions) as session:
                repo = load_repo(hub, session, principal, plural, ns, name, Permission.REPO_WRITE)
                owner = user_by_id(session, principal.user_id)
                if owner is None:
                    raise Forbidden("Unknown user")
                return locks.create(session, repo, owner, path, _ref_name(data)).as_json()

        return _lfs_json({"lock": await run_in_threadpool(run)}, status=201)

    @router.get(base, name=f"lfs_lock_list_{plural}")
    @permission(Permission.REPO_METADATA_READ)  # paths and owners of locks, no file contents
    def list_locks(ns: str, name: str, request: Request,
                   principal: Principal = Depends(current_principal)) -> JSONResponse:
        hub = hub_of(request)
        qp = request.query_params
        limit = decimal(qp.get("limit") or str(locks.DEFAULT_LIMIT))
        if limit is None:
            raise BadRequest("'limit' must be an integer")
        with transaction(hub.sessions, readonly=True) as session:
            repo = load_repo(hub, session, principal, plural, ns, name, Permission.REPO_METADATA_READ)
            views, next_cursor = locks.page(session, repo.id, path=qp.get("path"), lock_id=qp.get("id"),
                                            cursor=qp.get("cursor"), limit=limit)
        body: dict[str, Any] = {"locks": [v.as_json() for v in views]}
        if next_cursor:
            body["next_cursor"] = next_cursor
        return _lfs_json(body)

    # git-lfs asks before every push, a pull request's author's too (git push to refs/pr/N): the right to upload
    # for a commit is enough, lock paths and owners being metadata (the push itself is judged by its refs).
    @router.post(f"{base}/verify", name=f"lfs_lock_verify_{plural}")
    @permission(Permission.REPO_CONTENT_UPLOAD)
    async def verify_locks(ns: str, name: str, request: Request,
                           principal: Principal = Depends(current_principal)) -> JSONResponse:
        data = await json_object(request, 4 << 20)
        hub = hub_of(request)
        limit, cursor = data.get("limit") or locks.DEFAULT_LIMIT, data.get("cursor")
        if not isinstance(limit, int) or (cursor is not None and not isinstance(cursor, str)):
            raise BadRequest("'limit' must be an integer and 'cursor' a string")

        def run() -> dict[str, Any]:
            with transaction(hub.sessions) as session:
                repo = load_repo(hub, session, principal, plural, ns, name, Permission.REPO_CONTENT_UPLOAD)
                views, next_cursor = locks.page(session, repo.id, cursor=cursor, limit=limit)
            body: dict[str, Any] = {
                "ours": [v.as_json() for v in views if v.owner_user_id == principal.user_id],
                "theirs": [v.as_json() for v in views if v.owner_user_id != principal.user_id]}
            if next_cursor:
                body["next_cursor"] = next_cursor
            return body

        return _lfs_json(await run_in_threadpool(run))

    @router.post(f"{base}/{{lock_id}}/unlock", name=f"lfs_lock_unlock_{plural}")
    @permission(Permission.REPO_WRITE)
    async def unlock(ns: str, name: str, lock_id: str, request: Request,
                     principal: Principal = Depends(current_principal)) -> JSONResponse:
        data = await json_object(request, 4 << 20)
        hub = hub_of(request)
        force = data.get("force") is True

        def run() -> dict[str, Any]:
            with transaction(hub.sessions) as session:
                repo = load_repo(hub, session, principal, plural, ns, name, Permission.REPO_WRITE)
                return locks.unlock(session, repo, lock_id, principal.user_id or 0, force).as_json()

        return _lfs_json({"lock": await run_in_threadpool(run)})


_register_locks("datasets/", "datasets")
_register_locks("spaces/", "spaces")
_register_locks("", "models")


def _capability(request: Request, purpose: str, token: str) -> tuple[Principal, dict[str, Any]]:
    """The upload URL's one authz check: who obtained it is re-established now (their token or session by
    primary key) with the repo it names, which must be the same repo (its incarnation), not a newer one that
    was given the id of a deleted repo."""
    hub = hub_of(request)
    claims = cap.verify(hub.settings.secret_key, purpose, token)
    with transaction(hub.sessions, readonly=True) as session:
        holder = bound_principal(hub, session, claims)
        repo = repo_by_id(session, claims.get("repo_id"))
        ref = repo_ref(repo, holder.user_id) if holder is not None and repo is not None \
            and incarnation(repo.storage_key) == claims.get("inc") else None
    if holder is None:
        raise Forbidden("The access token or browser session this upload URL was obtained with is no longer valid; "
                        "sign in again and start the upload again")
    set_actor(holder.user_id, holder.username, holder.token_id)
    principal = Principal(method="capability", capability=claims)
    require(principal, Permission.LFS_OBJECT_UPLOAD, BoundCapability("lfs-upload", claims, holder, ref))
    return principal, claims


@router.put("/api/lfs/upload/{token}")
@permission(Permission.LFS_OBJECT_UPLOAD)
async def upload_basic(token: str, request: Request) -> Response:
    hub = hub_of(request)
    _, claims = _capability(request, service.UPLOAD_PURPOSE, token)
    oid, size = claims["oid"], claims["size"]
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) != size:
        raise BadRequest(f"Content-Length {declared} does not match the announced size {size}")
    # Staged and stored in the repository's region only.
    region = await run_in_threadpool(repo_region, hub, claims["repo_id"])
    try:
        await hub.blobs_in(region).put_stream(request.stream(), oid, size)
    except BlobMismatch as exc:
        raise BadRequest(f"Upload rejected: {exc}") from None

    def link() -> None:
        with transaction(hub.sessions) as session:
            service.link_object(session, claims["repo_id"], oid, size)
            object_stored(session, claims["repo_id"], oid, size, "basic", claims.get("user_id"))

    await run_in_threadpool(link)
    return Response(status_code=200)


@router.put("/api/lfs/multipart/{token}")
@permission(Permission.LFS_OBJECT_UPLOAD)
async def upload_part(token: str, request: Request) -> Response:
    hub = hub_of(request)
    _, claims = _capability(request, service.PART_PURPOSE, token)
    part = claims["part"]

    def load() -> LfsMultipartUpload:
        with transaction(hub.sessions) as session:
            upload = session.get(LfsMultipartUpload, claims["upload"])
            if upload is None or upload.oid != claims["oid"]:
                raise NotFound("This multipart upload no longer exists")
            return upload

    upload = await run_in_threadpool(load)
    etag = await service.receive_part(hub, upload, part, request.stream())
    return Response(status_code=200, headers={"ETag": f'"{etag}"'})


@router.post("/api/lfs/complete/{token}")
@permission(Permission.LFS_OBJECT_UPLOAD)
async def complete(token: str, request: Request) -> JSONResponse:
    hub = hub_of(request)
    _, claims = _capability(request, service.COMPLETE_PURPOSE, token)
    data = await json_object(request, 4 << 20)
    if data.get("oid") != claims["oid"]:
        raise BadRequest("Completion body names another object")
    parts = data.get("parts")
    if not isinstance(parts, list) or not all(isinstance(p, dict) and p.get("etag") for p in parts):
        raise BadRequest("'parts' must list every part with its etag")

    await run_in_threadpool(service.complete_multipart, hub, claims["upload"], len(parts))
    return _lfs_json({"message": "ok"})
