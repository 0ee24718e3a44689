"""Choosing regions: the org default (settings API and web form), a resource group's default, `region` on
creation winning over both, each choice audited; the org's Regions page (where each repo lives, the
defaults, a tag on repos outside the default) and its Move button for admins, which queues a durable move
that the server's workers run to the end."""

from __future__ import annotations

import hashlib
import json
import random
import secrets

import httpx
import sqlalchemy as sa

from tests.accounts.fixtures import create_password_user, csrf_of, http_login
from tests.conftest import BastionServer, MiB, hf_api, wait_for


def _api(server: BastionServer, token: str) -> httpx.Client:
    return httpx.Client(base_url=server.url, headers={"authorization": f"Bearer {token}"}, timeout=60)


def _audited(server: BastionServer, action: str) -> list[dict[str, object]]:
    engine = sa.create_engine(f"sqlite:///{server.data_dir / 'bastion.sqlite3'}")
    with engine.connect() as conn:
        rows = [json.loads(r) if isinstance(r, str) else r for (r,) in conn.execute(
            sa.text("SELECT details FROM audit_events WHERE action = :a"), {"a": action})]
    engine.dispose()
    return rows


def test_org_and_group_defaults_and_the_regions_page(region_server: BastionServer) -> None:
    server = region_server
    admin, token = create_password_user(server)
    member, member_token = server.create_user()
    org = f"o{secrets.token_hex(3)}"
    with _api(server, token) as api:
        assert api.post("/api/organizations", json={"name": org}).status_code in (200, 201)
        assert api.post(f"/api/organizations/{org}/members", json={"username": member, "role": "write"}).status_code == 200
        assert api.get(f"/api/organizations/{org}/settings").json()["defaultRegion"] == "default"
        bad = api.put(f"/api/organizations/{org}/settings", json={"defaultRegion": "mars"})
        assert bad.status_code == 400
        assert bad.headers["x-error-message"] == ("Unknown storage region 'mars': this instance has the regions: "
                                                  "'default', 'eu', 'us'")
        ok = api.put(f"/api/organizations/{org}/settings", json={"defaultRegion": "eu"})
        assert ok.status_code == 200 and ok.json()["defaultRegion"] == "eu"
        assert any(d == {"from": None, "to": "eu"} for d in _audited(server, "org.settings.default_region"))
        group = api.post(f"/api/organizations/{org}/resource-groups", json={"name": "research"}).json()
        patched = api.patch(f"/api/organizations/{org}/resource-groups/{group['id']}", json={"defaultRegion": "us"})
        assert patched.status_code == 200 and patched.json()["defaultRegion"] == "us"
        assert any(d == {"from": None, "to": "us"} for d in _audited(server, "resource_group.settings.default_region"))
        assert api.patch(f"/api/organizations/{org}/resource-groups/{group['id']}",
                         json={"defaultRegion": "mars"}).status_code == 400

        def created(name: str, **extra: object) -> str:
            resp = api.post("/api/repos/create", json={"name": name, "organization": org, **extra})
            assert resp.status_code == 200, resp.text
            return api.get(f"/api/models/{org}/{name}").json()["region"]

        assert created("by-org") == "eu"  # the org's default
        assert created("by-group", resourceGroupId=group["id"]) == "us"  # the group's, over the org's
        assert created("asked", region="default", resourceGroupId=group["id"]) == "default"  # asked: wins
        # A member who may create without admin rights gets the defaults too, and cannot change them.
        with _api(server, member_token) as mapi:
            assert mapi.put(f"/api/organizations/{org}/settings", json={"defaultRegion": "us"}).status_code == 403

    data = b"\x00" + random.Random(3).randbytes(MiB + 5)
    hf_api(server, token).upload_file(path_or_fileobj=data, path_in_repo="w.bin", repo_id=f"{org}/by-org")

    # ---- the Regions page ---------------------------------------------------------------------
    web = http_login(server, admin)
    page = web.get(f"/organizations/{org}/settings/regions")
    assert page.status_code == 200, page.text[:500]
    html = page.text
    assert "Storage regions" in html and f"model: {org}/by-group" in html
    assert 'class="tag region-tag">us</span>' in html and 'class="tag region-tag">default</span>' in html
    assert "Resource group research</td><td>us" in html
    # The default region form (audited), then the Move button: a durable job the server's workers run.
    resp = web.post(f"/organizations/{org}/settings/regions/default", data={"csrf_token": csrf_of(html),
                                                                            "region": "us"})
    assert resp.status_code == 303
    assert any(d == {"from": "eu", "to": "us"} for d in _audited(server, "org.settings.default_region"))
    html = web.get(f"/organizations/{org}/settings/regions").text
    resp = web.post(f"/organizations/{org}/settings/regions/move",
                    data={"csrf_token": csrf_of(html), "repo": "model:by-org", "region": "us"})
    assert resp.status_code == 303, resp.text[:500]

    def moved() -> bool:
        with _api(server, token) as api:
            return api.get(f"/api/models/{org}/by-org").json()["region"] == "us"

    wait_for(moved, timeout=180, interval=0.5)
    got = httpx.get(f"{server.url}/{org}/by-org/resolve/main/w.bin", headers={"authorization": f"Bearer {token}"})
    assert hashlib.sha256(got.content).hexdigest() == hashlib.sha256(data).hexdigest()
    assert any(d.get("from") == "eu" and d.get("to") == "us" and d.get("requestedBy") == admin
               for d in _audited(server, "repo.update_region"))
    # Only org admins move repositories: a member's session is refused.
    member_web = http_login(server, *_password_user_in(server, org, token))
    html = member_web.get(f"/organizations/{org}/settings/regions").text
    assert "regions/move" not in html  # no Move button
    refused = member_web.post(f"/organizations/{org}/settings/regions/move",
                              data={"csrf_token": csrf_of(html), "repo": "model:by-org", "region": "eu"})
    assert refused.status_code == 403


def _password_user_in(server: BastionServer, org: str, admin_token: str) -> tuple[str]:
    name, _ = create_password_user(server)
    with _api(server, admin_token) as api:
        assert api.post(f"/api/organizations/{org}/members", json={"username": name, "role": "write"}).status_code == 200
    return (name,)
