"""Discussions and pull requests: the only writer of their rows, and the reader of a pull request's git side.

Every change is one call here, in the caller's transaction: it checks the request, writes the rows and the
audit event, and queues the mail. Who may call it was decided by the route (bastion.authz). A pull request's
commits go through the one commit path (`repos.commit`: a `create_pr` commit, commits to refs/pr/N, the
merge), which calls back here (`pull_request_opened`) to record the pull request in the same transaction.
"""

from __future__ import annotations

import contextlib
import unicodedata
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pygit2
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from bastion import audit
from bastion.accounts import ratelimit
from bastion.accounts.models import User
from bastion.accounts.service import primary_verified, user_by_id
from bastion.audit.actions import AuditAction
from bastion.authz import Permission, Principal, authorize
from bastion.community.models import Discussion, DiscussionEvent
from bastion.db import utcnow
from bastion.errors import BadRequest, NotFound, RepoNotFound
from bastion.hub import Hub
from bastion.mail import Mailer, Message
from bastion.orgs.models import OrgMember
from bastion.repos import admission
from bastion.repos import commit as repo_commit
from bastion.repos.models import Repo
from bastion.repos.service import PLURAL_BY_TYPE, repo_ref
from bastion.storage.gitstore import DEFAULT_BRANCH, GitRepo

PAGE_SIZE = 50  # the Hub's page of discussions (`p` = page index, answered with `start` and `count`)
TITLE_MIN, TITLE_MAX = 3, 200
COMMENT_MAX = 65_536
# A comment keeps every earlier version (the Hub's edit history) until it is hidden: at most this many edits,
# so a comment (and every reader's copy of its thread) cannot be made to grow without bound.
MAX_EDITS = 50
MAX_MAIL_RECIPIENTS = 20
HIDDEN_TEXT = "This comment has been hidden"
# Opening discussions and pull requests, and every other write in a thread (a comment, an edit, a rename, a
# status change), are writes anyone who reads a public repo can make: each user has a budget per hour (the
# sliding windows of accounts.ratelimit, shared by replicas), BASTION_DISCUSSIONS_PER_HOUR for the first and
# BASTION_DISCUSSION_COMMENTS_PER_HOUR for the others.
CREATE_LIMIT, COMMENT_LIMIT = "discussion.create", "discussion.comment"
MAX_DIFF_BYTES = 2 << 20  # a pull request's diff in the details answer (the whole one: diffUrl)
MAX_DIFF_FILES_NAMED = 1000
ZERO_OID = pygit2.Oid(hex="0" * 40)


# ---- reading ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class DiscussionPage:
    rows: list[tuple[Discussion, User | None]]
    count: int
    start: int


def list_discussions(session: Session, repo: Repo, *, kind: str | None = None, status: str | None = None,
                     author: str | None = None, page: int = 0, page_size: int = PAGE_SIZE) -> DiscussionPage:
    """One page, newest first. `kind`: all | discussion | pull_request; `status`: all | open | closed (the Hub's
    filters: open includes drafts, closed includes merged)."""
    if kind not in (None, "all", "discussion", "pull_request"):
        raise BadRequest("'type' must be one of all, discussion, pull_request")
    if status not in (None, "all", "open", "closed"):
        raise BadRequest("'status' must be one of all, open, closed")
    if page < 0:
        raise BadRequest("'p' must be a page index (0 or more)")
    query = select(Discussion).where(Discussion.repo_id == repo.id)
    if kind == "discussion":
        query = query.where(Discussion.is_pull_request.is_(False))
    elif kind == "pull_request":
        query = query.where(Discussion.is_pull_request.is_(True))
    if status == "open":
        query = query.where(Discussion.status.in_(("open", "draft")))
    elif status == "closed":
        query = query.where(Discussion.status.in_(("closed", "merged")))
    if author:
        query = query.join(User, User.id == Discussion.author_user_id).where(User.name_lower == author.lower())
    count = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    start = page * page_size
    rows = list(session.scalars(query.order_by(Discussion.num.desc()).offset(start).limit(page_size)))
    authors = _users(session, {d.author_user_id for d in rows})
    return DiscussionPage([(d, authors.get(d.author_user_id)) for d in rows], count, start)


