"""`BASTION_AUDIT_ANONYMIZE_IPS`: every reader sees IPv4 /24 and IPv6 /48 networks, never the address (API
pages, downloads, the web page, the CLI), still located by the full address; `ip:` filters by what is shown."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import pytest

from tests.accounts.fixtures import http_login
from tests.audit.conftest import ELSEWHERE_V4, LONDON_V4, PARIS_V6, Cast, api, make_cast, start_audit_server
from tests.conftest import BastionServer

SHOWN_V4, SHOWN_V6 = "81.2.69.0", "2a02:cf40:1::"


@pytest.fixture(scope="module")
def anon_server(tmp_path_factory: pytest.TempPathFactory, geoip_db: Path) -> Iterator[BastionServer]:
    server = start_audit_server(tmp_path_factory.mktemp("bastion-anon"), geoip_db, BASTION_AUDIT_ANONYMIZE_IPS="1")
    yield server
    server.stop()


@pytest.fixture(scope="module")
def cast(anon_server: BastionServer) -> Cast:
    c = make_cast(anon_server)
    with api(anon_server, c.alice_token, LONDON_V4) as alice:
        assert alice.post("/api/repos/create", json={"name": "m", "organization": c.org}).status_code == 200
    with api(anon_server, c.alice_token, PARIS_V6) as alice:
        assert alice.put(f"/api/models/{c.org}/m/settings", json={"private": True}).status_code == 200
    return c


def test_every_reader_sees_networks_not_addresses(anon_server: BastionServer, cast: Cast) -> None:
    with api(anon_server, cast.alice_token) as alice:
        listed = alice.get(f"/api/organizations/{cast.org}/audit-log", params={"q": "type:repo.*"}).json()
        assert [(e["type"], e["ip"], e["location"]["city"]) for e in listed] == [
            ("repo.update_visibility", SHOWN_V6, "Paris"), ("repo.create", SHOWN_V4, "London")]
        for fmt in ("json", "ndjson"):
            body = alice.get(f"/api/organizations/{cast.org}/audit-log/export", params={"format": fmt}).text
            assert SHOWN_V4 in body and SHOWN_V6 in body
            assert LONDON_V4 not in body and PARIS_V6 not in body
        # the address shown is what one filters by: it means its network
        for q, expect in [(f"ip:{SHOWN_V4}", ["repo.create"]), (f"ip:{SHOWN_V6}", ["repo.update_visibility"]),
                          (f"ip:{LONDON_V4}", ["repo.create"]), ("ip:81.2.70.1", [])]:
            got = alice.get(f"/api/organizations/{cast.org}/audit-log", params={"q": q}).json()
            assert [e["type"] for e in got] == expect, q
    with closing(http_login(anon_server, cast.alice)) as browser:
        page = browser.get(f"/organizations/{cast.org}/settings/audit-logs").text
        assert SHOWN_V4 in page and LONDON_V4 not in page and "shown anonymised" in page
        own = browser.get("/settings/security-log").text
        assert "127.0.0.0" in own and "127.0.0.1" not in own
    out = anon_server.cli("audit", "export", "--org", cast.org, "--format", "ndjson").stdout
    assert SHOWN_V4 in out and LONDON_V4 not in out and PARIS_V6 not in out
    assert all("ip" not in r or r["ip"].endswith((".0", "::")) for r in map(json.loads, out.splitlines()))


def test_instance_log_hides_the_addresses_failed_authentications_name(anon_server: BastionServer, cast: Cast) -> None:
    with api(anon_server, None, ELSEWHERE_V4) as stranger:
        assert stranger.get("/api/whoami-v2", headers={"authorization": "Bearer hf_notatoken"}).status_code == 401
    with api(anon_server, cast.root_token) as root:
        body = root.get("/api/admin/audit-log", params={"q": "type:token.auth_failed"}).text
        export = root.get("/api/admin/audit-log/export").text
    assert "89.160.20.0" in body and ELSEWHERE_V4 not in body and ELSEWHERE_V4 not in export
