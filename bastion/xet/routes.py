"""HTTP for the Xet CAS (api.md) under `{cas_url}` = `/xet-cas/r{repo_id}`, and signed xorb fetches.

Each route authenticates the bearer CAS token, re-establishes who obtained it (their access token or
browser session, read again), makes its one authz check -- the token's claims against the repo in the
URL, and its holder's current rights on that repo -- then calls the service. Mounted in the hub app by
default; nothing here needs the hub routes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fastapi import APIRouter, Depends, FastAPI, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.concurrency import run_in_threadpool

from bastion.api.auth import bound_principal, credential_claims, current_principal, hub_of
from bastion.api.ranges import StoredFileResponse, parse_range
from bastion.api.urls import base_url
from bastion.audit.context import set_actor
from bastion.authz import Permission, Principal, authorize, permission, require
from bastion.authz.policy import BoundCapability
from bastion.db import transaction
from bastion.errors import BadRequest, BastionError, Forbidden, NotFound, PayloadTooLarge
from bastion.hub import Hub
from bastion.lfs import allowance
from bastion.repos import browse, downloads, guards
from bastion.repos.routes import load_repo
from bastion.repos.service import repo_by_id, repo_ref_by_id, repo_region
from bastion.storage.gitstore import PR_REF_RE
from bastion.timing import timed
from bastion.xet import service, tokens
from bastion.xet.hashing import hash_to_hex, hex_to_hash
from bastion.xet.reconstruction import FetchRange, parse_byte_ranges

router = APIRouter()
CAS = tokens.CAS_PREFIX + "/{scope}"
XORB_PREFIXES = ("default",)
# api.md says `default-merkledb`; hf_xet 1.8.0 asks `default`. Accept both.
DEDUPE_PREFIXES = ("default-merkledb", "default")


def _authorize(request: Request, scope: str, perm: Permission, *, content: bool = False) -> int:
    """The repo id of this CAS URL, after the one authz check of the request. `content`: the route
    serves file contents (a reconstruction), which the token must have been minted for."""
    hub = hub_of(request)
    claims = tokens.verify(hub.settings, request.headers.get("authorization"))
    parsed = tokens.parse_scope(scope)
    repo_id = parsed[0] if parsed is not None else None
    if parsed is not None and claims.get("repo_id") == repo_id:
        # The same repo id, another incarnation (a repo deleted, its id given to a newer one), or a token
        # minted before URLs named incarnations: 401, and hf_xet asks the hub for a new token and URL.
        # A token for another repo id is the policy's 403 below.
        with transaction(hub.sessions, readonly=True) as session:
            repo = repo_by_id(session, repo_id)
            current = tokens.incarnation(repo.storage_key) if repo is not None else None
        if claims.get("repo_key") != parsed[1] or current != parsed[1]:
            raise tokens.XetTokenRejected("This Xet CAS token or URL is for a repository that no longer exists; "
                                          "request a new one")
    _require_bound(request, claims, perm, "xet-cas", {"repo_id": repo_id, "content": content},
                   tokens.XetTokenRejected("The access token or browser session this Xet token was obtained with "
                                           "is no longer valid; sign in again and request a new one"))
    assert repo_id is not None  # the check above never matches a missing id
    request.state.cas_claims = claims  # fetch URLs handed out by this request are bound like it
    return repo_id


def _require_bound(request: Request, claims: dict[str, Any], perm: Permission, kind: str, asked: dict[str, Any],
                   gone: BastionError) -> None:
    """The request's one authz check for a bound capability. Who obtained it is re-established now
    (their token or session by primary key) with the repo it names, so a revoked credential (`gone`),
    a member removed from the org or a repo made private is refused at the next request."""
    hub = hub_of(request)
    with timed("auth"), transaction(hub.sessions, readonly=True) as session:
        holder = bound_principal(hub, session, claims)
        repo = repo_ref_by_id(session, claims.get("repo_id"), holder.user_id) if holder is not None else None
    if holder is None:
        raise gone
    set_actor(holder.user_id, holder.username, holder.token_id)  # what an upload records as its actor
    request.state.cas_holder = holder  # download guards decide for the holder (repos.guards)
    request.state.cas_repo = repo
    require(Principal(method="capability", capability=claims), perm, BoundCapability(kind, asked, holder, repo))


async def _body(request: Request, limit: int) -> bytes | bytearray:
    """The request body, at most `limit` bytes. With a Content-Length it is read into one buffer of
    that size (a 64 MiB xorb is held once, not as its pieces plus their join)."""
    declared = request.headers.get("content-length")
    size = int(declared) if declared and declared.isdigit() else None
    if size is not None and size > limit:
        raise PayloadTooLarge(f"Request body larger than {limit} bytes")
    if size is None:
        parts: list[bytes] = []
        total = 0
        async for chunk in request.stream():
            total += len(chunk)
            if total > limit:
                raise PayloadTooLarge(f"Request body larger than {limit} bytes")
            parts.append(chunk)
        return b"".join(parts)
    buf = bytearray(size)
    view = memoryview(buf)
    filled = 0
    async for chunk in request.stream():
        if filled + len(chunk) > size:
            raise BadRequest(f"Request body longer than its Content-Length ({size} bytes)")
        view[filled : filled + len(chunk)] = chunk
        filled += len(chunk)
    view.release()
    if filled != size:
        raise BadRequest(f"Request body shorter than its Content-Length ({filled} of {size} bytes)")
    return buf


def _prefix(prefix: str, allowed: Sequence[str]) -> None:
    if prefix not in allowed:
        raise NotFound(f"Unknown prefix {prefix!r}")


@router.post(CAS + "/v1/xorbs/{prefix}/{xorb_hash}")
@permission(Permission.XET_CAS_WRITE)
async def upload_xorb(scope: str, prefix: str, xorb_hash: str, request: Request) -> JSONResponse:
    hub = hub_of(request)
    repo_id = _authorize(request, scope, Permission.XET_CAS_WRITE)
    _prefix(prefix, XORB_PREFIXES)
    hex_to_hash(xorb_hash)  # a malformed hash is a 400 before the body is read
    body = await _body(request, hub.settings.xet_max_xorb_bytes)
    if request.state.cas_claims.get("pr") is True:
        await run_in_threadpool(_charge_contributor, request, hub, repo_id, xorb_hash, len(body))
    inserted = await run_in_threadpool(service.upload_xorb, hub, repo_id, xorb_hash, body)
    return JSONResponse({"was_inserted": inserted})


def _charge_contributor(request: Request, hub: Hub, repo_id: int, xorb_hash: str, size: int) -> None:
    """A pull request's xorb from a holder who cannot write to the repo: charged to their daily allowance
    (bastion.lfs.allowance) before it is stored."""
    holder, repo = request.state.cas_holder, request.state.cas_repo
    if holder.user_id is None or authorize(holder, Permission.REPO_WRITE, repo):
        return
    with transaction(hub.sessions) as session:
        allowance.charge(session, hub.settings.contribution_upload_bytes_per_day, holder.user_id, repo_id,
                         [(f"xorb:{xorb_hash}", size)])


@router.head(CAS + "/v1/xorbs/{prefix}/{xorb_hash}")
@permission(Permission.XET_CAS_READ)
def head_xorb(scope: str, prefix: str, xorb_hash: str, request: Request) -> Response:
    repo_id = _authorize(request, scope, Permission.XET_CAS_READ)
    _prefix(prefix, XORB_PREFIXES)
    size = service.xorb_size_for_repo(hub_of(request), repo_id, xorb_hash)
    return Response(headers={"Content-Length": str(size)})


@router.post(CAS + "/v1/shards")
@permission(Permission.XET_CAS_WRITE)
async def upload_shard(scope: str, request: Request) -> JSONResponse:
    hub = hub_of(request)
    repo_id = _authorize(request, scope, Permission.XET_CAS_WRITE)
    body = await _body(request, hub.settings.xet_max_shard_bytes)
    await run_in_threadpool(service.upload_shard, hub, repo_id, body)
    return JSONResponse({"result": 1})


@router.get(CAS + "/v1/chunks/{prefix}/{chunk_hash}")
@permission(Permission.XET_CAS_READ)
def dedupe(scope: str, prefix: str, chunk_hash: str, request: Request) -> Response:
    repo_id = _authorize(request, scope, Permission.XET_CAS_READ)
    _prefix(prefix, DEDUPE_PREFIXES)
    shard = service.dedupe_query(hub_of(request), repo_id, chunk_hash)
    if shard is None:
        raise NotFound("Chunk not tracked for deduplication")
    return Response(shard, media_type="application/octet-stream")


@router.get(CAS + "/v1/reconstructions/{file_id}")
@permission(Permission.XET_CAS_READ)
def reconstruction_v1(scope: str, file_id: str, request: Request) -> JSONResponse:
    hub = hub_of(request)
    repo_id = _authorize(request, scope, Permission.XET_CAS_READ, content=True)
    _refuse_blocked(request, repo_id, file_id)
    plan = service.reconstruction(hub, repo_id, file_id, request.headers.get("range"))
    base, claims = _fetch_base(hub, request), request.state.cas_claims
    return JSONResponse(plan.to_v1(lambda h, r: _fetch_url(hub, base, h, r, claims)))


@router.get(CAS + "/v2/reconstructions/{file_id}")
@permission(Permission.XET_CAS_READ)
def reconstruction_v2(scope: str, file_id: str, request: Request) -> JSONResponse:
    hub = hub_of(request)
    repo_id = _authorize(request, scope, Permission.XET_CAS_READ, content=True)
    _refuse_blocked(request, repo_id, file_id)
    plan = service.reconstruction(hub, repo_id, file_id, request.headers.get("range"))
    base, claims = _fetch_base(hub, request), request.state.cas_claims
    # One range per URL: the fetch route then answers a plain 206, never multipart/byteranges.
    return JSONResponse(plan.to_v2(lambda h, rs: _fetch_url(hub, base, h, rs[0], claims), max_ranges_per_url=1))


def _refuse_blocked(request: Request, repo_id: int, file_id: str) -> None:
    """A reconstruction is a download: the download guards (block unsafe files) decide for the holder.
    The fetch URLs it hands out are the only way to a file's xorb ranges, so this covers them."""
    hub = hub_of(request)
    with transaction(hub.sessions, readonly=True) as session:
        repo = repo_by_id(session, repo_id)
        oid = service.file_oid(session, file_id)
        if repo is not None and oid is not None:
            guards.refuse_download(hub, session, repo, oid, request.state.cas_holder, f"File {file_id}")