def get_discussion(session: Session, repo: Repo, num: int) -> Discussion:
    row = session.scalar(select(Discussion).where(Discussion.repo_id == repo.id, Discussion.num == num))
    if row is None:
        raise NotFound(f"Discussion #{num} not found in {repo.repo_id}")
    return row


def get_comment(session: Session, discussion: Discussion, comment_id: str) -> DiscussionEvent:
    try:
        event_id = int(comment_id, 16) if len(comment_id) <= 24 else -1
    except ValueError:
        event_id = -1
    # The id column's range (an id past it would be an error of the database, not a missing comment).
    row = session.get(DiscussionEvent, event_id) if 0 < event_id < 1 << 31 else None
    if row is None or row.discussion_id != discussion.id or row.kind != "comment":
        raise NotFound(f"Comment {comment_id!r} not found in discussion #{discussion.num}")
    return row


def events(session: Session, discussion: Discussion) -> list[DiscussionEvent]:
    return list(session.scalars(select(DiscussionEvent).where(DiscussionEvent.discussion_id == discussion.id)
                                .order_by(DiscussionEvent.id)))


def _users(session: Session, ids: set[int | None]) -> dict[int | None, User]:
    wanted = sorted(i for i in ids if i is not None)
    if not wanted:
        return {}
    return {u.id: u for u in session.scalars(select(User).where(User.id.in_(wanted)))}


def users_of(session: Session, discussion: Discussion, rows: list[DiscussionEvent]) -> dict[int | None, User]:
    return _users(session, {discussion.author_user_id, *(e.author_user_id for e in rows),
                            *(e.updated_by_user_id for e in rows)})


def pull_request_facts(session: Session, repo: Repo, num: int) -> repo_commit.PullRequestFacts | None:
    row = session.scalar(select(Discussion).where(Discussion.repo_id == repo.id, Discussion.num == num,
                                                  Discussion.is_pull_request.is_(True)))
    if row is None:
        return None
    return repo_commit.PullRequestFacts(row.author_user_id, row.status in ("open", "draft"))


# ---- a pull request's git side ---------------------------------------------------------------

@dataclass(frozen=True)
class PullCommit:
    oid: str
    summary: str
    author_name: str
    at: datetime


@dataclass(frozen=True)
class ChangedPath:
    path: str
    status: str  # added | modified | deleted
    blob: str  # the blob in the pull request ("" when deleted)


def _heads(git: GitRepo, discussion: Discussion) -> tuple[pygit2.Oid | None, pygit2.Oid | None]:
    """(target branch head, pull request head)."""
    assert discussion.target_ref is not None
    return git.branch_head(discussion.target_ref), git.branch_head(f"refs/pr/{discussion.num}")


def _base(git: GitRepo, head: pygit2.Oid | None, tip: pygit2.Oid | None) -> pygit2.Oid | None:
    if head is None or tip is None:
        return None
    return git.repo.merge_base(head, tip)


def pull_commits(git: GitRepo, discussion: Discussion, limit: int = 250) -> list[PullCommit]:
    """The pull request's own commits (on refs/pr/N, not on its target branch), oldest first."""
    head, tip = _heads(git, discussion)
    if tip is None:
        return []
    walker = git.repo.walk(tip, pygit2.enums.SortMode.TOPOLOGICAL | pygit2.enums.SortMode.REVERSE)
    if head is not None and discussion.status != "merged":
        walker.hide(head)
    elif discussion.merge_commit:
        with contextlib.suppress(KeyError, ValueError, IndexError):
            walker.hide(git.repo[discussion.merge_commit].parents[0].id)  # the target as it was when merged
    out = []
    for c in walker:
        if len(out) >= limit:
            break
        out.append(PullCommit(str(c.id), c.message.split("\n", 1)[0][:200], c.author.name,
                              datetime.fromtimestamp(c.commit_time, tz=UTC)))
    return out


