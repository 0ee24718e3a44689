"""SCIM against a real server: filters, pagination, versions, errors in SCIM's format, token scoping, SCIM groups
linked to org roles and resource groups, deprovisioning (instance and org), and the safety rules of an org's
SCIM client (it never reaches an account that is not its member)."""

from __future__ import annotations

import secrets

import httpx

from tests.scim.conftest import (
    GROUP_SCHEMA,
    PATCH_SCHEMA,
    SCIM_JSON,
    USER_SCHEMA,
    ScimWorld,
    api_token,
    audit_events,
    last_event_id,
    new_user,
    rows,
    web_session,
)


def patch(client: httpx.Client, path: str, *ops: dict, **headers: str) -> httpx.Response:  # type: ignore[type-arg]
    return client.patch(path, json={"schemas": [PATCH_SCHEMA], "Operations": list(ops)}, headers=headers)


def names(r: httpx.Response) -> list[str]:
    assert r.status_code == 200, r.text
    return sorted(u["userName"] for u in r.json()["Resources"])


def role_in(world: ScimWorld, user: str) -> str | None:
    found = rows(world.server, "SELECT m.role FROM org_members m JOIN users u ON u.id = m.user_id "
                               "JOIN organizations o ON o.id = m.org_id WHERE o.name = ? AND u.name = ?", world.org, user)
    return found[0][0] if found else None


def whoami(world: ScimWorld, token: str) -> int:
    return httpx.get(world.server.url + "/api/whoami-v2", headers={"authorization": f"Bearer {token}"},
                     timeout=30).status_code


def test_filters_pagination_and_content_type(world: ScimWorld) -> None:
    tag = secrets.token_hex(3)
    with world.org_scim as c:
        made = [new_user(c, f"f{tag}{i}", externalId=f"ext-{tag}-{i}") for i in range(3)]
        r = c.get("/Users", params={"filter": f'userName eq "F{tag}1"'})  # case-insensitive, as userName is
        assert r.headers["content-type"].startswith(SCIM_JSON)
        assert names(r) == [f"f{tag}1"] and r.json()["totalResults"] == 1
        assert names(c.get("/Users", params={"filter": f'externalId eq "ext-{tag}-2"'})) == [f"f{tag}2"]
        assert names(c.get("/Users", params={"filter": f'emails.value eq "f{tag}0@corp.example"'})) == [f"f{tag}0"]
        assert names(c.get("/Users", params={"filter": f'userName eq "f{tag}0" or externalId eq "ext-{tag}-2"'})) \
            == [f"f{tag}0", f"f{tag}2"]
        assert names(c.get("/Users", params={"filter": f'userName eq "f{tag}0" and externalId eq "ext-{tag}-2"'})) == []
        assert names(c.get("/Users", params={"filter": f'userName sw "f{tag}"'})) == [f"f{tag}{i}" for i in range(3)]
        page = c.get("/Users", params={"filter": f'userName sw "f{tag}"', "startIndex": 2, "count": 1}).json()
        assert (page["totalResults"], page["startIndex"], page["itemsPerPage"]) == (3, 2, 1)
        assert [u["userName"] for u in page["Resources"]] == [f"f{tag}1"]
        assert c.get("/Users", params={"filter": f'userName sw "f{tag}"', "count": 0}).json()["Resources"] == []
        r = c.get(f"/Users/{made[0]['id']}", params={"attributes": "userName"})
        assert r.status_code == 200 and "emails" not in r.json() and r.json()["userName"] == f"f{tag}0"
        # Bad input: SCIM errors (RFC 7644 §3.12), never a 500.
        for params, scim_type in (({"filter": 'userName eqq "x"'}, "invalidFilter"),
                                  ({"filter": 'nosuch eq "x"'}, None), ({"startIndex": "x"}, "invalidValue")):
            r = c.get("/Users", params=params)
            if scim_type is None:
                assert r.status_code in (200, 400), r.text  # an unknown attribute matches nothing (§3.4.2.1)
                continue
            assert r.status_code == 400 and r.json()["scimType"] == scim_type, r.text
            assert r.json()["schemas"] == ["urn:ietf:params:scim:api:messages:2.0:Error"]
        r = c.post("/Users", content=b"{not json", headers={"content-type": SCIM_JSON})
        assert r.status_code == 400 and r.json()["scimType"] == "invalidSyntax"
        r = c.post("/Users", json={"schemas": [USER_SCHEMA]})
        assert r.status_code == 400 and r.json()["status"] == "400", r.text
        r = c.post("/Users", json={"schemas": [USER_SCHEMA], "userName": "../../etc"})
        assert r.status_code == 400 and r.json()["scimType"] == "invalidValue", r.text
        assert c.get("/Users/nothex").status_code == 404 and c.get("/Users/nothex").json()["status"] == "404"
        assert c.get("/Nope").status_code == 404
        assert c.delete("/ServiceProviderConfig").status_code == 405


