"""Organizations over HTTP against a real server (strict authz), continued: settings pages, listings and
policies on both databases, cross-site requests, org-wide push protection, visibility policy, group admins
and an instance admin's token under the approval policy. (A second file so two test workers share them.)"""

from __future__ import annotations

import json

import pytest
import sqlalchemy as sa

from bastion.authz.policy import TOKEN_APPROVAL_REQUIRED, TOKEN_REVOKED_BY_ORG
from tests.accounts.fixtures import create_password_user
from tests.conftest import BastionServer, hf_api
from tests.orgs.test_http import _api, _fg, _org


def test_web_settings_are_for_admins_and_deletion_needs_an_empty_org(web_server: BastionServer) -> None:
    from tests.accounts.fixtures import csrf_of, http_login

    owner, owner_token = create_password_user(web_server)
    member, _member_token = create_password_user(web_server)
    org = _org(web_server, owner)
    web_server.admin("add-member", org, member, "--role", "write")
    hf_api(web_server, owner_token).create_repo(f"{org}/kept", private=True)
    m = http_login(web_server, member)
    try:
        assert m.get(f"/organizations/{org}/settings/members").status_code == 403
        assert m.get(f"/organizations/{org}/settings/resource-groups").status_code == 200  # members see groups
        page = m.get(f"/organizations/{org}")
        assert f"{org}/kept" in page.text
        resp = m.post(f"/organizations/{org}/settings/security",
                      data={"csrf_token": csrf_of(page.text), "require_2fa": "on", "repo_visibility": "public"})
        assert resp.status_code == 403
    finally:
        m.close()
    c = http_login(web_server, owner)
    try:
        page = c.get(f"/organizations/{org}/settings/security")
        token = csrf_of(page.text)
        assert c.post(f"/organizations/{org}/settings/delete", data={"csrf_token": token}).status_code == 400
        resp = c.post(f"/organizations/{org}/settings/delete", data={"csrf_token": token, "confirm": org})
        assert resp.status_code == 409 and "still owns 1 repositories" in resp.text
        hf_api(web_server, owner_token).delete_repo(f"{org}/kept")
        resp = c.post(f"/organizations/{org}/settings/delete", data={"csrf_token": token, "confirm": org})
        assert resp.status_code == 303
        assert c.get(f"/organizations/{org}").status_code == 404
        # without the CSRF token nothing happens
        assert c.post("/organizations/new", data={"name": "nocsrf"}).status_code == 403
    finally:
        c.close()


def test_org_listing_and_policies_on_both_databases(any_server: BastionServer) -> None:
    """The listing filter's correlated subqueries (roles, group roles, 2FA, token policy) on SQLite and PostgreSQL."""
    owner, owner_token = any_server.create_user()
    member, member_token = any_server.create_user(role="write")
    org = _org(any_server, owner)
    any_server.admin("add-member", org, member, "--role", "read")
    hf_api(any_server, owner_token).create_repo(f"{org}/root", private=True)
    with _api(any_server, owner_token) as c, _api(any_server, member_token) as m:
        group = c.post(f"/api/organizations/{org}/resource-groups", json={"name": "g"}).json()
        assert c.post("/api/repos/create", json={"name": "grouped", "organization": org, "private": True,
                                                 "resourceGroupId": group["id"]}).status_code == 200

        def listed() -> set[str]:
            return {r["id"] for r in m.get("/api/models", params={"author": org}).json()}

        assert listed() == {f"{org}/root"}
        c.post(f"/api/organizations/{org}/resource-groups/{group['id']}/users",
               json={"users": [{"user": member, "role": "read"}]})
        assert listed() == {f"{org}/root", f"{org}/grouped"}
        c.put(f"/api/organizations/{org}/settings", json={"tokenPolicy": "fine_grained"})
        assert listed() == set()  # a write token under "fine-grained only"
        fg = _fg(any_server, member, f"org:{org}=repo.content.read")
        with _api(any_server, fg) as f:
            assert {r["id"] for r in f.get("/api/models", params={"author": org}).json()} == {f"{org}/root",
                                                                                          f"{org}/grouped"}
        with _api(any_server, _fg(any_server, owner, f"org:{org}=org.write")) as admin_fg:
            assert admin_fg.put(f"/api/organizations/{org}/settings",
                                json={"tokenPolicy": "allow", "require2fa": True}).status_code == 200
        assert listed() == set()  # the member has no second factor