def _diff(git: GitRepo, discussion: Discussion) -> pygit2.Diff | None:
    """What the pull request changes: from the merge base with its target to its head (a merged one: its
    merge commit against the parent it was merged onto)."""
    repo = git.repo
    if discussion.status == "merged" and discussion.merge_commit:
        try:
            merged = repo[discussion.merge_commit].peel(pygit2.Commit)
            return repo.diff(merged.parents[0].tree, merged.tree)
        except (KeyError, ValueError, IndexError):
            return None
    head, tip = _heads(git, discussion)
    base = _base(git, head, tip)
    if tip is None or base is None:
        return None
    return repo.diff(repo[base].peel(pygit2.Commit).tree, repo[tip].peel(pygit2.Commit).tree)


def changed_paths(git: GitRepo, discussion: Discussion) -> list[ChangedPath]:
    diff = _diff(git, discussion)
    if diff is None:
        return []
    out = []
    for delta in diff.deltas:
        if delta.status == pygit2.enums.DeltaStatus.DELETED:
            out.append(ChangedPath(delta.old_file.path, "deleted", ""))
        else:
            status = "added" if delta.status == pygit2.enums.DeltaStatus.ADDED else "modified"
            out.append(ChangedPath(delta.new_file.path, status, str(delta.new_file.id)))
    return out


def diff_text(git: GitRepo, discussion: Discussion, limit: int = MAX_DIFF_BYTES) -> str:
    """The unified diff (git's format; LFS files show their pointers), built file by file: patches within
    `limit` bytes, and a file whose patch could not fit in what is left is named in one line, not read (the
    pull request's author decides how much it changes; anyone who reads the repo may ask for its diff, so
    its cost must not grow with it). At most MAX_DIFF_FILES_NAMED files are named."""
    diff = _diff(git, discussion)
    if diff is None:
        return ""
    parts: list[str] = []
    used = 0
    deltas = diff.deltas
    for i, delta in enumerate(deltas):
        if i == MAX_DIFF_FILES_NAMED:
            parts.append(f"… and {len(deltas) - i} more changed files, not shown\n")
            break
        old, new = delta.old_file, delta.new_file
        sizes = sum(_blob_size(git, f.id) for f in (old, new))
        # A patch line is its text with a one-character prefix: at most twice the bytes of both sides.
        text = (diff[i].text or "") if 2 * sizes + 1024 <= limit - used else ""
        if not text or len(text.encode()) > limit - used:
            text = (f"diff --git a/{old.path} b/{new.path}\n"
                    f"… ({sizes} bytes changed: too large to show in this diff)\n")
        parts.append(text)
        used += len(text.encode())
    return "".join(parts)


def _blob_size(git: GitRepo, oid: pygit2.Oid) -> int:
    if oid is None or oid == ZERO_OID:
        return 0
    try:
        return int(git.repo.odb.read_header(oid)[1])
    except (KeyError, ValueError):
        return 0


def conflicting_files(git: GitRepo, discussion: Discussion) -> list[str]:
    """Files an open pull request and its target branch both changed differently since they parted."""
    if discussion.status not in ("open", "draft"):
        return []
    head, tip = _heads(git, discussion)
    return repo_commit.merge_trees(git, head, tip)[0] if head is not None and tip is not None else []


# ---- writing ---------------------------------------------------------------------------------

# Text is shown in pages and terminals and goes into mail subjects and the database: no control characters
# (NUL cannot be stored in PostgreSQL; a line break in a subject stops the mail). A title is one line; a
# comment may hold tabs and line breaks.
TEXT_CONTROLS_ALLOWED = frozenset("\t\n\r")


def _control(text: str, allowed: frozenset[str] = frozenset()) -> str | None:
    """The first control character (or line or paragraph separator) of `text` not in `allowed`."""
    if text.isprintable():
        return None
    return next((c for c in text if c not in allowed and unicodedata.category(c) in ("Cc", "Zl", "Zp")), None)


