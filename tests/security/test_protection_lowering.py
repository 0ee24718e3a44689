"""Finding 9 (issue 15): an org `write` member counted as a repo manager for switching protections off.

They set `requireSignedCommits: false` (and could switch off secret push protection and block-unsafe)
on org repos, pushed past secret push protection with `-o secrets-bypass` (or the commit API's
`secretsBypassReason`), and super-squashed a branch the signed-commit rule covers. Lowering a protection
of an org repo now needs the org `admin` role (authz REPO_PROTECTION_LOWER), or an org setting
(`delegateProtectionChanges`, org admins only) that delegates it to repo managers; each lowering is
audited (`repo.protection.lower`, before and after). Raising a protection stays the managers'.
"""

from __future__ import annotations

import base64
import json
import secrets
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa

from tests.accounts.fixtures import create_password_user, csrf_of, http_login, mail_sink, web_server  # noqa: F401
from tests.conftest import BastionServer, hf_api
from tests.gitserver.conftest import Git
from tests.signing.conftest import git  # noqa: F401


def _client(server: BastionServer, token: str) -> httpx.Client:
    return httpx.Client(base_url=server.url, headers={"authorization": f"Bearer {token}"}, timeout=60)


def _lowered(server: BastionServer, repo_id: str) -> list[tuple[str, dict[str, Any]]]:
    engine = sa.create_engine(f"sqlite:///{server.data_dir / 'bastion.sqlite3'}")
    try:
        with engine.connect() as conn:
            rows = conn.execute(sa.text("SELECT actor_name, details FROM audit_events WHERE action = "
                                        "'repo.protection.lower' AND target_id = :t ORDER BY id"),
                                {"t": f"model/{repo_id}"}).all()
    finally:
        engine.dispose()
    return [(actor, json.loads(details) if isinstance(details, str) else details) for actor, details in rows]


def _org_repo(server: BastionServer) -> tuple[str, str, str, str, str]:
    """An org with an admin and a write member, and a repo in it with every protection on."""
    admin, admin_token = server.create_user()
    writer, writer_token = server.create_user()
    org = f"org{secrets.token_hex(3)}"
    server.admin("create-org", org, "--owner", admin)
    server.admin("add-member", org, writer, "--role", "write")
    repo_id = f"{org}/r{secrets.token_hex(3)}"
    hf_api(server, admin_token).create_repo(repo_id)
    with _client(server, admin_token) as c:
        on = c.put(f"/api/models/{repo_id}/settings", json={
            "secretPushProtection": True, "blockUnsafeFiles": True, "requireSignedCommits": True,
            "protectedTags": ["v*"]})
        assert on.status_code == 200, on.text
    return org, repo_id, admin_token, writer, writer_token


LOWERINGS: list[dict[str, Any]] = [
    {"requireSignedCommits": False}, {"secretPushProtection": False}, {"blockUnsafeFiles": False},
    {"requireSignedCommitsBranches": ["release/*"]}, {"protectedTags": []},
    {"requireSignedCommitsAcceptInstance": True}, {"secretPushProtectionMode": "verified-only"},
]


def test_an_org_write_member_cannot_lower_protections_an_admin_can(server: BastionServer) -> None:
    org, repo_id, admin_token, writer, writer_token = _org_repo(server)
    with _client(server, writer_token) as w, _client(server, admin_token) as a:
        before = w.get(f"/api/models/{repo_id}/settings").json()
        # Raising stays the managers' (REPO_MANAGE): more patterns, instance commits refused.
        raised = w.put(f"/api/models/{repo_id}/settings", json={"protectedTags": ["v*", "release-*"],
                                                                 "requireSignedCommitsAcceptInstance": False})
        assert raised.status_code == 200, raised.text
        for change in LOWERINGS:
            resp = w.put(f"/api/models/{repo_id}/settings", json=change)
            assert resp.status_code == 403, (change, resp.text)
            assert f"only administrators of the organization '{org}' can lower" in resp.headers["x-error-message"]
        after = w.get(f"/api/models/{repo_id}/settings").json()
        assert after == {**before, "protectedTags": ["v*", "release-*"], "requireSignedCommitsAcceptInstance": False}
        assert _lowered(server, repo_id) == []

        # The org's admin can, and each lowering is audited with its before and after.
        resp = a.put(f"/api/models/{repo_id}/settings", json={"requireSignedCommits": False, "protectedTags": ["v*"]})
        assert resp.status_code == 200, resp.text
        assert a.get(f"/api/models/{repo_id}/settings").json()["requireSignedCommits"] is False
        [(actor, details)] = _lowered(server, repo_id)
        assert details == {"requireSignedCommits": {"from": True, "to": False},
                           "protectedTags": {"from": ["v*", "release-*"], "to": ["v*"]}}
        assert actor != writer


