"""The Hub's discussion and pull request API: `/api/{type}s/{repo}/discussions[/{num}[/comment|/status|/title|
/merge|/comment/{id}/edit|/comment/{id}/hide]]`. Parse → find the repo (and the discussion) → authz.require
(once) → service → the Hub's JSON (what `huggingface_hub.community` reads).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from bastion.api.auth import current_principal, hub_of
from bastion.api.bodies import json_object
from bastion.api.params import decimal
from bastion.api.urls import base_url
from bastion.authz import DiscussionRef, Permission, Principal, authorize, permission, require
from bastion.community import service
from bastion.db import transaction
from bastion.errors import BadRequest, NotFound, RepoNotFound
from bastion.hub import Hub
from bastion.repos import service as repos
from bastion.repos.routes import _type

router = APIRouter()
BASE = "/api/{plural}/{ns}/{name}/discussions"


# ---- JSON shapes (the Hub's) -----------------------------------------------------------------------

def iso(when: datetime | None) -> str | None:
    return when.isoformat().replace("+00:00", "Z") if when is not None else None


def author_json(user: Any) -> dict[str, Any] | None:
    if user is None:
        return None  # a deleted account: the client shows "deleted"
    return {"name": user.name, "fullname": user.fullname or user.name, "type": "user", "avatarUrl": "",
            "isPro": False, "isHf": False}


def _with_author(payload: dict[str, Any], user: Any) -> dict[str, Any]:
    who = author_json(user)
    if who is not None:
        payload["author"] = who
    return payload


def discussion_json(repo: Any, d: Any, author: Any) -> dict[str, Any]:
    return _with_author({"num": d.num, "title": d.title, "status": d.status, "createdAt": iso(d.created_at),
                         "isPullRequest": d.is_pull_request, "pinned": False, "locked": False,
                         "repo": {"name": repo.repo_id, "type": repo.type}, "topReactions": [],
                         "numReactionUsers": 0}, author)


def event_json(e: Any, users: dict[Any, Any]) -> dict[str, Any]:
    base: dict[str, Any] = {"id": e.public_id, "type": e.kind, "createdAt": iso(e.created_at)}
    _with_author(base, users.get(e.author_user_id))
    if e.kind == "status-change":
        base["data"] = {"status": e.data.get("status")}
    elif e.kind == "title-change":
        base["data"] = {"from": e.data.get("from"), "to": e.data.get("to")}
    else:
        # A hidden comment's text is gone (erased when hidden): nothing of it can be sent.
        raw = service.HIDDEN_TEXT if e.hidden else (e.content or "")
        latest = _with_author({"raw": raw, "html": _html(raw), "updatedAt": iso(e.updated_at or e.created_at)},
                              users.get(e.updated_by_user_id or e.author_user_id))
        history = [] if e.hidden else [
            _with_author({"raw": h.get("raw", ""), "html": _html(h.get("raw", "")), "updatedAt": h.get("updatedAt")},
                         users.get(h.get("author"))) for h in (e.history or [])]
        base["data"] = {"edited": bool(e.edited), "hidden": bool(e.hidden), "latest": latest,
                        "numEdits": len(e.history or []), "history": history, "editors": [],
                        "reactions": [], "isReport": False}
    return base


def commit_event_json(c: service.PullCommit) -> dict[str, Any]:
    return {"id": c.oid[:24], "type": "commit", "createdAt": iso(c.at), "author": {"name": c.author_name,
                                                                                 "type": "user"},
            "data": {"subject": c.summary, "oid": c.oid}}


def _html(raw: str) -> str:
    """Comments are plain text on this hub (no Markdown renderer, so no HTML from users): escaped, in a <p>."""
    from html import escape

    return f"<p>{escape(raw)}</p>" if raw else ""


# ---- loading -----------------------------------------------------------------------------------------

def _find_repo(session: Session, plural: str, ns: str, name: str) -> Any:
    try:
        return repos.find_repo(session, _type(plural), ns, name)
    except NotFound:
        raise RepoNotFound() from None


def _load(hub: Hub, session: Session, principal: Principal, plural: str, ns: str, name: str,
          perm: Permission) -> Any:
    repo = _find_repo(session, plural, ns, name)
    require(principal, perm, repos.repo_ref(repo, principal.user_id))
    return repo


def _load_discussion(session: Session, principal: Principal, plural: str, ns: str, name: str, num: int,
                     perm: Permission, comment_id: str | None = None) -> tuple[Any, Any, Any]:
    """The repo, the discussion (and the comment) and the one check of `perm` on them: a DiscussionRef naming
    the author of what is acted on. A missing one is a 404 for those who may see the repo (a check of
    REPO_METADATA_READ), RepositoryNotFound for the others."""
    repo = _find_repo(session, plural, ns, name)
    ref = repos.repo_ref(repo, principal.user_id)
    try:
        d = service.get_discussion(session, repo, num)
        comment = service.get_comment(session, d, comment_id) if comment_id is not None else None
    except NotFound:
        require(principal, Permission.REPO_METADATA_READ, ref)
        raise
    author = comment.author_user_id if comment is not None else d.author_user_id
    require(principal, perm, ref if perm is Permission.REPO_METADATA_READ
            else DiscussionRef(ref, author, d.status in ("open", "draft")))
    return repo, d, comment


def _num(value: str) -> int:
    num = decimal(value)
    if not num:
        raise BadRequest(f"Invalid discussion number {value!r}")
    return num


async def _body(request: Request) -> dict[str, Any]:
    if not (await request.body()).strip():
        return {}
    return await json_object(request, 1 << 20)


# ---- routes --------------------------------------------------------------------------------------------

@router.get(BASE)
@permission(Permission.REPO_METADATA_READ)
def list_discussions(plural: str, ns: str, name: str, request: Request,
                     principal: Principal = Depends(current_principal)) -> JSONResponse:
    hub = hub_of(request)
    q = request.query_params
    p = decimal(q.get("p", "0"), 1_000_000)
    if p is None:
        raise BadRequest("'p' must be a page index (0 or more)")
    with transaction(hub.sessions, readonly=True) as session:
        repo = _load(hub, session, principal, plural, ns, name, Permission.REPO_METADATA_READ)
        page = service.list_discussions(session, repo, kind=q.get("type"), status=q.get("status"),
                                        author=q.get("author"), page=p)
        return JSONResponse({"discussions": [discussion_json(repo, d, a) for d, a in page.rows],
                             "count": page.count, "start": page.start})


@router.post(BASE)
@permission(Permission.REPO_DISCUSSION_CREATE)
async def create_discussion(plural: str, ns: str, name: str, request: Request,
                            principal: Principal = Depends(current_principal)) -> JSONResponse:
    hub = hub_of(request)
    data = await json_object(request, 1 << 20)
    pull_request = data.get("pullRequest", False)
    if not isinstance(pull_request, bool):
        raise BadRequest("'pullRequest' must be a boolean")

    def run() -> dict[str, Any]:
        with transaction(hub.sessions) as session:
            repo = _load(hub, session, principal, plural, ns, name, Permission.REPO_DISCUSSION_CREATE)
            d = service.create_discussion(hub, session, repo, service.actor_of(session, principal.user_id),
                                          data.get("title"), data.get("description"), pull_request)
            return {"num": d.num, "pullRequest": d.is_pull_request,
                    "url": f"{base_url(request)}{service.page_path(repo, d.num)}"}

    return JSONResponse(await run_in_threadpool(run))


@router.get(BASE + "/{num}")
@permission(Permission.REPO_METADATA_READ)
def discussion_details(plural: str, ns: str, name: str, num: str, request: Request,
                       principal: Principal = Depends(current_principal)) -> JSONResponse:
    hub = hub_of(request)
    n = _num(num)
    with transaction(hub.sessions, readonly=True) as session:
        repo, d, _ = _load_discussion(session, principal, plural, ns, name, n, Permission.REPO_METADATA_READ)
        rows = service.events(session, d)
        users = service.users_of(session, d, rows)
        payload = discussion_json(repo, d, users.get(d.author_user_id))
        events = [(e.created_at, event_json(e, users)) for e in rows]
        if d.is_pull_request:
            git = hub.git(repo.storage_key)
            events += [(c.at, commit_event_json(c)) for c in service.pull_commits(git, d)]
            payload["changes"] = {"base": d.target_ref, **({"mergeCommitId": d.merge_commit} if d.merge_commit else {})}
            payload["filesWithConflicts"] = service.conflicting_files(git, d)
            # The diff shows file contents: only to those who may read them (a gated repo's gate).
            if request.query_params.get("diff") == "1" and authorize(principal, Permission.REPO_READ,
                                                                     repos.repo_ref(repo, principal.user_id)):
                payload["diff"] = service.diff_text(git, d)
        # The description (the first comment) opens the thread; the rest in time order (git's commit times
        # have whole seconds, so a commit made in the second the pull request was opened would sort before it).
        first, rest = events[:1], sorted(events[1:], key=lambda pair: _sort_key(pair[0]))
        payload["events"] = [e for _, e in first + rest]
        return JSONResponse(payload)


def _sort_key(when: datetime) -> float:
    return when.timestamp()


@router.post(BASE + "/{num}/comment")
@permission(Permission.REPO_DISCUSSION_COMMENT, Permission.REPO_METADATA_READ)
async def comment(plural: str, ns: str, name: str, num: str, request: Request,
                  principal: Principal = Depends(current_principal)) -> JSONResponse:
    hub = hub_of(request)
    n = _num(num)
    data = await json_object(request, 1 << 20)

    def run() -> dict[str, Any]:
        with transaction(hub.sessions) as session:
            repo, d, _ = _load_discussion(session, principal, plural, ns, name, n, Permission.REPO_DISCUSSION_COMMENT)
            actor = service.actor_of(session, principal.user_id)
            event = service.add_comment(hub, session, repo, d, actor, data.get("comment"))
            return {"newMessage": event_json(event, {actor.id: actor})}

    return JSONResponse(await run_in_threadpool(run))


@router.post(BASE + "/{num}/status")
@permission(Permission.REPO_DISCUSSION_MODERATE, Permission.REPO_METADATA_READ)
async def change_status(plural: str, ns: str, name: str, num: str, request: Request,
                        principal: Principal = Depends(current_principal)) -> JSONResponse:
    hub = hub_of(request)
    n = _num(num)
    data = await json_object(request, 1 << 20)

    def run() -> dict[str, Any]:
        with transaction(hub.sessions) as session:
            repo, d, _ = _load_discussion(session, principal, plural, ns, name, n,
                                          Permission.REPO_DISCUSSION_MODERATE)
            actor = service.actor_of(session, principal.user_id)
            event = service.change_status(hub, session, repo, d, actor, data.get("status"), data.get("comment"))
            return {"newStatus": event_json(event, {actor.id: actor})}

    return JSONResponse(await run_in_threadpool(run))


@router.post(BASE + "/{num}/title")
@permission(Permission.REPO_DISCUSSION_MODERATE, Permission.REPO_METADATA_READ)
async def rename(plural: str, ns: str, name: str, num: str, request: Request,
                 principal: Principal = Depends(current_principal)) -> JSONResponse:
    hub = hub_of(request)
    n = _num(num)
    data = await json_object(request, 1 << 20)

    def run() -> dict[str, Any]:
        with transaction(hub.sessions) as session:
            repo, d, _ = _load_discussion(session, principal, plural, ns, name, n,
                                          Permission.REPO_DISCUSSION_MODERATE)
            actor = service.actor_of(session, principal.user_id)
            event = service.rename(hub, session, repo, d, actor, data.get("title"))
            return {"newTitle": event_json(event, {actor.id: actor})}

    return JSONResponse(await run_in_threadpool(run))


@router.post(BASE + "/{num}/merge")
@permission(Permission.REPO_PR_MERGE, Permission.REPO_METADATA_READ)
async def merge(plural: str, ns: str, name: str, num: str, request: Request,
                principal: Principal = Depends(current_principal)) -> JSONResponse:
    hub = hub_of(request)
    n = _num(num)
    data = await _body(request)

    def run() -> dict[str, Any]:
        with transaction(hub.sessions) as session:
            repo = _find_repo(session, plural, ns, name)
            ref = repos.repo_ref(repo, principal.user_id)
            try:
                d = service.get_discussion(session, repo, n)
            except NotFound:
                require(principal, Permission.REPO_METADATA_READ, ref)
                raise
            require(principal, Permission.REPO_PR_MERGE, ref)
            oid = service.merge(hub, session, repo, d, service.actor_of(session, principal.user_id),
                                data.get("comment"))
            return {"status": "merged", "mergeCommitId": oid}

    return JSONResponse(await run_in_threadpool(run))


@router.post(BASE + "/{num}/comment/{comment_id}/edit")
@permission(Permission.REPO_DISCUSSION_COMMENT_EDIT, Permission.REPO_METADATA_READ)
async def edit_comment(plural: str, ns: str, name: str, num: str, comment_id: str, request: Request,
                       principal: Principal = Depends(current_principal)) -> JSONResponse:
    hub = hub_of(request)
    n = _num(num)
    data = await json_object(request, 1 << 20)

    def run() -> dict[str, Any]:
        with transaction(hub.sessions) as session:
            repo, d, event = _load_discussion(session, principal, plural, ns, name, n,
                                              Permission.REPO_DISCUSSION_COMMENT_EDIT, comment_id)
            actor = service.actor_of(session, principal.user_id)
            event = service.edit_comment(hub, session, repo, d, event, actor, data.get("content"))
            return {"updatedComment": event_json(event, service.users_of(session, d, [event]))}

    return JSONResponse(await run_in_threadpool(run))


@router.post(BASE + "/{num}/comment/{comment_id}/hide")
@permission(Permission.REPO_DISCUSSION_MODERATE, Permission.REPO_METADATA_READ)
async def hide_comment(plural: str, ns: str, name: str, num: str, comment_id: str, request: Request,
                       principal: Principal = Depends(current_principal)) -> JSONResponse:
    hub = hub_of(request)
    n = _num(num)

    def run() -> dict[str, Any]:
        with transaction(hub.sessions) as session:
            repo, d, event = _load_discussion(session, principal, plural, ns, name, n,
                                              Permission.REPO_DISCUSSION_MODERATE, comment_id)
            actor = service.actor_of(session, principal.user_id)
            event = service.hide_comment(session, repo, d, event, actor)
            return {"updatedComment": event_json(event, service.users_of(session, d, [event]))}

    return JSONResponse(await run_in_threadpool(run))
