"""The audit log's integrity and delivery over HTTP, against a running server: checkpoints for administrators,
sinks streamed by the server's own worker, dead letters re-driven, an organization's retention period."""

from __future__ import annotations

import re
import secrets
import time

import httpx
import sqlalchemy as sa

from bastion.audit import checkpoints, sshsig
from tests.audit.sinks import SyslogListener
from tests.conftest import BastionServer, wait_for


def _admin_page(server: BastionServer) -> str:
    import subprocess
    import sys

    from tests.accounts.fixtures import PASSWORD, http_login

    name = f"a{secrets.token_hex(4)}"
    subprocess.run([sys.executable, "-m", "bastion.cli", "admin", "create-user", name, "--email",
                    f"{name}@example.com", "--admin", "--password-stdin"], env=server.env, input=PASSWORD + "\n",
                   capture_output=True, text=True, check=True, timeout=120)
    client = http_login(server, name, PASSWORD)
    try:
        resp = client.get("/admin")
    finally:
        client.close()
    assert resp.status_code == 200, resp.text[:500]
    return resp.text


def _h(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


def _db(server: BastionServer) -> sa.Engine:
    return sa.create_engine(f"sqlite:///{server.data_dir / 'bastion.sqlite3'}")


def _actions(server: BastionServer, namespace: str | None, action: str) -> list[dict]:
    engine = _db(server)
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT details FROM audit_events WHERE action = :a AND "
                                    "(namespace = :n OR (:n IS NULL AND namespace IS NULL)) ORDER BY id"),
                            {"a": action, "n": namespace}).all()
    engine.dispose()
    import json

    return [json.loads(r.details) if isinstance(r.details, str) else r.details for r in rows]


def test_checkpoints_are_for_administrators_and_verify_with_the_published_key(server: BastionServer) -> None:
    _, admin = server.create_user(admin=True)
    _, user = server.create_user()
    assert httpx.get(f"{server.url}/api/admin/audit/checkpoints", headers=_h(user)).status_code == 403
    server.cli("audit", "checkpoints", "--now", "--output", str(server.data_dir / "cps.json"))
    r = httpx.get(f"{server.url}/api/admin/audit/checkpoints", headers=_h(admin))
    assert r.status_code == 200 and "attachment" in r.headers["content-disposition"]
    doc = r.json()
    published = httpx.get(f"{server.url}/api/signing-key").json()["publicKey"]
    assert doc["publicKey"].split()[:2] == published.split()[:2] and doc["checkpoints"]
    key = sshsig.load_public_key(published)
    assert all(checkpoints.Checkpoint.from_json(c).signed_by(key) for c in doc["checkpoints"])


def test_a_syslog_sink_receives_events_from_the_running_server(server: BastionServer) -> None:
    _, admin = server.create_user(admin=True)
    name, token = server.create_user()
    listener = SyslogListener()
    try:
        r = httpx.post(f"{server.url}/api/admin/audit/sinks", headers=_h(admin),
                       json={"kind": "syslog", "url": listener.url, "namespace": name})
        assert r.status_code == 201, r.text
        sink = r.json()
        assert _actions(server, None, "instance.audit_log.sink_create")[-1]["sink"] == sink["id"]
        repo = f"r{secrets.token_hex(3)}"
        assert httpx.post(f"{server.url}/api/repos/create", json={"name": repo, "private": True},
                          headers=_h(token)).status_code == 200
        wait_for(lambda: any(b"repo.create" in m for m in listener.messages), timeout=30)
        [msg] = [m for m in listener.messages if b"repo.create" in m]
        assert re.match(rb"^<86>1 \S+ \S+ bastion - repo\.create \[meta sequenceId=\"\d+\"\] ", msg)
        assert f'model/{name}/{repo}"'.encode() in msg
        assert httpx.get(f"{server.url}/api/admin/audit/sinks", headers=_h(user_token := token)).status_code == 403
        listed = httpx.get(f"{server.url}/api/admin/audit/sinks", headers=_h(admin)).json()
        assert sink["id"] in [s["id"] for s in listed] and user_token
    finally:
        assert httpx.delete(f"{server.url}/api/admin/audit/sinks/{sink['id']}", headers=_h(admin)).status_code == 200
        listener.close()
    assert httpx.delete(f"{server.url}/api/admin/audit/sinks/{sink['id']}", headers=_h(admin)).status_code == 404


