"""Reading an organization's audit log over HTTP: the Hub's `q` filters and a date range, keyset pages that
stay put while events are written, the Hub's record shape with GeoIP locations and token facts, downloads
as a JSON array or NDJSON (audited, streamed, the newest 100,000), and who may read which log."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta

import httpx
import pytest
import sqlalchemy as sa

from tests.audit.conftest import ELSEWHERE_V4, LONDON_V4, PARIS_V6, Cast, api, make_cast
from tests.conftest import BastionServer

RECORD_KEYS = {"_id", "createdAt", "type", "data", "message", "ip", "location", "userAgent", "author", "token"}
REQUIRED = {"_id", "createdAt", "type", "message", "author"}


@pytest.fixture(scope="module")
def cast(audit_server: BastionServer) -> Cast:
    c = make_cast(audit_server)
    with api(audit_server, c.alice_token, LONDON_V4) as alice:
        for i in range(3):
            r = alice.post("/api/repos/create", json={"name": f"m{i}", "organization": c.org, "private": True})
            assert r.status_code == 200, r.text
    with api(audit_server, c.alice_token, PARIS_V6) as alice:
        assert alice.put(f"/api/models/{c.org}/m0/settings", json={"private": False}).status_code == 200
    with api(audit_server, c.carol_token, ELSEWHERE_V4) as carol:
        assert carol.post("/api/repos/create", json={"name": "secret", "organization": c.other_org,
                                                     "private": True}).status_code == 200
    return c


def log(server: BastionServer, token: str, org: str, **params: str) -> httpx.Response:
    with api(server, token) as client:
        return client.get(f"/api/organizations/{org}/audit-log", params=params)


def all_pages(server: BastionServer, token: str, url: str) -> list[dict]:
    out: list[dict] = []
    with api(server, token) as client:
        while url:
            r = client.get(url)
            assert r.status_code == 200, r.text
            out += r.json()
            found = re.search(r'<([^>]+)>; rel="next"', r.headers.get("link", ""))
            url = found.group(1) if found else ""
    return out


def test_org_log_holds_the_orgs_events_newest_first_in_the_hubs_shape(audit_server: BastionServer, cast: Cast) -> None:
    r = log(audit_server, cast.alice_token, cast.org)
    assert r.status_code == 200, r.text
    records = r.json()
    types = [e["type"] for e in records]
    assert types == ["repo.update_visibility", "repo.create", "repo.create", "repo.create", "org.add_user",
                     "org.add_user", "org.create"]
    ids = [int(e["_id"], 16) for e in records]
    assert ids == sorted(ids, reverse=True)
    for e in records:
        assert REQUIRED <= set(e) <= RECORD_KEYS, e
        assert re.fullmatch(r"[0-9a-f]{24}", e["_id"]) and e["createdAt"].endswith("Z")
        assert e["message"] and "{" not in e["message"]
    created = records[1]
    assert created["message"] == f"{cast.alice} created the repository model/{cast.org}/m2"
    assert created["author"] == {"_id": created["author"]["_id"], "user": cast.alice, "type": "user"}
    assert created["ip"] == LONDON_V4 and created["userAgent"] == "audit-tests/1.0"
    assert created["location"] == {"formatted": "London, United Kingdom", "country": "United Kingdom",
                                   "city": "London"}
    assert created["token"] == {"type": "access_token", "id": created["token"]["id"], "deleted": False,
                                "role": "write", "last4": cast.alice_token[-4:]}
    assert created["data"]["target"] == {"type": "repo", "id": f"model/{cast.org}/m2"}
    assert records[0]["ip"] == PARIS_V6 and records[0]["location"]["city"] == "Paris"
    assert records[-1]["ip"] == "127.0.0.1" and "location" not in records[-1]  # loopback: nowhere


def test_q_filters_and_date_range(audit_server: BastionServer, cast: Cast) -> None:
    def types(**params: str) -> list[str]:
        r = log(audit_server, cast.alice_token, cast.org, **params)
        assert r.status_code == 200, r.text
        return [e["type"] for e in r.json()]

    assert types(q="type:repo.create") == ["repo.create"] * 3
    assert types(q="type:repo.*") == ["repo.update_visibility"] + ["repo.create"] * 3
    assert types(q="type:org.create type:org.add_user") == ["org.add_user", "org.add_user", "org.create"]  # OR
    assert len(types(q=f"author:{cast.alice}")) == 7
    assert types(q=f"author:{cast.bob}") == []
    assert types(q=f"ip:{LONDON_V4}") == ["repo.create"] * 3
    assert types(q="ip:81.2.69.0/24") == ["repo.create"] * 3
    assert types(q="ip:2a02:cf40:1::/48") == ["repo.update_visibility"]
    assert types(q=f"ip:{PARIS_V6}") == ["repo.update_visibility"]
    assert types(q=f"type:repo.create ip:{PARIS_V6}") == []  # different keys: AND
    assert types(q=f"type:repo.update_visibility author:{cast.alice} ip:{PARIS_V6}") == ["repo.update_visibility"]
    today = datetime.now(UTC).date()
    assert len(types(start=str(today - timedelta(days=1)), end=str(today))) == 7
    assert types(end=str(today - timedelta(days=1))) == []
    assert types(start=(datetime.now(UTC) + timedelta(hours=1)).isoformat()) == []
    for bad, text in [({"q": "repo.create"}, "Invalid search term"), ({"q": "ip:nope"}, "Invalid IP"),
                      ({"q": "ip:81.2.69.0/20"}, "multiple of 8"), ({"q": "author:a'b"}, "Invalid author"),
                      ({"start": "yesterday"}, "ISO-8601"), ({"start": "2026-02-02", "end": "2026-01-01"}, "after"),
                      ({"limit": "0"}, "between"), ({"cursor": "x"}, "integer")]:
        r = log(audit_server, cast.alice_token, cast.org, **bad)
        assert r.status_code == 400 and text in r.json()["error"], (bad, r.text)
        assert r.headers["x-error-message"]


def test_keyset_pages_are_stable_while_events_are_written(audit_server: BastionServer, cast: Cast) -> None:
    """(In the other org, so that the other tests' expectations of the first org's log hold in any order.)"""
    with api(audit_server, cast.carol_token) as client:
        for i in range(4):
            assert client.post("/api/repos/create", json={"name": f"k{i}", "organization": cast.other_org}
                               ).status_code == 200
        before = client.get(f"/api/organizations/{cast.other_org}/audit-log").json()
        r = client.get(f"/api/organizations/{cast.other_org}/audit-log", params={"limit": 2})
        seen = r.json()
        # new events arrive between pages: they are newer than every cursor, so nothing shifts or repeats
        assert client.post("/api/repos/create", json={"name": "late", "organization": cast.other_org}
                           ).status_code == 200
        url = re.search(r'<([^>]+)>; rel="next"', r.headers["link"]).group(1)  # type: ignore[union-attr]
    seen += all_pages(audit_server, cast.carol_token, url)
    assert len(seen) >= 7 and [e["_id"] for e in seen] == [e["_id"] for e in before]


def test_export_json_array_and_ndjson_are_audited(audit_server: BastionServer, cast: Cast) -> None:
    listed = [e for e in log(audit_server, cast.alice_token, cast.org, limit="1000").json()]
    with api(audit_server, cast.alice_token, LONDON_V4) as client:
        r = client.get(f"/api/organizations/{cast.org}/audit-log/export")
        assert r.status_code == 200 and r.headers["content-type"].startswith("application/json")
        disposition = r.headers["content-disposition"]
        assert re.fullmatch(rf'attachment; filename="audit-logs-{cast.org}-\d{{8}}T\d{{6}}Z\.json"', disposition)
        exported = json.loads(r.content)
        assert isinstance(exported, list) and [e["_id"] for e in exported] == [e["_id"] for e in listed]
        r = client.get(f"/api/organizations/{cast.org}/audit-log/export",
                       params={"format": "ndjson", "q": "type:repo.create"})
        assert r.headers["content-type"].startswith("application/x-ndjson")
        assert r.headers["content-disposition"].endswith('.ndjson"')
        lines = r.content.decode().splitlines()
        assert [json.loads(x)["type"] for x in lines] == ["repo.create"] * 3
        assert client.get(f"/api/organizations/{cast.org}/audit-log/export",
                          params={"format": "csv"}).status_code == 400
    # each download is in the log, hidden from the default view as on the Hub, shown when asked for
    default = [e["type"] for e in log(audit_server, cast.alice_token, cast.org, limit="1000").json()]
    assert "org.audit_log.export" not in default
    exports = log(audit_server, cast.alice_token, cast.org, q="type:org.audit_log.export").json()
    assert [e["data"]["format"] for e in exports] == ["ndjson", "json"]
    assert exports[0]["data"]["q"] == "type:repo.create" and exports[0]["author"]["user"] == cast.alice
    assert exports[0]["message"] == f"{cast.alice} exported the organization's audit log"
    assert exports[0]["location"]["city"] == "London"


def test_who_may_read_which_log(audit_server: BastionServer, cast: Cast) -> None:
    org_urls = [f"/api/organizations/{cast.org}/audit-log", f"/api/organizations/{cast.org}/audit-log/export"]
    for token in (cast.bob_token, cast.carol_token):  # a read member; another org's admin
        with api(audit_server, token) as client:
            for url in org_urls:
                r = client.get(url)
                assert r.status_code == 403 and r.headers["x-error-message"], (url, r.text)
    with api(audit_server, None) as anonymous:
        for url in [*org_urls, "/api/admin/audit-log", "/api/settings/audit-log"]:
            assert anonymous.get(url).status_code == 401, url
    with api(audit_server, cast.alice_token) as alice:
        assert alice.get("/api/admin/audit-log").status_code == 403
        assert alice.get("/api/admin/audit-log/export").status_code == 403
        assert alice.get("/api/organizations/no-such-org/audit-log").status_code == 404
    # refusals wrote no export event: every one in the log is alice's
    exports = log(audit_server, cast.alice_token, cast.org, q="type:org.audit_log.export").json()
    assert all(e["author"]["user"] == cast.alice for e in exports)
    # an instance administrator reads every org's log
    with api(audit_server, cast.root_token) as root:
        assert root.get(org_urls[0]).status_code == 200


def test_instance_log_and_own_security_log(audit_server: BastionServer, cast: Cast) -> None:
    with api(audit_server, None, ELSEWHERE_V4) as stranger:  # a credential that matches no token
        assert stranger.get("/api/whoami-v2", headers={"authorization": "Bearer hf_notatoken"}).status_code == 401
    with api(audit_server, cast.root_token) as root:
        events = root.get("/api/admin/audit-log", params={"limit": "1000"}).json()
        assert events and all(e["type"].startswith("instance.") or e["type"] == "token.auth_failed"
                              or e["type"] == "user.login_failed" for e in events), {e["type"] for e in events}
        assert any(e["type"] == "token.auth_failed" and e["ip"] == ELSEWHERE_V4 for e in events)
        r = root.get("/api/admin/audit-log/export", params={"format": "ndjson"})
        assert r.status_code == 200 and 'filename="audit-logs-instance-' in r.headers["content-disposition"]
        exported = root.get("/api/admin/audit-log", params={"q": "type:instance.audit_log.export"}).json()
        assert exported[0]["author"]["user"] == cast.root and exported[0]["data"]["format"] == "ndjson"
        assert not any(e["type"].startswith(("repo.", "org.")) for e in
                       root.get("/api/admin/audit-log", params={"limit": "1000"}).json())
    with api(audit_server, cast.bob_token) as bob:
        assert bob.get(f"/api/organizations/{cast.org}/audit-log").status_code == 403  # a refused token use
        mine = bob.get("/api/settings/audit-log").json()
    assert {"user.create", "token.create", "token.use_denied"} == {e["type"] for e in mine}
    assert all(e["type"].startswith(("user.", "token.")) for e in mine)
    assert not any(cast.alice in json.dumps(e) for e in mine)


def test_export_holds_the_newest_100000_events(audit_server: BastionServer, cast: Cast) -> None:
    """The Hub's cap: 100,005 events in a fresh org's log, the download holds the newest 100,000."""
    with api(audit_server, cast.carol_token) as carol:
        big = f"{cast.other_org}x"
        assert carol.post("/api/organizations", json={"name": big}).status_code == 201
    engine = sa.create_engine(f"sqlite:///{audit_server.data_dir / 'bastion.sqlite3'}")
    now = datetime.now(UTC).replace(tzinfo=None)
    with engine.begin() as conn:
        top = conn.execute(sa.text("SELECT max(id) FROM audit_events")).scalar()
        conn.execute(sa.text(
            "INSERT INTO audit_events (id, created_at, action, via, target_type, target_id, namespace, details, "
            "prev_hash, hash) VALUES (:id, :at, 'repo.commit', 'api', 'repo', 'model/x/y', :ns, '{}', '', :h)"),
            [{"id": top + 1000 + i, "at": now, "ns": big, "h": f"bulk{top}-{i}"} for i in range(100_005)])
    engine.dispose()
    with api(audit_server, cast.carol_token) as carol:
        r = carol.get(f"/api/organizations/{big}/audit-log/export", params={"format": "ndjson"})
    lines = r.content.splitlines()
    assert len(lines) == 100_000
    assert int(json.loads(lines[0])["_id"], 16) == top + 1000 + 100_004
    assert int(json.loads(lines[-1])["_id"], 16) == top + 1000 + 5