def _fetch_base(hub: Hub, request: Request) -> str:
    base = (hub.settings.xet_cas_url or hub.settings.public_url or str(request.base_url)).rstrip("/")
    return f"{base}{tokens.CAS_PREFIX}/fetch"


def _fetch_url(hub: Hub, base: str, xorb: bytes, r: FetchRange, cas_claims: dict[str, Any]) -> str:
    key = hash_to_hex(xorb)
    return f"{base}/{key}?t={tokens.fetch_token(hub.settings, key, r.http_range, cas_claims)}"


@router.get(tokens.CAS_PREFIX + "/fetch/{xorb_hash}")
@permission(Permission.XET_XORB_FETCH)
def fetch(xorb_hash: str, request: Request) -> Response:
    """Bytes of a stored xorb, exactly the one range the URL was signed for (download-protocol.md)."""
    hub = hub_of(request)
    claims = tokens.verify_fetch(hub.settings, request.query_params.get("t") or "")
    header = request.headers.get("range")
    ranges = parse_byte_ranges(header) if header else []
    asked = f"{ranges[0][0]}-{ranges[0][1] - 1}" if len(ranges) == 1 else None
    _require_bound(request, claims, Permission.XET_XORB_FETCH, "xet-fetch", {"xorb": xorb_hash, "range": asked},
                   Forbidden("The access token or browser session this fetch URL was obtained with is no "
                             "longer valid"))
    store = service.xorb_store(hub, repo_region(hub, claims.get("repo_id")))
    path = store.xorb_path(xorb_hash)
    if path is not None:
        # StoredFileResponse serves the single Range (206) from disk without loading it into memory.
        return StoredFileResponse(path, media_type="application/octet-stream")
    stored = store.xorbs.stored_object(xorb_hash)  # object storage: one ranged read, streamed
    if stored is None:
        raise NotFound("Xorb not available")
    status, start, end = 200, 0, stored.size
    headers = {"Accept-Ranges": "bytes"}
    rng = parse_range(header, stored.size)
    if rng is not None:
        status, start, end = 206, rng[0], rng[1] + 1
        headers["Content-Range"] = f"bytes {start}-{end - 1}/{stored.size}"
    headers["Content-Length"] = str(end - start)
    if request.method == "HEAD":
        return Response(status_code=status, headers=headers, media_type="application/octet-stream")
    return StreamingResponse(stored.iter_bytes(start, end), status_code=status, headers=headers,
                             media_type="application/octet-stream")


