"""Download guards: what may keep a file of a repository from being downloaded, asked by every path
that serves file contents (resolve, the git-lfs batch and object routes, Xet reconstructions, the web
file page).

Higher features register a guard here instead of the download paths importing them (the inversion
`repos.commit.post_commit_hooks` uses): scanning's "block unsafe files" refuses files not yet judged
safe. A guard is asked after the route's authorization check and returns the reason for a 403, or None.
"""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy.orm import Session

from bastion.authz import Principal
from bastion.errors import Forbidden
from bastion.hub import Hub
from bastion.repos.models import Repo


class DownloadBlocked(Forbidden):
    code = "DownloadBlocked"


# (hub, session, repo, content key: an LFS sha256 or a git blob id, caller) -> reason or None
DownloadGuard = Callable[[Hub, Session, Repo, str, Principal], str | None]
download_guards: list[DownloadGuard] = []


def download_refusal(hub: Hub, session: Session, repo: Repo, key: str, principal: Principal) -> str | None:
    """Why `principal` may not download the content `key` of `repo` now; None when it may."""
    for guard in download_guards:
        reason = guard(hub, session, repo, key, principal)
        if reason:
            return reason
    return None


def refuse_download(hub: Hub, session: Session, repo: Repo, key: str, principal: Principal, what: str) -> None:
    """download_refusal() as the 403 the caller sees, naming `what` (a path or an oid)."""
    reason = download_refusal(hub, session, repo, key, principal)
    if reason:
        raise DownloadBlocked(f"{what}: {reason}")
