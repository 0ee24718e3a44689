"""The daily allowance of users who upload content for pull requests to repos they cannot write to.

Anyone who may read a repo may open a pull request on it, with LFS objects and Xet xorbs of its own: without a
bound, reading a public repo would be enough to fill the storage. Each such upload is charged (LFS: when the
batch hands out its upload action; Xet: before the xorb's body is read) against
`Settings.contribution_upload_bytes_per_day` over a sliding 24 hours, once per user and object; past it the
request is refused with a 429 and the time at which enough of the window frees. A git push to a pull request's
ref (refs/pr/N) by its author is bounded by what remains (git's `receive.maxInputSize`) and its pack charged
once accepted. Writers are never charged.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from datetime import datetime, timedelta

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from bastion.db import utcnow
from bastion.errors import BastionError
from bastion.lfs.models import ContributionUpload

WINDOW = timedelta(hours=24)


class AllowanceExceeded(BastionError):
    status = 429
    code = "TooManyRequests"

    def __init__(self, limit: int, used: int, asked: int, retry_after: timedelta) -> None:
        seconds = max(1, math.ceil(retry_after.total_seconds()))
        hours = max(1, math.ceil(seconds / 3600))
        super().__init__(
            f"Uploading {asked} more bytes would exceed your allowance for pull-request content on repositories "
            f"you cannot write to ({used} of {limit} bytes used in the last 24 hours). Try again in "
            f"{hours} hour{'s' if hours != 1 else ''}, or ask the repository's maintainers for write access.",
            headers={"Retry-After": str(seconds)})


def charge(session: Session, limit: int, user_id: int, repo_id: int, items: Iterable[tuple[str, int]]) -> None:
    """Charge `items` ((key, size), keys already charged to this user in the window are free) in the caller's
    transaction, or raise AllowanceExceeded and charge nothing."""
    now = utcnow()
    since = now - WINDOW
    session.execute(delete(ContributionUpload).where(ContributionUpload.user_id == user_id,
                                                     ContributionUpload.at <= since))
    wanted = {key[:80]: size for key, size in items if size > 0}
    if not wanted:
        return
    charged = set(session.scalars(select(ContributionUpload.key).where(
        ContributionUpload.user_id == user_id, ContributionUpload.at > since, ContributionUpload.key.in_(wanted))))
    new = {key: size for key, size in wanted.items() if key not in charged}
    asked = sum(new.values())
    if not asked:
        return
    used = int(session.scalar(select(func.coalesce(func.sum(ContributionUpload.size), 0)).where(
        ContributionUpload.user_id == user_id, ContributionUpload.at > since)) or 0)
    if used + asked > limit:
        raise AllowanceExceeded(limit, used, asked, _frees(session, user_id, since, used + asked - limit, now))
    session.add_all(ContributionUpload(user_id=user_id, repo_id=repo_id, key=key, size=size, at=now)
                    for key, size in new.items())
    session.flush()


def remaining(session: Session, limit: int, user_id: int) -> int:
    """Bytes `user_id` may still upload in the window (0 when the allowance is spent); a bound for uploads whose
    size is known only as they arrive (a git push's pack)."""
    since = utcnow() - WINDOW
    used = int(session.scalar(select(func.coalesce(func.sum(ContributionUpload.size), 0)).where(
        ContributionUpload.user_id == user_id, ContributionUpload.at > since)) or 0)
    return max(0, limit - used)


def _frees(session: Session, user_id: int, since: datetime, excess: int, now: datetime) -> timedelta:
    """When enough of the window has aged out for `excess` more bytes (the whole window if never)."""
    freed = 0
    for size, at in session.execute(select(ContributionUpload.size, ContributionUpload.at).where(
            ContributionUpload.user_id == user_id, ContributionUpload.at > since).order_by(ContributionUpload.at)):
        freed += size
        if freed >= excess:
            return max(at + WINDOW - now, timedelta(seconds=1))
    return WINDOW
