"""Deprovisioning is immediate and complete (issue 20): after `bastion admin deactivate-user` (or the admin API
route) every credential kind the user held fails on its very next use — API token (huggingface_hub and plain
HTTP), git over HTTP, the web session, a Xet CAS token and its fetch URL obtained before, a pending org token
approval — and reactivation brings none of the old tokens back.
"""

from __future__ import annotations

import secrets
import subprocess

import httpx
import pytest
from huggingface_hub.errors import HfHubHTTPError

from tests.accounts.fixtures import create_password_user, http_login, mail_sink, web_server  # noqa: F401
from tests.conftest import BastionServer, hf_api
from tests.security.test_cas_token_binding import OK, _cas_token, _fetch_url, _reads, _refused, _store

TIMEOUT = 30


def _git_ls_remote(server: BastionServer, name: str, token: str, repo_id: str) -> subprocess.CompletedProcess[str]:
    host = server.url.removeprefix("http://")
    return subprocess.run(["git", "ls-remote", f"http://{name}:{token}@{host}/{repo_id}"], capture_output=True,
                          text=True, timeout=60, env={**server.env, "GIT_TERMINAL_PROMPT": "0"})


def _pending_approval(server: BastionServer, member: str) -> tuple[str, str, str]:
    """An org under the token approval policy and a fine-grained token of `member` waiting for approval:
    (org, the org admin's token, the pending token)."""
    owner, _ = server.create_user()
    org = f"org{secrets.token_hex(3)}"
    server.cli("admin", "create-org", org, "--owner", owner)
    server.cli("admin", "add-member", org, member, "--role", "write")
    admin_tok = server.cli("admin", "create-token", owner, "--name", "org-admin", "--role", "fineGrained",
                           "--scope", f"org:{org}=org.write").stdout.strip()
    r = httpx.put(f"{server.url}/api/organizations/{org}/settings", json={"tokenPolicy": "approval"},
                  headers={"authorization": f"Bearer {admin_tok}"}, timeout=TIMEOUT)
    assert r.status_code == 200, r.text
    pending = server.cli("admin", "create-token", member, "--name", "fg", "--role", "fineGrained", "--scope",
                         f"org:{org}=repo.content.read").stdout.strip()
    return org, admin_tok, pending


def _approval_states(server: BastionServer, org: str, admin_tok: str, pending: str) -> list[str]:
    """What the org's token list says of the pending token (absent once it no longer reaches the org)."""
    r = httpx.get(f"{server.url}/api/organizations/{org}/settings/tokens",
                  headers={"authorization": f"Bearer {admin_tok}"}, timeout=TIMEOUT)
    assert r.status_code == 200, r.text
    return [t["state"] for t in r.json() if t["displayName"] == "fg"]


def _lfs_upload_url(server: BastionServer, name: str, token: str, repo_id: str) -> tuple[str, bytes]:
    import hashlib

    body = secrets.token_bytes(1024)
    oid = hashlib.sha256(body).hexdigest()
    r = httpx.post(f"{server.url}/{repo_id}.git/info/lfs/objects/batch", auth=(name, token), timeout=TIMEOUT,
                   headers={"accept": "application/vnd.git-lfs+json", "content-type": "application/vnd.git-lfs+json"},
                   json={"operation": "upload", "transfers": ["basic"], "objects": [{"oid": oid, "size": len(body)}]})
    assert r.status_code == 200, r.text
    return r.json()["objects"][0]["actions"]["upload"]["href"], body


def _whoami(server: BastionServer, token: str) -> int:
    return httpx.get(f"{server.url}/api/whoami-v2", headers={"authorization": f"Bearer {token}"},
                     timeout=TIMEOUT).status_code


def _deactivate_by_admin_api(server: BastionServer, name: str) -> None:
    _, admin_token = server.create_user(admin=True)
    r = httpx.post(f"{server.url}/api/admin/users/{name}/deactivate", json={"reason": "left the company"},
                   headers={"authorization": f"Bearer {admin_token}"}, timeout=TIMEOUT)
    assert r.status_code == 200, r.text
    assert r.json()["revoked"]["tokens"] >= 2


def _deactivate_by_cli(server: BastionServer, name: str) -> None:
    proc = server.cli("admin", "deactivate-user", name, "--reason", "left the company")
    assert "deactivated" in proc.stderr