def test_dead_letters_are_listed_and_redriven_by_administrators(server: BastionServer) -> None:
    _, admin = server.create_user(admin=True)
    name, token = server.create_user()
    r = httpx.post(f"{server.url}/api/admin/audit/sinks", headers=_h(admin),
                   json={"kind": "webhook", "url": "https://127.0.0.1:9/hook", "secret": "x" * 20, "namespace": name})
    sink = r.json()["id"]
    try:
        assert httpx.post(f"{server.url}/api/repos/create", json={"name": "dl", "private": True},
                          headers=_h(token)).status_code == 200
        engine = _db(server)

        def dead_letters() -> list[dict]:
            # As the worker leaves them after the last attempt (tested in-process). The worker may be trying the
            # event at that moment (its lease, then its failure, rewrite the row): written again until it stays.
            with engine.begin() as conn:
                conn.execute(sa.text("UPDATE audit_outbox SET state = 'dead', attempts = 8, last_error = 'HTTP 500', "
                                     "next_attempt_at = '2999-01-01 00:00:00' WHERE sink_id = :s"), {"s": sink})
            time.sleep(1.0)  # an attempt in flight (to a port that refuses connections) ends well within this
            letters = httpx.get(f"{server.url}/api/admin/audit/dead-letters", headers=_h(admin)).json()
            return [d for d in letters if d["sinkId"] == sink]

        mine = wait_for(dead_letters, timeout=60, interval=1.0)
        engine.dispose()
        assert mine and mine[0]["type"] == "repo.create" and mine[0]["lastError"] == "HTTP 500"
        page = _admin_page(server)  # the administrators' page lists them too
        assert 'id="dead-letters"' in page and "HTTP 500" in page and "https://127.0.0.1:9/hook" in page
        assert httpx.post(f"{server.url}/api/admin/audit/dead-letters/redrive", headers=_h(token),
                          json={"sinkId": sink}).status_code == 403
        bad = httpx.post(f"{server.url}/api/admin/audit/dead-letters/redrive", headers=_h(admin), json={"ids": "all"})
        assert bad.status_code == 400 and "ids" in bad.json()["error"]
        r = httpx.post(f"{server.url}/api/admin/audit/dead-letters/redrive", headers=_h(admin), json={"sinkId": sink})
        assert r.status_code == 200 and r.json()["redriven"] == len(mine)
        assert _actions(server, None, "instance.audit_log.redrive")[-1]["redriven"] == len(mine)
    finally:
        httpx.delete(f"{server.url}/api/admin/audit/sinks/{sink}", headers=_h(admin))


def test_sinks_bastion_cannot_serve_are_400(server: BastionServer) -> None:
    _, admin = server.create_user(admin=True)
    r = httpx.post(f"{server.url}/api/admin/audit/sinks", headers=_h(admin),
                   json={"kind": "syslog", "url": "udp://127.0.0.1:514"})
    assert r.status_code == 400 and "UDP is not supported" in r.json()["error"]
    assert r.headers.get("x-error-message")


def test_an_org_retention_period_is_set_audited_and_refused_when_unsupported(server: BastionServer) -> None:
    owner, token = server.create_user()
    org = f"o{secrets.token_hex(3)}"
    server.admin("create-org", org, "--owner", owner)
    url = f"{server.url}/api/organizations/{org}/settings"
    bad = httpx.put(url, headers=_h(token), json={"auditLogRetentionDays": 45})
    assert bad.status_code == 400 and "one of 7, 30, 90" in bad.json()["error"]
    ok = httpx.put(url, headers=_h(token), json={"auditLogRetentionDays": 30})
    assert ok.status_code == 200 and ok.json()["auditLogRetentionDays"] == 30
    assert httpx.get(url, headers=_h(token)).json()["auditLogRetentionDays"] == 30
    assert _actions(server, org, "org.audit_log.retention") == [{"from": None, "to": 30}]
    assert httpx.put(url, headers=_h(token), json={"auditLogRetentionDays": None}).json()["auditLogRetentionDays"] \
        is None