def test_etag_and_if_match(world: ScimWorld) -> None:
    with world.org_scim as c:
        u = new_user(c)
        version = u["meta"]["version"]
        r = c.get(f"/Users/{u['id']}")
        assert r.headers["etag"] == version == r.json()["meta"]["version"]
        r = patch(c, f"/Users/{u['id']}", {"op": "replace", "path": "displayName", "value": "Sam"},
                  **{"If-Match": 'W/"stale"'})
        assert r.status_code == 412, r.text
        r = patch(c, f"/Users/{u['id']}", {"op": "replace", "path": "displayName", "value": "Sam"},
                  **{"If-Match": version})
        assert r.status_code == 200 and r.json()["displayName"] == "Sam"
        assert r.headers["etag"] != version
        assert c.delete(f"/Users/{u['id']}", headers={"If-Match": version}).status_code == 412
        r = c.put(f"/Users/{u['id']}", json={"schemas": [USER_SCHEMA], "userName": u["userName"] + "x"})
        assert r.status_code == 400 and r.json()["scimType"] == "mutability"  # userName is the namespace


def test_org_scim_links_a_member_but_changes_only_the_membership(world: ScimWorld) -> None:
    server = world.server
    member, member_token = server.create_user()
    r = httpx.post(server.url + f"/api/organizations/{world.org}/members", json={"username": member},
                   headers={"authorization": f"Bearer {world.admin_token}"}, timeout=30)
    assert r.status_code == 200, r.text
    with world.org_scim as c:
        r = c.post("/Users", json={"schemas": [USER_SCHEMA], "userName": member, "externalId": "okta-1",
                                   "emails": [{"value": f"{member}@example.com", "primary": True}]})
        assert r.status_code == 201, r.text
        uid = r.json()["id"]
        assert c.get("/Users", params={"filter": 'externalId eq "okta-1"'}).json()["totalResults"] == 1
        r = patch(c, f"/Users/{uid}", {"op": "replace", "path": "emails",
                                       "value": [{"value": "takeover@evil.example", "primary": True}]})
        assert r.status_code == 403, r.text  # the org did not create this account: no profile changes
        r = patch(c, f"/Users/{uid}", {"op": "replace", "path": "active", "value": False})
        assert r.status_code == 200 and r.json()["active"] is False
        assert "emails" not in r.json()  # a former member it did not create: no personal data
        r = patch(c, f"/Users/{uid}", {"op": "replace", "path": "active", "value": True})
        assert r.status_code == 403, r.text  # nobody is put back into an org without accepting an invitation
    assert role_in(world, member) is None  # the membership ended...
    assert whoami(world, member_token) == 200  # ...the account, which the org does not own, stays
    assert rows(server, "SELECT is_active, email FROM users WHERE name = ?", member)[0] == (1, f"{member}@example.com")


