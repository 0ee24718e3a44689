"""Account deletion and data export (issue 20), driven from outside: `bastion admin delete-user`, the admin API
and pages, the user's own deletion in the browser (sudo mode and the username typed again), the grace period
(the test clock) and `bastion admin purge-deleted-accounts`, transfers, and the audit log afterwards: the
deleted user's events readable and pseudonymous (`author.deleted: true`), `bastion audit verify` passing and
counting them as redacted, and failing when a redacted event is edited afterwards.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

from tests.accounts.fixtures import PASSWORD, create_password_user, csrf_of, http_login
from tests.conftest import BastionServer, hf_api

TIMEOUT = 30
DAY = 86400


@pytest.fixture(scope="module")
def clock(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("clock") / "offset"
    path.write_text("0")
    return path


@pytest.fixture(scope="module")
def lserver(tmp_path_factory: pytest.TempPathFactory, clock: Path) -> Iterator[BastionServer]:
    """A server whose clock the test moves, with a grace period of 3 days."""
    server = BastionServer(tmp_path_factory.mktemp("bastion-lifecycle"), env={
        "BASTION_TEST_CLOCK_FILE": str(clock), "BASTION_ACCOUNT_DELETION_GRACE_DAYS": "3",
        "BASTION_SCANNERS": '["pickle"]'})
    server.start()
    yield server
    server.stop()


def _auth(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


def _admin(server: BastionServer) -> str:
    return server.create_user(admin=True)[1]


def _verify(server: BastionServer, check: bool = True) -> str:
    proc = server.cli("audit", "verify", check=False)
    if check:
        assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout + proc.stderr


def _repo_status(server: BastionServer, repo_id: str, token: str | None = None) -> int:
    return httpx.get(f"{server.url}/api/models/{repo_id}", headers=_auth(token) if token else {},
                     timeout=TIMEOUT).status_code


def _personal(name: str) -> list[str]:
    return [name, f"{name}@example.com"]


def _chain(server: BastionServer, tmp_path: Path) -> list[dict]:
    out = tmp_path / f"chain-{secrets.token_hex(3)}.ndjson"
    server.cli("audit", "export-chain", "--output", str(out))
    return [json.loads(line) for line in out.read_text().splitlines() if line.strip()]


def test_admin_deletes_a_user_audit_stays_readable_and_pseudonymous(lserver: BastionServer, clock: Path,
                                                                     tmp_path: Path) -> None:
    server = lserver
    name, token = create_password_user(server)
    api = hf_api(server, token)
    api.create_repo(f"{name}/weights", private=False)
    api.upload_file(path_or_fileobj=b"hello", path_in_repo="README.md", repo_id=f"{name}/weights")
    owner, owner_token = server.create_user()
    org = f"org{secrets.token_hex(3)}"
    server.cli("admin", "create-org", org, "--owner", owner)
    server.cli("admin", "add-member", org, name, "--role", "write")
    api.create_repo(f"{org}/shared")  # an org repo made by the user: stays with the org
    web = http_login(server, name)  # sign-in events with the user's address and browser
    assert web.get("/settings/profile").status_code == 200
    admin_token = _admin(server)

    proc = server.cli("admin", "delete-user", name)
    pseudonym = proc.stdout.strip()
    assert pseudonym.startswith("deleted-") and name not in pseudonym

    # Nothing signs in: token, web session, password.
    assert httpx.get(f"{server.url}/api/whoami-v2", headers=_auth(token), timeout=TIMEOUT).status_code == 401
    assert web.get("/api/settings/tokens").status_code == 401
    client = httpx.Client(base_url=server.url, timeout=TIMEOUT)
    r = client.post("/login", data={"csrf_token": csrf_of(client.get("/login").text), "login": name,
                                    "password": PASSWORD})
    assert r.status_code != 303
    # The profile is gone; the name leads nowhere; the repos wait under the pseudonym, withdrawn from view (the
    # public repo is private now: administrators only); the org keeps its repo.
    assert httpx.get(f"{server.url}/{name}", timeout=TIMEOUT).status_code == 404
    assert _repo_status(server, f"{name}/weights", admin_token) == 404
    assert _repo_status(server, f"{pseudonym}/weights", admin_token) == 200
    assert _repo_status(server, f"{pseudonym}/weights") in (401, 404)
    assert _repo_status(server, f"{pseudonym}/weights", owner_token) == 404
    assert _repo_status(server, f"{org}/shared", owner_token) == 200
    members = httpx.get(f"{server.url}/api/organizations/{org}/members", headers=_auth(owner_token), timeout=TIMEOUT)
    assert name not in members.text

    # The audit log: every event of the account is still there, under the pseudonym, and neither the name nor
    # the e-mail address is anywhere in it (but in the sign-in attempted with the old name above, after the
    # deletion: a name typed at the login form names nobody).
    chain = _chain(server, tmp_path)
    text = json.dumps([r for r in chain if r["target_type"] != "login"])
    for value in _personal(name):
        assert value.lower() not in text.lower(), [r for r in chain if value.lower() in json.dumps(r).lower()]
    user_id = next(r["actor_id"] for r in chain if r["action"] == "repo.create"
                   and r["target_id"] == f"model/{pseudonym}/weights")
    mine = [r for r in chain if r["actor_id"] == user_id]
    assert {"repo.create", "repo.commit"} <= {r["action"] for r in mine}
    assert all(r["actor_name"] == pseudonym and r["ip"] is None and r["user_agent"] is None for r in mine)
    logins = [r for r in chain if r["action"] == "user.login" and r["target_id"] == pseudonym]
    assert logins and all(r["ip"] is None and r["user_agent"] is None for r in logins)
    # Readable in the Hub's format where the events are read: the org's log shows its member's work under
    # the pseudonym, `author.deleted: true`, no address; and the deletion itself.
    org_log = httpx.get(f"{server.url}/api/organizations/{org}/audit-log/export", params={"format": "json"},
                        headers=_auth(owner_token), timeout=TIMEOUT)
    assert org_log.status_code == 200, org_log.text
    records = org_log.json()
    assert name not in json.dumps(records)
    created = next(r for r in records if r["type"] == "repo.create" and r["data"]["target"]["id"] == f"model/{org}/shared")
    assert created["author"]["user"] == pseudonym and created["author"]["deleted"] is True
    assert "ip" not in created and "userAgent" not in created
    removed = next(r for r in records if r["type"] == "org.remove_user")
    assert removed["data"]["target"]["id"] == pseudonym and removed["data"]["accountDeleted"] is True
    assert removed["author"]["user"].startswith("os:")  # the admin who ran the CLI
    redaction = next(r for r in chain if r["action"] == "user.audit_redact")
    assert redaction["details"]["redacted_count"] >= 5 and redaction["target_id"] == pseudonym

    # The chain still verifies, honestly: the redacted events are counted as such.
    out = _verify(server)
    assert "redacted" in out, out

    # Editing a redacted event afterwards is caught (and undoing the edit restores the proof).
    engine = server.engine()
    try:
        with engine.begin() as conn:
            ev_id, details = conn.execute(sa.text(
                "SELECT id, details FROM audit_events WHERE redacted_by IS NOT NULL AND action = 'repo.create' "
                "ORDER BY id LIMIT 1")).one()
            conn.execute(sa.text("UPDATE audit_events SET details = :d WHERE id = :i"),
                         {"d": json.dumps({"forged": True}), "i": ev_id})
        out = _verify(server, check=False)
        assert f"FAILED at event {ev_id}" in out and "after redaction event" in out, out
        with engine.begin() as conn:
            conn.execute(sa.text("UPDATE audit_events SET details = :d WHERE id = :i"),
                         {"d": details if isinstance(details, str) else json.dumps(details), "i": ev_id})
        # Clearing the redaction mark does not pass the edited content off as an original either.
        with engine.begin() as conn:
            conn.execute(sa.text("UPDATE audit_events SET redacted_by = NULL WHERE id = :i"), {"i": ev_id})
        out = _verify(server, check=False)
        assert f"FAILED at event {ev_id}" in out, out
        with engine.begin() as conn:
            by = conn.execute(sa.text("SELECT max(id) FROM audit_events WHERE action = 'user.audit_redact'")).scalar()
            conn.execute(sa.text("UPDATE audit_events SET redacted_by = :b WHERE id = :i"), {"b": by, "i": ev_id})
    finally:
        engine.dispose()
    _verify(server)
    # Outside Bastion too (no database, no audit key): the export carries the redaction marks, and the signed
    # checkpoints vouch for the redaction events.
    key = tmp_path / "key.pub"
    key.write_text(httpx.get(f"{server.url}/api/signing-key", timeout=TIMEOUT).json()["publicKey"] + "\n")
    server.cli("audit", "checkpoints", "--now", "--output", str(tmp_path / "cps.json"))
    server.cli("audit", "export-chain", "--output", str(tmp_path / "export.ndjson"))
    outside = server.cli("audit", "verify", "--export", str(tmp_path / "export.ndjson"), "--checkpoints",
                         str(tmp_path / "cps.json"), "--public-key", str(key), check=False)
    assert outside.returncode == 0 and "redacted" in outside.stdout, outside.stdout + outside.stderr

    # The grace period: nothing is purged before it ends; after it, the repos are deleted (CLI or sweeper).
    server.cli("admin", "purge-deleted-accounts")
    assert _repo_status(server, f"{pseudonym}/weights", admin_token) == 200
    clock.write_text(str(4 * DAY))
    try:
        server.cli("admin", "purge-deleted-accounts")
    finally:
        clock.write_text("0")
    assert _repo_status(server, f"{pseudonym}/weights", admin_token) == 404
    assert _repo_status(server, f"{org}/shared", owner_token) == 200
    purged = [r for r in _chain(server, tmp_path) if r["action"] == "user.repos_purge" and r["target_id"] == pseudonym]
    assert purged and purged[0]["details"]["repos"] == [f"model/{pseudonym}/weights"]
    _verify(server)


def test_admin_api_deletion_transfers_the_repos_and_keeps_their_commits(lserver: BastionServer) -> None:
    server = lserver
    name, token = create_password_user(server)
    api = hf_api(server, token)
    api.create_repo(f"{name}/model")
    api.upload_file(path_or_fileobj=b"weights", path_in_repo="w.bin", repo_id=f"{name}/model")
    before = [(c.commit_id, c.title) for c in api.list_repo_commits(f"{name}/model")]
    owner, owner_token = server.create_user()
    org = f"org{secrets.token_hex(3)}"
    server.cli("admin", "create-org", org, "--owner", owner)
    admin_token = _admin(server)

    # Only admins, and a transfer target that exists.
    r = httpx.request("DELETE", f"{server.url}/api/admin/users/{name}", headers=_auth(owner_token), timeout=TIMEOUT)
    assert r.status_code == 403
    r = httpx.request("DELETE", f"{server.url}/api/admin/users/{name}", json={"transferTo": "no-such-org"},
                      headers=_auth(admin_token), timeout=TIMEOUT)
    assert r.status_code == 400, r.text
    assert httpx.get(f"{server.url}/api/whoami-v2", headers=_auth(token), timeout=TIMEOUT).status_code == 200

    r = httpx.request("DELETE", f"{server.url}/api/admin/users/{name}", json={"transferTo": org},
                      headers=_auth(admin_token), timeout=TIMEOUT)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["transferred"] == [f"model/{org}/model"] and body["kept"] == [] and body["purgeReposAfter"] is None
    assert httpx.get(f"{server.url}/api/whoami-v2", headers=_auth(token), timeout=TIMEOUT).status_code == 401
    after = [(c.commit_id, c.title) for c in hf_api(server, owner_token).list_repo_commits(f"{org}/model")]
    assert after == before  # the same commits (authors, signatures of the git objects untouched)
    assert _repo_status(server, f"{name}/model", admin_token) == 404  # no redirect keeps the old name
    # Deleting twice is a conflict, not a 500.
    r = httpx.request("DELETE", f"{server.url}/api/admin/users/{body['pseudonym']}", headers=_auth(admin_token),
                      timeout=TIMEOUT)
    assert r.status_code == 409, r.text
    _verify(server)


def _sudo(client: httpx.Client, password: str = PASSWORD) -> None:
    page = client.get("/settings/sudo")
    r = client.post("/settings/sudo", data={"csrf_token": csrf_of(page.text), "password": password,
                                            "next": "/settings/account"})
    assert r.status_code == 303, r.text[:300]


def test_a_user_deletes_their_own_account_in_sudo_mode(lserver: BastionServer, tmp_path: Path) -> None:
    server = lserver
    name, token = create_password_user(server)
    hf_api(server, token).create_repo(f"{name}/mine", private=True)
    web = http_login(server, name)
    page = web.get("/settings/account")
    assert page.status_code == 200 and "Delete my account" in page.text and "made private under the pseudonym" in page.text
    csrf = csrf_of(page.text)
    # The sign-in is fresh: sudo holds. Age it past the sudo window first: the deletion must ask again.
    from tests.accounts.fixtures import age_sign_in
    age_sign_in(server, name)
    r = web.post("/settings/account/delete", data={"csrf_token": csrf, "confirm": name})
    assert r.status_code == 303 and r.headers["location"].startswith("/settings/sudo"), r.status_code
    _sudo(web)
    r = web.post("/settings/account/delete", data={"csrf_token": csrf, "confirm": name.upper()})
    assert r.status_code == 400 and "Type your username" in r.text
    assert httpx.get(f"{server.url}/api/whoami-v2", headers=_auth(token), timeout=TIMEOUT).status_code == 200
    r = web.post("/settings/account/delete", data={"csrf_token": csrf, "confirm": name})
    assert r.status_code == 303 and r.headers["location"] == "/login?m=account-deleted", r.text[:300]
    assert "Your account was deleted" in httpx.get(f"{server.url}/login?m=account-deleted", timeout=TIMEOUT).text
    assert web.get("/api/settings/tokens").status_code == 401
    assert httpx.get(f"{server.url}/api/whoami-v2", headers=_auth(token), timeout=TIMEOUT).status_code == 401
    chain = _chain(server, tmp_path)
    assert name not in json.dumps([r for r in chain if r["target_type"] != "login"])
    deleted = [r for r in chain if r["action"] == "user.delete" and r["details"].get("by") == "self"]
    assert deleted and deleted[-1]["actor_name"] == deleted[-1]["target_id"]  # the pseudonym, not the name
    assert deleted[-1]["ip"] is None and deleted[-1]["user_agent"] is None
    _verify(server)


def test_the_admin_users_page_deactivates_and_deletes_in_sudo_mode(lserver: BastionServer, tmp_path: Path) -> None:
    server = lserver
    admin_name, _ = create_password_user(server)
    server.cli("admin", "create-token", admin_name, "--name", "x")  # (any token; the page needs a session)
    engine = server.engine()
    try:
        with engine.begin() as conn:
            conn.execute(sa.text("UPDATE users SET is_admin = 1 WHERE name = :n"), {"n": admin_name})
    finally:
        engine.dispose()
    name, token = create_password_user(server)
    web = http_login(server, admin_name)
    page = web.get("/admin/users")
    assert page.status_code == 200 and f'data-user="{name}"' in page.text
    csrf = csrf_of(page.text)
    r = web.post(f"/admin/users/{name}/deactivate", data={"csrf_token": csrf, "reason": "offboarding"})
    assert r.status_code == 303 and r.headers["location"] == "/admin/users?done=deactivate", r.text[:300]
    assert httpx.get(f"{server.url}/api/whoami-v2", headers=_auth(token), timeout=TIMEOUT).status_code == 401
    page = web.get("/admin/users")
    assert "deactivated" in page.text
    chain = _chain(server, tmp_path)
    event = next(r for r in chain if r["action"] == "user.deactivate" and r["target_id"] == name)
    assert event["details"]["reason"] == "offboarding" and event["actor_name"] == admin_name
    r = web.post(f"/admin/users/{name}/delete", data={"csrf_token": csrf, "confirm": "wrong"})
    assert r.status_code == 400 and "to confirm" in r.text
    r = web.post(f"/admin/users/{name}/delete", data={"csrf_token": csrf, "confirm": name})
    assert r.status_code == 303, r.text[:300]
    assert f'data-user="{name}"' not in web.get("/admin/users").text
    _verify(server)


def test_data_export_has_the_users_data_and_no_secret(lserver: BastionServer) -> None:
    server = lserver
    name, token = create_password_user(server)
    read = server.cli("admin", "create-token", name, "--name", "reader", "--role", "read").stdout.strip()
    web = http_login(server, name)
    for response in (httpx.get(f"{server.url}/api/settings/data-export", headers=_auth(read), timeout=TIMEOUT),
                     web.get("/api/settings/data-export")):
        assert response.status_code == 200, response.text
        assert "attachment" in response.headers["content-disposition"]
        doc = response.json()
        assert doc["profile"]["name"] == name and doc["profile"]["passwordSet"] is True
        assert [e["email"] for e in doc["emails"]] == [f"{name}@example.com"]
        assert {t["displayName"] for t in doc["accessTokens"]} == {"t", "reader"}
        assert doc["twoFactor"]["totp"] is False
        assert any(h["type"] == "user.login" and h["ip"] for h in doc["signInHistory"])
        assert any(s["ip"] for s in doc["sessions"])
        text = response.text
        for secret in (token, read, PASSWORD):
            assert secret not in text
        assert "argon2" not in text and "secret_hash" not in text and "secretHash" not in text
    # Anonymous: no.
    assert httpx.get(f"{server.url}/api/settings/data-export", timeout=TIMEOUT).status_code == 401
    # Audited, for the user's own security log.
    log = httpx.get(f"{server.url}/api/settings/audit-log", headers=_auth(token), timeout=TIMEOUT)
    assert log.status_code == 200, log.text
    assert sum(1 for r in log.json() if r["type"] == "user.data_export") == 2
