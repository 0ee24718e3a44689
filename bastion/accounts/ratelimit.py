"""Brute-force limits: sliding windows of failed attempts, counted in the database.

The database is the store because every replica shares it (no Redis in the embedded shape) and a
counted failure must survive the request. Only interactive sign-in paths consult these limits:
API tokens are never checked against them, so an attacker who trips a lockout cannot cut the
account off from its tokens.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from bastion.accounts.models import RateLimitHit
from bastion.db import utcnow
from bastion.errors import BastionError


@dataclass(frozen=True)
class Limit:
    name: str
    attempts: int
    window: timedelta


MINUTE = timedelta(minutes=1)
LOGIN_PER_IP = Limit("login.ip", 30, 15 * MINUTE)
LOGIN_PER_ACCOUNT = Limit("login.account", 10, 15 * MINUTE)
TWO_FACTOR_PER_IP = Limit("2fa.ip", 30, 15 * MINUTE)
TWO_FACTOR_PER_ACCOUNT = Limit("2fa.account", 10, 15 * MINUTE)
RECOVERY_PER_ACCOUNT = Limit("recovery.account", 5, 60 * MINUTE)
RESET_PER_IP = Limit("reset.ip", 10, 60 * MINUTE)
RESET_PER_ACCOUNT = Limit("reset.account", 3, 60 * MINUTE)


class TooManyAttempts(BastionError):
    status = 429
    code = "TooManyRequests"

    def __init__(self, retry_after: timedelta) -> None:
        minutes = max(1, math.ceil(retry_after.total_seconds() / 60))
        unit = "minute" if minutes == 1 else "minutes"
        super().__init__(f"Too many attempts. Try again in {minutes} {unit}.",
                         headers={"Retry-After": str(max(1, math.ceil(retry_after.total_seconds())))})
        self.retry_after = retry_after


def _key(limit: Limit, subject: str) -> str:
    return f"{limit.name}:{subject.lower()}"[:400]


def retry_after(session: Session, limit: Limit, subject: str) -> timedelta | None:
    """How long until `subject` may try again under `limit`; None while under the limit."""
    key = _key(limit, subject)
    since = utcnow() - limit.window
    count = session.scalar(select(func.count()).select_from(RateLimitHit)
                           .where(RateLimitHit.key == key, RateLimitHit.at > since)) or 0
    if count < limit.attempts:
        return None
    # The window frees one slot when its oldest counted hit ages out; this hit frees enough.
    freeing = session.scalar(select(RateLimitHit.at).where(RateLimitHit.key == key, RateLimitHit.at > since)
                             .order_by(RateLimitHit.at).offset(count - limit.attempts).limit(1))
    assert freeing is not None
    return max(freeing + limit.window - utcnow(), timedelta(seconds=1))


def check(session: Session, *limits: tuple[Limit, str | None]) -> None:
    """Raise TooManyAttempts (with the longest wait) if any (limit, subject) is exhausted."""
    waits = [w for limit, subject in limits if subject
             for w in [retry_after(session, limit, subject)] if w is not None]
    if waits:
        raise TooManyAttempts(max(waits))


def hit(session: Session, *limits: tuple[Limit, str | None]) -> None:
    """Count one failed attempt against each (limit, subject), in the caller's transaction."""
    now = utcnow()
    for limit, subject in limits:
        if not subject:
            continue
        key = _key(limit, subject)
        session.execute(delete(RateLimitHit).where(RateLimitHit.key == key, RateLimitHit.at <= now - limit.window))
        session.add(RateLimitHit(key=key, at=now))
    session.flush()


def clear(session: Session, limit: Limit, subject: str) -> None:
    session.execute(delete(RateLimitHit).where(RateLimitHit.key == _key(limit, subject)))