def _check_title(title: object) -> str:
    if not isinstance(title, str):
        raise BadRequest("'title' must be a string")
    title = title.strip()
    if not TITLE_MIN <= len(title) <= TITLE_MAX:
        raise BadRequest(f"The title must be {TITLE_MIN} to {TITLE_MAX} characters long")
    if (c := _control(title)) is not None:
        raise BadRequest(f"The title may not contain control characters or line breaks (found U+{ord(c):04X})")
    return title


def _check_text(text: object, name: str, *, empty: bool = False) -> str:
    if not isinstance(text, str) or not (empty or text.strip()):
        raise BadRequest(f"'{name}' must be a non-empty string")
    if len(text) > COMMENT_MAX:
        raise BadRequest(f"'{name}' is longer than {COMMENT_MAX} characters")
    if (c := _control(text, TEXT_CONTROLS_ALLOWED)) is not None:
        raise BadRequest(f"'{name}' may not contain control characters other than tabs and line breaks "
                         f"(found U+{ord(c):04X})")
    return text


def _without_controls(text: str, allowed: frozenset[str] = frozenset()) -> str:
    """`text` with its control characters (but `allowed`) replaced by spaces: for what a commit brings."""
    if _control(text, allowed) is None:
        return text
    return "".join(" " if c not in allowed and unicodedata.category(c) in ("Cc", "Zl", "Zp") else c for c in text)


def _target(repo: Repo) -> tuple[str, str]:
    return ("repo", f"{repo.type}/{repo.repo_id}")


def _allocate_number(session: Session, repo: Repo) -> tuple[Repo, int]:
    """The next number of the repo's one sequence (discussions and pull requests share it, as refs/pr/N)."""
    locked = session.scalar(select(Repo).where(Repo.id == repo.id).with_for_update())
    if locked is None:
        raise RepoNotFound()
    num = locked.next_pr_number
    locked.next_pr_number = num + 1
    return locked, num


def _limit(hub: Hub, session: Session, name: str, user: User) -> None:
    per_hour = (hub.settings.discussions_per_hour if name == CREATE_LIMIT
                else hub.settings.discussion_comments_per_hour)
    limit = ratelimit.Limit(name, per_hour, timedelta(hours=1))
    subject = f"user:{user.id}"
    ratelimit.check(session, (limit, subject))
    ratelimit.hit(session, (limit, subject))


def create_discussion(hub: Hub, session: Session, repo: Repo, author: User, title: object, description: object,
                      pull_request: bool) -> Discussion:
    """A discussion, or a draft pull request whose ref starts at the default branch's head (the Hub's
    `create_discussion(pull_request=True)`; its author then commits to refs/pr/N)."""
    title = _check_title(title)
    if description is not None and not isinstance(description, str):
        raise BadRequest("'description' must be a string")
    text = _check_text(description or "", "description", empty=True).strip()
    _limit(hub, session, CREATE_LIMIT, author)
    if not pull_request:
        locked, num = _allocate_number(session, repo)
        row = _insert(session, locked, num, author, title, text, False, None)
        _opened(hub, session, locked, author, row)
        return row
    git = hub.git(repo.storage_key)
    target = f"refs/heads/{DEFAULT_BRANCH}"
    with git.write_lock():
        head = git.branch_head(target)
        if head is None:
            raise BadRequest(f"Cannot open a pull request: the repository has no {DEFAULT_BRANCH!r} branch")
        locked, num = _allocate_number(session, repo)
        ref = f"refs/pr/{num}"
        # A new ref is a ref move like any other (it brings in nothing: the branch head is reached already).
        admission.admit(hub, session, locked, ref, None, str(head), git=git, pr_number=num)
        row = _insert(session, locked, num, author, title, text, True, target, status="draft")
        audit.record(session, AuditAction.REPO_PR_CREATE, target=_target(locked), namespace=locked.namespace,
                     details={"number": num, "commit": str(head), "target": target})
        _opened(hub, session, locked, author, row)
        session.flush()
        git.compare_and_swap(ref, None, head)
    return row