def test_cross_site_requests_with_the_session_cookie_are_refused_on_api_routes(web_server: BastionServer) -> None:
    """A cross-site `text/plain` form (no CORS preflight) must not act as the signed-in org admin."""
    from tests.accounts.fixtures import http_login

    owner, _ = create_password_user(web_server)
    mallory, _ = create_password_user(web_server)
    org = _org(web_server, owner)
    c = http_login(web_server, owner)
    try:
        forged = json.dumps({"username": mallory, "role": "admin"})
        for headers in ({"origin": "https://evil.example"}, {"sec-fetch-site": "cross-site"},
                        {"origin": web_server.url, "sec-fetch-site": "same-site"}):
            resp = c.post(f"/api/organizations/{org}/members", content=forged,
                          headers={"content-type": "text/plain", **headers})
            assert resp.status_code == 403 and "Cross-site request refused" in resp.text, resp.text
        members = c.get(f"/api/organizations/{org}/members").json()
        assert mallory not in {m["user"] for m in members}
        # The same request from our own pages goes through.
        resp = c.post(f"/api/organizations/{org}/members", json={"username": mallory, "role": "read"},
                      headers={"origin": web_server.url, "sec-fetch-site": "same-origin"})
        assert resp.status_code == 200, resp.text
        assert {m["user"]: m["role"] for m in c.get(f"/api/organizations/{org}/members").json()}[mallory] == "read"
    finally:
        c.close()


def test_org_secret_push_protection_covers_every_org_repo(web_server: BastionServer) -> None:
    from huggingface_hub.errors import HfHubHTTPError

    from tests.scanning.test_secret_pipeline import github_token

    owner, owner_token = create_password_user(web_server)
    member, member_token = create_password_user(web_server)
    org = _org(web_server, owner)
    web_server.admin("add-member", org, member, "--role", "write")
    hf_api(web_server, owner_token).create_repo(f"{org}/m")
    member_api = hf_api(web_server, member_token)
    with _api(web_server, member_token) as m:
        assert m.put(f"/api/organizations/{org}/settings", json={"secretPushProtection": True}).status_code == 403
    with _api(web_server, owner_token) as c:
        assert c.put(f"/api/organizations/{org}/settings", json={"secretPushProtection": True}).status_code == 200
        assert c.get(f"/api/organizations/{org}/settings").json()["secretPushProtection"] is True
    secret = github_token("Org7")
    with pytest.raises(HfHubHTTPError) as exc:
        member_api.upload_file(path_or_fileobj=f"key = '{secret}'\n".encode(), path_in_repo="cfg.py",
                               repo_id=f"{org}/m")
    assert exc.value.response.status_code == 403 and "Push protection" in exc.value.response.headers["x-error-message"]
    assert "cfg.py" not in member_api.list_repo_files(f"{org}/m")
    engine = sa.create_engine(f"sqlite:///{web_server.data_dir / 'bastion.sqlite3'}")
    with engine.connect() as conn:
        actions = conn.execute(sa.text("SELECT action FROM audit_events WHERE namespace = :ns AND action IN "
                                       "('org.settings.security.secret_push_protection', 'repo.secret_push_blocked')"
                                       " ORDER BY id"), {"ns": org}).scalars().all()
    engine.dispose()
    assert actions == ["org.settings.security.secret_push_protection", "repo.secret_push_blocked"]
    # Turned off again, the same commit lands (the repo's own setting was never on).
    with _api(web_server, owner_token) as c:
        assert c.put(f"/api/organizations/{org}/settings", json={"secretPushProtection": False}).status_code == 200
    member_api.upload_file(path_or_fileobj=f"key = '{secret}'\n".encode(), path_in_repo="cfg.py", repo_id=f"{org}/m")


def test_repo_visibility_policy_and_default_role_through_the_api(web_server: BastionServer) -> None:
    owner, owner_token = create_password_user(web_server)
    member, member_token = create_password_user(web_server)
    newcomer, _ = create_password_user(web_server)
    org = _org(web_server, owner)
    web_server.admin("add-member", org, member, "--role", "write")
    with _api(web_server, owner_token) as c, _api(web_server, member_token) as m:
        # The default role applies to members added without one.
        assert c.put(f"/api/organizations/{org}/settings", json={"defaultRole": "contributor"}).status_code == 200
        assert c.post(f"/api/organizations/{org}/members", json={"username": newcomer}).status_code == 200
        roles = {x["user"]: x["role"] for x in c.get(f"/api/organizations/{org}/members").json()}
        assert roles[newcomer] == "contributor"
        assert c.put(f"/api/organizations/{org}/settings", json={"defaultRole": "owner"}).status_code == 400

        # "private": new repos are private unless asked otherwise.
        assert c.put(f"/api/organizations/{org}/settings", json={"repoVisibility": "private"}).status_code == 200
        made = m.post("/api/repos/create", json={"name": "by-default", "organization": org})
        assert made.status_code == 200, made.text
        assert m.get(f"/api/models/{org}/by-default").json()["private"] is True
        assert m.post("/api/repos/create", json={"name": "asked-public", "organization": org,
                                                 "private": False}).status_code == 200

        # "private_only": no public repo, and only org admins may make one public.
        assert c.put(f"/api/organizations/{org}/settings", json={"repoVisibility": "private_only"}).status_code == 200
        refused = m.post("/api/repos/create", json={"name": "public-one", "organization": org, "private": False})
        assert refused.status_code == 403 and "allows only private repositories" in refused.headers["x-error-message"]
        assert m.get(f"/api/models/{org}/public-one").status_code == 404
        made = m.post("/api/repos/create", json={"name": "kept-private", "organization": org, "private": True})
        assert made.status_code == 200
        flip = m.put(f"/api/models/{org}/kept-private/settings", json={"private": False})
        assert flip.status_code == 403 and "only its administrators" in flip.headers["x-error-message"]
        assert m.get(f"/api/models/{org}/kept-private").json()["private"] is True
        assert c.put(f"/api/models/{org}/kept-private/settings", json={"private": False}).status_code == 200
        assert c.get(f"/api/models/{org}/kept-private").json()["private"] is False
        assert c.put(f"/api/organizations/{org}/settings", json={"repoVisibility": "nope"}).status_code == 400


