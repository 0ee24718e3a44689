"""Branches and tags: create and delete, each audited; refs move only by compare-and-swap."""

from __future__ import annotations

import pygit2
from sqlalchemy.orm import Session

from bastion import audit
from bastion.accounts.models import User
from bastion.audit.actions import AuditAction
from bastion.errors import BadRequest, Conflict, Forbidden, RevisionNotFound
from bastion.hub import Hub
from bastion.repos import admission, protection
from bastion.repos.models import Repo
from bastion.storage.gitstore import DEFAULT_BRANCH, GitRepo, signature


def _target(repo: Repo) -> tuple[str, str]:
    return ("repo", f"{repo.type}/{repo.repo_id}")


def _ref_created(hub: Hub, session: Session, repo: Repo, git: GitRepo, ref: str, commit: str,
                 tag_message: str | None = None) -> int:
    """A ref created at any commit is judged before it is written, as a push of that commit would be:
    every commit it brings in that no ref reached (a dangling commit and all its unreached history) has
    its files checked (paths, sizes, tree limits, LFS links, push protection, block unsafe files), an
    annotated tag's message is read by push protection, and the signed-commits rule is applied to the
    history it brings under a covered ref. Returns how many commits were judged."""
    return len(admission.admit(hub, session, repo, ref, None, commit, git=git,
                               tag_message=tag_message or None).new_commits)


def _refuse_name(repo: Repo, git: GitRepo, kind: str, name: str) -> None:
    """The name rules a new ref obeys beside the others (under the write lock, so two creations
    that differ only in case cannot both pass)."""
    prefix = "refs/heads/" if kind == "branch" else "refs/tags/"
    if refused := protection.creation_refused(repo, kind, name, protection.RefNames(git.ref_names(prefix))):
        raise BadRequest(refused)


def create_branch(hub: Hub, session: Session, repo: Repo, branch: str, starting_point: str | None) -> str:
    git = hub.git(repo.storage_key)
    git.validate_ref_name(branch)
    with git.write_lock():
        if git.repo.references.get(f"refs/heads/{branch}") is not None:
            # The Hub's text (the client's `exist_ok` keys on the 409).
            raise Conflict(f"Reference refs/heads/{branch} already exists")
        _refuse_name(repo, git, "branch", branch)
        start = git.resolve(starting_point or DEFAULT_BRANCH)
        judged = _ref_created(hub, session, repo, git, f"refs/heads/{branch}", str(start.id))
        audit.record(session, AuditAction.REPO_BRANCH_CREATE, target=_target(repo), namespace=repo.namespace,
                     details={"branch": branch, "commit": str(start.id), "judged": judged})
        session.flush()
        git.compare_and_swap(f"refs/heads/{branch}", None, start.id)
    return str(start.id)


def delete_branch(hub: Hub, session: Session, repo: Repo, branch: str) -> None:
    git = hub.git(repo.storage_key)
    if branch == DEFAULT_BRANCH:
        raise BadRequest(f"Cannot delete refs/heads/{DEFAULT_BRANCH}")
    if refused := protection.deletion_refused(repo, "branch", branch):
        raise Forbidden(refused)
    with git.write_lock():
        head = git.branch_head(f"refs/heads/{branch}")
        if head is None:
            raise RevisionNotFound(f"Invalid rev id: {branch}")
        audit.record(session, AuditAction.REPO_BRANCH_DELETE, target=_target(repo), namespace=repo.namespace,
                     details={"branch": branch, "commit": str(head)})
        session.flush()
        git.delete_ref(f"refs/heads/{branch}", head)


def create_tag(hub: Hub, session: Session, repo: Repo, actor: User, revision: str, tag: str,
               message: str | None) -> str:
    git = hub.git(repo.storage_key)
    commit = git.resolve(revision)  # as the Hub: a missing revision is a 404 RevisionNotFound before any name check
    git.validate_ref_name(tag)
    with git.write_lock():
        if git.repo.references.get(f"refs/tags/{tag}") is not None:
            raise Conflict(f"Tag {tag!r} already exists")
        _refuse_name(repo, git, "tag", tag)
        commit = git.resolve(revision)
        judged = _ref_created(hub, session, repo, git, f"refs/tags/{tag}", str(commit.id), tag_message=message)
        audit.record(session, AuditAction.REPO_TAG_CREATE, target=_target(repo), namespace=repo.namespace,
                     details={"tag": tag, "commit": str(commit.id), "annotated": bool(message), "judged": judged})
        session.flush()
        if message:
            # An annotated tag keeps who tagged and why; libgit2 refuses if the ref exists.
            try:
                git.repo.create_tag(tag, commit.id, pygit2.enums.ObjectType.COMMIT,
                                    signature(actor.name, actor.email), message)
            except (pygit2.AlreadyExistsError, ValueError) as exc:
                raise Conflict(f"Tag {tag!r} already exists") from exc
        else:
            git.compare_and_swap(f"refs/tags/{tag}", None, commit.id)
    return str(commit.id)


def delete_tag(hub: Hub, session: Session, repo: Repo, tag: str) -> None:
    if refused := protection.deletion_refused(repo, "tag", tag):
        raise Forbidden(refused)
    git = hub.git(repo.storage_key)
    with git.write_lock():
        ref = git.repo.references.get(f"refs/tags/{tag}")
        if ref is None:
            raise RevisionNotFound(f"Invalid rev id: {tag}")
        audit.record(session, AuditAction.REPO_TAG_DELETE, target=_target(repo), namespace=repo.namespace,
                     details={"tag": tag})
        session.flush()
        git.delete_ref(f"refs/tags/{tag}", ref.target)