def test_an_org_write_member_cannot_bypass_secret_push_protection(server: BastionServer, git: Git,  # noqa: F811
                                                                  tmp_path: Path) -> None:
    org, repo_id, admin_token, writer, writer_token = _org_repo(server)
    with _client(server, admin_token) as a:
        assert a.put(f"/api/models/{repo_id}/settings", json={"requireSignedCommits": False}).status_code == 200
    header = {"key": "header", "value": {"summary": "add", "secretsBypassReason": "test credential"}}
    line = {"key": "file", "value": {"path": "a.txt", "content": base64.b64encode(b"hello\n").decode()}}
    body = "\n".join(json.dumps(x) for x in (header, line)) + "\n"
    with _client(server, writer_token) as w:
        resp = w.post(f"/api/models/{repo_id}/commit/main", content=body,
                      headers={"content-type": "application/x-ndjson"})
        assert resp.status_code == 403, resp.text
        assert "Bypassing secret push protection is not allowed" in resp.headers["x-error-message"]
        assert f"administrators of the organization '{org}'" in resp.headers["x-error-message"]

    work = tmp_path / "work"
    host = server.url.removeprefix("http://")
    git("clone", "-q", f"http://{writer}:{writer_token}@{host}/{repo_id}", str(work))
    git("config", "user.email", f"{writer}@example.com", cwd=work)
    git("config", "user.name", writer, cwd=work)
    (work / "b.txt").write_text("plain\n")
    git.commit_all(work, "add b")
    pushed = git("push", "-o", "secrets-bypass=test credential", "origin", "HEAD:main", cwd=work, check=False)
    assert pushed.returncode != 0
    assert "Bypassing secret push protection is not allowed" in pushed.stderr, pushed.stderr


def test_super_squash_of_a_signed_branch_needs_an_org_admin(server: BastionServer) -> None:
    org, repo_id, admin_token, writer, writer_token = _org_repo(server)
    with _client(server, writer_token) as w:
        resp = w.post(f"/api/models/{repo_id}/super-squash/main", json={"message": "squash"})
        assert resp.status_code == 403, resp.text
        assert f"only administrators of the organization '{org}'" in resp.headers["x-error-message"]
    with _client(server, admin_token) as a:
        resp = a.post(f"/api/models/{repo_id}/super-squash/main", json={"message": "squash"})
        assert resp.status_code == 200, resp.text
    assert _lowered(server, repo_id) == [
        (_lowered(server, repo_id)[0][0], {"superSquash": {"branch": "main", "rule": "requireSignedCommits"}})]


def test_an_org_can_delegate_lowering_to_repo_managers(server: BastionServer) -> None:
    org, repo_id, admin_token, writer, writer_token = _org_repo(server)
    with _client(server, writer_token) as w, _client(server, admin_token) as a:
        # Only an org admin sets the delegation.
        assert w.put(f"/api/organizations/{org}/settings", json={"delegateProtectionChanges": True}).status_code == 403
        resp = a.put(f"/api/organizations/{org}/settings", json={"delegateProtectionChanges": True})
        assert resp.status_code == 200 and resp.json()["delegateProtectionChanges"] is True, resp.text
        resp = w.put(f"/api/models/{repo_id}/settings", json={"secretPushProtection": False})
        assert resp.status_code == 200, resp.text
        assert _lowered(server, repo_id) == [(writer, {"secretPushProtection": {"from": True, "to": False}})]
        # Withdrawn: refused again.
        assert a.put(f"/api/organizations/{org}/settings", json={"delegateProtectionChanges": False}).status_code == 200
        assert w.put(f"/api/models/{repo_id}/settings", json={"blockUnsafeFiles": False}).status_code == 403


def test_a_user_repo_owner_decides(server: BastionServer) -> None:
    owner, token = server.create_user()
    repo_id = f"{owner}/r{secrets.token_hex(3)}"
    hf_api(server, token).create_repo(repo_id)
    with _client(server, token) as c:
        assert c.put(f"/api/models/{repo_id}/settings", json={"requireSignedCommits": True}).status_code == 200
        assert c.put(f"/api/models/{repo_id}/settings", json={"requireSignedCommits": False}).status_code == 200
    assert _lowered(server, repo_id) == [(owner, {"requireSignedCommits": {"from": True, "to": False}})]


def test_the_org_security_page_sets_the_delegation(web_server: BastionServer) -> None:  # noqa: F811
    admin, admin_token = create_password_user(web_server)
    org = f"org{secrets.token_hex(3)}"
    web_server.admin("create-org", org, "--owner", admin)
    client = http_login(web_server, admin)
    try:
        page = client.get(f"/organizations/{org}/settings/security")
        assert page.status_code == 200
        assert '<input type="checkbox" id="delegate-protection-changes" name="delegate_protection_changes">' in page.text
        resp = client.post(f"/organizations/{org}/settings/security", data={
            "csrf_token": csrf_of(page.text), "repo_visibility": "public", "delegate_protection_changes": "on"})
        assert resp.status_code in (200, 303), resp.text[:500]
        page = client.get(f"/organizations/{org}/settings/security")
        assert 'name="delegate_protection_changes" checked>' in page.text
    finally:
        client.close()
    with _client(web_server, admin_token) as a:
        assert a.get(f"/api/organizations/{org}/settings").json()["delegateProtectionChanges"] is True
