"""The audit logs in the browser (org settings → Audit logs, Instance → Audit log, settings → Security log)
and on the command line (`bastion audit export`): same filters, same records, same refusals."""

from __future__ import annotations

import json
from contextlib import closing
from pathlib import Path

import pytest

from tests.accounts.fixtures import http_login
from tests.audit.conftest import LONDON_V4, Cast, api, make_cast
from tests.conftest import BastionServer


@pytest.fixture(scope="module")
def cast(audit_server: BastionServer) -> Cast:
    c = make_cast(audit_server)
    with api(audit_server, c.alice_token, LONDON_V4) as alice:
        assert alice.post("/api/repos/create", json={"name": "shown", "organization": c.org}).status_code == 200
    with api(audit_server, c.carol_token) as carol:
        assert carol.post("/api/repos/create", json={"name": "hidden", "organization": c.other_org}
                          ).status_code == 200
    return c


def test_org_audit_page_for_admins_only(audit_server: BastionServer, cast: Cast) -> None:
    url = f"/organizations/{cast.org}/settings/audit-logs"
    with closing(http_login(audit_server, cast.alice)) as alice:
        page = alice.get(url)
        assert page.status_code == 200, page.text[:500]
        html = page.text
        assert "<h1>Audit logs</h1>" in html and 'aria-current="page">Audit logs' in html
        assert f"{cast.alice} created the repository model/{cast.org}/shown" in html
        assert "London, United Kingdom" in html and LONDON_V4 in html
        assert f'href="/api/organizations/{cast.org}/audit-log/export"' in html
        assert f"{cast.other_org}/hidden" not in html and cast.carol not in html  # the other org
        filtered = alice.get(url, params={"q": "type:org.create"}).text
        assert 'data-type="org.create"' in filtered and 'data-type="repo.create"' not in filtered
        assert 'value="type:org.create"' in filtered and "export?q=type%3Aorg.create" in filtered
        bad = alice.get(url, params={"q": "nonsense"})
        assert bad.status_code == 400 and "Invalid search term" in bad.text
        # the download link works with the browser session and is audited
        r = alice.get(f"/api/organizations/{cast.org}/audit-log/export", params={"format": "ndjson"})
        assert r.status_code == 200 and 'filename="audit-logs-' in r.headers["content-disposition"]
        assert alice.get("/admin/audit-log").status_code == 403
        own = alice.get("/settings/security-log")
        assert own.status_code == 200 and "<h1>Security log</h1>" in own.text and 'data-type="user.login"' in own.text
        assert 'data-type="repo.create"' not in own.text
    with closing(http_login(audit_server, cast.bob)) as bob:
        refused = bob.get(url)
        assert refused.status_code == 403 and "only administrators" in refused.text
        assert f"model/{cast.org}/shown" not in refused.text
    with closing(http_login(audit_server, cast.root)) as root:
        assert root.get(url).status_code == 200
        page = root.get("/admin/audit-log")
        assert page.status_code == 200 and "<h1>Instance audit log</h1>" in page.text
        assert 'href="/api/admin/audit-log/export"' in page.text
        assert 'href="/admin/audit-log"' in root.get("/admin").text


def test_pages_have_older_links(audit_server: BastionServer, cast: Cast) -> None:
    with api(audit_server, cast.alice_token) as alice:
        for i in range(50):
            assert alice.put(f"/api/models/{cast.org}/shown/settings", json={"private": i % 2 == 0}
                             ).status_code == 200
    with closing(http_login(audit_server, cast.alice)) as client:
        first = client.get(f"/organizations/{cast.org}/settings/audit-logs")
        assert first.text.count("<tr data-event=") == 50 and 'id="audit-older"' in first.text
        href = first.text.split('id="audit-older"')[0].rsplit('href="', 1)[1].split('"')[0].replace("&amp;", "&")
        older = client.get(href)
        assert older.status_code == 200 and 'data-type="org.create"' in older.text


def test_cli_export(audit_server: BastionServer, cast: Cast, tmp_path: Path) -> None:
    out = audit_server.cli("audit", "export", "--org", cast.org, "--format", "ndjson", "--q", "type:repo.create")
    records = [json.loads(line) for line in out.stdout.splitlines()]
    assert [r["type"] for r in records] == ["repo.create"]
    assert records[0]["location"]["city"] == "London" and records[0]["token"]["last4"] == cast.alice_token[-4:]
    target = tmp_path / "instance.json"
    audit_server.cli("audit", "export", "--instance", "--output", str(target))
    instance = json.loads(target.read_text())
    assert isinstance(instance, list) and all(not r["type"].startswith(("repo.", "org.")) for r in instance)
    # the same API shows what the CLI exported, audited with the OS user as a system author
    with api(audit_server, cast.alice_token) as alice:
        done = alice.get(f"/api/organizations/{cast.org}/audit-log", params={"q": "type:org.audit_log.export"}).json()
    cli_export = [e for e in done if e["data"].get("via") == "cli"]
    assert cli_export and cli_export[0]["author"]["type"] == "system"
    assert cli_export[0]["author"]["user"].startswith("os:") and cli_export[0]["data"]["q"] == "type:repo.create"
    for args, text in [(["--instance", "--org", cast.org], "exactly one"),
                       (["--org", "no-such-org"], "not found"), (["--instance", "--q", "bogus"], "Invalid search")]:
        failed = audit_server.cli("audit", "export", *args, check=False)
        assert failed.returncode != 0 and text in failed.stderr, (args, failed.stderr)