def pull_request_opened(hub: Hub, session: Session, repo: Repo, author: User,
                        opened: repo_commit.PullRequestOpened) -> None:
    """A `create_pr` commit opened refs/pr/N (repos.commit calls this in the commit's transaction)."""
    _limit(hub, session, CREATE_LIMIT, author)
    # The commit's summary and description, held to what a title and a comment may hold.
    title = _without_controls(opened.title).strip()[:TITLE_MAX]
    if len(title) < TITLE_MIN:
        title = f"Pull request #{opened.number}"
    row = _insert(session, repo, opened.number, author, title,
                  _without_controls(opened.description, TEXT_CONTROLS_ALLOWED)[:COMMENT_MAX], True, opened.base_ref)
    _opened(hub, session, repo, author, row)


def _insert(session: Session, repo: Repo, num: int, author: User, title: str, text: str, pull_request: bool,
            target_ref: str | None, status: str = "open") -> Discussion:
    now = utcnow()
    row = Discussion(repo_id=repo.id, num=num, is_pull_request=pull_request, title=title, status=status,
                     author_user_id=author.id, created_at=now, updated_at=now, target_ref=target_ref)
    session.add(row)
    session.flush()
    session.add(DiscussionEvent(discussion_id=row.id, kind="comment", author_user_id=author.id, created_at=now,
                                data={}, content=text, history=[], edited=False, hidden=False))
    session.flush()
    return row


def _opened(hub: Hub, session: Session, repo: Repo, author: User, row: Discussion) -> None:
    audit.record(session, AuditAction.REPO_DISCUSSION_CREATE, target=_target(repo), namespace=repo.namespace,
                 details={"num": row.num, "pullRequest": row.is_pull_request, "title": row.title})
    what = "pull request" if row.is_pull_request else "discussion"
    _notify(hub, session, repo, row, author, f"New {what} #{row.num} on {repo.repo_id}: {row.title}",
            f"{author.name} opened {what} #{row.num} on {repo.repo_id}: {row.title}")


def add_comment(hub: Hub, session: Session, repo: Repo, discussion: Discussion, author: User,
                text: object) -> DiscussionEvent:
    body = _check_text(text, "comment")
    _limit(hub, session, COMMENT_LIMIT, author)
    event = _comment(session, discussion, author, body)
    audit.record(session, AuditAction.REPO_DISCUSSION_COMMENT, target=_target(repo), namespace=repo.namespace,
                 details={"num": discussion.num, "comment": event.public_id})
    _notify(hub, session, repo, discussion, author, f"New comment on {repo.repo_id} #{discussion.num}",
            f"{author.name} commented on #{discussion.num} ({discussion.title}) of {repo.repo_id}.")
    return event


def _comment(session: Session, discussion: Discussion, author: User, body: str) -> DiscussionEvent:
    now = utcnow()
    event = DiscussionEvent(discussion_id=discussion.id, kind="comment", author_user_id=author.id, created_at=now,
                            data={}, content=body, history=[], edited=False, hidden=False)
    session.add(event)
    discussion.updated_at = now
    session.flush()
    return event


def change_status(hub: Hub, session: Session, repo: Repo, discussion: Discussion, actor: User, status: object,
                  comment: object = None) -> DiscussionEvent:
    """Close or reopen (the Hub's API takes only these two; merging is `merge`)."""
    if status not in ("open", "closed"):
        raise BadRequest("'status' must be 'open' or 'closed'")
    if discussion.status == "merged":
        raise BadRequest("This pull request is merged: its status cannot change")
    old = discussion.status
    if old == status:  # (a draft pull request is opened for review with "open")
        raise BadRequest(f"This {'pull request' if discussion.is_pull_request else 'discussion'} is already {old}")
    body = _check_text(comment, "comment") if comment is not None and comment != "" else None
    _limit(hub, session, COMMENT_LIMIT, actor)  # one write in the thread, with or without its comment
    if body is not None:
        _comment(session, discussion, actor, body)
    return _set_status(session, repo, discussion, actor, str(status), old)


