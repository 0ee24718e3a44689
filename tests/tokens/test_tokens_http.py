"""Token lifecycle over HTTP: browser-only management, scopes enforced, whoami, denied uses audited."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta

import httpx
import pytest
import sqlalchemy as sa
from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError

from bastion.db import utcnow
from bastion.tokens.models import AccessToken
from tests.accounts.fixtures import age_sign_in, create_password_user, csrf_of, http_login
from tests.conftest import BastionServer, hf_api

JSON = {"accept": "application/json"}


@pytest.fixture(scope="module")
def token_server(tmp_path_factory: pytest.TempPathFactory) -> BastionServer:
    server = BastionServer(tmp_path_factory.mktemp("tokens"), env={"BASTION_SCANNERS": "[]"}).start()
    yield server
    server.stop()


def _db(server: BastionServer) -> sa.Engine:
    return sa.create_engine(f"sqlite:///{server.data_dir / 'bastion.sqlite3'}")


def test_lifecycle_from_a_browser_session_only(token_server: BastionServer) -> None:
    server = token_server
    name, write_token = create_password_user(server)
    web = http_login(server, name)
    web.headers["accept"] = "application/json"
    created = web.post("/api/settings/tokens", json={
        "displayName": "ci", "role": "fineGrained", "expiresAt": "2099-01-01",
        "fineGrained": {"scoped": [{"entity": {"type": "model", "name": f"{name}/only"},
                                    "permissions": ["repo.content.read", "repo.write"]}]}})
    assert created.status_code == 201, created.text
    secret, token_id = created.json()["token"], created.json()["id"]
    listed = web.get("/api/settings/tokens").json()
    assert {t["displayName"] for t in listed} >= {"ci", "t"} and all("token" not in t for t in listed)
    assert secret not in str(listed)

    # A token can never manage tokens, not even a write token.
    resp = httpx.post(f"{server.url}/api/settings/tokens", json={"displayName": "x"},
                      headers={"authorization": f"Bearer {write_token}"})
    assert resp.status_code == 403
    # A cross-site form post (no JSON) is refused.
    assert web.post("/api/settings/tokens", data={"displayName": "x"}).status_code == 400

    me = hf_api(server, secret).whoami()
    assert me["auth"]["accessToken"]["role"] == "fineGrained"
    assert me["auth"]["accessToken"]["fineGrained"]["scoped"] == [
        {"entity": {"type": "model", "name": f"{name}/only"}, "permissions": ["repo.content.read", "repo.write"]}]

    # Scopes are enforced: the token writes to its one repo and nowhere else.
    hf_api(server, write_token).create_repo(f"{name}/only", private=True)
    hf_api(server, write_token).create_repo(f"{name}/elsewhere", private=True)
    scoped = hf_api(server, secret)
    scoped.upload_file(path_or_fileobj=b"ok", path_in_repo="a.txt", repo_id=f"{name}/only")
    with pytest.raises(RepositoryNotFoundError):
        scoped.model_info(f"{name}/elsewhere")  # private and out of scope: invisible
    with pytest.raises(HfHubHTTPError) as exc:
        scoped.create_repo(f"{name}/new")
    assert exc.value.response.status_code == 403
    assert [m.id for m in scoped.list_models(author=name)] == [f"{name}/only"]

    rotated = web.post(f"/api/settings/tokens/{token_id}/rotate").json()["token"]
    assert rotated != secret
    assert httpx.get(f"{server.url}/api/whoami-v2", headers={"authorization": f"Bearer {secret}"}).status_code == 401
    assert hf_api(server, rotated).whoami()["auth"]["accessToken"]["fineGrained"]["scoped"]
    assert web.put(f"/api/settings/tokens/{token_id}", json={"displayName": "ci-2"}).json()["displayName"] == "ci-2"
    assert web.delete(f"/api/settings/tokens/{token_id}").json()["revokedAt"]
    assert httpx.get(f"{server.url}/api/whoami-v2", headers={"authorization": f"Bearer {rotated}"}).status_code == 401

    engine = _db(server)
    with engine.connect() as conn:
        actions = conn.execute(sa.text("SELECT action FROM audit_events WHERE target_type = 'token' AND "
                                       "target_id = :t ORDER BY id"), {"t": str(token_id)}).scalars().all()
    engine.dispose()
    assert actions[0] == "token.create" and "token.rotate" in actions and "token.rename" in actions
    assert "token.revoke" in actions and "token.use_denied" in actions  # the revoked secret was tried again


def test_denied_uses_are_audited_but_rate_limited(token_server: BastionServer) -> None:
    server = token_server
    name, token = server.create_user()
    read = server.admin("create-token", name, "--name", "ro", "--role", "read").stdout.strip()
    hf_api(server, token).create_repo(f"{name}/r")
    for _ in range(5):
        resp = httpx.post(f"{server.url}/api/models/{name}/r/branch/b{_}", json={},
                          headers={"authorization": f"Bearer {read}"})
        assert resp.status_code == 403
    engine = _db(server)
    with engine.connect() as conn:
        denied = conn.execute(sa.text("SELECT details FROM audit_events WHERE action = 'token.use_denied' "
                                      "AND namespace = :ns"), {"ns": name}).scalars().all()
    engine.dispose()
    assert len(denied) == 1 and "read-only" in str(denied[0])


def test_cli_fine_grained_token(token_server: BastionServer) -> None:
    server = token_server
    name, token = server.create_user()
    hf_api(server, token).create_repo(f"{name}/ds", repo_type="dataset", private=True)
    fg = server.admin("create-token", name, "--name", "fg", "--role", "fineGrained",
                    "--scope", f"dataset:{name}/ds=repo.content.read", "--expires", "2099-12-31").stdout.strip()
    api = hf_api(server, fg)
    assert api.dataset_info(f"{name}/ds").private is True
    with pytest.raises(HfHubHTTPError) as exc:
        api.upload_file(path_or_fileobj=b"x", path_in_repo="x", repo_id=f"{name}/ds", repo_type="dataset")
    assert exc.value.response.status_code == 403
    bad = server.admin("create-token", name, "--name", "x", "--role", "fineGrained", "--scope",
                     "model:nope=repo.write", check=False)
    assert bad.returncode == 2 and "namespace/name" in bad.stderr


def test_settings_page_creates_and_revokes(token_server: BastionServer) -> None:
    server = token_server
    name, _ = create_password_user(server)
    web = http_login(server, name)  # a fresh sign-in counts as a recent re-authentication
    page = web.get("/settings/tokens")
    assert page.status_code == 200 and "Access tokens" in page.text
    made = web.post("/settings/tokens", data={"csrf_token": csrf_of(page.text), "name": "page-made",
                                              "role": "fineGrained", "scopes": f"user:{name}=repo.content.read"})
    assert made.status_code == 200 and 'id="new-token"' in made.text
    secret = made.text.split('id="new-token">')[1].split("<")[0]
    assert hf_api(server, secret).whoami()["auth"]["accessToken"]["displayName"] == "page-made"
    assert secret not in web.get("/settings/tokens").text  # shown once
    bad = web.post("/settings/tokens", data={"csrf_token": csrf_of(page.text), "name": "x", "role": "fineGrained",
                                             "scopes": "model:nonsense=repo.write"})
    assert bad.status_code == 400 and "namespace/name" in bad.text
    no_csrf = web.post("/settings/tokens", data={"name": "x", "role": "read"})
    assert no_csrf.status_code in (400, 403)
    token_id = [t["id"] for t in web.get("/api/settings/tokens", headers={"accept": "application/json"}).json()
                if t["displayName"] == "page-made"][0]
    gone = web.post(f"/settings/tokens/{token_id}/revoke", data={"csrf_token": csrf_of(page.text)})
    assert gone.status_code == 303
    assert httpx.get(f"{server.url}/api/whoami-v2", headers={"authorization": f"Bearer {secret}"}).status_code == 401


def _token_row(page: str, token_id: int) -> str:
    return page.split(f'data-token="{token_id}"')[1].split("</tr>")[0]


def _state(row: str) -> str:
    found = re.search(r"<td[^>]*>\s*(active|expired|revoked)\s*</td>", row)
    assert found, row
    return found.group(1)


def _ids(web: httpx.Client) -> dict[str, int]:
    return {t["displayName"]: t["id"] for t in web.get("/api/settings/tokens", headers=JSON).json()}


def test_settings_page_shows_expired_and_revoked_tokens(token_server: BastionServer) -> None:
    server = token_server
    name, _ = create_password_user(server)
    web = http_login(server, name)
    soon = server.admin("create-token", name, "--name", "soon", "--role", "read",
                      "--expires", "2099-01-01").stdout.strip()
    server.admin("create-token", name, "--name", "gone", "--role", "read")
    ids = _ids(web)
    assert web.delete(f"/api/settings/tokens/{ids['gone']}", headers=JSON).status_code == 200
    # Its expiry passes (the CLI and the API refuse to create a token that is already expired).
    engine = _db(server)
    with engine.begin() as conn:
        conn.execute(sa.update(AccessToken.__table__).where(AccessToken.__table__.c.id == ids["soon"])
                     .values(expires_at=utcnow() - timedelta(days=1)))
    engine.dispose()
    assert httpx.get(f"{server.url}/api/whoami-v2", headers={"authorization": f"Bearer {soon}"}).status_code == 401

    page = web.get("/settings/tokens").text
    expired, revoked, live = (_token_row(page, ids[n]) for n in ("soon", "gone", "t"))
    assert _state(expired) == "expired" and _state(revoked) == "revoked" and _state(live) == "active"
    assert "/rotate" not in expired and "/rotate" not in revoked and "/rotate" in live


def test_settings_page_renames_a_token(token_server: BastionServer) -> None:
    server = token_server
    name, token = create_password_user(server)
    web = http_login(server, name)
    token_id = _ids(web)["t"]
    page = web.get("/settings/tokens").text
    row = _token_row(page, token_id)
    assert f'action="/settings/tokens/{token_id}/rename"' in row and 'name="name"' in row

    resp = web.post(f"/settings/tokens/{token_id}/rename", data={"csrf_token": csrf_of(page), "name": " laptop "})
    assert resp.status_code == 303 and resp.headers["location"].startswith("/settings/tokens")
    assert _ids(web).get("laptop") == token_id
    assert "laptop" in _token_row(web.get("/settings/tokens").text, token_id)
    # Same token, same secret: only the name changed.
    assert hf_api(server, token).whoami()["auth"]["accessToken"]["displayName"] == "laptop"

    # Refused: without the form's CSRF token, an empty name, someone else's token, a stale sign-in.
    assert web.post(f"/settings/tokens/{token_id}/rename", data={"name": "evil"}).status_code == 403
    bad = web.post(f"/settings/tokens/{token_id}/rename", data={"csrf_token": csrf_of(page), "name": "  "})
    assert bad.status_code == 400 and "1 to 100 characters" in bad.text
    other, _ = create_password_user(server)
    other_web = http_login(server, other)
    other_page = other_web.get("/settings/tokens").text
    assert other_web.post(f"/settings/tokens/{token_id}/rename",
                          data={"csrf_token": csrf_of(other_page), "name": "mine"}).status_code == 404
    age_sign_in(server, name)
    assert web.post(f"/settings/tokens/{token_id}/rename",
                    data={"csrf_token": csrf_of(page), "name": "later"}).status_code == 403
    assert _ids(web).get("laptop") == token_id

    # Audited like the JSON API's rename (the same service call): one event, with where it came from.
    engine = _db(server)
    with engine.connect() as conn:
        events = conn.execute(sa.text("SELECT namespace, ip, user_agent, details, actor_name FROM audit_events "
                                      "WHERE action = 'token.rename' AND target_id = :t"), {"t": str(token_id)}).all()
    engine.dispose()
    assert len(events) == 1
    namespace, ip, agent, details, actor = events[0]
    assert namespace == name and ip == "127.0.0.1" and agent.startswith("python-httpx/")
    assert actor == name  # the signed-in user, from the session cookie
    assert json.loads(details) == {"from": "t", "to": "laptop"}


def test_token_list_reports_last_use(token_server: BastionServer) -> None:
    server = token_server
    name, token = create_password_user(server)
    web = http_login(server, name)
    [before] = [t for t in web.get("/api/settings/tokens", headers=JSON).json() if t["displayName"] == "t"]
    assert before["lastUsedAt"] is None and before["lastUsedIp"] is None and before["lastUsedUserAgent"] is None

    started = datetime.now(UTC) - timedelta(seconds=1)
    used = httpx.get(f"{server.url}/api/whoami-v2", headers={"authorization": f"Bearer {token}",
                                                              "user-agent": "huggingface_hub/0.99; test-agent"})
    assert used.status_code == 200
    [after] = [t for t in web.get("/api/settings/tokens", headers=JSON).json() if t["displayName"] == "t"]
    assert after["lastUsedIp"] == "127.0.0.1"
    assert after["lastUsedUserAgent"] == "huggingface_hub/0.99; test-agent"
    assert started <= datetime.fromisoformat(after["lastUsedAt"].replace("Z", "+00:00")) <= datetime.now(UTC)
    # The settings page shows it too, and the session that listed the tokens did not count as a use.
    assert "from 127.0.0.1" in _token_row(web.get("/settings/tokens").text, before["id"])
