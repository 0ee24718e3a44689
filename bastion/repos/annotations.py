"""What features above repos add to repos' API answers, through slots they fill when imported
(bastion.wiring loads them): scan statuses (scanning: `securityRepoStatus` of repo info,
`securityFileStatus` of an expanded tree listing) and commit signatures (signing: the `signature` of
each listed commit). An empty slot raises: repo info never answers without the status it was asked.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pygit2
    from sqlalchemy.orm import Session

    from bastion.authz import Principal
    from bastion.hub import Hub
    from bastion.repos.models import Repo

# (hub, session, repo, commit, reader) -> securityRepoStatus of that revision as `reader` may see it.
security_status: Callable[[Hub, Session, Repo, pygit2.Commit, Principal], dict[str, Any]] | None = None
# (hub, session, repo, scan keys, reader) -> securityFileStatus of each blob, by scan key.
file_statuses: Callable[[Hub, Session, Repo, list[str], Principal], dict[str, dict[str, Any]]] | None = None
# (hub, repo, commits) -> the `signature` field of each commit, by sha.
signatures: Callable[[Hub, Repo, list[pygit2.Commit]], dict[str, dict[str, Any]]] | None = None


def need(slot: Callable[..., Any] | None, name: str) -> Callable[..., Any]:
    if slot is None:
        raise RuntimeError(f"repos.annotations.{name} is not filled (bastion.wiring.load() fills it)")
    return slot
