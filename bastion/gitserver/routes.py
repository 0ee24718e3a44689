"""Git smart HTTP at the Hub's URLs (`/{ns}/{name}[.git]`, `/datasets/…`, `/spaces/…`) and the
loopback endpoints the receive hooks call back into.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from bastion.api.auth import current_principal, hub_of
from bastion.api.bodies import parse_json
from bastion.api.urls import base_url
from bastion.audit import AuditContext, bind_context
from bastion.audit import record as audit_record
from bastion.audit.actions import AuditAction
from bastion.authz import Permission, Principal, authorize, permission, require
from bastion.authz import capability as cap
from bastion.db import transaction
from bastion.errors import (
    AuthenticationRequired,
    BadRequest,
    BastionError,
    Conflict,
    Forbidden,
    GatedRepo,
    InvalidCredentials,
    NotFound,
    PayloadTooLarge,
    RepoNotFound,
)
from bastion.gitserver import service, transport
from bastion.hub import Hub
from bastion.lfs import allowance
from bastion.repos import commit as repo_commit
from bastion.repos import service as repos
from bastion.repos.service import repo_by_id
from bastion.tokens import service as tokens

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from bastion.repos.models import Repo

log = logging.getLogger("bastion.gitserver")
router = APIRouter()
# A push's connection needs the right to upload for a commit (anyone signed in who reads the repo, as for LFS);
# each push is then judged by the refs it moves (`_require_push`): branches and tags need write access,
# refs/pr/N its author while open (the Hub's `git push origin HEAD:refs/pr/N`) or the writers.
SERVICES = {"git-upload-pack": Permission.REPO_READ, "git-receive-pack": Permission.REPO_CONTENT_UPLOAD}
REALM = {"WWW-Authenticate": 'Basic realm="Bastion", charset="UTF-8"'}
ANONYMOUS_DENIED = "Authentication required: use your username and a Bastion access token as password.\n"
HOOK_PREFIX = "/api/internal/git-hooks/"
# upload-pack: partial clones (--filter) are worth allowing for large model repos.
UPLOAD_PACK = ["-c", "uploadpack.allowFilter=true", "upload-pack", "--stateless-rpc"]


def _text(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    # git prints a text/plain error body line by line as "remote: …".
    return Response(message if message.endswith("\n") else message + "\n", status_code=status,
                    media_type="text/plain; charset=utf-8", headers={**(headers or {}), "Cache-Control": "no-cache"})


def _denied(request: Request, exc: BastionError, principal: Principal | None) -> Response:
    """Private stays invisible: anonymous callers get one 401 challenge for missing, private and
    write-protected repos alike; signed-in callers without access get one 404 for missing and private.
    A gated repo's files: the Hub's gate text (anonymous callers are challenged, to sign in).
    """
    if isinstance(exc, GatedRepo):
        return _text(exc.status, exc.text(base_url(request)), REALM if exc.status == 401 else None)
    if isinstance(exc, InvalidCredentials):
        return _text(401, "Invalid credentials: use a Bastion access token as password "
                          "(account passwords are not accepted for git).", REALM)
    anonymous = principal is None or not principal.authenticated
    # Missing, private, and public-but-needs-write all answer alike to an anonymous caller.
    if anonymous and isinstance(exc, RepoNotFound | AuthenticationRequired | NotFound):
        return _text(401, ANONYMOUS_DENIED, REALM)
    if isinstance(exc, NotFound):
        return _text(404, "Repository not found")
    return _text(exc.status, exc.message)


def _authorize(hub: Hub, request: Request, plural: str, ns: str, name: str, perm: Permission,
               ) -> tuple[Principal, Repo]:
    """Who is calling and the repo they may use: the route's one authz check."""
    principal = current_principal(request)
    if principal.method != "token":
        # Git authenticates with tokens only: a browser's session cookie must not ride along.
        principal = Principal.anonymous()
        request.state.principal = principal
    repo_name = name.removesuffix(".git")
    with transaction(hub.sessions) as session:
        try:
            repo = repos.find_repo(session, repos.TYPE_BY_PLURAL[plural], ns, repo_name)
        except NotFound:
            raise RepoNotFound() from None
        require(principal, perm, repos.repo_ref(repo, principal.user_id))
    return principal, repo


async def _authorized(request: Request, plural: str, ns: str, name: str, perm: Permission,
                      ) -> tuple[Principal, Repo] | Response:
    hub = hub_of(request)
    try:
        return await run_in_threadpool(_authorize, hub, request, plural, ns, name, perm)
    except BastionError as exc:
        return _denied(request, exc, getattr(request.state, "principal", None))


def _pkt(data: bytes) -> bytes:
    return b"%04x" % (len(data) + 4) + data


