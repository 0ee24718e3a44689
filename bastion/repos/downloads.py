"""File downloads at /{prefix}{repo}/resolve/{revision}/{path}: the metadata HEAD and the GET.

LFS objects are served straight from the blob store as file responses (read and sent in 2 MiB
blocks), or reconstructed from their Xet chunks and streamed when they were uploaded through Xet;
small git blobs from memory. Single HTTP ranges are honoured for all three.
"""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import quote

from fastapi import APIRouter, Depends, Request, Response
from starlette.concurrency import run_in_threadpool

from bastion.api.auth import current_principal, hub_of
from bastion.api.ranges import parse_range
from bastion.authz import Permission, Principal, permission
from bastion.db import transaction
from bastion.errors import BastionError, EntryNotFound
from bastion.hub import Hub
from bastion.repos import guards, service
from bastion.repos.objects import object_response
from bastion.repos.routes import load_repo, raw_tail
from bastion.storage.gitstore import parse_lfs_pointer, validate_path

router = APIRouter()

# Headers a feature above repos adds to an LFS file's download: (request, hub, repo id, plural, ns, name,
# commit, oid) -> headers. Xet advertises its reconstruction (bastion.xet.routes.install).
LfsDownloadHeaders = Callable[[Request, Hub, int, str, str, str, str, str], dict[str, str]]
lfs_download_headers: list[LfsDownloadHeaders] = []


class ObjectMissing(BastionError):
    status = 503
    code = "ObjectUnavailable"


def _content_disposition(path: str) -> str:
    filename = path.rsplit("/", 1)[-1]
    ascii_name = filename.encode("ascii", "replace").decode().replace('"', "_")
    return f"inline; filename*=UTF-8''{quote(filename)}; filename=\"{ascii_name}\";"


def _resolve(prefix: str, plural: str, ns: str, name: str, request: Request, principal: Principal) -> Response:
    hub = hub_of(request)
    segments = raw_tail(request, f"/{prefix}{ns}/{name}/resolve/")
    if len(segments) < 2:
        raise EntryNotFound("A file path is required after the revision")
    revision, path = segments[0], "/".join(segments[1:])
    validate_path(path)
    with transaction(hub.sessions, readonly=True) as session:
        repo = load_repo(hub, session, principal, plural, ns, name, Permission.REPO_READ)
        git = hub.git(repo.storage_key)
        commit = git.resolve(revision)
        blob = git.blob_at(commit, path)
        ptr = parse_lfs_pointer(blob.data) if blob.size <= 200 else None
        if ptr is not None and service.purged_lfs_oids(session, repo.id, [ptr.oid]):
            # Permanently deleted (an owner purged it): the Hub's "no such file" at every revision.
            raise EntryNotFound(f"{path} was permanently deleted from this repository",
                                headers={"X-Repo-Commit": str(commit.id)})
        guards.refuse_download(hub, session, repo, ptr.oid if ptr is not None else str(blob.id), principal, path)
    headers = {
        "X-Repo-Commit": str(commit.id),
        "Accept-Ranges": "bytes",
        "Content-Disposition": _content_disposition(path),
        "Cache-Control": "private, max-age=0, must-revalidate" if repo.private else "public, max-age=0",
    }
    if ptr is not None:
        headers.update({"ETag": f'"{ptr.oid}"', "X-Linked-Etag": f'"{ptr.oid}"', "X-Linked-Size": str(ptr.size)})
        for more_headers in lfs_download_headers:
            headers.update(more_headers(request, hub, repo.id, plural, ns, name, str(commit.id), ptr.oid))
        response = object_response(hub, repo.id, ptr.oid, request, headers)
        if response is None:
            raise ObjectMissing(f"The LFS object for {path} is not available in storage")
        return response
    data = blob.data
    headers["ETag"] = f'"{blob.id}"'
    status = 200
    rng = parse_range(request.headers.get("range"), len(data))
    if rng is not None:
        start, end = rng
        headers["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
        data, status = data[start:end + 1], 206
    if request.method == "HEAD":
        headers["Content-Length"] = str(len(data))
        return Response(status_code=status, headers=headers, media_type="application/octet-stream")
    return Response(data, status_code=status, headers=headers, media_type="application/octet-stream")


def _register(prefix: str, plural: str) -> None:
    @router.api_route(f"/{prefix}{{ns}}/{{name}}/resolve/{{rest:path}}", methods=["GET", "HEAD"],
                      name=f"resolve_{plural}")
    @permission(Permission.REPO_READ)
    async def resolve(ns: str, name: str, rest: str, request: Request,
                      principal: Principal = Depends(current_principal)) -> Response:
        return await run_in_threadpool(_resolve, prefix, plural, ns, name, request, principal)


_register("datasets/", "datasets")
_register("spaces/", "spaces")
_register("", "models")