# ---- CAS tokens: the Hub routes the client asks before it reads or writes through Xet ----------

@router.get("/api/{plural}/{ns}/{name}/xet-write-token/{revision:path}")
@permission(Permission.REPO_WRITE, Permission.REPO_CONTENT_UPLOAD)  # a branch / a pull request's contents
def xet_write_token(plural: str, ns: str, name: str, revision: str, request: Request,
                    principal: Principal = Depends(current_principal)) -> JSONResponse:
    return _xet_token(plural, ns, name, revision, request, principal, "write")


@router.get("/api/{plural}/{ns}/{name}/xet-read-token/{revision:path}")
@permission(Permission.REPO_READ)
def xet_read_token(plural: str, ns: str, name: str, revision: str, request: Request,
                   principal: Principal = Depends(current_principal)) -> JSONResponse:
    return _xet_token(plural, ns, name, revision, request, principal, "read")


def _xet_token(plural: str, ns: str, name: str, revision: str, request: Request, principal: Principal,
               scope: str) -> JSONResponse:
    """A short-lived CAS token for this repo (auth.md), after the same check as any read or write."""
    hub = hub_of(request)
    # The client asks with revision "None" when it will open a PR (the ref is not known yet).
    opens_pr = (request.query_params.get("create_pr") or "").lower() in ("1", "true", "yes")
    # A write token for a pull request's contents (one it opens, or refs/pr/N) is for anyone who may upload
    # for one (REPO_CONTENT_UPLOAD: readers too); any other write token needs write access, and its holder
    # keeps being held to the same right at every CAS request (policy._authorize_xet_cas).
    for_pr = scope == "write" and (opens_pr or PR_REF_RE.match(revision) is not None)
    perm = Permission.REPO_READ if scope != "write" else (
        Permission.REPO_CONTENT_UPLOAD if for_pr else Permission.REPO_WRITE)
    with transaction(hub.sessions, readonly=True) as session:
        repo = load_repo(hub, session, principal, plural, ns, name, perm)
    if not (scope == "write" and (revision == "None" or opens_pr)):
        hub.git(repo.storage_key).resolve(revision)  # RevisionNotFound for an unknown ref
    token = tokens.issue(hub.settings, base_url(request), repo.id, tokens.incarnation(repo.storage_key), scope,
                         revision, credential_claims(principal), pull_request=for_pr)
    return JSONResponse(token.as_json(), headers=token.headers())


