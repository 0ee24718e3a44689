"""Browsing in a browser: a user's repositories, a repository (files, README, commits, branches), a file,
a commit (message, people, parents, signature verdict, changed files).

Each page makes the API's check (REPO_LIST / REPO_METADATA_READ, REPO_READ for a file's contents): a
private repository the caller may not read is the same "Repository not found" page as a missing one. A
gated repository's pages show its files and history to everyone who may see it, but its README and file
contents only to those with access; the others get the gate form (bastion.gating).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from functools import cache
from typing import Any
from urllib.parse import quote

import nh3
import pygit2
import yaml
from fastapi import APIRouter, Depends, Request, Response
from markdown_it import MarkdownIt
from sqlalchemy.orm import Session

from bastion.accounts.service import user_by_id
from bastion.api.auth import current_principal
from bastion.api.errors import error_response
from bastion.authz import Permission, Principal, authorize, permission, require
from bastion.authz.policy import RepoRef
from bastion.db import transaction
from bastion.errors import BadRequest, EntryNotFound, NotFound, RepoNotFound, RevisionNotFound
from bastion.repos import browse, guards, service
from bastion.repos.models import Repo
from bastion.repos.routes import raw_tail, scan_key
from bastion.scanning import verdicts
from bastion.signing import service as signing
from bastion.storage.gitstore import GitRepo, commit_datetime, parse_lfs_pointer
from bastion.web.pages import HtmlRoute, hub_of, redirect, render

router = APIRouter(route_class=HtmlRoute)
PREFIXES = {"dataset": "/datasets", "space": "/spaces", "model": ""}
MAX_TEXT_VIEW = 512 * 1024
README_LIMIT = 1024 * 1024
COMMITS_PER_PAGE = 30
ENTRIES_PER_PAGE = 1000  # a folder page; the next is ?p=1 (a page's work never grows with the folder)
MAX_ISSUES_SHOWN = 100  # flagged files named in a page's warning (the count covers them all)
COMMIT_ID_RE = re.compile(r"[0-9a-f]{7,40}")
MAX_CHANGED_FILES = 1000
CHANGE_KINDS = {pygit2.enums.DeltaStatus.ADDED: "added", pygit2.enums.DeltaStatus.DELETED: "deleted"}


@cache
def _markdown() -> MarkdownIt:
    # Raw HTML in markdown is off; nh3 then removes anything unsafe the renderer could still emit.
    return MarkdownIt("commonmark", {"html": False}).enable(["table", "strikethrough"])


def render_markdown(text: str) -> str:
    """README → sanitized HTML (no scripts, event handlers, styles or javascript: links)."""
    if text.startswith("---\n"):
        end = text.find("\n---", 4)
        if end != -1:
            text = text[end + 4:].lstrip("\n")  # model-card metadata (YAML), not prose
    return nh3.clean(_markdown().render(text), url_schemes={"http", "https", "mailto"})


def _wants_html(request: Request) -> bool:
    return "text/html" in request.headers.get("accept", "")


def _load(session: Session, principal: Principal, repo_type: str, ns: str, name: str,
          perm: Permission = Permission.REPO_METADATA_READ) -> tuple[Repo, RepoRef]:
    try:
        repo = service.find_repo(session, repo_type, ns, name)
    except NotFound:
        raise RepoNotFound() from None
    ref = service.repo_ref(repo, principal.user_id)
    require(principal, perm, ref)
    return repo, ref


def _gate(session: Session, principal: Principal, repo: Repo, ref: RepoRef, git: GitRepo,
          commit: pygit2.Commit | None) -> dict[str, Any] | None:
    """What the gate box of a gated repo's page shows this caller (None when the repo is not gated)."""
    if ref.gate is None:
        return None
    from bastion.gating import service as gating

    status = ref.gate.statuses.get(principal.user_id) if principal.user_id is not None else None
    card = _card(git, commit)
    return {"mode": ref.gate.mode, "can_read": bool(authorize(principal, Permission.REPO_READ, ref)),
            "reviewer": bool(authorize(principal, Permission.REPO_ACCESS_READ, ref)), "status": status,
            "prompt": card.get("extra_gated_prompt") if isinstance(card.get("extra_gated_prompt"), str) else None,
            "fields": gating.form_fields(card.get("extra_gated_fields"))}


def _card(git: GitRepo, commit: pygit2.Commit | None) -> dict[str, Any]:
    """The model card's metadata (README front matter), which the Hub shows for gated repos too: the gate
    form's prompt and extra fields come from it. The README's text stays behind the gate."""
    if commit is None:
        return {}
    try:
        blob = git.blob_at(commit, "README.md")
    except (EntryNotFound, NotFound):
        return {}
    if blob.size > README_LIMIT:
        return {}
    return parse_card(blob.data.decode("utf-8", errors="replace"))


