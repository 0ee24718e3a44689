"""The one commit path: API commits (and later git pushes and Xet files) end here.

All-or-nothing: every operation is validated and every LFS object checked (stored, verified,
linked to this repo, right size) before a git object is written -- a regular file whose text is an
LFS pointer is checked exactly like an LFS add; the branch then moves by
compare-and-swap, and the audit event commits or rolls back with it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import pygit2
from sqlalchemy import select
from sqlalchemy.orm import Session

from bastion import audit
from bastion.accounts.models import User
from bastion.audit.actions import AuditAction
from bastion.authz import DiscussionRef, Permission, RepoRef
from bastion.db import utcnow
from bastion.errors import (
    BadRequest,
    BastionError,
    EntryNotFound,
    Forbidden,
    PreconditionFailed,
    RepoNotFound,
    RevisionNotFound,
)
from bastion.hub import Hub
from bastion.repos import admission, cards, protection
from bastion.repos.models import Repo
from bastion.repos.objects import use_linked_objects
from bastion.repos.tree_rules import TreeLimits, tree_problems
from bastion.storage.gitstore import (
    MODE_FILE,
    PR_REF_RE,
    GitRepo,
    lfs_pointer_bytes,
    parse_lfs_pointer,
    signature,
    validate_path,
)


@dataclass(frozen=True)
class AddFile:
    path: str
    content: bytes


@dataclass(frozen=True)
class AddLfsFile:
    path: str
    oid: str
    size: int | None  # None: a copy of an object this repo already holds


@dataclass(frozen=True)
class DeleteFile:
    path: str


@dataclass(frozen=True)
class DeleteFolder:
    path: str


Operation = AddFile | AddLfsFile | DeleteFile | DeleteFolder


@dataclass
class CommitResult:
    commit_oid: str
    parent_oid: str | None
    ref_name: str
    pr_number: int | None = None
    changed_blobs: list[tuple[str, str]] = field(default_factory=list)  # (path, git blob oid)
    # What the committer asked of the follow-up checks, e.g. {"secrets_bypass": "test credential"}.
    options: dict[str, str] = field(default_factory=dict)
    new_commits: list[str] = field(default_factory=list)  # every commit sha this ref move brings in
    # The message of the annotated tag this move writes (tags of tags: every message, joined), for
    # checks that read it (secret push protection); None for a branch or a lightweight tag.
    tag_message: str | None = None


# Follow-up work run inside the commit's transaction (scan enqueue, signature checks, ...).
PostCommitHook = Callable[[Hub, Session, Repo, CommitResult], None]
post_commit_hooks: list[PostCommitHook] = []

@dataclass(frozen=True)
class PullRequestOpened:
    """A pull request a commit opens (`create_commit(..., create_pr=True)`), for the Community feature."""
    number: int
    base_ref: str  # the branch it targets: refs/heads/…
    title: str
    description: str
    commit_oid: str


@dataclass(frozen=True)
class PullRequestFacts:
    """Who may commit to refs/pr/N: its author, and whether it still takes commits (open or draft)."""
    author_user_id: int | None
    open: bool


# The Community feature (bastion.community.service, above repos) owns pull requests: it records the one a
# commit opens, in the commit's transaction, and says who owns refs/pr/N. Both are asked only where a pull
# request is involved, and raise while empty (a pull request is never opened without its discussion).
pull_request_opened: Callable[[Hub, Session, Repo, User, PullRequestOpened], None] | None = None
pull_request_facts: Callable[[Session, Repo, int], PullRequestFacts | None] | None = None


def pull_request_of(session: Session, repo: Repo, revision: str) -> PullRequestFacts | None:
    """Facts of the pull request whose ref `revision` names (refs/pr/N); None for any other revision, or a
    ref no pull request owns."""
    number = pr_number_of(revision)
    if number is None:
        return None
    if pull_request_facts is None:
        raise RuntimeError("no pull request provider: bastion.community.service sets repos.commit.pull_request_facts")
    return pull_request_facts(session, repo, number)


def commit_right(session: Session, repo: Repo, ref: RepoRef, revision: str, *,
                 create_pr: bool = False) -> tuple[Permission, RepoRef | DiscussionRef]:
    """The one check a commit to `revision` needs, for the commit API and git pushes alike: opening a pull
    request is for anyone who reads the repo, a commit to refs/pr/N for its author (while it is open) and the
    writers (no pull request owns the ref: the writers only), a commit to a branch or tag for the writers
    (protections are the commit path's)."""
    if create_pr:
        return Permission.REPO_DISCUSSION_CREATE, ref
    if pr_number_of(revision) is not None:
        facts = pull_request_of(session, repo, revision)
        return Permission.REPO_PR_WRITE, DiscussionRef(ref, facts.author_user_id if facts else None,
                                                       facts.open if facts else False)
    return Permission.REPO_WRITE, ref


def pr_number_of(revision: str) -> int | None:
    if not PR_REF_RE.match(revision):
        return None
    return int(revision.rsplit("/", 1)[1])


# Signs the commit objects Bastion writes (bastion.signing installs the instance key's signer at
# start-up): commit text -> signature for its gpgsig header. None: Bastion's commits are unsigned.
commit_signer: Callable[[str], str] | None = None


def _write_commit(git: GitRepo, tree: pygit2.Oid, parents: list[pygit2.Oid], author: pygit2.Signature,
                  message: str) -> pygit2.Oid:
    if commit_signer is None:
        return git.create_commit(tree, parents, author, message)
    content = git.repo.create_commit_string(author, author, message, tree, parents)
    return git.repo.create_commit_with_signature(content, commit_signer(content))


def _pointers_as_lfs(ops: list[Operation]) -> list[Operation]:
    """A regular file whose content is an LFS pointer is an LFS add of the object it names, validated as
    one: every reader resolves a pointer, so a pointer written as plain text would otherwise reference an
    object this repository never proved it holds (another tenant's file, found by its sha256)."""
    out: list[Operation] = []
    for op in ops:
        pointer = parse_lfs_pointer(op.content) if isinstance(op, AddFile) else None
        out.append(AddLfsFile(op.path, pointer.oid, pointer.size) if pointer is not None else op)
    return out


def _check_lfs_objects(session: Session, repo: Repo, ops: list[Operation]) -> dict[str, int]:
    """Sizes of the LFS objects the commit references; any missing/mismatched one is a 400."""
    oids = {op.oid for op in ops if isinstance(op, AddLfsFile)}
    if not oids:
        return {}
    stored = use_linked_objects(session, repo.id, sorted(oids))
    for op in ops:
        if not isinstance(op, AddLfsFile):
            continue
        if op.oid not in stored:
            raise BadRequest(f"LFS object {op.oid} for {op.path!r} was not uploaded to this repository "
                             "(upload it through the LFS batch API first)")
        if op.size is not None and op.size != stored[op.oid]:
            raise BadRequest(f"LFS pointer for {op.path!r} says {op.size} bytes but the stored object "
                             f"{op.oid} has {stored[op.oid]} bytes")
    return stored


def _insert(changes: dict[str, object], path: str, value: object) -> None:
    parts = path.split("/")
    node = changes
    for part in parts[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = {}
            node[part] = child
        node = child
    node[parts[-1]] = value


def _build_changes(git: GitRepo, base: pygit2.Commit | None, ops: list[Operation],
                   lfs_sizes: dict[str, int]) -> tuple[dict[str, object], list[tuple[str, str]]]:
    changes: dict[str, object] = {}
    added: list[tuple[str, str]] = []
    seen: set[str] = set()
    repo = git.repo
    for op in ops:
        path = validate_path(op.path.rstrip("/") if isinstance(op, DeleteFolder) else op.path)
        if path in seen:
            raise BadRequest(f"Path {path!r} appears more than once in this commit")
        seen.add(path)
        if isinstance(op, AddFile):
            blob = repo.create_blob(op.content)
            _insert(changes, path, blob)
            added.append((path, str(blob)))
        elif isinstance(op, AddLfsFile):
            blob = repo.create_blob(lfs_pointer_bytes(op.oid, lfs_sizes[op.oid]))
            _insert(changes, path, blob)
            added.append((path, str(blob)))
        else:
            entry = None
            if base is not None:
                try:
                    entry = base.tree[path]
                except KeyError:
                    entry = None
            # A folder named without its trailing '/' is deleted as a folder, as the Hub does.
            if isinstance(op, DeleteFile) and (entry is None or entry.type_str not in ("blob", "tree")):
                raise EntryNotFound(f"Cannot delete {path}: A file with this name doesn't exist")
            if isinstance(op, DeleteFolder) and (entry is None or entry.type_str != "tree"):
                raise EntryNotFound(f"Cannot delete folder {path}: it doesn't exist")
            _insert(changes, path, None)
    return changes, added


def create_commit(hub: Hub, session: Session, repo: Repo, author: User, revision: str, ops: list[Operation],
                  summary: str, description: str = "", parent_commit: str | None = None,
                  create_pr: bool = False, options: dict[str, str] | None = None) -> CommitResult:
    """Commit `ops` on `revision` (a branch or refs/pr/N). The caller commits `session` after."""
    if not summary.strip():
        raise BadRequest("A commit needs a summary")
    if len(ops) > hub.settings.max_commit_operations:
        raise BadRequest(f"Too many operations in one commit (max {hub.settings.max_commit_operations})")
    git = hub.git(repo.storage_key)
    try:
        base_ref = git.branch_ref_name(revision)
    except BadRequest:
        if create_pr:  # a commit id or another name no branch can have: the Hub's 404 for a PR against it
            raise RevisionNotFound(f"Invalid rev id: {revision}: a pull request targets a branch") from None
        raise
    if create_pr and not base_ref.startswith("refs/heads/"):
        raise BadRequest(f"A pull request targets a branch, not {revision!r}")
    if create_pr and pull_request_opened is None:
        raise RuntimeError("no pull request provider: bastion.community.service sets repos.commit.pull_request_opened")
    ops = _pointers_as_lfs(ops)
    for op in ops:
        if isinstance(op, AddFile) and op.path == cards.CARD_PATH:
            cards.check_card(op.content, repo.type)  # the Hub refuses a card with invalid metadata
    lfs_sizes = _check_lfs_objects(session, repo, ops)
    sig = signature(author.name, author.email)
    message = summary.strip() + ("\n\n" + description.strip() if description.strip() else "") + "\n"

    with git.write_lock():
        head = git.branch_head(base_ref)
        if head is None:
            git.resolve(revision)  # a tag or a sha is not a branch: RevisionNotFound names it
            raise BadRequest(f"Cannot commit to {revision!r}: not a branch")
        if parent_commit and not str(head).startswith(parent_commit.lower()):
            # The Hub's text, which the client shows (a 412 says "refresh and try again").
            raise PreconditionFailed(f"The branch was updated since you opened this page. Please refresh and try "
                                     f"again. ({revision} is at {head}, not {parent_commit})")
        base = git.repo[head]
        changes, added = _build_changes(git, base, ops, lfs_sizes)
        tree = git.write_tree(base.tree, changes) or git.repo.TreeBuilder().write()
        if problems := tree_problems(git, git.repo[tree], base.tree, [path for path, _ in added],
                                     TreeLimits.of(hub.settings, repo)):
            raise BadRequest("; ".join(problems[:10]))
        new = _write_commit(git, tree, [head], sig, message)

        # The repo row may have been deleted meanwhile; lock it for the rest of the transaction.
        locked = session.scalar(select(Repo).where(Repo.id == repo.id).with_for_update())
        if locked is None:
            raise RepoNotFound()
        pr_number = None
        if create_pr:
            pr_number = locked.next_pr_number
            locked.next_pr_number = pr_number + 1
            ref_name = f"refs/pr/{pr_number}"
        else:
            ref_name = base_ref
        locked.last_modified = utcnow()
        # The one judgement of every ref move (the files were built from validated operations above).
        # A new pull request's ref does not exist yet; its commit's parent is the branch head.
        result = admission.admit(hub, session, locked, ref_name, str(head), str(new), git=git, options=options,
                                 pr_number=pr_number,
                                 brought=admission.Incoming([str(new)], [admission.ChangedFile(p, b, MODE_FILE)
                                                                         for p, b in added]),
                                 content_checked=True)
        audit.record(session, AuditAction.REPO_COMMIT, target=("repo", f"{repo.type}/{repo.repo_id}"),
                     namespace=repo.namespace,
                     details={"commit": str(new), "parent": str(head), "ref": ref_name, "summary": summary[:200],
                              "files": len(ops), "judged": len(result.new_commits)})
        if create_pr:
            audit.record(session, AuditAction.REPO_PR_CREATE, target=("repo", f"{repo.type}/{repo.repo_id}"),
                         namespace=repo.namespace, details={"number": pr_number, "commit": str(new)})
            assert pull_request_opened is not None and pr_number is not None
            pull_request_opened(hub, session, locked, author, PullRequestOpened(
                pr_number, base_ref, summary.strip(), description.strip(), str(new)))
        session.flush()
        # Last step: move the ref. If it fails, the caller's transaction rolls back the audit rows.
        git.compare_and_swap(ref_name, None if create_pr else head, new)
    return result


def squash_history(hub: Hub, session: Session, repo: Repo, author: User, branch: str, message: str) -> str:
    git = hub.git(repo.storage_key)
    ref_name = git.branch_ref_name(branch)
    if refused := protection.rewrite_refused(repo, "branch", ref_name.removeprefix("refs/heads/"),
                                             "history rewrites (super-squash)"):
        raise Forbidden(refused)
    with git.write_lock():
        head = git.branch_head(ref_name)
        if head is None:
            raise _missing_branch(git, branch)
        commit = git.repo[head]
        new = _write_commit(git, commit.tree.id, [], signature(author.name, author.email),
                            (message.strip() or "Super-squash branch") + "\n")
        locked = session.scalar(select(Repo).where(Repo.id == repo.id).with_for_update())
        if locked is None:
            raise RepoNotFound()
        # A new commit like any other: judged (the signed-commits rule, scans) before the ref moves. Its
        # tree is the head's, so it brings in no file the branch did not hold.
        result = admission.admit(hub, session, locked, ref_name, str(head), str(new), git=git)
        audit.record(session, AuditAction.REPO_SQUASH, target=("repo", f"{repo.type}/{repo.repo_id}"),
                     namespace=repo.namespace, details={"branch": branch, "from": str(head), "to": str(new),
                                                        "judged": len(result.new_commits)})
        session.flush()
        git.compare_and_swap(ref_name, head, new)
    return str(new)


class MergeConflict(BastionError):
    status = 409
    code = "MergeConflict"

    def __init__(self, files: list[str]) -> None:
        shown = ", ".join(files[:20]) + (" …" if len(files) > 20 else "")
        super().__init__(f"This pull request has conflicts with its target branch: {shown}",
                         extra={"conflictingFiles": files})
        self.files = files


def merge_trees(git: GitRepo, head: pygit2.Oid, tip: pygit2.Oid) -> tuple[list[str], pygit2.Index]:
    """Three-way merge of `tip` (a pull request) into `head` (its target) from their merge base: the files
    both sides changed differently (conflicts), and the merged index."""
    repo = git.repo
    base = repo.merge_base(head, tip)
    ancestor = repo[base].peel(pygit2.Commit).tree if base is not None else repo[repo.TreeBuilder().write()]
    index = repo.merge_trees(ancestor, repo[head].peel(pygit2.Commit).tree, repo[tip].peel(pygit2.Commit).tree)
    files = sorted({entry.path for conflict in (index.conflicts or ()) for entry in conflict if entry is not None})
    return files, index


def merge_pull_request(hub: Hub, session: Session, repo: Repo, author: User, number: int, target_ref: str,
                       message: str, expected_tip: str | None = None) -> str:
    """Merge refs/pr/`number` into `target_ref` as one new commit on the branch (parent: the branch head; tree:
    the three-way merge). The pull request's own commits were judged for refs/pr/N, under its rules; the merge
    commit is judged for the branch (signed-commit rule, push protection, block unsafe, tree rules), like any
    commit that lands there. `expected_tip`: the head of refs/pr/N the merger reviewed (the page's form sends
    it): a pull request its author moved since is refused, not merged unread. The caller commits `session`
    after."""
    git = hub.git(repo.storage_key)
    with git.write_lock():
        head = git.branch_head(target_ref)
        tip = git.branch_head(f"refs/pr/{number}")
        if head is None:
            raise BadRequest(f"The target branch {target_ref.removeprefix('refs/heads/')!r} no longer exists")
        if tip is None:
            raise BadRequest(f"refs/pr/{number} no longer exists")
        if expected_tip is not None and str(tip) != expected_tip:
            raise PreconditionFailed(f"The pull request was updated since you opened this page: refresh it and review "
                                     f"its new commits before merging (refs/pr/{number} is at {tip}, not "
                                     f"{expected_tip})")
        conflicts, index = merge_trees(git, head, tip)
        if conflicts:
            raise MergeConflict(conflicts)
        tree = index.write_tree(git.repo)
        if tree == git.repo[head].peel(pygit2.Commit).tree.id:
            raise BadRequest("This pull request changes nothing on its target branch: nothing to merge")
        new = _write_commit(git, tree, [head], signature(author.name, author.email), message)
        locked = session.scalar(select(Repo).where(Repo.id == repo.id).with_for_update())
        if locked is None:
            raise RepoNotFound()
        locked.last_modified = utcnow()
        result = admission.admit(hub, session, locked, target_ref, str(head), str(new), git=git)
        audit.record(session, AuditAction.REPO_PR_MERGE, target=("repo", f"{repo.type}/{repo.repo_id}"),
                     namespace=repo.namespace,
                     details={"number": number, "commit": str(new), "parent": str(head), "pullRequestHead": str(tip),
                              "ref": target_ref, "judged": len(result.new_commits)})
        session.flush()
        git.compare_and_swap(target_ref, head, new)
    return str(new)


def _missing_branch(git: GitRepo, branch: str) -> Exception:
    git.resolve(branch)  # raises RevisionNotFound for unknown names
    return BadRequest(f"{branch!r} is not a branch")