def _xet_hash_lookup(hub: Hub) -> browse.XetHashLookup:
    def lookup(oids: Sequence[str]) -> dict[str, str]:
        return service.xet_hashes_for_oids(hub, oids)

    return lookup


def _download_headers(request: Request, hub: Hub, repo_id: int, plural: str, ns: str, name: str, commit: str,
                      oid: str) -> dict[str, str]:
    """Advertise Xet on a `resolve` (§6 of the client notes) only for a file this repo's CAS token can
    reconstruct: a client without hf_xet, or with HF_HUB_DISABLE_XET=1, ignores the headers and GETs it."""
    with transaction(hub.sessions) as session:
        xet_hash = service.xet_hash_for_repo_file(session, repo_id, oid)
    if xet_hash is None:
        return {}
    refresh = f"{base_url(request)}/api/{plural}/{ns}/{name}/xet-read-token/{commit}"
    return {"X-Xet-Hash": xet_hash, "Link": f'<{refresh}>; rel="xet-auth"'}


def install(app: FastAPI, hub: Hub) -> None:
    """Mount the CAS routes and the CAS token routes; let tree listings advertise `xetHash` and
    downloads `X-Xet-Hash` for files Xet can serve."""
    app.include_router(router)
    browse.xet_hash_lookup = _xet_hash_lookup(hub)
    if _download_headers not in downloads.lfs_download_headers:
        downloads.lfs_download_headers.append(_download_headers)

