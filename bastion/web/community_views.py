"""The Community tab in a browser: a repo's discussions and pull requests (`/{repo}/discussions`), one of them
with its comments and events (`/{repo}/discussions/{num}`), and for a pull request its changed files, their
scan results and its diff; CSRF-protected forms to open a discussion, comment, close, reopen and merge.

Pages only: every change is the same service call the JSON API makes, after the same one check.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Depends, Request, Response
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from bastion.api.auth import current_principal
from bastion.api.params import decimal
from bastion.api.urls import URL_PREFIX
from bastion.authz import DiscussionRef, Permission, Principal, authorize, permission, require
from bastion.community import service
from bastion.db import transaction
from bastion.errors import BadRequest, NotFound, RepoNotFound
from bastion.repos import service as repos
from bastion.scanning import verdicts
from bastion.storage.gitstore import DEFAULT_BRANCH, parse_lfs_pointer
from bastion.web.pages import HtmlRoute, check_csrf, hub_of, redirect, render

router = APIRouter(route_class=HtmlRoute)
PREFIXES = {"dataset": "/datasets", "space": "/spaces", "model": ""}
MAX_FILES_SHOWN = 1000
FORM_FIELDS = 8
HEAD_RE = re.compile(r"[0-9a-f]{40}")


def _base(repo: Any) -> str:
    return f"/{URL_PREFIX[repo.type]}{repo.repo_id}"


def _find(session: Session, repo_type: str, ns: str, name: str) -> Any:
    try:
        return repos.find_repo(session, repo_type, ns, name)
    except NotFound:
        raise RepoNotFound() from None


def _num(value: str) -> int:
    num = decimal(value)
    if not num:
        raise NotFound(f"No discussion {value!r}")
    return num


def _header(hub: Any, repo: Any) -> dict[str, Any]:
    from bastion.repos import browse

    refs = browse.refs_payload(hub.git(repo.storage_key), include_prs=False)
    return {"repo": repo, "base": _base(repo), "rev": DEFAULT_BRANCH, "branches": [b["name"] for b in refs["branches"]],
            "tags": [t["name"] for t in refs["tags"]]}


def _files(hub: Any, session: Session, principal: Principal, repo: Any, d: Any) -> list[dict[str, Any]]:
    """The pull request's changed files with their scan status (secret findings only for managers)."""
    git = hub.git(repo.storage_key)
    rows: list[dict[str, Any]] = []
    for change in service.changed_paths(git, d)[:MAX_FILES_SHOWN]:
        key = None
        if change.blob:
            # Only a small blob can be a pointer: the others' sizes are read, not their bytes.
            small = git.repo.odb.read_header(change.blob)[1] <= 1024
            pointer = parse_lfs_pointer(git.repo[change.blob].data) if small else None
            key = pointer.oid if pointer is not None else change.blob
        rows.append({"path": change.path, "status": change.status, "key": key})
    statuses = verdicts.file_statuses(hub, session, [r["key"] for r in rows if r["key"]],
                                      verdicts.secrets_visible(principal, repo))
    for r in rows:
        r["security"] = statuses.get(r["key"]) if r["key"] else None
    return rows


