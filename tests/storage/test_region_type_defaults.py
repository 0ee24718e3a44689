"""An organization's default storage region per repository type (`defaultRegions` in the org settings API,
over `defaultRegion`; the Regions page form): used when a repository is created without `region`, below a
resource group's default and an explicit `region`; every change audited; bad types and regions a 400."""

from __future__ import annotations

import json
import secrets

import httpx
import sqlalchemy as sa

from tests.accounts.fixtures import create_password_user, csrf_of, http_login
from tests.conftest import BastionServer


def _api(server: BastionServer, token: str) -> httpx.Client:
    return httpx.Client(base_url=server.url, headers={"authorization": f"Bearer {token}"}, timeout=60)


def _audited(server: BastionServer, org: str) -> list[dict[str, object]]:
    engine = sa.create_engine(f"sqlite:///{server.data_dir / 'bastion.sqlite3'}")
    with engine.connect() as conn:
        rows = [json.loads(r) if isinstance(r, str) else r for (r,) in conn.execute(
            sa.text("SELECT details FROM audit_events WHERE action = 'org.settings.default_region' "
                    "AND namespace = :n ORDER BY id"), {"n": org})]
    engine.dispose()
    return rows


def test_default_region_per_repo_type(region_server: BastionServer) -> None:
    server = region_server
    admin, token = create_password_user(server)
    org = f"t{secrets.token_hex(3)}"
    plural = {"model": "models", "dataset": "datasets", "space": "spaces"}
    with _api(server, token) as api:
        assert api.post("/api/organizations", json={"name": org}).status_code in (200, 201)
        settings = api.get(f"/api/organizations/{org}/settings").json()
        assert settings["defaultRegion"] == "default" and settings["defaultRegions"] == {}
        bad_type = api.put(f"/api/organizations/{org}/settings", json={"defaultRegions": {"notebook": "eu"}})
        assert bad_type.status_code == 400
        assert bad_type.headers["x-error-message"] == ("'defaultRegions': unknown repository type 'notebook' "
                                                       "(model, dataset, space)")
        bad_region = api.put(f"/api/organizations/{org}/settings", json={"defaultRegions": {"dataset": "mars"}})
        assert bad_region.status_code == 400 and "Unknown storage region 'mars'" in bad_region.headers["x-error-message"]
        assert api.put(f"/api/organizations/{org}/settings", json={"defaultRegions": ["eu"]}).status_code == 400
        assert api.get(f"/api/organizations/{org}/settings").json()["defaultRegions"] == {}  # nothing stored

        ok = api.put(f"/api/organizations/{org}/settings",
                     json={"defaultRegion": "eu", "defaultRegions": {"dataset": "us", "space": "default"}})
        assert ok.status_code == 200, ok.text
        assert ok.json()["defaultRegion"] == "eu"
        assert ok.json()["defaultRegions"] == {"dataset": "us", "space": "default"}
        events = _audited(server, org)
        assert {"from": None, "to": "eu"} in events
        assert {"repoType": "dataset", "from": None, "to": "us"} in events
        assert {"repoType": "space", "from": None, "to": "default"} in events

        def created(name: str, repo_type: str, **extra: object) -> str:
            body = {"name": name, "organization": org, "type": repo_type, **extra}
            if repo_type == "space":
                body["sdk"] = "static"
            resp = api.post("/api/repos/create", json=body)
            assert resp.status_code == 200, resp.text
            return api.get(f"/api/{plural[repo_type]}/{org}/{name}").json()["region"]

        assert created("m1", "model") == "eu"  # no type default: the org's
        assert created("d1", "dataset") == "us"  # the dataset default, over the org's
        assert created("s1", "space") == "default"
        assert created("d2", "dataset", region="eu") == "eu"  # asked: wins
        group = api.post(f"/api/organizations/{org}/resource-groups", json={"name": "g"}).json()
        assert api.patch(f"/api/organizations/{org}/resource-groups/{group['id']}",
                         json={"defaultRegion": "default"}).status_code == 200
        assert created("d3", "dataset", resourceGroupId=group["id"]) == "default"  # the group's wins
        # null: the type follows the org's default again.
        reset = api.put(f"/api/organizations/{org}/settings", json={"defaultRegions": {"dataset": None}})
        assert reset.status_code == 200 and reset.json()["defaultRegions"] == {"space": "default"}
        assert {"repoType": "dataset", "from": "us", "to": None} in _audited(server, org)
        assert created("d4", "dataset") == "eu"

    # ---- the Regions page form ----------------------------------------------------------------
    web = http_login(server, admin)
    html = web.get(f"/organizations/{org}/settings/regions").text
    assert "Models</td><td>eu" in html and "Datasets</td><td>eu" in html and "Spaces</td><td>default" in html
    resp = web.post(f"/organizations/{org}/settings/regions/default",
                    data={"csrf_token": csrf_of(html), "region": "eu", "region_model": "us", "region_dataset": "",
                          "region_space": ""})
    assert resp.status_code == 303, resp.text[:500]
    html = web.get(f"/organizations/{org}/settings/regions").text
    assert "Models</td><td>us" in html and "Spaces</td><td>eu" in html
    assert {"repoType": "model", "from": None, "to": "us"} in _audited(server, org)
    assert {"repoType": "space", "from": "default", "to": None} in _audited(server, org)
    bad = web.post(f"/organizations/{org}/settings/regions/default",
                   data={"csrf_token": csrf_of(html), "region": "eu", "region_model": "mars"})
    assert bad.status_code == 400 and "Unknown storage region" in bad.text
    with _api(server, token) as api:
        assert api.get(f"/api/organizations/{org}/settings").json()["defaultRegions"] == {"model": "us"}
        resp = api.post("/api/repos/create", json={"name": "m2", "organization": org})
        assert resp.status_code == 200
        assert api.get(f"/api/models/{org}/m2").json()["region"] == "us"
