"""The audit event of an object's bytes stored for a repo, whichever way they came (LFS basic upload,
multipart completion, a Xet file registration): repo, oid, size and the user who uploaded them."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from bastion import audit
from bastion.accounts.models import User
from bastion.audit.actions import AuditAction
from bastion.audit.context import bind_context
from bastion.repos.models import Repo


def object_stored(session: Session, repo_id: int, oid: str, size: int, transfer: str,
                  user_id: int | None = None, **details: Any) -> None:
    """Audit `oid` stored for a repo (after link_object, in its transaction). A capability-URL upload
    has no signed-in caller: `user_id` names the user the URL was minted for, the event's actor."""
    repo = session.get(Repo, repo_id)
    if repo is None:
        return  # deleted meanwhile: its link went with it (ON DELETE CASCADE)
    user = session.get(User, user_id) if user_id else None
    actor = {"actor_id": user.id, "actor_name": user.name} if user is not None else {}
    with bind_context(**actor):  # type: ignore[arg-type]
        audit.record(session, AuditAction.LFS_OBJECT_STORE, target=("repo", f"{repo.type}/{repo.repo_id}"),
                     namespace=repo.namespace, details={"oid": oid, "size": size, "transfer": transfer, **details})
