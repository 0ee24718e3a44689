"""Admission: the one judgement every ref move passes before the ref moves.

Every way a commit becomes reachable from a ref -- a git push, an API commit (pull requests included),
a branch or tag created at any revision, a super-squash -- calls `admit()` for that move. It finds
every commit the move brings in that no ref reached before (`incoming`), the files those commits add
or change, and runs the post-commit hooks on them (secret push protection, block unsafe files, the
signed-commits rule, scan enqueue). A commit no ref reaches -- left in the object store by anything --
is therefore judged, with all its unreached history, like a push of it when a ref is moved onto it.

A git push is judged in two phases: in pre-receive, while its objects are still quarantined, the
refusing checks run (`JUDGE`); a refused push fails there and git deletes the quarantine, so its
objects never enter the repository. proc-receive then moves the refs and runs only the effects
(`EFFECTS`: scan enqueue). Every other path runs both at once (`ALL`). Hooks ask `judging()` and
`applying()`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

import pygit2
from sqlalchemy.orm import Session

from bastion.errors import BadRequest
from bastion.hub import Hub
from bastion.repos import commit as repo_commit  # a module: commit.py calls admit() in turn
from bastion.repos.models import Repo
from bastion.repos.objects import use_linked_objects
from bastion.repos.tree_rules import TreeLimits, tree_problems
from bastion.storage.gitstore import LFS_POINTER_MAX, GitRepo, parse_lfs_pointer, validate_path

ZERO = "0" * 40
MAX_PROBLEMS = 20

ALL, JUDGE, EFFECTS = "all", "judge", "effects"
_phase: ContextVar[str] = ContextVar("bastion_admission_phase", default=ALL)


@contextmanager
def phase(name: str) -> Iterator[None]:
    """Run the hooks of `admit()` calls in this context in one phase only (JUDGE or EFFECTS)."""
    if name not in (ALL, JUDGE, EFFECTS):
        raise ValueError(name)
    token = _phase.set(name)
    try:
        yield
    finally:
        _phase.reset(token)


def judging() -> bool:
    """Whether the refusing checks run now (push protection, block unsafe, signature rule)."""
    return _phase.get() != EFFECTS


def applying() -> bool:
    """Whether the effects of an admitted move run now (scan enqueue, notices)."""
    return _phase.get() != JUDGE


# ---- what a ref move brings in ---------------------------------------------------------------

def new_commits(git: GitRepo, tips: list[str]) -> Iterator[pygit2.Commit]:
    """Commits reachable from `tips` and from no existing ref: what a ref move onto them introduces."""
    repo = git.repo
    walker = None
    for tip in tips:
        try:
            commit = repo[tip].peel(pygit2.Commit)
        except (KeyError, ValueError, pygit2.InvalidSpecError):
            continue
        if walker is None:
            walker = repo.walk(commit.id, pygit2.enums.SortMode.NONE)
        else:
            walker.push(commit.id)
    if walker is None:
        return
    for name in repo.references:
        try:
            walker.hide(repo.references[name].peel(pygit2.Commit).id)
        except (KeyError, ValueError, pygit2.InvalidSpecError, pygit2.GitError):
            continue  # a ref to a tree or blob hides nothing
    yield from walker


@dataclass(frozen=True)
class ChangedFile:
    path: str
    blob: str  # git blob oid; empty for a deletion
    mode: int


def changed_files(git: GitRepo, commit: pygit2.Commit) -> Iterator[ChangedFile]:
    """Files a commit adds, changes or deletes relative to its first parent.

    Checking each new commit against its first parent covers every (path, blob) of every new
    tree: what a commit does not change came from a parent that is either new (checked too) or
    already held by a ref (checked when it arrived).
    """
    repo = git.repo
    parent_tree = commit.parents[0].tree if commit.parents else None
    diff = repo.diff(parent_tree, commit.tree) if parent_tree is not None else commit.tree.diff_to_tree(swap=True)
    for delta in diff.deltas:
        if delta.status == pygit2.enums.DeltaStatus.DELETED:
            yield ChangedFile(delta.old_file.path, "", 0)
        else:
            yield ChangedFile(delta.new_file.path, str(delta.new_file.id), delta.new_file.mode)


@dataclass
class Incoming:
    """What moving a ref to a tip brings in: the commits no ref reached, and the files they change."""
    commits: list[str] = field(default_factory=list)  # newest first
    files: list[ChangedFile] = field(default_factory=list)

    @property
    def blobs(self) -> list[tuple[str, str]]:
        return [(f.path, f.blob) for f in self.files if f.blob]


def incoming(git: GitRepo, tip: str, old: str | None = None) -> Incoming:
    """`Incoming` of a move to `tip`. `old`: the ref's current commit, if it has one; a file whose
    (path, blob) it already holds was judged when it arrived and is left out (a super-squash's new
    root commit has the same tree as the head it replaces, and so brings in no file)."""
    out = Incoming()
    old_tree = None
    if old and old != ZERO:
        try:
            old_tree = git.repo[old].peel(pygit2.Commit).tree
        except (KeyError, ValueError, pygit2.InvalidSpecError):
            old_tree = None
    for commit in new_commits(git, [tip]):
        out.commits.append(str(commit.id))
        for f in changed_files(git, commit):
            if f.blob and old_tree is not None and _holds(old_tree, f):
                continue
            out.files.append(f)
    return out


def _holds(tree: pygit2.Tree, f: ChangedFile) -> bool:
    try:
        entry = tree[f.path]
    except KeyError:
        return False
    return str(entry.id) == f.blob and entry.filemode == f.mode


# ---- the content rules of a push ------------------------------------------------------------

@dataclass
class FileChecks:
    """Problems found in the files a move brings in, and the LFS pointers among them to check."""
    problems: list[str] = field(default_factory=list)
    pointers: dict[str, list[tuple[str, int]]] = field(default_factory=dict)  # oid -> [(path, size)]
    seen: dict[str, Any] = field(default_factory=dict)  # blob -> (size, pointer)


def check_file(hub: Hub, git: GitRepo, f: ChangedFile, checks: FileChecks) -> None:
    """Path, submodule and size rules for one changed file (no database); collects its LFS pointer."""
    try:
        validate_path(f.path, symlink=f.mode == pygit2.GIT_FILEMODE_LINK)
    except BadRequest as exc:
        checks.problems.append(exc.message)
        return
    if f.mode == pygit2.GIT_FILEMODE_COMMIT:
        checks.problems.append(f"{f.path!r} is a submodule: submodules are not supported")
        return
    if f.blob not in checks.seen:
        _kind, size = git.repo.odb.read_header(f.blob)
        pointer = parse_lfs_pointer(git.repo[f.blob].data) if size <= LFS_POINTER_MAX else None
        checks.seen[f.blob] = (size, pointer)
    size, pointer = checks.seen[f.blob]
    if pointer is not None:
        checks.pointers.setdefault(pointer.oid, []).append((f.path, pointer.size))
    elif size > hub.settings.max_regular_file_size:
        checks.problems.append(
            f"{f.path!r} is {size} bytes: files over {hub.settings.max_regular_file_size} bytes must be "
            f"stored with Git LFS (git lfs track {f.path!r}; git lfs migrate import --include={f.path!r})")


def check_pointers(session: Session, repo: Repo, checks: FileChecks) -> None:
    """Every LFS pointer must name an object linked to *this* repository, with the size it says."""
    if not checks.pointers:
        return
    stored = use_linked_objects(session, repo.id, sorted(checks.pointers))
    for oid, uses in checks.pointers.items():
        for path, size in uses:
            if oid not in stored:
                checks.problems.append(
                    f"{path!r}: LFS object {oid} has not been uploaded to this repository "
                    "(is git-lfs installed? try: git lfs push --all origin)")
            elif stored[oid] != size:
                checks.problems.append(f"{path!r}: the LFS pointer says {size} bytes but object {oid} "
                                       f"has {stored[oid]} bytes")


def tree_rule_problems(hub: Hub, git: GitRepo, repo: Repo, brought: Incoming) -> list[str]:
    """The tree rules (entries per folder and in all, case-colliding names: `tree_rules`) for each
    commit `brought` brings in, against its first parent, reading only the folders it writes."""
    limits = TreeLimits.of(hub.settings, repo)
    problems = []
    for sha in brought.commits:
        commit = git.repo[sha].peel(pygit2.Commit)
        paths = [f.path for f in changed_files(git, commit) if f.blob]
        parent = commit.parents[0].tree if commit.parents else None
        problems += [f"commit {sha[:12]}: {p}" for p in tree_problems(git, commit.tree, parent, paths, limits)]
    return problems


# ---- the judgement ---------------------------------------------------------------------------

def admit(hub: Hub, session: Session, repo: Repo, ref: str, old: str | None, new: str, *,
          git: GitRepo | None = None, options: dict[str, str] | None = None, pr_number: int | None = None,
          brought: Incoming | None = None, content_checked: bool = False,
          tag_message: str | None = None) -> repo_commit.CommitResult:
    """Judge moving `ref` from `old` (None: it is created) to `new`; raise (4xx) if it may not move.

    Runs inside the caller's transaction, before the ref moves; the caller moves it after.
    `brought`: `incoming(...)` if the caller already walked it. `content_checked`: the path, size and
    LFS-pointer rules were applied to `brought` already (a push's pre-receive, an API commit that
    built its files from validated operations); otherwise they are applied here. `tag_message`: the
    message(s) of the annotated tag the move writes, for the checks that read it (push protection).
    """
    git = git or hub.git(repo.storage_key)
    tip = str(git.repo[new].peel(pygit2.Commit).id)
    parent = old if old and old != ZERO else None
    if brought is None:
        brought = incoming(git, tip, parent)
    if judging() and not content_checked and brought.files:
        checks = FileChecks()
        for f in brought.files:
            if f.blob:
                check_file(hub, git, f, checks)
        check_pointers(session, repo, checks)
        checks.problems += tree_rule_problems(hub, git, repo, brought)
        if checks.problems:
            shown = list(dict.fromkeys(checks.problems))
            raise BadRequest(f"Rejected: commit {brought.commits[0][:12] if brought.commits else tip[:12]}: "
                             + "; ".join(shown[:MAX_PROBLEMS]))
    result = repo_commit.CommitResult(tip, parent, ref, pr_number, brought.blobs, dict(options or {}),
                                      new_commits=list(brought.commits), tag_message=tag_message)
    for hook in repo_commit.post_commit_hooks:
        hook(hub, session, repo, result)
    return result
