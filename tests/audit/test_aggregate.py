"""audit.aggregate on SQLite and PostgreSQL: one event per key and window, the repeats counted and
reported by the next event or the flush, and no occurrence lost or counted twice under concurrency."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from bastion.audit import aggregate
from bastion.audit.actions import AuditAction
from bastion.audit.context import AuditContext, bind_context
from bastion.audit.models import AuditAggregate, AuditEvent
from bastion.audit.service import verify_chain
from bastion.config import Settings
from bastion.db import transaction
from bastion.hub import Hub
from tests.conftest import create_pg_database, drop_pg_database

HOUR = timedelta(hours=1)
ACTION = AuditAction.TOKEN_AUTH_FAILED


@pytest.fixture(params=["sqlite", "postgresql"])
def hub(request: pytest.FixtureRequest, tmp_path: Path, pg_admin_url: str) -> Iterator[Hub]:
    dbname, url = create_pg_database(pg_admin_url) if request.param == "postgresql" else (None, None)
    h = Hub.open(Settings(data_dir=tmp_path, scanners=[], database_url=url))
    yield h
    h.close()
    if dbname:
        drop_pg_database(pg_admin_url, dbname)


def _occur(hub: Hub, key: str = "k", ip: str = "192.0.2.1", window: timedelta = HOUR) -> AuditEvent | None:
    with bind_context(AuditContext(ip=ip, via="api")), transaction(hub.sessions) as s:
        ev = aggregate.record_aggregated(s, ACTION, key=key, target=("ip", ip), details={"reason": "unknown token"},
                                         window=window)
        return ev


def _events(hub: Hub) -> list[tuple[str, str | None, int]]:
    with transaction(hub.sessions, readonly=True) as s:
        return [(e.target_id, e.ip, e.details["count"]) for e in s.scalars(
            select(AuditEvent).where(AuditEvent.action == str(ACTION)).order_by(AuditEvent.id))]


def test_repeats_are_counted_and_reported_once_the_window_is_over(hub: Hub) -> None:
    for _ in range(5):
        _occur(hub)
    _occur(hub, key="other", ip="192.0.2.2")
    assert _events(hub) == [("192.0.2.1", "192.0.2.1", 1), ("192.0.2.2", "192.0.2.2", 1)]
    with transaction(hub.sessions) as s:
        assert aggregate.flush_due(s, HOUR) == 0  # the windows are still open: nothing to report
    with transaction(hub.sessions) as s:
        assert aggregate.flush_due(s, timedelta(0)) == 1  # windows over: the 4 repeats of "k" reported
        assert s.scalars(select(AuditAggregate)).all() == []  # both keys forgotten
    assert _events(hub)[2:] == [("192.0.2.1", "192.0.2.1", 4)]
    # The next occurrence opens a new window: an event at once.
    assert _occur(hub) is not None and _events(hub)[3] == ("192.0.2.1", "192.0.2.1", 1)
    # An occurrence after the window reports the repeats before it, itself included.
    _occur(hub)
    _occur(hub)
    ev = _occur(hub, window=timedelta(0))
    assert ev is not None and ev.details["count"] == 3
    with transaction(hub.sessions, readonly=True) as s:
        assert verify_chain(s) is None


def test_concurrent_occurrences_are_each_counted_once(hub: Hub) -> None:
    threads = [threading.Thread(target=_occur, args=(hub,)) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert _events(hub) == [("192.0.2.1", "192.0.2.1", 1)]
    with transaction(hub.sessions) as s:
        aggregate.flush_due(s, timedelta(0))
    assert [count for _, _, count in _events(hub)] == [1, 15]
    with transaction(hub.sessions, readonly=True) as s:
        assert verify_chain(s) is None
