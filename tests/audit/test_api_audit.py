"""API actions record who, from where and with which token, in the server's own database."""

from __future__ import annotations

import httpx
import sqlalchemy as sa

from tests.conftest import BastionServer


def test_repo_actions_are_audited_with_actor_ip_agent_and_token(server: BastionServer) -> None:
    name, token = server.create_user()
    headers = {"authorization": f"Bearer {token}", "user-agent": "audit-test/1.0"}
    assert httpx.post(f"{server.url}/api/repos/create", json={"name": "audited", "private": True},
                      headers=headers).status_code == 200
    assert httpx.put(f"{server.url}/api/models/{name}/audited/settings", json={"private": False},
                     headers=headers).status_code == 200
    assert httpx.request("DELETE", f"{server.url}/api/repos/delete", json={"name": "audited"},
                         headers=headers).status_code == 200
    engine = sa.create_engine(f"sqlite:///{server.data_dir / 'bastion.sqlite3'}")
    with engine.connect() as conn:
        rows = conn.execute(sa.text(
            "SELECT action, actor_name, ip, user_agent, token_id, target_id, details FROM audit_events "
            "WHERE namespace = :ns ORDER BY id"), {"ns": name}).all()
        token_id = conn.execute(sa.text("SELECT t.id FROM access_tokens t JOIN users u ON u.id = t.user_id "
                                        "WHERE u.name = :n"), {"n": name}).scalar()
    engine.dispose()
    actions = [r.action for r in rows]
    assert actions == ["user.create", "token.create", "repo.create", "repo.update_visibility", "repo.delete"]
    for r in rows[2:]:
        assert r.actor_name == name and r.ip == "127.0.0.1" and r.user_agent == "audit-test/1.0"
        assert r.token_id == token_id and r.target_id == f"model/{name}/audited"
