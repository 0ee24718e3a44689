"""A SCIM world on a shared test server, once on SQLite and once on PostgreSQL: an org with an admin, SCIM
tokens for the instance and the org (made with `bastion admin scim-token`, the CLI contract), and an httpx
client per endpoint."""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from tests.conftest import BastionServer

SCIM_JSON = "application/scim+json"
USER_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:User"
GROUP_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:Group"
PATCH_SCHEMA = "urn:ietf:params:scim:api:messages:2.0:PatchOp"


def make_org(server: BastionServer, owner: str, name: str | None = None) -> str:
    """An organization owned by `owner` (set-up: the orgs service, as `bastion admin create-org` calls it)."""
    from bastion.accounts import service as accounts
    from bastion.audit.context import AuditContext, bind_context
    from bastion.db import make_session_factory, transaction
    from bastion.orgs import service as orgs

    name = name or f"org{secrets.token_hex(3)}"
    engine = server.engine()
    try:
        with bind_context(AuditContext(via="cli", actor_name="tests")), \
                transaction(make_session_factory(engine)) as session:
            orgs.create_org(session, accounts.get_user_by_name(session, owner), name)
    finally:
        engine.dispose()
    return name


def scim_token(server: BastionServer, *args: str) -> str:
    """A new SCIM token through the CLI: the secret alone on standard output."""
    out = server.cli("admin", "scim-token", *args).stdout.strip()
    assert out.startswith("bsc_") and "\n" not in out, out
    return out


def rows(server: BastionServer, sql: str, *args: object) -> list[tuple[Any, ...]]:
    """`sql` (`?` placeholders) on the server's database, whichever it is."""
    import sqlalchemy as sa

    count = iter(range(len(args)))
    text = sa.text(re.sub(r"\?", lambda _m: f":p{next(count)}", sql))
    engine = server.engine()
    try:
        with engine.connect() as conn:
            return [tuple(r) for r in conn.execute(text, {f"p{i}": a for i, a in enumerate(args)})]
    finally:
        engine.dispose()


def audit_events(server: BastionServer, action: str, since: int = 0) -> list[dict[str, Any]]:
    return [{"target": t, "via": v, "actor": a, **(d if isinstance(d, dict) else json.loads(d))} for t, v, a, d in rows(
        server, "SELECT target_id, via, actor_name, details FROM audit_events WHERE action = ? AND id > ? ORDER BY id",
        action, since)]


def last_event_id(server: BastionServer) -> int:
    return int(rows(server, "SELECT coalesce(max(id), 0) FROM audit_events")[0][0])


@dataclass
class ScimWorld:
    server: BastionServer
    admin: str  # the org's admin (a user with an API token)
    admin_token: str
    org: str
    instance_token: str
    org_token: str

    def client(self, token: str, base: str) -> httpx.Client:
        return httpx.Client(base_url=self.server.url + base, timeout=30,
                            headers={"Authorization": f"Bearer {token}", "Content-Type": SCIM_JSON})

    @property
    def instance(self) -> httpx.Client:
        return self.client(self.instance_token, "/scim/v2")

    @property
    def org_scim(self) -> httpx.Client:
        return self.client(self.org_token, f"/api/organizations/{self.org}/scim/v2")


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def world(request: pytest.FixtureRequest) -> Iterator[ScimWorld]:
    """Every test that takes the world runs on SQLite and on PostgreSQL (the filters are SQL)."""
    server: BastionServer = request.getfixturevalue(f"{'pg' if request.param == 'postgresql' else 'sqlite'}_server")
    admin, admin_token = server.create_user()
    org = make_org(server, admin)
    yield ScimWorld(server, admin, admin_token, org, scim_token(server, "--instance", "--label", "instance-idp"),
                    scim_token(server, "--org", org, "--label", "org-idp"))


def new_user(client: httpx.Client, name: str | None = None, **extra: Any) -> dict[str, Any]:
    name = name or f"s{secrets.token_hex(4)}"
    body = {"schemas": [USER_SCHEMA], "userName": name, "emails": [{"value": f"{name}@corp.example", "primary": True}],
            "name": {"givenName": "Sam", "familyName": name.title()}, **extra}
    r = client.post("/Users", json=body)
    assert r.status_code == 201, r.text
    return r.json()  # type: ignore[no-any-return]


def web_session(server: BastionServer, name: str) -> str:
    """A signed-in browser session's cookie for `name` (set-up: the accounts service, as a sign-in starts one)."""
    from bastion.accounts import service as accounts
    from bastion.accounts import sessions
    from bastion.db import make_session_factory, transaction

    engine = server.engine()
    try:
        with transaction(make_session_factory(engine)) as session:
            _ws, secret = sessions.start(session, accounts.get_user_by_name(session, name), pending=False,
                                         ip="127.0.0.1", user_agent="tests")
    finally:
        engine.dispose()
    return secret


def api_token(server: BastionServer, name: str) -> str:
    """A write token for the existing account `name` (set-up: the tokens service)."""
    from bastion.accounts import service as accounts
    from bastion.audit.context import AuditContext, bind_context
    from bastion.db import make_session_factory, transaction
    from bastion.tokens import service as tokens

    engine = server.engine()
    try:
        with bind_context(AuditContext(via="cli", actor_name="tests")), \
                transaction(make_session_factory(engine)) as session:
            return tokens.create_token(session, accounts.get_user_by_name(session, name), "t", "write").secret
    finally:
        engine.dispose()
