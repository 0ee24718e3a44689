"""Leaked Bastion tokens, handled in one path: verify locally, revoke, audit, e-mail the owner.

Used by the secret scanner (a live token found in any repo, public or private) and by the public
revocation endpoint (`POST /api/credentials/revoke`).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Protocol

from sqlalchemy.orm import Session

from bastion.accounts.service import notify
from bastion.db import transaction
from bastion.hub import Hub
from bastion.tokens import service as tokens

log = logging.getLogger("bastion.leaks")


class LeakedCredentials(Protocol):
    """Another kind of Bastion credential with the token format (a feature above scanning owns it)."""

    def is_live(self, session: Session, secret: str) -> bool | None:
        """True live, False known but dead, None not one of these."""

    def revoke(self, session: Session, secret: str, *, source: str, where: str) -> bool:
        """Revoke it if it is live and audit why; True when it was."""


# Filled by bastion.scim.service (SCIM tokens); bastion.wiring loads it wherever secrets are scanned.
other_credentials: list[LeakedCredentials] = []


def is_live_token(hub: Hub, secret: str) -> bool | None:
    """Verifier for the secret scanner: True live, False known but dead, None not a Bastion token.

    Read-only: push protection asks it inside a commit's writing transaction, and on SQLite a second
    writer in the same process would wait for that one's lock until it timed out."""
    with transaction(hub.sessions, readonly=True) as session:
        tok = tokens.find_by_secret(session, secret)
        if tok is not None:
            return tokens.is_live(tok)
        for kind in other_credentials:
            live = kind.is_live(session, secret)
            if live is not None:
                return live
        return None


def revoke_leaked(hub: Hub, secrets: Iterable[str], *, source: str, where: str) -> int:
    """`revoke_leaked_in` in a transaction of its own."""
    with transaction(hub.sessions) as session:
        return revoke_leaked_in(session, hub, secrets, source=source, where=where)


def revoke_leaked_in(session: Session, hub: Hub, secrets: Iterable[str], *, source: str, where: str) -> int:
    """Revoke every live Bastion token among `secrets`, in the caller's transaction (a scan job's verdict
    and the revocations it calls for land together); each owner is told once. Returns the count."""
    revoked = 0
    for secret in dict.fromkeys(secrets):
        tok = tokens.find_by_secret(session, secret)
        if tok is None:
            revoked += sum(kind.revoke(session, secret, source=source, where=where) for kind in other_credentials)
            continue
        if not tokens.is_live(tok):
            continue
        tokens.revoke_token(session, tok, reason=f"leaked ({source}): {where}"[:300])
        notify(session, hub.mailer, tok.user, f"Your access token {tok.name!r} was revoked",
               f"Bastion found your access token {tok.name!r} (ending in …{tok.last4}) exposed "
               f"({source}: {where}) and revoked it so nobody can use it.\n\n"
               "Create a new token, and remove the old one from wherever it was published.")
        revoked += 1
    if revoked:
        log.warning("revoked %d leaked token(s) found by %s", revoked, source)
    return revoked
