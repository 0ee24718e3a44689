"""An org's audit log shows that org's events only: never another org's (whatever the search, the page
cursor or the download), never events of an earlier holder of its name, and never to a member who is no
admin, to an admin of another org, or to a token scoped elsewhere."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.audit.conftest import Cast, api, build_geoip, make_cast, start_audit_server
from tests.conftest import BastionServer


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BastionServer]:
    data: Path = tmp_path_factory.mktemp("bastion-audit-iso")
    s = start_audit_server(data, build_geoip(data / "city.mmdb"))
    yield s
    s.stop()


@pytest.fixture(scope="module")
def cast(server: BastionServer) -> Cast:
    c = make_cast(server)
    with api(server, c.carol_token) as carol:
        for i in range(3):
            assert carol.post("/api/repos/create", json={"name": f"s{i}", "organization": c.other_org,
                                                         "private": True}).status_code == 200
    return c


def _db(server: BastionServer) -> sa.Engine:
    return sa.create_engine(f"sqlite:///{server.data_dir / 'bastion.sqlite3'}")


def test_other_orgs_events_never_appear(server: BastionServer, cast: Cast) -> None:
    with api(server, cast.carol_token) as carol:
        theirs = carol.get(f"/api/organizations/{cast.other_org}/audit-log").json()
    assert any(e["type"] == "repo.create" for e in theirs)
    their_ids = {e["_id"] for e in theirs}
    with api(server, cast.alice_token) as alice:
        searches = ["", f"author:{cast.carol}", "type:repo.create", "type:repo.*", "ip:127.0.0.1", "type:org.*"]
        for q in searches:
            for url in (f"/api/organizations/{cast.org}/audit-log", f"/api/organizations/{cast.org}/audit-log/export"):
                r = alice.get(url, params={"q": q, "limit": "1000"} if "export" not in url else {"q": q})
                assert r.status_code == 200, (url, q, r.text)
                records = json.loads(r.text)
                assert not their_ids & {e["_id"] for e in records}
                # (the log's own export events hold the searches typed, e.g. author:<carol>: alice's words)
                shown = json.dumps([e for e in records if e["type"] != "org.audit_log.export"])
                assert cast.other_org not in shown and cast.carol not in shown, (url, q)
        # a cursor pointing anywhere (even past the other org's newest event) pages only this org's events
        top = max(int(i, 16) for i in their_ids) + 1
        paged = alice.get(f"/api/organizations/{cast.org}/audit-log", params={"cursor": str(top)}).json()
        assert paged and not their_ids & {e["_id"] for e in paged}
        # the other org's log by name: refused, and no hint of what it holds
        for url in (f"/api/organizations/{cast.other_org}/audit-log",
                    f"/api/organizations/{cast.other_org}/audit-log/export"):
            r = alice.get(url)
            assert r.status_code == 403 and "repo" not in r.text
    with api(server, cast.bob_token) as bob:  # a member of the org, not an admin
        assert bob.get(f"/api/organizations/{cast.org}/audit-log").status_code == 403
        own = bob.get("/api/settings/audit-log").json()  # his own security events only
        assert own and all(e["type"].startswith(("user.", "token.")) for e in own)
        assert all(e["author"]["user"] in (cast.bob, "os:tests") for e in own)


def test_an_earlier_holder_of_the_name_stays_hidden(server: BastionServer, cast: Cast) -> None:
    """Events recorded under a name before this org existed (a deleted org or user of that name) are not its."""
    name = f"{cast.org}-reborn"
    engine = _db(server)
    before = datetime.now(UTC).replace(tzinfo=None) - timedelta(days=3)
    with engine.begin() as conn:
        top = conn.execute(sa.text("SELECT max(id) FROM audit_events")).scalar()
        conn.execute(sa.text(
            "INSERT INTO audit_events (id, created_at, action, actor_name, via, target_type, target_id, namespace, "
            "details, prev_hash, hash) VALUES (:id, :at, 'repo.create', 'previous-owner', 'api', 'repo', "
            "'model/x/old-secret', :ns, '{}', '', :h)"), {"id": top + 10, "at": before, "ns": name, "h": f"old{top}"})
    engine.dispose()
    with api(server, cast.alice_token) as alice:
        assert alice.post("/api/organizations", json={"name": name}).status_code == 201
        for url in (f"/api/organizations/{name}/audit-log", f"/api/organizations/{name}/audit-log/export"):
            body = alice.get(url).text
            assert "old-secret" not in body and "previous-owner" not in body and "org.create" in body


def test_tokens_scoped_elsewhere_are_refused(server: BastionServer, cast: Cast) -> None:
    scoped = server.admin("create-token", cast.alice, "--name", "other", "--role", "fineGrained",
                        "--scope", f"org:{cast.other_org}=org.write").stdout.strip()
    with api(server, scoped) as client:
        assert client.get(f"/api/organizations/{cast.org}/audit-log").status_code == 403
    own = server.admin("create-token", cast.alice, "--name", "own", "--role", "fineGrained",
                     "--scope", f"org:{cast.org}=org.write").stdout.strip()
    with api(server, own) as client:
        assert client.get(f"/api/organizations/{cast.org}/audit-log").status_code == 200
        assert client.get("/api/admin/audit-log").status_code == 403