def _hook_url(request: Request) -> str:
    """Where the hooks reach this server: the local address this request came in on."""
    server = request.scope.get("server")
    if server and server[1]:
        host = str(server[0] or "127.0.0.1")
        host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)  # noqa: S104
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{server[1]}{HOOK_PREFIX}"
    public = hub_of(request).settings.public_url
    if public:
        return public.rstrip("/") + HOOK_PREFIX
    raise BadRequest("This server cannot accept pushes: it does not know its own address "
                     "(set BASTION_PUBLIC_URL)")


def _receive_pack_args(hub: Hub, max_input: int | None = None) -> list[str]:
    """`max_input`: the most bytes of pack git accepts (a contributor's remaining allowance; None: no bound)."""
    hooks = transport.ensure_hooks(hub.settings.resolved_data_dir)
    bound = ["-c", f"receive.maxInputSize={max_input}"] if max_input is not None else []
    return [*bound, "-c", f"core.hooksPath={hooks}",
            # Every ref update goes through the proc-receive hook: Bastion moves refs, not git.
            "-c", "receive.procReceiveRefs=refs",
            "-c", "receive.fsckObjects=true",
            "-c", "receive.advertisePushOptions=true",  # git push -o secrets-bypass=<reason>
            "receive-pack", "--stateless-rpc"]


def _register(prefix: str, plural: str) -> None:
    @router.get(f"/{prefix}{{ns}}/{{name}}/info/refs", name=f"git_info_refs_{plural}")
    @permission(Permission.REPO_READ, Permission.REPO_CONTENT_UPLOAD)  # git-upload-pack / git-receive-pack
    async def info_refs(ns: str, name: str, request: Request) -> Response:
        svc = request.query_params.get("service")
        if svc not in SERVICES:
            return _text(403, "Bastion serves git over the smart HTTP protocol only (git 1.6.6 or newer).")
        checked = await _authorized(request, plural, ns, name, SERVICES[svc])
        if isinstance(checked, Response):
            return checked
        _principal, repo = checked
        hub = hub_of(request)
        protocol = request.headers.get("git-protocol")
        v2 = svc == "git-upload-pack" and "version=2" in (protocol or "")
        env = transport.git_env(hub.settings.resolved_data_dir, protocol if svc == "git-upload-pack" else None)
        args = UPLOAD_PACK if svc == "git-upload-pack" else _receive_pack_args(hub)
        # As git http-backend: protocol v2 starts with its capabilities, v0 with a service line.
        prefix_pkt = b"" if v2 else _pkt(f"# service={svc}\n".encode()) + b"0000"
        stream = await transport.run_service(svc, [*args, "--advertise-refs", str(hub.git_path(repo.storage_key))],
                                             env, None, prefix=prefix_pkt)
        response = transport.GitResponse(stream, f"application/x-{svc}-advertisement")
        response.headers.update({"Cache-Control": "no-cache, max-age=0, must-revalidate",
                                 "Expires": "Fri, 01 Jan 1980 00:00:00 GMT", "Pragma": "no-cache"})
        return response

    @router.post(f"/{prefix}{{ns}}/{{name}}/git-upload-pack", name=f"git_upload_pack_{plural}")
    @permission(Permission.REPO_READ)
    async def upload_pack(ns: str, name: str, request: Request) -> Response:
        checked = await _authorized(request, plural, ns, name, Permission.REPO_READ)
        if isinstance(checked, Response):
            return checked
        _principal, repo = checked
        hub = hub_of(request)
        try:
            gzipped = transport.check_gzip(request.headers.get("content-encoding"))
        except BadRequest as exc:
            return _text(415, exc.message)
        env = transport.git_env(hub.settings.resolved_data_dir, request.headers.get("git-protocol"))
        stream = await transport.run_service("git-upload-pack", [*UPLOAD_PACK, str(hub.git_path(repo.storage_key))],
                                             env, request.stream(), gzipped=gzipped)
        return transport.GitResponse(stream, "application/x-git-upload-pack-result")

    @router.post(f"/{prefix}{{ns}}/{{name}}/git-receive-pack", name=f"git_receive_pack_{plural}")
    @permission(Permission.REPO_CONTENT_UPLOAD)
    async def receive_pack(ns: str, name: str, request: Request) -> Response:
        checked = await _authorized(request, plural, ns, name, Permission.REPO_CONTENT_UPLOAD)
        if isinstance(checked, Response):
            return checked
        principal, repo = checked
        hub = hub_of(request)
        budget = await run_in_threadpool(_pack_budget, hub, principal, repo.id)
        if budget == 0:
            return _text(429, "Your allowance for pull-request content on repositories you cannot write to is spent "
                              "for the last 24 hours; try again later, or ask the repository's maintainers for "
                              "write access.")
        try:
            gzipped = transport.check_gzip(request.headers.get("content-encoding"))
            hook_url = _hook_url(request)
        except BadRequest as exc:
            return _text(400, exc.message)
        push_id = service.new_push_id()
        # The hooks prove they belong to this push with a token only this server can sign; it
        # carries who pushes from where so the audit trail names the pusher, not the hook.
        claims = {"push": push_id, "repo_id": repo.id, "user_id": principal.user_id, "token_id": principal.token_id,
                  "ip": request.state.client_ip, "ua": (request.headers.get("user-agent") or "")[:512],
                  "rid": request.state.request_id, "user": principal.username}
        token = cap.sign(hub.settings.secret_key, service.PUSH_PURPOSE, claims, service.PUSH_TTL_SECONDS)
        env = transport.git_env(hub.settings.resolved_data_dir, None)
        env.update({"BASTION_HOOK_URL": hook_url, "BASTION_PUSH_TOKEN": token})
        await run_in_threadpool(service.sweep_stale_quarantines, hub.git_path(repo.storage_key))
        stream = await transport.run_service(
            "git-receive-pack", [*_receive_pack_args(hub, budget), str(hub.git_path(repo.storage_key))], env,
            request.stream(), gzipped=gzipped, kill_on_disconnect=False,
            on_exit=lambda: service.discard_approval(hub, push_id))
        return transport.GitResponse(stream, "application/x-git-receive-pack-result")


