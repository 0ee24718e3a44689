"""Git LFS file locks (`git lfs lock / unlock / locks`): create, list, verify, release.

Locks are per repository and path, whatever the ref: `git lfs push` asks /locks/verify and
refuses to push files locked by someone else, and the git push path rejects such changes too.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from bastion import audit
from bastion.accounts.models import User
from bastion.api.params import decimal
from bastion.audit.actions import AuditAction
from bastion.errors import BadRequest, Conflict, Forbidden, NotFound
from bastion.lfs.models import LfsLock
from bastion.repos.models import Repo
from bastion.storage.gitstore import validate_path

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000


@dataclass(frozen=True)
class LockView:
    id: int
    path: str
    owner_user_id: int
    owner_name: str
    created_at: datetime

    def as_json(self) -> dict[str, Any]:
        return {"id": str(self.id), "path": self.path, "locked_at": self.created_at.isoformat(),
                "owner": {"name": self.owner_name}}


def _view(lock: LfsLock, owner_name: str) -> LockView:
    return LockView(lock.id, lock.path, lock.owner_user_id, owner_name, lock.created_at)


def _rows(session: Session, repo_id: int) -> Any:
    return select(LfsLock, User.name).join(User, User.id == LfsLock.owner_user_id).where(LfsLock.repo_id == repo_id)


def create(session: Session, repo: Repo, owner: User, path: str, ref_name: str | None) -> LockView:
    path = validate_path(path)
    existing = session.execute(_rows(session, repo.id).where(LfsLock.path == path)).first()
    if existing is not None:
        raise _already_locked(_view(*existing))
    lock = LfsLock(repo_id=repo.id, path=path, owner_user_id=owner.id, ref_name=ref_name)
    try:
        with session.begin_nested():
            session.add(lock)
    except IntegrityError:
        # A concurrent lock of the same path won: report it like any other existing lock.
        existing = session.execute(_rows(session, repo.id).where(LfsLock.path == path)).first()
        if existing is None:
            raise
        raise _already_locked(_view(*existing)) from None
    audit.record(session, AuditAction.LFS_LOCK_CREATE, target=("repo", f"{repo.type}/{repo.repo_id}"),
                 namespace=repo.namespace, details={"path": path, "lockId": str(lock.id), "ref": ref_name})
    return _view(lock, owner.name)


def _already_locked(view: LockView) -> Conflict:
    message = f"{view.path} is already locked by {view.owner_name}"
    return Conflict(message, extra={"lock": view.as_json(), "message": message})


def page(session: Session, repo_id: int, *, path: str | None = None, lock_id: str | None = None,
         cursor: str | None = None, limit: int = DEFAULT_LIMIT) -> tuple[list[LockView], str | None]:
    """Locks ordered by id; the cursor is the id to start from."""
    if not 1 <= limit <= MAX_LIMIT:
        raise BadRequest(f"'limit' must be between 1 and {MAX_LIMIT}")
    query = _rows(session, repo_id)
    if path:
        query = query.where(LfsLock.path == path)
    if lock_id:
        if (wanted := decimal(lock_id)) is None:
            return [], None
        query = query.where(LfsLock.id == wanted)
    if cursor:
        if (start := decimal(cursor)) is None:
            raise BadRequest("Invalid cursor")
        query = query.where(LfsLock.id >= start)
    rows = session.execute(query.order_by(LfsLock.id).limit(limit + 1)).all()
    views = [_view(lock, name) for lock, name in rows]
    next_cursor = str(views[limit].id) if len(views) > limit else None
    return views[:limit], next_cursor


def unlock(session: Session, repo: Repo, lock_id: str, user_id: int, force: bool) -> LockView:
    """Release a lock: its owner may; anyone with write access may with `force` (git lfs unlock --force,
    audited with the lock's owner: breaking someone else's lock is a security-relevant act)."""
    wanted = decimal(lock_id)
    lock = session.get(LfsLock, wanted) if wanted is not None else None
    if lock is None or lock.repo_id != repo.id:
        raise NotFound("Lock not found")
    owner = session.get(User, lock.owner_user_id)
    view = _view(lock, owner.name if owner else "")
    if lock.owner_user_id != user_id and not force:
        raise Forbidden(f"{view.path} is locked by {view.owner_name}; use --force to break the lock")
    session.delete(lock)
    session.flush()
    audit.record(session, AuditAction.LFS_LOCK_DELETE, target=("repo", f"{repo.type}/{repo.repo_id}"),
                 namespace=repo.namespace, details={"path": view.path, "lockId": str(view.id),
                                                    "owner": view.owner_name, "forced": lock.owner_user_id != user_id})
    return view


def held_by_others(session: Session, repo_id: int, user_id: int, paths: list[str]) -> list[LockView]:
    """Locks on `paths` held by someone other than `user_id` (the push path refuses these)."""
    out: list[LockView] = []
    for start in range(0, len(paths), 500):
        chunk = paths[start:start + 500]
        query = _rows(session, repo_id).where(LfsLock.path.in_(chunk), LfsLock.owner_user_id != user_id)
        out += [_view(lock, name) for lock, name in session.execute(query).all()]
    return out