def parse_card(text: str) -> dict[str, Any]:
    if not text.startswith("---\n"):
        return {}
    end = text.find("\n---", 4)
    if end == -1:
        return {}
    try:
        meta = yaml.safe_load(text[4:end])
    except yaml.YAMLError:
        return {}
    return meta if isinstance(meta, dict) else {}


def _base(repo: Repo) -> str:
    return f"{PREFIXES[repo.type]}/{repo.namespace}/{repo.name}"


def _revision(git: GitRepo, rev: str) -> pygit2.Commit | None:
    try:
        return git.resolve(rev)
    except RevisionNotFound:
        if rev == "main":
            return None  # an empty repository
        raise


def _common(repo: Repo, git: GitRepo, rev: str) -> dict[str, Any]:
    refs = browse.refs_payload(git, include_prs=False)
    return {"repo": repo, "base": _base(repo), "rev": rev, "branches": [b["name"] for b in refs["branches"]],
            "tags": [t["name"] for t in refs["tags"]]}


def _readme(git: GitRepo, commit: pygit2.Commit, tree: pygit2.Tree, path: str) -> str | None:
    """The folder's README.md (any case), wherever it falls in the folder's pages."""
    for obj in sorted((o for o in tree if o.type_str == "blob" and o.name.lower() == "readme.md"),
                      key=lambda o: o.name):
        entry = browse.file_entry(git, f"{path}/{obj.name}" if path else obj.name, obj.id)
        if "lfs" not in entry and entry["size"] <= README_LIMIT:
            return render_markdown(git.blob_at(commit, entry["path"]).data.decode("utf-8", errors="replace"))
    return None


def _page_number(request: Request) -> int:
    try:
        return max(0, min(int(request.query_params.get("p", "0")), 10**6))
    except ValueError:
        return 0


def _tree(request: Request, principal: Principal, repo_type: str, ns: str, name: str, rev: str,
          path: str) -> Response:
    hub = hub_of(request)
    with transaction(hub.sessions, readonly=True) as session:
        repo, ref = _load(session, principal, repo_type, ns, name)
        git = hub.git(repo.storage_key)
        commit = _revision(git, rev)
        context = _common(repo, git, rev)
        context["gate"] = gate = _gate(session, principal, repo, ref, git, commit)
        if commit is None:
            return render(request, "repo.html", **context, empty=True, path="", entries=[], readme=None, commits=[])
        tree = git.tree_at(commit, path)
        if not isinstance(tree, pygit2.Tree):
            raise EntryNotFound(f"{path} is not a folder")
        page = _page_number(request)
        entries, total = browse.folder_page(git, tree, path, page * ENTRIES_PER_PAGE, ENTRIES_PER_PAGE)
        commits, _ = browse.history(git, commit, 0, 5)
        files = [e for e in entries if e["type"] == "file"]
        secrets_of = verdicts.secrets_visible(principal, repo)  # secret findings: for managers only
        statuses = verdicts.file_statuses(hub, session, [scan_key(e) for e in files], secrets_of)
        for entry in files:
            entry["security"] = statuses[scan_key(entry)]
        # The warning covers the whole revision, not only this folder: a bad file anywhere is news.
        summary = verdicts.revision_summary(hub, session, repo, commit, secrets_of)
        # A gated repo's README is file contents: shown only to those who may read them.
        readme = _readme(git, commit, tree, path) if gate is None or gate["can_read"] else None
        pages = {"page": page, "first": page * ENTRIES_PER_PAGE + 1 if entries else 0,
                 "last": page * ENTRIES_PER_PAGE + len(entries), "total": total,
                 "more": (page + 1) * ENTRIES_PER_PAGE < total}
        return render(request, "repo.html", **context, empty=False, path=path, entries=entries,
                      readme=readme, commit=_commit_view(commit), pages=pages,
                      commits=[_commit_view(c) for c in commits], crumbs=_crumbs(path),
                      security_issues=summary["filesWithIssues"][:MAX_ISSUES_SHOWN],
                      security_issue_count=summary["filesWithIssuesCount"])


def _commit_view(commit: pygit2.Commit) -> dict[str, Any]:
    title, _, body = commit.message.partition("\n")
    return {"id": str(commit.id), "short": str(commit.id)[:7], "title": title, "body": body.strip(),
            "author": commit.author.name, "date": commit_datetime(commit).strftime("%Y-%m-%d %H:%M UTC")}