_register("datasets/", "datasets")
_register("spaces/", "spaces")
_register("", "models")


# ---- the receive hooks' loopback endpoints ------------------------------------------------------

async def _hook_request(request: Request) -> tuple[dict[str, Any], dict[str, Any]]:
    hub = hub_of(request)
    claims = cap.verify(hub.settings.secret_key, service.PUSH_PURPOSE, request.headers.get("x-bastion-push", ""))
    body = await request.body()
    if len(body) > 64 << 20:
        raise PayloadTooLarge("hook request too large")
    data = parse_json(body, "hook request")
    if not isinstance(data, dict):
        raise BadRequest("hook request must be a JSON object")
    return claims, data


def _push_context(claims: dict[str, Any]) -> AuditContext:
    return AuditContext(actor_id=claims.get("user_id"), actor_name=claims.get("user"), ip=claims.get("ip"),
                        user_agent=claims.get("ua") or None, token_id=claims.get("token_id"),
                        request_id=claims.get("rid"), via="git")


def _pack_budget(hub: Hub, principal: Principal, repo_id: int) -> int | None:
    """How many bytes of pack this push may bring: no bound for the repo's writers; for others (a pull request's
    author) what remains of their daily contribution allowance (`lfs.allowance`)."""
    with transaction(hub.sessions, readonly=True) as session:
        repo = repo_by_id(session, repo_id)
        if repo is None or authorize(principal, Permission.REPO_WRITE, repos.repo_ref(repo)):
            return None
        return allowance.remaining(session, hub.settings.contribution_upload_bytes_per_day, principal.user_id or 0)


def _require_push(session: Session, principal: Principal, repo: Repo, updates: list[service.RefUpdate]) -> bool:
    """The push's one authz check, by the refs it moves (`repos.commit.commit_right`, as the commit API): a push
    to one pull request's ref is its author's (while open) or the writers'; anything else the writers'.
    Returns whether the pusher may write to the repo (others are charged for the pack they bring)."""
    ref = repos.repo_ref(repo)
    names = {u.ref for u in updates}
    perm, resource = repo_commit.commit_right(session, repo, ref, names.pop() if len(names) == 1 else "")
    require(principal, perm, resource)
    return perm is Permission.REPO_WRITE or bool(authorize(principal, Permission.REPO_WRITE, ref))


def _pusher(hub: Hub, claims: dict[str, Any], updates: list[service.RefUpdate], options: object = None,
            ) -> tuple[Principal, Repo, dict[str, str], bool]:
    """The pusher, re-checked now (token still live, still allowed to move these refs): the route's one authz
    check.

    Also checks the push's `-o` options: a mistyped one, or a bypass the pusher may not ask for,
    ends the push before its objects are walked. Returns the commit options they ask for, and whether the
    pusher writes to the repo.
    """
    with transaction(hub.sessions) as session:
        repo = repo_by_id(session, claims["repo_id"])
        if repo is None:
            raise RepoNotFound()
        tok = service.live_token(session, claims["token_id"])
        if tok.user_id != claims["user_id"]:
            raise InvalidCredentials("token does not belong to the pusher")
        principal = tokens.principal_for_token(tok)
        writer = _require_push(session, principal, repo, updates)
        commit_options = repos.secrets_bypass_options(principal, repo, service.parse_push_options(options))
    return principal, repo, commit_options, writer


