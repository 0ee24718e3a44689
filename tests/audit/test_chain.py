"""The keyed audit chain against someone who can write the database: every edit, deletion, reordering,
recomputed hash, downgrade or truncation is found, and the first wrong event is named."""

from __future__ import annotations

import hashlib
import json
import subprocess
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from bastion import audit
from bastion.audit import chain, checkpoints, sshsig
from bastion.audit.actions import AuditAction
from bastion.audit.context import AuditContext, bind_context
from bastion.audit.service import chain_records, verify
from bastion.config import Settings
from bastion.db import migrate, transaction, utcnow
from bastion.hub import Hub
from bastion.signing import service as signing


def _hub(data_dir: Path) -> Hub:
    hub = Hub.open(Settings(data_dir=data_dir, scanners=[]))
    signing.install(hub)
    return hub


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[Hub]:
    h = _hub(tmp_path)
    yield h
    h.close()


def _write(hub: Hub, n: int, start: int = 0) -> None:
    with bind_context(AuditContext(actor_name="alice", ip="192.0.2.7", via="api")):
        for i in range(start, start + n):
            with transaction(hub.sessions) as s:
                audit.record(s, AuditAction.REPO_CREATE, target=("model", f"alice/m{i}"), namespace="alice",
                             details={"i": i})


def _problem(hub: Hub) -> chain.Problem | None:
    with transaction(hub.sessions, readonly=True) as s:
        return checkpoints.verify_database(s, sshsig.load_public_key(checkpoints.signer().public_key)).problem


def _sql(hub: Hub, statement: str, **params: object) -> None:
    with hub.engine.begin() as conn:
        conn.execute(sa.text(statement), params)


def _row(hub: Hub, event_id: int) -> dict:
    with transaction(hub.sessions, readonly=True) as s:
        return next(chain_records(s, event_id - 1, event_id))


def test_an_untouched_chain_verifies_keyed_and_with_consecutive_ids(hub: Hub) -> None:
    _write(hub, 5)
    with transaction(hub.sessions, readonly=True) as s:
        rows = list(chain_records(s))
        walk = verify(s)
    assert [r["id"] for r in rows] == [1, 2, 3, 4, 5] and {r["v"] for r in rows} == {2}
    assert all(r["mac"] and r["key_id"] for r in rows) and walk.problem is None and walk.count == 5
    key_file = hub.settings.resolved_audit_key_file
    assert key_file.stat().st_mode & 0o777 == 0o600 and "legacy-until 0" in key_file.read_text()
    # The key is not in the database: no column of any table holds it.
    key_hex = chain.Keyring.read(key_file).keys[rows[0]["key_id"]].hex()
    assert key_hex.encode() not in (hub.settings.resolved_data_dir / "bastion.sqlite3").read_bytes()


def test_an_edited_event_is_found(hub: Hub) -> None:
    _write(hub, 6)
    _sql(hub, "UPDATE audit_events SET ip = '203.0.113.9' WHERE id = 3")
    problem = _problem(hub)
    assert problem is not None and (problem.event_id, problem.kind) == (3, "edited")


def test_a_rehashed_chain_without_the_key_is_found(hub: Hub) -> None:
    """The attacker edits event 3 and recomputes every public hash after it, as anyone with the database can."""
    _write(hub, 6)
    _sql(hub, "UPDATE audit_events SET actor_name = 'mallory' WHERE id = 3")
    prev = _row(hub, 2)["hash"]
    for eid in range(3, 7):
        rec = _row(hub, eid)
        rec["prev_hash"] = prev
        prev = chain.link_hash(rec)
        _sql(hub, "UPDATE audit_events SET prev_hash = :p, hash = :h WHERE id = :i", p=rec["prev_hash"], h=prev, i=eid)
    problem = _problem(hub)
    assert problem is not None and (problem.event_id, problem.kind) == (3, "forged")


def test_a_deleted_event_is_named(hub: Hub) -> None:
    _write(hub, 6)
    _sql(hub, "DELETE FROM audit_events WHERE id = 4")
    problem = _problem(hub)
    assert problem is not None and (problem.event_id, problem.kind) == (4, "deleted")
    assert "event 4 is missing" in problem.message


def test_reordered_events_are_found(hub: Hub) -> None:
    _write(hub, 6)
    _sql(hub, "UPDATE audit_events SET id = 100 WHERE id = 3")
    _sql(hub, "UPDATE audit_events SET id = 3 WHERE id = 4")
    _sql(hub, "UPDATE audit_events SET id = 4 WHERE id = 100")
    problem = _problem(hub)
    assert problem is not None and problem.event_id == 3 and problem.kind in ("unlinked", "reordered")