def _crumbs(path: str) -> list[tuple[str, str]]:
    parts = [p for p in path.split("/") if p]
    return [(part, "/".join(parts[:i + 1])) for i, part in enumerate(parts)]


def _blob(request: Request, principal: Principal, repo_type: str, ns: str, name: str, rev: str,
          path: str) -> Response:
    hub = hub_of(request)
    with transaction(hub.sessions, readonly=True) as session:
        repo, _ref = _load(session, principal, repo_type, ns, name, Permission.REPO_READ)
        git = hub.git(repo.storage_key)
        commit = git.resolve(rev)
        blob = git.blob_at(commit, path)
        pointer = parse_lfs_pointer(blob.data) if blob.size <= 200 else None
        # The page shows what a download would give: nothing of a file a download guard holds back.
        blocked = guards.download_refusal(hub, session, repo, pointer.oid if pointer else str(blob.id), principal)
        text = None
        if blocked is None and pointer is None and blob.size <= MAX_TEXT_VIEW and b"\0" not in blob.data[:8000]:
            try:
                text = blob.data.decode("utf-8")
            except UnicodeDecodeError:
                text = None
        readme = render_markdown(text) if text is not None and path.lower().endswith(".md") else None
        download = f"{_base(repo)}/resolve/{quote(rev, safe='')}/{quote(path, safe='/')}"
        security = verdicts.file_status(hub, session, pointer.oid if pointer else str(blob.id),
                                        verdicts.secrets_visible(principal, repo))
        return render(request, "blob.html", **_common(repo, git, rev), path=path, crumbs=_crumbs(path),
                      size=pointer.size if pointer else blob.size, lfs=pointer, text=text, rendered=readme,
                      download=download, commit=_commit_view(commit), security=security, blocked=blocked)


def _commits(request: Request, principal: Principal, repo_type: str, ns: str, name: str, rev: str) -> Response:
    hub = hub_of(request)
    page = _page_number(request)
    with transaction(hub.sessions, readonly=True) as session:
        repo, _ref = _load(session, principal, repo_type, ns, name)
        git = hub.git(repo.storage_key)
        commit = git.resolve(rev)
        commits, more = browse.history(git, commit, page * COMMITS_PER_PAGE, COMMITS_PER_PAGE)
    # Outside the read transaction: verdicts missing from the store are computed and written.
    signatures = signing.signatures_for(hub, repo, commits)
    return render(request, "commits.html", **_common(repo, git, rev), page=page, more=more,
                  commits=[{**_commit_view(c), "signature": signatures[str(c.id)]} for c in commits])


def _find_commit(git: GitRepo, sha: str) -> pygit2.Commit:
    """The commit a URL names by its (possibly abbreviated) id; never a branch or tag name."""
    wanted = sha.lower()
    if not COMMIT_ID_RE.fullmatch(wanted):
        raise BadRequest(f"Invalid commit id {sha[:80]!r}: expected 7 to 40 hexadecimal digits")
    try:
        obj = git.repo[wanted]
    except pygit2.AmbiguousError:
        raise BadRequest(f"Commit id {wanted!r} is ambiguous: use more digits") from None
    except (KeyError, ValueError, pygit2.GitError):
        obj = None
    if not isinstance(obj, pygit2.Commit):
        raise RevisionNotFound(f"No commit {wanted} in this repository")
    return obj


def _when(person: pygit2.Signature) -> datetime:
    return datetime.fromtimestamp(person.time, timezone(timedelta(minutes=person.offset))).astimezone(UTC)


def _person(person: pygit2.Signature) -> dict[str, str]:
    # Names only: the page is public for public repos, and an address is no one's business here.
    when = _when(person)
    return {"name": person.name, "date": when.strftime("%Y-%m-%d %H:%M UTC"), "iso": when.isoformat()}


def _changed_files(git: GitRepo, commit: pygit2.Commit) -> tuple[list[dict[str, Any]], int]:
    """What the commit changes against its first parent (a root commit: everything added)."""
    parent = commit.parents[0] if commit.parents else None
    diff = git.repo.diff(parent.tree, commit.tree) if parent is not None else commit.tree.diff_to_tree(swap=True)
    out: list[dict[str, Any]] = []
    total = 0
    for delta in diff.deltas:
        total += 1
        if len(out) >= MAX_CHANGED_FILES:
            continue
        kind = CHANGE_KINDS.get(delta.status, "modified")
        side = delta.old_file if kind == "deleted" else delta.new_file
        at = str(parent.id) if kind == "deleted" and parent is not None else str(commit.id)
        # A deleted file links to its last version (the parent's); a submodule has no page.
        linked = side.mode in (pygit2.GIT_FILEMODE_BLOB, pygit2.GIT_FILEMODE_BLOB_EXECUTABLE,
                               pygit2.GIT_FILEMODE_LINK)
        out.append({"path": side.path, "kind": kind, "at": at if linked else None})
    return out, total