@pytest.mark.parametrize("deactivate", [_deactivate_by_cli, _deactivate_by_admin_api], ids=["cli", "admin-api"])
def test_every_credential_fails_at_once_and_none_comes_back(web_server: BastionServer, deactivate) -> None:  # noqa: F811, ANN001
    server = web_server
    name, token = create_password_user(server)
    repo_id = f"{name}/weights"
    hf_api(server, token).create_repo(repo_id, private=True)
    stored = _store(server, repo_id, token, 911)
    org, admin_tok, pending = _pending_approval(server, name)
    assert _approval_states(server, org, admin_tok, pending) == ["pending"]

    # Everything works before.
    assert hf_api(server, token).whoami()["name"] == name
    assert _git_ls_remote(server, name, token, repo_id).returncode == 0
    web = http_login(server, name)
    assert web.get("/api/settings/tokens").status_code == 200
    by_token = _cas_token(server, repo_id, "read", token)
    by_session = _cas_token(server, repo_id, "read", client=web)
    fetches = [_fetch_url(by_token, stored), _fetch_url(by_session, stored)]
    assert _reads(by_token, stored, fetches[0]) == OK
    assert _reads(by_session, stored, fetches[1]) == OK
    upload_url, lfs_body = _lfs_upload_url(server, name, token, repo_id)

    deactivate(server, name)

    # API token, by the Hub client and by plain HTTP (both tokens: the write one and the pending fine-grained one).
    with pytest.raises(HfHubHTTPError) as refused:
        hf_api(server, token).whoami()
    assert refused.value.response.status_code == 401
    assert _whoami(server, token) == 401 and _whoami(server, pending) == 401
    # git over HTTP with the token as password.
    proc = _git_ls_remote(server, name, token, repo_id)
    assert proc.returncode != 0 and "Authentication failed" in proc.stderr, proc.stderr
    # The web session: signed out (the API answers as to anyone anonymous; the settings page sends to sign-in).
    assert web.get("/api/settings/tokens").status_code == 401
    assert web.get("/settings/tokens").status_code in (302, 303, 401)
    # Xet CAS tokens (from the token and from the session) and the fetch URLs they were given.
    assert _refused(_reads(by_token, stored, fetches[0]))
    assert _refused(_reads(by_session, stored, fetches[1]))
    # An LFS upload URL handed out before (a capability valid for an hour) dies with the account.
    r = httpx.put(upload_url, content=lfs_body, timeout=TIMEOUT)
    assert r.status_code == 403 and "no longer valid" in r.text, r.text  # its token was revoked with the account
    # The pending approval is gone from the org's queue: revoked, not waiting for an admin.
    assert _approval_states(server, org, admin_tok, pending) in ([], ["revoked"])
    # The password no longer signs in.
    client = httpx.Client(base_url=server.url, timeout=TIMEOUT)
    from tests.accounts.fixtures import PASSWORD, csrf_of
    r = client.post("/login", data={"csrf_token": csrf_of(client.get("/login").text), "login": name,
                                    "password": PASSWORD})
    assert r.status_code != 303 or r.headers.get("location") != "/"

    # Reactivation lets the person in again, with none of the old credentials.
    proc = server.cli("admin", "reactivate-user", name, "--reason", "came back")
    assert "reactivated" in proc.stderr
    assert _whoami(server, token) == 401 and _whoami(server, pending) == 401
    assert _git_ls_remote(server, name, token, repo_id).returncode != 0
    assert _refused(_reads(by_token, stored, fetches[0]))
    assert _refused(_reads(by_session, stored, fetches[1]))
    assert web.get("/api/settings/tokens").status_code == 401
    fresh = http_login(server, name)
    states = {t["last4"]: t["state"] for t in fresh.get("/api/settings/tokens").json()}
    assert states[token[-4:]] == "revoked" and states[pending[-4:]] == "revoked"
    # Audited: one event for the deactivation (with what it revoked), one per token, one for the reactivation.
    events = _events_of(server, name)
    deactivated = [d for a, d in events if a == "user.deactivate"]
    assert len(deactivated) == 1 and deactivated[0]["reason"] == "left the company"
    assert deactivated[0]["revoked"]["tokens"] >= 2 and deactivated[0]["revoked"]["approvals"] == 1
    assert deactivated[0]["revoked"]["webSessions"] >= 1
    assert [d["reason"] for a, d in events if a == "user.reactivate"] == ["came back"]
    assert sum(1 for a, d in events if a == "token.revoke" and d["reason"].startswith("user deactivated")) >= 2


def _events_of(server: BastionServer, name: str) -> list[tuple[str, dict]]:
    import sqlalchemy as sa

    engine = server.engine()
    try:
        with engine.connect() as conn:
            rows = conn.execute(sa.text("SELECT action, details FROM audit_events WHERE namespace = :n ORDER BY id"),
                                {"n": name}).all()
    finally:
        engine.dispose()
    import json
    return [(a, json.loads(d) if isinstance(d, str) else d) for a, d in rows]