@router.post(f"{HOOK_PREFIX}pre-receive")
@permission(Permission.REPO_WRITE, Permission.REPO_PR_WRITE)
async def pre_receive(request: Request) -> JSONResponse:
    """Check a quarantined push: refs it may move, paths, sizes, LFS objects, locks."""
    hub = hub_of(request)
    claims, data = await _hook_request(request)
    updates = service.parse_commands(data.get("commands"))
    quarantine = data.get("quarantine")
    if quarantine is not None and not isinstance(quarantine, str):
        raise BadRequest("'quarantine' must be a path")

    def run() -> service.CheckResult:
        try:
            principal, repo, options, writer = _pusher(hub, claims, updates, data.get("options"))
        except (BadRequest, Forbidden) as exc:
            return service.CheckResult(False, ["Bastion rejected this push:", f"  - {exc.message}"])
        target = ("repo", f"{repo.type}/{repo.repo_id}")
        with bind_context(_push_context(claims)):
            git = service.open_quarantined(hub, repo, quarantine)
            # Every check reads the quarantined objects: a refused push fails here, and git then deletes
            # its quarantine, so nothing of it ever becomes part of the repository.
            with service.quarantine_visible(git, quarantine):
                # The walk over new commits runs outside any DB transaction (SQLite's lock is global).
                scan = service.scan_push(hub, repo, git, updates)
                with transaction(hub.sessions) as session:
                    result = service.judge_push(session, repo, principal.user_id or 0, scan)
                    if result.ok and not writer:
                        result = service.charge_pack(hub, session, repo, principal.user_id or 0, claims["push"],
                                                     quarantine)
                    if not result.ok:
                        audit_record(session, AuditAction.REPO_PUSH_REJECTED, target=target,
                                     namespace=repo.namespace,
                                     details={"refs": [u.ref for u in updates], "problems": scan.problems[:50]})
                if result.ok:
                    try:
                        # Its own transaction: a refusal rolls it back, and the refusal's own audit
                        # (push protection, block unsafe files) is then written.
                        with transaction(hub.sessions) as session:
                            result = service.admit_push(hub, session, repo.id, updates, scan, options)
                    except (BadRequest, Forbidden) as exc:
                        result = service.CheckResult(False, ["Bastion rejected this push:", f"  - {exc.message}"])
                        with transaction(hub.sessions) as session:
                            audit_record(session, AuditAction.REPO_PUSH_REJECTED, target=target,
                                         namespace=repo.namespace,
                                         details={"refs": [u.ref for u in updates], "problems": [exc.message[:2000]]})
            if result.ok:
                service.save_approval(hub, claims["push"], updates, scan.brought)
        return result

    result = await run_in_threadpool(run)
    return JSONResponse({"ok": result.ok, "messages": result.messages})


@router.post(f"{HOOK_PREFIX}proc-receive")
@permission(Permission.REPO_WRITE, Permission.REPO_PR_WRITE)
async def proc_receive(request: Request) -> JSONResponse:
    """Move the refs of a push that passed pre-receive, as the API's commit path does."""
    hub = hub_of(request)
    claims, data = await _hook_request(request)
    updates = service.parse_commands(data.get("commands"))
    atomic = data.get("atomic") is True

    def run() -> list[service.RefResult]:
        approved, brought = service.load_approval(hub, claims["push"])
        try:
            with bind_context(_push_context(claims)), transaction(hub.sessions) as session:
                # Lock order as in repos/commit.py: this transaction first, the repo's flock inside.
                repo = repo_by_id(session, claims["repo_id"])
                if repo is None:
                    raise RepoNotFound()
                tok = service.live_token(session, claims["token_id"])
                principal = tokens.principal_for_token(tok)
                if tok.user_id != claims["user_id"]:
                    raise InvalidCredentials("token does not belong to the pusher")
                _require_push(session, principal, repo, updates)
                options = repos.secrets_bypass_options(principal, repo, service.parse_push_options(data.get("options")))
                return service.apply_push(hub, session, repo, updates, atomic, approved, brought, options)
        except (Conflict, Forbidden) as exc:  # a lost race, or push protection: each ref says why
            return [service.RefResult(u.ref, False, f"not updated: {exc.message}") for u in updates]
        finally:
            service.discard_approval(hub, claims["push"])

    results = await run_in_threadpool(run)
    return JSONResponse({"results": [{"ref": r.ref, "ok": r.ok, "reason": r.reason} for r in results],
                         "messages": []})