def _set_status(session: Session, repo: Repo, discussion: Discussion, actor: User, status: str,
                old: str) -> DiscussionEvent:
    now = utcnow()
    discussion.status, discussion.updated_at = status, now
    event = DiscussionEvent(discussion_id=discussion.id, kind="status-change", author_user_id=actor.id,
                            created_at=now, data={"status": status}, history=[], edited=False, hidden=False)
    session.add(event)
    session.flush()
    audit.record(session, AuditAction.REPO_DISCUSSION_STATUS, target=_target(repo), namespace=repo.namespace,
                 details={"num": discussion.num, "from": old, "to": status})
    return event


def rename(hub: Hub, session: Session, repo: Repo, discussion: Discussion, actor: User,
           title: object) -> DiscussionEvent:
    new = _check_title(title)
    _limit(hub, session, COMMENT_LIMIT, actor)
    old = discussion.title
    now = utcnow()
    discussion.title, discussion.updated_at = new, now
    event = DiscussionEvent(discussion_id=discussion.id, kind="title-change", author_user_id=actor.id,
                            created_at=now, data={"from": old, "to": new}, history=[], edited=False, hidden=False)
    session.add(event)
    session.flush()
    audit.record(session, AuditAction.REPO_DISCUSSION_TITLE, target=_target(repo), namespace=repo.namespace,
                 details={"num": discussion.num, "from": old, "to": new})
    return event


def edit_comment(hub: Hub, session: Session, repo: Repo, discussion: Discussion, event: DiscussionEvent,
                 actor: User, content: object) -> DiscussionEvent:
    body = _check_text(content, "content")
    if event.hidden:
        raise BadRequest("A hidden comment cannot be edited")
    if len(event.history or []) >= MAX_EDITS:
        raise BadRequest(f"This comment was edited {MAX_EDITS} times, as many as a comment keeps: "
                         "post a new comment instead")
    _limit(hub, session, COMMENT_LIMIT, actor)
    now = utcnow()
    event.history = [*(event.history or []), {"raw": event.content or "", "updatedAt": _iso(event.updated_at
                                                                                            or event.created_at),
                                              "author": event.updated_by_user_id or event.author_user_id}]
    event.content, event.edited, event.updated_at, event.updated_by_user_id = body, True, now, actor.id
    session.flush()
    audit.record(session, AuditAction.REPO_DISCUSSION_COMMENT_EDIT, target=_target(repo), namespace=repo.namespace,
                 details={"num": discussion.num, "comment": event.public_id})
    return event


def hide_comment(session: Session, repo: Repo, discussion: Discussion, event: DiscussionEvent,
                 actor: User) -> DiscussionEvent:
    """Hide a comment for good: its text and earlier versions are erased (irreversible, as on the Hub)."""
    if event.hidden:
        return event
    event.hidden, event.hidden_by_user_id = True, actor.id
    event.content, event.history = None, []
    event.updated_at, event.updated_by_user_id = utcnow(), actor.id
    session.flush()
    audit.record(session, AuditAction.REPO_DISCUSSION_COMMENT_HIDE, target=_target(repo), namespace=repo.namespace,
                 details={"num": discussion.num, "comment": event.public_id,
                          "author": event.author_user_id, "first": _is_first(session, discussion, event)})
    return event


def _is_first(session: Session, discussion: Discussion, event: DiscussionEvent) -> bool:
    first = session.scalar(select(func.min(DiscussionEvent.id)).where(DiscussionEvent.discussion_id == discussion.id))
    return first == event.id