def test_deleting_the_newest_events_is_found_by_the_signed_checkpoint(hub: Hub) -> None:
    _write(hub, 5)
    with transaction(hub.sessions) as s:
        assert checkpoints.write(s, utcnow()) is not None
    _sql(hub, "DELETE FROM audit_events WHERE id >= 4")
    problem = _problem(hub)
    assert problem is not None and (problem.event_id, problem.kind) == (4, "deleted")


def test_a_chain_recomputed_as_unkeyed_version_1_is_a_downgrade(hub: Hub) -> None:
    _write(hub, 4)
    prev = chain.GENESIS
    for eid in range(1, 5):
        rec = _row(hub, eid) | {"v": 1, "prev_hash": prev}
        prev = chain.link_hash(rec)
        _sql(hub, "UPDATE audit_events SET chain_version = 1, key_id = NULL, mac = NULL, prev_hash = :p, hash = :h "
                  "WHERE id = :i", p=rec["prev_hash"], h=prev, i=eid)
    problem = _problem(hub)
    assert problem is not None and (problem.event_id, problem.kind) == (1, "downgraded")


def _old_digest(prev: str, fields: dict) -> str:
    """The unkeyed chain as Bastion wrote it before the keyed one (version 1)."""
    payload = json.dumps(fields, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(prev.encode() + b"\n" + payload.encode()).hexdigest()


def test_old_unkeyed_events_stay_verifiable_and_the_first_keyed_event_links_to_them(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, scanners=[])
    migrate(settings.resolved_database_url)
    engine = sa.create_engine(settings.resolved_database_url)
    prev = chain.GENESIS
    with engine.begin() as conn:
        for i in range(1, 4):
            created = utcnow() - timedelta(days=1, seconds=-i)
            fields = {"created_at": created.isoformat(), "action": "user.login", "actor_id": 1, "actor_name": "bob",
                      "ip": "192.0.2.1", "user_agent": None, "token_id": None, "via": "web", "target_type": "user",
                      "target_id": "bob", "namespace": "bob", "details": {"n": i}}
            digest = _old_digest(prev, fields)
            conn.execute(sa.text(
                "INSERT INTO audit_events (id, created_at, action, actor_id, actor_name, ip, via, target_type, "
                "target_id, namespace, details, prev_hash, hash) VALUES (:id, :c, 'user.login', 1, 'bob', "
                "'192.0.2.1', 'web', 'user', 'bob', 'bob', :d, :p, :h)"),
                {"id": i, "c": created.replace(tzinfo=None), "d": json.dumps({"n": i}), "p": prev, "h": digest})
            prev = digest
    engine.dispose()
    hub = _hub(tmp_path)  # first start with the keyed chain: the key file pins the last unkeyed event
    try:
        assert "legacy-until 3" in settings.resolved_audit_key_file.read_text()
        _write(hub, 2)
        first_keyed = _row(hub, 4)
        assert first_keyed["v"] == 2 and first_keyed["prev_hash"] == prev
        assert _problem(hub) is None
        _sql(hub, "UPDATE audit_events SET details = '{\"n\": 9}' WHERE id = 2")
        problem = _problem(hub)
        assert problem is not None and (problem.event_id, problem.kind) == (2, "edited")
    finally:
        hub.close()


def test_rotated_keys_each_verify_their_events(hub: Hub) -> None:
    _write(hub, 2)
    with transaction(hub.sessions) as s:
        ring = chain.keyring_for(s)
        old, new = ring.current, ring.rotate()
    _write(hub, 2, start=2)
    assert [_row(hub, i)["key_id"] for i in range(1, 5)] == [old, old, new, new]
    assert _problem(hub) is None


def test_checkpoints_verify_outside_bastion_with_ssh_keygen(hub: Hub, tmp_path: Path) -> None:
    _write(hub, 3)
    with transaction(hub.sessions) as s:
        cp = checkpoints.write(s, utcnow())
        assert cp is not None
        doc = checkpoints.export_document(s)
    exported = doc["checkpoints"][0]
    message = checkpoints.payload(exported["lastEventId"], exported["lastHash"], exported["count"],
                                  exported["createdAt"])
    (tmp_path / "payload").write_bytes(message)
    (tmp_path / "sig").write_text(exported["signature"])
    (tmp_path / "allowed").write_text(f'bastion namespaces="{sshsig.NAMESPACE}" {doc["publicKey"]}\n')
    # The public key is the one the instance publishes (GET /api/signing-key).
    assert doc["publicKey"].split()[:2] == signing.instance_key().public_key.split()[:2]  # type: ignore[union-attr]
    args = ["ssh-keygen", "-Y", "verify", "-f", str(tmp_path / "allowed"), "-I", "bastion", "-n", sshsig.NAMESPACE,
            "-s", str(tmp_path / "sig")]
    ok = subprocess.run(args, input=message, capture_output=True, timeout=30)
    assert ok.returncode == 0, ok.stderr
    bad = subprocess.run(args, input=message.replace(b"count 3", b"count 2"), capture_output=True, timeout=30)
    assert bad.returncode != 0
