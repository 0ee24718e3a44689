"""Audit log tests: a GeoIP database built with a writer library, servers that know it (behind a trusted
proxy on loopback, so each request can say which address it came from), and the people and orgs of a log."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from mmdb_writer import MMDBWriter
from netaddr import IPSet

from tests.accounts.fixtures import PASSWORD
from tests.conftest import BastionServer

# Global addresses (documentation ranges are not global, so they would have no location).
LONDON_V4 = "81.2.69.160"
PARIS_V6 = "2a02:cf40:1:2::5"
ELSEWHERE_V4 = "89.160.20.112"


def build_geoip(path: Path) -> Path:
    writer = MMDBWriter(ip_version=6, database_type="GeoLite2-City", languages=["en"], description="Bastion tests",
                        ipv4_compatible=True)
    writer.insert_network(IPSet(["81.2.69.0/24"]), {
        "city": {"names": {"en": "London"}}, "country": {"iso_code": "GB", "names": {"en": "United Kingdom"}}})
    writer.insert_network(IPSet(["2a02:cf40::/32"]), {
        "city": {"names": {"en": "Paris"}}, "country": {"iso_code": "FR", "names": {"en": "France"}}})
    writer.insert_network(IPSet(["89.160.0.0/16"]), {"country": {"iso_code": "SE", "names": {"en": "Sweden"}}})
    writer.to_db_file(str(path))
    return path


@pytest.fixture(scope="session")
def geoip_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_geoip(tmp_path_factory.mktemp("geoip") / "test-city.mmdb")


def start_audit_server(data: Path, geoip: Path, **env: str) -> BastionServer:
    server = BastionServer(data, env={"BASTION_GEOIP_DATABASE": str(geoip), "BASTION_SCANNERS": '["pickle"]',
                                      "BASTION_TRUSTED_PROXIES": '["127.0.0.1/32", "::1/128"]', **env})
    # Browsers (and the CSRF check) want a host name; the web tests sign in with a form.
    server.url = f"http://localhost:{server.port}"
    server.env["BASTION_PUBLIC_URL"] = server.url
    return server.start()


@dataclass
class Cast:
    """An org with an admin and a read member, another org with its own admin, an instance admin."""

    org: str
    other_org: str
    alice: str  # admin of org
    alice_token: str
    bob: str  # read member of org
    bob_token: str
    carol: str  # admin of other_org only
    carol_token: str
    root: str  # instance administrator
    root_token: str


def api(server: BastionServer, token: str | None, ip: str | None = None, agent: str = "audit-tests/1.0") -> httpx.Client:
    headers = {"user-agent": agent}
    if token:
        headers["authorization"] = f"Bearer {token}"
    if ip:
        headers["x-forwarded-for"] = ip
    return httpx.Client(base_url=server.url, headers=headers, timeout=60)


def create_people(server: BastionServer, count: int, *, admin: bool = False) -> list[tuple[str, str]]:
    """`count` users with the test password (e-mail verified) and a write token each: [(name, token)]. In this
    process through the same services as `bastion admin create-user/create-token` (one CLI call costs seconds)."""
    from bastion.accounts import service as accounts
    from bastion.audit.context import AuditContext, bind_context
    from bastion.db import make_session_factory, transaction
    from bastion.tokens import service as tokens

    engine = server.engine()
    out = []
    try:
        with bind_context(AuditContext(via="cli", actor_name="os:tests")), \
                transaction(make_session_factory(engine)) as session:
            for _ in range(count):
                name = f"u{secrets.token_hex(4)}"
                user = accounts.create_user(session, name, f"{name}@example.com", is_admin=admin, password=PASSWORD,
                                            email_verified=True)
                out.append((name, tokens.create_token(session, user, "t", "write").secret))
    finally:
        engine.dispose()
    return out


def make_cast(server: BastionServer) -> Cast:
    (alice, alice_token), (bob, bob_token), (carol, carol_token) = create_people(server, 3)
    (root, root_token), = create_people(server, 1, admin=True)
    org, other = f"org{secrets.token_hex(3)}", f"org{secrets.token_hex(3)}"
    with api(server, alice_token) as client:
        assert client.post("/api/organizations", json={"name": org}).status_code == 201
        assert client.post(f"/api/organizations/{org}/members", json={"username": bob, "role": "read"}
                           ).status_code == 200
    with api(server, carol_token) as client:
        assert client.post("/api/organizations", json={"name": other}).status_code == 201
    return Cast(org, other, alice, alice_token, bob, bob_token, carol, carol_token, root, root_token)


@pytest.fixture(scope="module")
def audit_server(tmp_path_factory: pytest.TempPathFactory, geoip_db: Path) -> Iterator[BastionServer]:
    server = start_audit_server(tmp_path_factory.mktemp("bastion-audit"), geoip_db)
    yield server
    server.stop()