def _add_routes(repo_type: str) -> None:
    p = PREFIXES[repo_type]

    def discussions(ns: str, name: str, request: Request,
                    principal: Principal = Depends(current_principal)) -> Response:
        hub = hub_of(request)
        status = request.query_params.get("status", "open")
        status = status if status in ("open", "closed", "all") else "open"
        kind = request.query_params.get("type", "all")
        kind = kind if kind in ("all", "discussion", "pull_request") else "all"
        page_no = decimal(request.query_params.get("p", "0"), 1_000_000) or 0
        with transaction(hub.sessions, readonly=True) as session:
            repo = _find(session, repo_type, ns, name)
            ref = repos.repo_ref(repo, principal.user_id)
            require(principal, Permission.REPO_METADATA_READ, ref)
            page = service.list_discussions(session, repo, kind=kind, status=status, page=page_no)
            may_open = bool(authorize(principal, Permission.REPO_DISCUSSION_CREATE, ref))
            more = page.start + len(page.rows) < page.count
            return render(request, "discussions.html", **_header(hub, repo), rows=page.rows, count=page.count,
                          current=status, kind=kind, page=page_no, more=more, may_open=may_open)

    def discussion(ns: str, name: str, num: str, request: Request,
                   principal: Principal = Depends(current_principal)) -> Response:
        hub = hub_of(request)
        n = _num(num)
        with transaction(hub.sessions, readonly=True) as session:
            repo = _find(session, repo_type, ns, name)
            ref = repos.repo_ref(repo, principal.user_id)
            require(principal, Permission.REPO_METADATA_READ, ref)
            d = service.get_discussion(session, repo, n)
            rows = service.events(session, d)
            users = service.users_of(session, d, rows)
            git = hub.git(repo.storage_key)
            timeline: list[tuple[Any, dict[str, Any]]] = [
                (e.created_at, {"kind": e.kind, "event": e, "author": users.get(e.author_user_id)}) for e in rows]
            files, diff, conflicts, can_read, head = [], "", [], False, ""
            if d.is_pull_request:
                tip = git.branch_head(f"refs/pr/{d.num}")
                head = str(tip) if tip is not None else ""  # what the merge form merges: what this page shows
                timeline += [(c.at, {"kind": "commit", "commit": c}) for c in service.pull_commits(git, d)]
                conflicts = service.conflicting_files(git, d)
                # File names and scan results are metadata; the diff shows contents (a gated repo's gate).
                files = _files(hub, session, principal, repo, d)
                can_read = bool(authorize(principal, Permission.REPO_READ, ref))
                diff = service.diff_text(git, d) if can_read else ""
            first, rest = timeline[:1], sorted(timeline[1:], key=lambda pair: pair[0].timestamp())
            own = DiscussionRef(ref, d.author_user_id, d.status in ("open", "draft"))
            return render(request, "discussion.html", **_header(hub, repo), d=d, author=users.get(d.author_user_id),
                          timeline=[item for _, item in first + rest], files=files, diff=diff, conflicts=conflicts,
                          head=head,
                          can_read=can_read, hidden_text=service.HIDDEN_TEXT,
                          may_comment=bool(authorize(principal, Permission.REPO_DISCUSSION_COMMENT, ref)),
                          may_moderate=bool(authorize(principal, Permission.REPO_DISCUSSION_MODERATE, own)),
                          may_merge=d.is_pull_request and d.status in ("open", "draft")
                          and bool(authorize(principal, Permission.REPO_PR_MERGE, ref)))

    async def open_discussion(ns: str, name: str, request: Request,
                              principal: Principal = Depends(current_principal)) -> Response:
        hub = hub_of(request)
        form = await request.form(max_files=0, max_fields=FORM_FIELDS)

        def run() -> str:
            with transaction(hub.sessions) as session:
                repo = _find(session, repo_type, ns, name)
                require(principal, Permission.REPO_DISCUSSION_CREATE, repos.repo_ref(repo, principal.user_id))
                check_csrf(request, form)
                d = service.create_discussion(hub, session, repo, service.actor_of(session, principal.user_id),
                                              form.get("title"), form.get("description") or None, False)
                return service.page_path(repo, d.num)

        return redirect(await run_in_threadpool(run))

    def _acting(perm: Permission, act: Callable[[Any, Session, Any, Any, Any, Any], None]) -> Callable[..., Any]:
        async def view(ns: str, name: str, num: str, request: Request,
                       principal: Principal = Depends(current_principal)) -> Response:
            hub = hub_of(request)
            n = _num(num)
            form = await request.form(max_files=0, max_fields=FORM_FIELDS)

            def run() -> str:
                with transaction(hub.sessions) as session:
                    repo = _find(session, repo_type, ns, name)
                    ref = repos.repo_ref(repo, principal.user_id)
                    try:
                        d = service.get_discussion(session, repo, n)
                    except NotFound:
                        require(principal, Permission.REPO_METADATA_READ, ref)
                        raise
                    require(principal, perm, ref if perm is not Permission.REPO_DISCUSSION_MODERATE
                            else DiscussionRef(ref, d.author_user_id, d.status in ("open", "draft")))
                    check_csrf(request, form)
                    act(hub, session, repo, d, service.actor_of(session, principal.user_id), form)
                    return service.page_path(repo, d.num)

            return redirect(await run_in_threadpool(run))

        return view

    def comment(hub: Any, session: Session, repo: Any, d: Any, actor: Any, form: Any) -> None:
        service.add_comment(hub, session, repo, d, actor, form.get("comment"))

    def status(hub: Any, session: Session, repo: Any, d: Any, actor: Any, form: Any) -> None:
        if form.get("status") not in ("open", "closed"):
            raise BadRequest("Choose 'open' or 'closed'")
        service.change_status(hub, session, repo, d, actor, form.get("status"), form.get("comment") or None)

    def merge(hub: Any, session: Session, repo: Any, d: Any, actor: Any, form: Any) -> None:
        # The head the page showed: a pull request its author moved since is not merged unread.
        head = form.get("head") or None
        if head is not None and (not isinstance(head, str) or not HEAD_RE.fullmatch(head)):
            raise BadRequest("'head' must be the commit id the page showed")
        service.merge(hub, session, repo, d, actor, form.get("comment") or None, head)

    read = Permission.REPO_METADATA_READ
    views: list[tuple[str, Callable[..., Any], tuple[Permission, ...], str]] = [
        ("/{ns}/{name}/discussions", discussions, (read,), "GET"),
        ("/{ns}/{name}/discussions", open_discussion, (Permission.REPO_DISCUSSION_CREATE,), "POST"),
        ("/{ns}/{name}/discussions/{num}", discussion, (read,), "GET"),
        ("/{ns}/{name}/discussions/{num}/comment",
         _acting(Permission.REPO_DISCUSSION_COMMENT, comment), (Permission.REPO_DISCUSSION_COMMENT, read), "POST"),
        ("/{ns}/{name}/discussions/{num}/status",
         _acting(Permission.REPO_DISCUSSION_MODERATE, status), (Permission.REPO_DISCUSSION_MODERATE, read), "POST"),
        ("/{ns}/{name}/discussions/{num}/merge",
         _acting(Permission.REPO_PR_MERGE, merge), (Permission.REPO_PR_MERGE, read), "POST")]
    for path, view, perms, method in views:
        view.__name__ = f"{repo_type}_{method.lower()}_{path.rsplit('/', 1)[-1].strip('{}')}"
        router.add_api_route(p + path, permission(*perms)(view), methods=[method])


for _type in ("dataset", "space", "model"):
    _add_routes(_type)

