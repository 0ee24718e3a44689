"""The LFS objects a repository holds, as the commit path and downloads need them.

Which objects a repository proved it holds (its links) and where their bytes are belong to lfs, a
feature above repos: lfs fills this port when it is imported (bastion.lfs.content), so the commit path
and `resolve` use them without importing lfs. Asking before lfs is loaded is a RuntimeError, never an
answer: a commit must not pass its pointer check, nor a download 404, because a provider is missing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from sqlalchemy.orm import Session

if TYPE_CHECKING:
    from fastapi import Request, Response

    from bastion.hub import Hub


class LfsObjects(Protocol):
    def use_linked_objects(self, session: Session, repo_id: int, oids: list[str]) -> dict[str, int]:
        """Sizes of those of `oids` linked to the repo, each link marked used (storage GC keeps it)."""
        ...

    def object_response(self, hub: Hub, repo_id: int, oid: str, request: Request,
                        headers: dict[str, str]) -> Response | None:
        """A download of a linked object (HEAD, a single Range); None when it is stored nowhere."""
        ...


_provider: LfsObjects | None = None


def provide(provider: LfsObjects) -> None:
    global _provider
    _provider = provider


def _lfs() -> LfsObjects:
    if _provider is None:
        raise RuntimeError("no LFS object provider: bastion.lfs.content fills bastion.repos.objects when imported")
    return _provider


def use_linked_objects(session: Session, repo_id: int, oids: list[str]) -> dict[str, int]:
    return _lfs().use_linked_objects(session, repo_id, oids)


def object_response(hub: Hub, repo_id: int, oid: str, request: Request, headers: dict[str, str]) -> Response | None:
    return _lfs().object_response(hub, repo_id, oid, request, headers)