def _commit_page(request: Request, principal: Principal, repo_type: str, ns: str, name: str,
                 sha: str) -> Response:
    hub = hub_of(request)
    with transaction(hub.sessions, readonly=True) as session:
        repo, _ref = _load(session, principal, repo_type, ns, name)
        git = hub.git(repo.storage_key)
        commit = _find_commit(git, sha)
        files, total = _changed_files(git, commit)
        view = {**_commit_view(commit), "author": _person(commit.author),
                "committer": _person(commit.committer), "parents": [str(p) for p in commit.parent_ids]}
        context = _common(repo, git, str(commit.id))
    # Outside the read transaction, as on the commit list: a missing verdict is computed and stored.
    view["signature"] = signing.signatures_for(hub, repo, [commit])[str(commit.id)]
    return render(request, "commit.html", **context, c=view, files=files, total_files=total)


def _split(request: Request, prefix: str) -> tuple[str, str]:
    tail = raw_tail(request, prefix)
    if not tail or not tail[0]:
        raise NotFound("Not found")
    return tail[0], "/".join(tail[1:]).strip("/")


def _add_repo_routes(repo_type: str) -> None:
    p = PREFIXES[repo_type]

    def page(ns: str, name: str, request: Request, principal: Principal = Depends(current_principal)) -> Response:
        if not _wants_html(request):
            # Not a browser: the same answer the API gives for a path it does not serve.
            return error_response(404, "NotFound", "Not found")
        return _tree(request, principal, repo_type, ns, name, "main", "")

    def tree(ns: str, name: str, rest: str, request: Request,
             principal: Principal = Depends(current_principal)) -> Response:
        rev, path = _split(request, f"{p}/{ns}/{name}/tree/")
        return _tree(request, principal, repo_type, ns, name, rev, path)

    def blob(ns: str, name: str, rest: str, request: Request,
             principal: Principal = Depends(current_principal)) -> Response:
        rev, path = _split(request, f"{p}/{ns}/{name}/blob/")
        if not path:
            raise EntryNotFound("No file path given")
        return _blob(request, principal, repo_type, ns, name, rev, path)

    def commits(ns: str, name: str, rest: str, request: Request,
                principal: Principal = Depends(current_principal)) -> Response:
        rev, _ = _split(request, f"{p}/{ns}/{name}/commits/")
        return _commits(request, principal, repo_type, ns, name, rev)

    def commit(ns: str, name: str, sha: str, request: Request,
               principal: Principal = Depends(current_principal)) -> Response:
        return _commit_page(request, principal, repo_type, ns, name, sha)

    metadata, contents = Permission.REPO_METADATA_READ, Permission.REPO_READ
    views: list[tuple[str, Callable[..., Response], Permission]] = [
        ("/{ns}/{name}/tree/{rest:path}", tree, metadata), ("/{ns}/{name}/blob/{rest:path}", blob, contents),
        ("/{ns}/{name}/commits/{rest:path}", commits, metadata), ("/{ns}/{name}/commit/{sha}", commit, metadata),
        ("/{ns}/{name}", page, metadata)]
    for path, view, perm in views:
        view.__name__ = f"{repo_type}_{view.__name__}"
        router.add_api_route(p + path, permission(perm)(view), methods=["GET"])


for _type in ("dataset", "space", "model"):
    _add_repo_routes(_type)


@router.get("/{ns}")
@permission(Permission.REPO_LIST)
def user_page(ns: str, request: Request, principal: Principal = Depends(current_principal)) -> Response:
    if not _wants_html(request):
        return error_response(404, "NotFound", "Not found")
    hub = hub_of(request)
    with transaction(hub.sessions, readonly=True) as session:
        owner = service.namespace_ref(session, ns)
        require(principal, Permission.REPO_LIST)
        if owner.org is not None:
            return redirect(f"/organizations/{quote(owner.name, safe='')}")  # an organization's own page
        if owner.owner_user_id is None:
            raise NotFound(f"No user named {ns!r}")
        user = user_by_id(session, owner.owner_user_id)
        listings = {t: service.list_repos(session, principal, t, author=owner.name, search=[], sort="lastModified",
                                          direction=-1, limit=200, offset=0).repos
                    for t in ("model", "dataset", "space")}
        return render(request, "user.html", owner=user, listings=listings, prefixes=PREFIXES)