def test_group_linked_to_role_and_resource_group(world: ScimWorld) -> None:
    server = world.server
    auth = {"authorization": f"Bearer {world.admin_token}"}
    rg_name = "rg" + secrets.token_hex(3)
    r = httpx.post(server.url + f"/api/organizations/{world.org}/resource-groups", json={"name": rg_name},
                   headers=auth, timeout=30)
    assert r.status_code == 201, r.text
    with world.org_scim as c:
        u = new_user(c)
        assert role_in(world, u["userName"]) == "read"  # the org's default role
        g = c.post("/Groups", json={"schemas": [GROUP_SCHEMA], "displayName": "eng" + secrets.token_hex(2),
                                    "members": [{"value": u["id"]}]})
        assert g.status_code == 201, g.text
        gid = g.json()["id"]
        since = last_event_id(server)
        r = httpx.put(server.url + f"/api/organizations/{world.org}/settings/scim/groups/{gid}",
                      json={"role": "write", "resourceGroups": [{"id": rg_name, "role": "admin"}]}, headers=auth,
                      timeout=30)
        assert r.status_code == 200, r.text
        assert r.json()["role"] == "write" and r.json()["resourceGroups"][0]["role"] == "admin"
        assert role_in(world, u["userName"]) == "write"
        assert rows(server, "SELECT rgm.role FROM resource_group_members rgm JOIN users u ON u.id = rgm.user_id "
                            "JOIN resource_groups g ON g.id = rgm.group_id WHERE u.name = ? AND g.name = ?",
                    u["userName"], rg_name) == [("admin",)]
        assert [e["role"] for e in audit_events(server, "scim.group.link", since)] == ["write"]
        assert [(e["from"], e["to"]) for e in audit_events(server, "org.change_role", since)] == [("read", "write")]
        # Leaving the group takes the roles back at once (and is audited, the SCIM client as actor).
        since = last_event_id(server)
        r = patch(c, f"/Groups/{gid}", {"op": "remove", "path": f'members[value eq "{u["id"]}"]'})
        assert r.status_code == 200, r.text
        assert role_in(world, u["userName"]) == "read"
        assert rows(server, "SELECT count(*) FROM resource_group_members rgm JOIN users u ON u.id = rgm.user_id "
                            "WHERE u.name = ?", u["userName"]) == [(0,)]
        members = audit_events(server, "scim.group.members", since)
        assert members[0]["removed"] == [u["userName"]] and members[0]["via"] == "scim"
        assert members[0]["actor"].startswith("scim:org-idp#")
        # Bad links are refused, not stored.
        for body in ({"role": "owner"}, {"resourceGroups": [{"id": "nope", "role": "read"}]},
                     {"resourceGroups": [{"id": rg_name, "role": "no_access"}]}):
            r = httpx.put(server.url + f"/api/organizations/{world.org}/settings/scim/groups/{gid}", json=body,
                          headers=auth, timeout=30)
            assert r.status_code == 400, (body, r.text)
        # A member's own token cannot link groups (org admins only).
        member_token = api_token(server, u["userName"])
        r = httpx.put(server.url + f"/api/organizations/{world.org}/settings/scim/groups/{gid}", json={"role": "admin"},
                      headers={"authorization": f"Bearer {member_token}"}, timeout=30)
        assert r.status_code == 403


def test_instance_deprovisioning_kills_token_and_session_at_once(world: ScimWorld) -> None:
    server = world.server
    with world.instance as c:
        u = new_user(c)
        token, cookie = api_token(server, u["userName"]), web_session(server, u["userName"])
        assert whoami(world, token) == 200
        assert httpx.get(server.url + "/api/whoami-v2", cookies={"bastion_session": cookie}, timeout=30).status_code == 200
        since = last_event_id(server)
        r = patch(c, f"/Users/{u['id']}", {"op": "replace", "value": {"active": False}})
        assert r.status_code == 200 and r.json()["active"] is False, r.text
        assert whoami(world, token) == 401
        assert httpx.get(server.url + "/api/whoami-v2", cookies={"bastion_session": cookie}, timeout=30).status_code == 401
        deact = audit_events(server, "scim.user.deactivate", since)
        assert deact and deact[0]["via"] == "scim" and deact[0]["actor"].startswith("scim:instance-idp#")
        # Reactivated: the person signs in anew; no old credential comes back.
        r = patch(c, f"/Users/{u['id']}", {"op": "replace", "path": "active", "value": True})
        assert r.status_code == 200 and r.json()["active"] is True
        assert whoami(world, token) == 401
        # DELETE: deactivated and gone from SCIM (the account stays for its repos and audit trail).
        token = api_token(server, u["userName"])
        assert c.delete(f"/Users/{u['id']}").status_code == 204
        assert c.get(f"/Users/{u['id']}").status_code == 404
        assert whoami(world, token) == 401
        assert rows(server, "SELECT is_active FROM users WHERE name = ?", u["userName"]) == [(0,)]


