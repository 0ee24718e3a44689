"""HTTP for a repo's LFS files at the Hub's URLs: list them, permanently delete them (purge a leak)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from bastion.api.auth import current_principal, hub_of
from bastion.api.bodies import json_object
from bastion.api.urls import int_param, next_link
from bastion.authz import Permission, Principal, permission
from bastion.db import transaction
from bastion.errors import BadRequest
from bastion.objects import purge
from bastion.repos.routes import load_repo

router = APIRouter()
PAGE = 1000


@router.get("/api/{plural}/{ns}/{name}/lfs-files")
@permission(Permission.REPO_WRITE)
def list_lfs_files(plural: str, ns: str, name: str, request: Request,
                   principal: Principal = Depends(current_principal)) -> JSONResponse:
    """`list_lfs_files`: a page of the repo's LFS files (oldest push first), the next in `Link`."""
    hub = hub_of(request)
    offset = int_param(request, "cursor", 0, 0, 10**9)
    limit = int_param(request, "limit", PAGE, 1, PAGE)
    with transaction(hub.sessions, readonly=True) as session:
        repo = load_repo(hub, session, principal, plural, ns, name, Permission.REPO_WRITE)
        files = purge.list_lfs_files(hub, session, repo)
    headers = {"Link": next_link(request, cursor=offset + limit)} if offset + limit < len(files) else {}
    return JSONResponse(files[offset:offset + limit], headers=headers)


@router.post("/api/{plural}/{ns}/{name}/lfs-files/batch")
@permission(Permission.REPO_MANAGE)
async def delete_lfs_files(plural: str, ns: str, name: str, request: Request,
                           principal: Principal = Depends(current_principal)) -> JSONResponse:
    """`permanently_delete_lfs_files`: {"deletions": {"sha": [oid, …], "rewriteHistory": bool}}."""
    hub = hub_of(request)
    data = await json_object(request)
    deletions = data.get("deletions")
    if not isinstance(deletions, dict):
        raise BadRequest("'deletions' must be an object with 'sha' and 'rewriteHistory'")
    rewrite = deletions.get("rewriteHistory", True)
    if not isinstance(rewrite, bool):
        raise BadRequest("'deletions.rewriteHistory' must be a boolean")

    def run() -> dict[str, Any]:
        with transaction(hub.sessions) as session:
            # The repo first: a caller who may not manage it learns nothing from how the body is judged.
            repo = load_repo(hub, session, principal, plural, ns, name, Permission.REPO_MANAGE)
            oids = purge.parse_oids(deletions.get("sha"))
            result = purge.permanently_delete(hub, session, repo, principal.user_id, oids, rewrite)
        purge.free_bytes(hub, result)
        return {"deleted": result.purged, "rewrittenRefs": sorted(result.rewritten)}

    return JSONResponse(await run_in_threadpool(run))


@router.post("/api/{plural}/{ns}/{name}/lfs-files/duplicate")
@permission(Permission.REPO_READ)
def duplicate_lfs_files(plural: str, ns: str, name: str, request: Request,
                        principal: Principal = Depends(current_principal)) -> JSONResponse:
    """A cross-repo `CommitOperationCopy` (the client links the source's LFS files to the target first): not
    built (it needs one decision over two repos: read the source, write the target). A source the caller may
    not read is the Hub's 404 RepositoryNotFound; one they may read is refused with a 400 saying what to do."""
    hub = hub_of(request)
    with transaction(hub.sessions, readonly=True) as session:
        load_repo(hub, session, principal, plural, ns, name, Permission.REPO_READ)
    raise BadRequest("Copying LFS files from one repository to another is not offered by this Bastion "
                     "instance: upload the files to the target repository instead")