def test_group_admin_without_org_role_opens_their_groups_page(web_server: BastionServer) -> None:
    from tests.accounts.fixtures import http_login

    owner, owner_token = create_password_user(web_server)
    keeper, _ = create_password_user(web_server)
    bystander, _ = create_password_user(web_server)
    org = _org(web_server, owner)
    with _api(web_server, owner_token) as c:
        mine = c.post(f"/api/organizations/{org}/resource-groups", json={"name": "kept-group"}).json()
        c.post(f"/api/organizations/{org}/resource-groups", json={"name": "other-group"})
        for user, groups in ((keeper, [{"id": mine["id"], "role": "admin"}]), (bystander, [])):
            assert c.post(f"/api/organizations/{org}/members", json={"username": user, "role": "read"}).status_code == 200
            resp = c.put(f"/api/organizations/{org}/members/{user}/role",
                         json={"role": "no_access", "resourceGroups": groups})
            assert resp.status_code == 200, resp.text
    page_url = f"/organizations/{org}/settings/resource-groups"
    k, b = http_login(web_server, keeper), http_login(web_server, bystander)
    try:
        page = k.get(page_url)
        assert page.status_code == 200 and "kept-group" in page.text and "other-group" not in page.text
        assert b.get(page_url).status_code == 403  # no role that shows the settings, no group to administer
        assert k.get(f"/organizations/{org}/settings/members").status_code == 403
    finally:
        k.close()
        b.close()


def test_instance_admins_fine_grained_token_is_under_the_orgs_approval(web_server: BastionServer) -> None:
    """An instance administrator reaches every org without being a member; a fine-grained token of
    theirs that names an org under approval waits for that org's admins, who see and decide it."""
    owner, owner_token = create_password_user(web_server)
    org = _org(web_server, owner)
    hf_api(web_server, owner_token).create_repo(f"{org}/m", private=True)
    site_admin, site_admin_token = web_server.create_user(admin=True)
    with _api(web_server, site_admin_token) as a:
        assert a.get(f"/api/models/{org}/m").status_code == 200  # instance powers, no membership
    owner_fg = _fg(web_server, owner, f"org:{org}=org.write,repo.write")
    with _api(web_server, owner_fg) as c:
        assert c.put(f"/api/organizations/{org}/settings", json={"tokenPolicy": "approval"}).status_code == 200
        fg = _fg(web_server, site_admin, f"org:{org}=repo.content.read")
        with _api(web_server, fg) as f:
            resp = f.get(f"/api/models/{org}/m")
            assert resp.status_code == 403 and resp.headers["x-error-message"] == TOKEN_APPROVAL_REQUIRED
            (listed,) = [t for t in c.get(f"/api/organizations/{org}/settings/tokens").json()
                         if t["user"] == site_admin]
            assert listed["state"] == "pending" and listed["roleInOrg"] is None and listed["role"] == "fineGrained"
            assert c.post(f"/api/organizations/{org}/settings/tokens/{listed['id']}/approve").json()["state"] \
                == "approved"
            assert f.get(f"/api/models/{org}/m").status_code == 200
            page = c.get(f"/organizations/{org}/settings/tokens", headers={"accept": "text/html"})
            assert "instance administrator, not a member" in page.text
            assert c.post(f"/api/organizations/{org}/settings/tokens/{listed['id']}/revoke").json()["state"] \
                == "revoked"
            resp = f.get(f"/api/models/{org}/m")
            assert resp.status_code == 403 and resp.headers["x-error-message"] == TOKEN_REVOKED_BY_ORG
    # the admin's read/write token acts with instance powers and is not listed in the org
    assert all(t["role"] == "fineGrained" for t in _api(web_server, owner_fg).get(
        f"/api/organizations/{org}/settings/tokens").json() if t["user"] == site_admin)