def test_org_deprovisioning_of_an_account_it_created(world: ScimWorld) -> None:
    server = world.server
    with world.org_scim as c:
        u = new_user(c)
        token = api_token(server, u["userName"])
        assert whoami(world, token) == 200
        assert role_in(world, u["userName"]) == "read"
        assert rows(server, "SELECT m.managed_by FROM org_members m JOIN users u ON u.id = m.user_id "
                            "WHERE u.name = ?", u["userName"]) == [("scim",)]
        # An org cannot vouch for an address: unverified.
        assert rows(server, "SELECT verified_at IS NULL FROM user_emails e JOIN users u ON u.id = e.user_id "
                            "WHERE u.name = ?", u["userName"]) == [(1,)]
        assert c.delete(f"/Users/{u['id']}").status_code == 204
        assert role_in(world, u["userName"]) is None
        assert whoami(world, token) == 401  # the org created the account: deactivated as a whole
        assert c.get(f"/Users/{u['id']}").status_code == 404


def test_every_scim_change_is_audited_with_the_scim_client_as_actor(world: ScimWorld) -> None:
    server = world.server
    since = last_event_id(server)
    with world.org_scim as c:
        u = new_user(c)
        r = c.put(f"/Users/{u['id']}", json={"schemas": [USER_SCHEMA], "userName": u["userName"],
                                             "name": {"formatted": "Sam Renamed"},
                                             "emails": [{"value": "sam@corp.example", "primary": True}]})
        assert r.status_code == 200 and r.json()["name"]["formatted"] == "Sam Renamed", r.text
        assert patch(c, f"/Users/{u['id']}", {"op": "replace", "path": "active", "value": False}).status_code == 200
        r = patch(c, f"/Users/{u['id']}", {"op": "replace", "path": "active", "value": True})
        assert r.status_code == 200 and r.json()["active"] is True, r.text
        assert role_in(world, u["userName"]) == "read"  # back in the org
        g = c.post("/Groups", json={"schemas": [GROUP_SCHEMA], "displayName": "audit" + secrets.token_hex(2)}).json()
        r = c.put(f"/Groups/{g['id']}", json={"schemas": [GROUP_SCHEMA], "displayName": g["displayName"] + "-x"})
        assert r.status_code == 200, r.text
        assert patch(c, f"/Groups/{g['id']}", {"op": "add", "path": "members", "value": [{"value": u["id"]}]}) \
            .status_code == 200
        assert c.delete(f"/Groups/{g['id']}").status_code == 204
        assert c.delete(f"/Users/{u['id']}").status_code == 204
    expected = ["scim.user.create", "scim.user.update", "scim.user.deactivate", "scim.user.activate",
                "scim.group.create", "scim.group.update", "scim.group.members", "scim.group.delete",
                "scim.user.delete"]
    for action in expected:
        events = audit_events(server, action, since)
        assert events, action
        assert all(e["via"] == "scim" and e["actor"].startswith("scim:org-idp#") for e in events), (action, events)
    # Deprovisioning by the lifecycle service is audited under the same actor.
    deactivations = audit_events(server, "user.deactivate", since)
    assert deactivations and all(e["actor"].startswith("scim:org-idp#") for e in deactivations)