def merge(hub: Hub, session: Session, repo: Repo, discussion: Discussion, actor: User,
          comment: object = None, expected_head: str | None = None) -> str:
    """Merge an open pull request into its target branch through the commit path (`repos.commit.merge_pull_request`:
    a new commit on the branch, judged like any other); a conflict is a 409 naming the files. `expected_head`:
    the pull request's head as the merger saw it (a 412 if it moved since)."""
    if not discussion.is_pull_request:
        raise BadRequest("Only a pull request can be merged")
    if discussion.status not in ("open", "draft"):
        raise BadRequest(f"This pull request is {discussion.status}: only an open pull request can be merged")
    assert discussion.target_ref is not None
    if comment is not None and comment != "":
        body = _check_text(comment, "comment")
        _comment(session, discussion, actor, body)
    message = f"Merge pull request #{discussion.num}: {discussion.title}\n"
    oid = repo_commit.merge_pull_request(hub, session, repo, actor, discussion.num, discussion.target_ref, message,
                                         expected_head)
    discussion.merge_commit = oid
    _set_status(session, repo, discussion, actor, "merged", discussion.status)
    _notify(hub, session, repo, discussion, actor, f"Pull request #{discussion.num} merged on {repo.repo_id}",
            f"{actor.name} merged pull request #{discussion.num} ({discussion.title}) into "
            f"{discussion.target_ref.removeprefix('refs/heads/')} of {repo.repo_id}.")
    return oid


# ---- mail --------------------------------------------------------------------------------------

def _watchers(session: Session, repo: Repo, discussion: Discussion) -> list[User]:
    """Who hears of a new discussion, pull request, comment or merge: the repo's owner (a user) or its org's
    admins, and everyone who wrote in the discussion, each only while the policy lets them see the repo (as
    if they were signed in: a member removed from the org, or a deactivated account, hears nothing more of a
    private repo); never the one who acted."""
    ids: list[int] = []
    if repo.owner_org_id is None:
        if repo.owner_user_id is not None:
            ids.append(repo.owner_user_id)
    else:
        ids += session.scalars(select(OrgMember.user_id).where(OrgMember.org_id == repo.owner_org_id,
                                                              OrgMember.role == "admin").order_by(OrgMember.user_id))
    ids += [i for i in session.scalars(select(DiscussionEvent.author_user_id).where(
        DiscussionEvent.discussion_id == discussion.id, DiscussionEvent.kind == "comment").distinct()) if i is not None]
    ordered = list(dict.fromkeys(ids))
    users = _users(session, set(ordered))
    ref = repo_ref(repo)  # seeing a repo (REPO_METADATA_READ) does not depend on the viewer's gate request
    readers = []
    for i in ordered:
        user = users.get(i)
        if user is None or not user.is_active or user.deleted_at is not None:
            continue
        as_signed_in = Principal(method="session", user_id=user.id, username=user.name, is_admin=user.is_admin)
        if authorize(as_signed_in, Permission.REPO_METADATA_READ, ref):
            readers.append(user)
        if len(readers) == MAX_MAIL_RECIPIENTS:
            break
    return readers


def _notify(hub: Hub, session: Session, repo: Repo, discussion: Discussion, actor: User, subject: str,
            body: str) -> None:
    mailer: Mailer | None = hub.mailer
    if mailer is None:
        return
    path = page_path(repo, discussion.num)
    where = f"\n\n{mailer.link(path)}" if mailer.public_url else f"\n\nSee {path} on this hub."
    for user in _watchers(session, repo, discussion):
        if user.id == actor.id:
            continue
        to = primary_verified(user)  # an unverified address may not be theirs
        if to is not None:
            mailer.queue(session, Message(to=to, subject=f"[Bastion] {subject}",
                                          body=f"Hello {user.name},\n\n{body}{where}\n"))


def page_path(repo: Repo, num: int) -> str:
    prefix = "" if repo.type == "model" else f"/{PLURAL_BY_TYPE[repo.type]}"
    return f"{prefix}/{repo.repo_id}/discussions/{num}"


def _iso(when: datetime) -> str:
    return when.isoformat().replace("+00:00", "Z")


def actor_of(session: Session, user_id: int | None) -> User:
    user = user_by_id(session, user_id)
    if user is None:
        raise RepoNotFound()
    return user


# The repos layer asks these through its ports (bastion/wiring.py loads this module).
repo_commit.pull_request_opened = pull_request_opened
repo_commit.pull_request_facts = pull_request_facts
