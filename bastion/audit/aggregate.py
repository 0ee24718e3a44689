"""Repeated failures audited without letting a flood fill the log: one event per key and window.

A request notes what it wants audited (`defer`); the middleware records it after the response, in a
transaction of its own, through `record_aggregated`: the first occurrence of a key (a source IP and
reason, a token and reason) in a window is an event at once; the repeats within the window are counted
in `audit_aggregates` and reported, with their count, by the next event for that key -- the first one
after the window, or the one `flush_due` writes once the window is over (the `Flusher` thread of
`bastion serve`). Every event carries `count`: the occurrences it stands for, so their sum is the total.
"""

from __future__ import annotations

import logging
import threading
from contextvars import ContextVar
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session, sessionmaker

from bastion.audit.actions import AuditAction
from bastion.audit.context import AuditContext, bind_context, current_context
from bastion.audit.models import AuditAggregate, AuditEvent
from bastion.audit.service import lock_chain, record
from bastion.db import transaction, utcnow

log = logging.getLogger("bastion.audit")


@dataclass(frozen=True)
class Deferred:
    action: AuditAction
    key: str
    target: tuple[str, str]
    namespace: str | None = None
    details: dict[str, Any] = field(default_factory=dict)


_deferred: ContextVar[list[Deferred] | None] = ContextVar("bastion_audit_deferred", default=None)


def start_request() -> list[Deferred]:
    """A fresh list for this request (one mutable list: threadpool copies of the context share it)."""
    items: list[Deferred] = []
    _deferred.set(items)
    return items


def defer(action: AuditAction, *, key: str, target: tuple[str, str], namespace: str | None = None,
          details: dict[str, Any] | None = None) -> None:
    """Audit this after the response, aggregated under `key` (nothing outside a request)."""
    items = _deferred.get()
    if items is not None:
        items.append(Deferred(action, key[:300], target, namespace, dict(details or {})))


def record_deferred(session: Session, items: list[Deferred], window: timedelta) -> int:
    """Record a request's deferred events (one per key); returns how many events were written."""
    unique = {d.key: d for d in items}.values()
    return sum(record_aggregated(session, d.action, key=d.key, target=d.target, namespace=d.namespace,
                                 details=d.details, window=window) is not None for d in unique)


def record_aggregated(session: Session, action: AuditAction, *, key: str, target: tuple[str, str],
                      namespace: str | None = None, details: dict[str, Any] | None = None,
                      window: timedelta) -> AuditEvent | None:
    """An event for this occurrence unless `key` had one within `window`; then it is counted instead."""
    # Taken first, before any row: "open a window or count" is then atomic across requests and
    # replicas, and no writer of the chain can wait on a row this transaction holds.
    lock_chain(session)
    now = utcnow()
    details = dict(details or {})
    row = session.get(AuditAggregate, key)
    if row is None:
        session.add(AuditAggregate(key=key, action=str(action), recorded_at=now, pending=0, target_type=target[0],
                                   target_id=target[1][:300], namespace=namespace, details=details,
                                   context=_context()))
        return _event(session, action, target, namespace, details, 1, now)
    if now - row.recorded_at < window:
        row.pending += 1
        row.pending_since = row.pending_since or now
        row.target_type, row.target_id, row.namespace = target[0], target[1][:300], namespace
        row.details, row.context = details, _context()
        return None
    count, since = row.pending + 1, row.pending_since or now
    row.recorded_at, row.pending, row.pending_since = now, 0, None
    return _event(session, action, target, namespace, details, count, since)


FLUSH_BATCH = 50  # events written per transaction: SQLite's one write lock is held briefly each time


def flush_due(session: Session, window: timedelta, limit: int = FLUSH_BATCH) -> int:
    """Report the repeats of up to `limit` keys whose window is over (one event each, with their count)
    and forget every such key: their next occurrence opens a new window. Returns how many events were
    written (`limit` means there may be more)."""
    lock_chain(session)  # as record_aggregated(): another replica's flush or a request waits here
    cutoff = utcnow() - window
    # Keys with nothing to report are forgotten in one statement, not row by row.
    session.execute(delete(AuditAggregate).where(AuditAggregate.recorded_at <= cutoff, AuditAggregate.pending == 0))
    written = 0
    for row in list(session.scalars(select(AuditAggregate).where(AuditAggregate.recorded_at <= cutoff)
                                    .order_by(AuditAggregate.recorded_at).limit(limit))):
        with bind_context(AuditContext(**row.context)):
            _event(session, AuditAction(row.action), (row.target_type, row.target_id), row.namespace,
                   row.details, row.pending, row.pending_since or row.recorded_at)
        written += 1
        session.delete(row)
    return written


def _context() -> dict[str, Any]:
    ctx = asdict(current_context())
    ctx.pop("request_id", None)  # the flushed event reports many requests, not the last one
    return ctx


def _event(session: Session, action: AuditAction, target: tuple[str, str], namespace: str | None,
           details: dict[str, Any], count: int, since: datetime) -> AuditEvent:
    return record(session, action, target=target, namespace=namespace,
                  details={**details, "count": count, "since": since.isoformat()})


class Flusher:
    """`flush_due` every window, in a daemon thread of `bastion serve`: a flood that stopped gets its
    count written within two windows of its start, without waiting for a next occurrence."""

    def __init__(self, sessions: sessionmaker[Session], window: timedelta) -> None:
        self.sessions = sessions
        self.window = window
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="audit-flusher", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _loop(self) -> None:
        while not self._stop.wait(max(1.0, self.window.total_seconds())):
            try:
                self.flush()
            except Exception:  # the next pass retries; auditing must never stop the server
                log.exception("could not flush aggregated audit events")

    def flush(self) -> int:
        cutoff = utcnow() - self.window
        # A read first: on SQLite a writing transaction takes the database's write lock.
        with transaction(self.sessions, readonly=True) as session:
            due = session.scalar(select(AuditAggregate.key).where(AuditAggregate.recorded_at <= cutoff).limit(1))
        if due is None:
            return 0
        total = 0
        while True:  # in batches, so writers queue behind short transactions only
            with transaction(self.sessions) as session:
                written = flush_due(session, self.window)
            total += written
            if written < FLUSH_BATCH or self._stop.is_set():
                return total
