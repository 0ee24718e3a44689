"""Retention: old events are archived, then cut (instance) or emptied in place (an organization's shorter
period); the chain verifies across the cut from its keyed anchor, and each archive verifies on its own
against the signed checkpoints."""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy import select

from bastion import audit
from bastion.audit import checkpoints, delivery, retention, sshsig
from bastion.audit.actions import AuditAction
from bastion.audit.context import AuditContext, bind_context
from bastion.audit.models import AuditEvent
from bastion.config import Settings
from bastion.db import transaction, utcnow
from bastion.errors import BadRequest
from bastion.hub import Hub
from bastion.signing import service as signing


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[Hub]:
    h = Hub.open(Settings(data_dir=tmp_path, scanners=[], audit_retention_days=30))
    signing.install(h)
    yield h
    h.close()


def _write(hub: Hub, n: int, namespace: str = "erin") -> list[int]:
    ids = []
    with bind_context(AuditContext(actor_name="erin", ip="192.0.2.9", via="api")):
        for i in range(n):
            with transaction(hub.sessions) as s:
                ids.append(audit.record(s, AuditAction.REPO_COMMIT, target=("model", f"{namespace}/m"),
                                        namespace=namespace, details={"i": i}).id)
    return ids


def _public() -> object:
    return sshsig.load_public_key(checkpoints.signer().public_key)


def _verify(hub: Hub) -> checkpoints.chain.Walk:
    with transaction(hub.sessions, readonly=True) as s:
        return checkpoints.verify_database(s, _public())


def _checkpoints(hub: Hub) -> list[checkpoints.Checkpoint]:
    with transaction(hub.sessions, readonly=True) as s:
        return [checkpoints.Checkpoint.from_json(c) for c in checkpoints.export_document(s)["checkpoints"]]


def _sql(hub: Hub, statement: str) -> None:
    with hub.engine.begin() as conn:
        conn.execute(sa.text(statement))


def test_the_instance_cut_archives_then_deletes_and_the_chain_verifies_across_it(hub: Hub) -> None:
    old = _write(hub, 6)
    boundary = utcnow()
    _write(hub, 4)
    archive_dir = hub.settings.resolved_audit_archive_dir
    cut = retention.purge_instance(hub.sessions, archive_dir, 30, boundary + timedelta(days=30))
    assert cut is not None and (cut.through_id, cut.deleted) == (old[-1], 6)
    with transaction(hub.sessions, readonly=True) as s:
        remaining = list(s.scalars(select(AuditEvent.id).order_by(AuditEvent.id)))
        purge = s.scalars(select(AuditEvent).where(AuditEvent.action == "instance.audit_log.purge")).one()
    assert remaining[0] == 7 and purge.details["deleted"] == 6 and purge.details["throughId"] == 6
    assert purge.details["archive"] == cut.archive.name
    walk = _verify(hub)
    assert walk.problem is None and walk.count == 11 and walk.checked == 5  # 4 kept + the purge event

    # The archive stands alone: genesis → event 6, closed by a signed checkpoint of the cut.
    with gzip.open(cut.archive, "rb") as fh:
        lines = fh.read().splitlines()
    assert json.loads(lines[0])["type"] == "anchor" and json.loads(lines[-1])["type"] == "checkpoint"
    outside = checkpoints.verify_export(lines, _checkpoints(hub), _public())
    assert outside.problem is None and outside.last_id == 6

    # A second cut: its archive starts where the first ended, confirmed by the first cut's checkpoint.
    second_boundary = utcnow()
    _write(hub, 2)
    cut2 = retention.purge_instance(hub.sessions, archive_dir, 30, second_boundary + timedelta(days=30))
    assert cut2 is not None and cut2.through_id == 11
    with gzip.open(cut2.archive, "rb") as fh:
        lines2 = fh.read().splitlines()
    assert json.loads(lines2[0]) == {"type": "anchor", "last_id": 6, "last_hash": json.loads(lines[-2])["hash"],
                                     "count": 6}
    assert checkpoints.verify_export(lines2, _checkpoints(hub), _public()).problem is None
    assert _verify(hub).problem is None

    # Someone with the database moves the anchor (to hide what follows it): the anchor's MAC fails.
    _sql(hub, "UPDATE audit_anchor SET last_event_id = 12, count = 12")
    problem = _verify(hub).problem
    assert problem is not None and problem.kind == "anchor"


def test_deleting_the_first_event_after_a_cut_is_found(hub: Hub) -> None:
    _write(hub, 3)
    boundary = utcnow()
    kept = _write(hub, 3)
    retention.purge_instance(hub.sessions, hub.settings.resolved_audit_archive_dir, 30, boundary + timedelta(days=30))
    _sql(hub, f"DELETE FROM audit_events WHERE id = {kept[0]}")
    problem = _verify(hub).problem
    assert problem is not None and problem.event_id == kept[0]


def test_events_a_sink_still_waits_for_are_not_cut(hub: Hub) -> None:
    with transaction(hub.sessions) as s:
        delivery.create_sink(s, hub.settings.secret_key, "syslog", "tcp://127.0.0.1:9", None, None)
    ids = _write(hub, 3)
    cut = retention.purge_instance(hub.sessions, hub.settings.resolved_audit_archive_dir, 30,
                                   utcnow() + timedelta(days=31))
    assert cut is None  # the first event is still in the outbox
    with transaction(hub.sessions, readonly=True) as s:
        assert list(s.scalars(select(AuditEvent.id))) == ids


def test_an_org_period_empties_its_old_events_in_place_and_the_chain_still_verifies(hub: Hub) -> None:
    acme = _write(hub, 3, namespace="acme")
    other = _write(hub, 2, namespace="zeta")
    boundary = utcnow()
    recent = _write(hub, 1, namespace="acme")
    emptied = retention.purge_org(hub.sessions, hub.settings.resolved_audit_archive_dir, "acme", 7,
                                  boundary + timedelta(days=7))
    assert emptied == 3
    with transaction(hub.sessions, readonly=True) as s:
        rows = {e.id: e for e in s.scalars(select(AuditEvent))}
    purge = max(rows)
    assert rows[purge].action == "org.audit_log.purge" and rows[purge].details["emptied"] == 3
    assert all(rows[i].purged_by == purge and rows[i].ip is None and rows[i].details == {} for i in acme)
    assert all(rows[i].purged_by is None and rows[i].ip == "192.0.2.9" for i in other + recent)
    archive = next(hub.settings.resolved_audit_archive_dir.glob("org-acme-*.ndjson.gz"))
    with gzip.open(archive, "rt") as fh:
        assert [json.loads(line)["id"] for line in fh] == acme
    assert _verify(hub).problem is None

    # Emptying one more event in the purge's name (to hide it) is found: the keyed purge event counts 3.
    _sql(hub, f"UPDATE audit_events SET purged_by = {purge}, ip = NULL, details = '{{}}' WHERE id = {other[0]}")
    problem = _verify(hub).problem
    assert problem is not None and problem.kind == "edited"


def test_an_org_period_the_instance_cannot_honour_is_refused() -> None:
    assert retention.check_org_days(None, 30) is None
    assert retention.check_org_days(30, 30) == 30
    assert retention.check_org_days(730, 0) == 730
    for bad in (45, "30", True, -1):
        with pytest.raises(BadRequest, match="null .* or one of"):
            retention.check_org_days(bad, 0)
    with pytest.raises(BadRequest, match="at most that long"):
        retention.check_org_days(365, 90)
