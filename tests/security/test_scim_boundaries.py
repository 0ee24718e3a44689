"""Security boundaries of SCIM, driven from outside: an IdP's token is no account's credential and an account's
credential (token, admin token, browser session) is never an IdP's; a SCIM token works only on the endpoint of its
scope; an org's SCIM client cannot take over, read, rename or deactivate an account that is not its member, nor
make Bastion trust an e-mail address it cannot prove."""

from __future__ import annotations

import secrets

import httpx
import pytest

from tests.conftest import hf_api, wait_for
from tests.scim.conftest import (  # noqa: F401 (world: the fixture)
    GROUP_SCHEMA,
    USER_SCHEMA,
    ScimWorld,
    audit_events,
    make_org,
    new_user,
    rows,
    scim_token,
    web_session,
    world,
)
from tests.scim.test_scim import names, patch, whoami

# The SCIM functional tests and scim2-tester run on SQLite and PostgreSQL (tests/scim); these judge the policy,
# the same on both databases: SQLite only, to keep the suite within its time.
pytestmark = pytest.mark.parametrize("world", ["sqlite"], indirect=True)


def test_token_scoping(world: ScimWorld) -> None:  # noqa: F811
    server = world.server
    other_org = make_org(server, world.admin)
    with world.client(world.org_token, f"/api/organizations/{other_org}/scim/v2") as c:
        assert c.get("/Users").status_code == 403  # another org's endpoint
    with world.client(world.org_token, "/scim/v2") as c:
        assert c.get("/Users").status_code == 403  # the instance's endpoint
    with world.client(world.instance_token, f"/api/organizations/{world.org}/scim/v2") as c:
        assert c.get("/Users").status_code == 403  # the instance's token is not the org's
    with world.client(world.admin_token, f"/api/organizations/{world.org}/scim/v2") as c:
        r = c.get("/Users")  # an org admin's own (write) token: never a SCIM credential
        assert r.status_code == 403 and r.json()["schemas"] == ["urn:ietf:params:scim:api:messages:2.0:Error"]
    admin_name, admin_token = server.create_user(admin=True)
    with world.client(admin_token, "/scim/v2") as c:
        assert c.get("/Users").status_code == 403  # not even an instance admin's token
        assert c.post("/Users", json={"schemas": [USER_SCHEMA], "userName": "x" + secrets.token_hex(3)}).status_code == 403
    cookie = web_session(server, world.admin)
    r = httpx.get(server.url + f"/api/organizations/{world.org}/scim/v2/Users", cookies={"bastion_session": cookie},
                  timeout=30)
    assert r.status_code == 403
    # A SCIM token is nobody's token anywhere else.
    assert whoami(world, world.org_token) == 401
    assert httpx.get(server.url + f"/api/organizations/{world.org}/members",
                     headers={"authorization": f"Bearer {world.org_token}"}, timeout=30).status_code == 401
    with world.client("bsc_" + "A" * 36, "/scim/v2") as c:
        r = c.get("/Users")
        assert r.status_code == 401 and "Bearer" in r.headers["www-authenticate"]
    # Rotation (CLI): the new token works, the old one is revoked at once.
    third = make_org(server, world.admin)
    old = scim_token(server, "--org", third)
    listed = server.cli("admin", "scim-token", "--org", third, "--list").stdout
    token_id = listed.split()[0]
    new = scim_token(server, "--org", third, "--rotate", token_id)
    with world.client(old, f"/api/organizations/{third}/scim/v2") as c:
        assert c.get("/Users").status_code == 401
    with world.client(new, f"/api/organizations/{third}/scim/v2") as c:
        assert c.get("/Users").status_code == 200
    new_id = server.cli("admin", "scim-token", "--org", third, "--list").stdout.split()[0]
    server.cli("admin", "scim-token", "--org", third, "--revoke", new_id)
    with world.client(new, f"/api/organizations/{third}/scim/v2") as c:
        assert c.get("/Users").status_code == 401
    assert server.cli("admin", "scim-token", "--instance", "--org", third, check=False).returncode != 0
    events = audit_events(server, "scim.token.revoke")
    assert any("rotated" in e["reason"] for e in events)



def test_org_scim_cannot_reach_an_account_that_is_not_its_member(world: ScimWorld) -> None:  # noqa: F811
    server = world.server
    outsider, outsider_token = server.create_user()
    outsider_id = f"{int(rows(server, 'SELECT id FROM users WHERE name = ?', outsider)[0][0]):024x}"
    with world.org_scim as c:
        r = c.post("/Users", json={"schemas": [USER_SCHEMA], "userName": outsider,
                                   "emails": [{"value": "attacker@evil.example", "primary": True}]})
        assert r.status_code == 409 and r.json()["scimType"] == "uniqueness"
        assert names(c.get("/Users", params={"filter": f'userName eq "{outsider}"'})) == []
        assert c.get(f"/Users/{outsider_id}").status_code == 404
        assert patch(c, f"/Users/{outsider_id}", {"op": "replace", "path": "active", "value": False}).status_code == 404
        assert c.put(f"/Users/{outsider_id}", json={"schemas": [USER_SCHEMA], "userName": outsider}).status_code == 404
        assert c.delete(f"/Users/{outsider_id}").status_code == 404
        r = c.post("/Groups", json={"schemas": [GROUP_SCHEMA], "displayName": "grab" + secrets.token_hex(2),
                                    "members": [{"value": outsider_id}]})
        assert r.status_code == 400 and r.json()["scimType"] == "invalidValue"
    assert whoami(world, outsider_token) == 200  # untouched
    assert rows(server, "SELECT is_active, email FROM users WHERE name = ?", outsider)[0] == (1, f"{outsider}@example.com")




def test_org_scim_cannot_make_an_address_verified(world: ScimWorld) -> None:  # noqa: F811
    """An org's IdP may name any address: the account it creates holds it unverified, so it gains no password
    reset, invitation or "Verified" commit through it, and the address's verified owner keeps it."""
    server = world.server
    victim, _ = server.create_user()
    with world.org_scim as c:
        u = new_user(c, emails=[{"value": f"{victim}@example.com", "primary": True}])
    assert rows(server, "SELECT e.verified_at IS NULL FROM user_emails e JOIN users u ON u.id = e.user_id "
                        "WHERE u.name = ?", u["userName"]) == [(1,)]
    assert rows(server, "SELECT e.verified_at IS NOT NULL FROM user_emails e JOIN users u ON u.id = e.user_id "
                        "WHERE u.name = ?", victim) == [(1,)]
    # The instance's IdP vouches for addresses, but never takes one another account verified.
    with world.instance as c:
        r = c.post("/Users", json={"schemas": [USER_SCHEMA], "userName": "v" + secrets.token_hex(4),
                                   "emails": [{"value": f"{victim}@example.com", "primary": True}]})
        assert r.status_code == 409 and r.json()["scimType"] == "uniqueness", r.text


def test_a_leaked_scim_token_is_revoked_on_sight(world: ScimWorld) -> None:  # noqa: F811
    """SCIM tokens carry the token format (prefix `bsc_`, checksum): a SCIM token committed to any repo, or
    reported to the public revocation endpoint, is revoked at once (and audited), like an access token."""
    server = world.server
    org = make_org(server, world.admin)
    committed, reported = scim_token(server, "--org", org, "--label", "leaky"), scim_token(server, "--org", org)
    base = f"/api/organizations/{org}/scim/v2"

    def status(token: str) -> int:
        with world.client(token, base) as c:
            return c.get("/Users").status_code

    assert status(committed) == 200 and status(reported) == 200
    api = hf_api(server, world.admin_token)
    repo = f"{world.admin}/idp-config-{secrets.token_hex(3)}"
    api.create_repo(repo, private=True)
    api.upload_file(path_or_fileobj=f'SCIM_TOKEN = "{committed}"\n'.encode(), path_in_repo="okta.py", repo_id=repo)
    wait_for(lambda: status(committed) == 401, timeout=60)
    assert status(reported) == 200
    r = httpx.post(server.url + "/api/credentials/revoke", json={"tokens": [reported]}, timeout=30)
    assert r.status_code == 202
    assert status(reported) == 401
    reasons = [e["reason"] for e in audit_events(server, "scim.token.revoke") if e["target"] and e.get("label")]
    assert any(r.startswith("leaked (secret scanning)") for r in reasons), reasons
    assert any(r.startswith("leaked (public report)") for r in reasons), reasons


def test_a_search_body_filter_is_bounded_like_a_query_filter(world: ScimWorld) -> None:  # noqa: F811
    """POST /.search took a filter of any length up to the 1 MiB body (GET ?filter= is capped at 2,000
    characters): a 40,000-term filter cost seconds of parsing per request, and as SQL it would exceed the
    database's bound parameters. Every filter now has the same bound: 400 invalidFilter, nothing parsed."""
    search = {"schemas": ["urn:ietf:params:scim:api:messages:2.0:SearchRequest"],
              "filter": " or ".join(f'userName eq "u{i}"' for i in range(200))}  # 4,000 characters
    with world.org_scim as c:
        for path in ("/Users/.search", "/Groups/.search", "/.search"):
            r = c.post(path, json=search)
            assert r.status_code == 400, r.text
            assert r.json()["scimType"] == "invalidFilter" and "too long" in r.json()["detail"], r.text
        assert c.get("/Users", params={"filter": search["filter"]}).json()["scimType"] == "invalidFilter"
        short = dict(search, filter=" or ".join(f'userName eq "u{i}"' for i in range(90)))  # under the bound
        assert c.post("/Users/.search", json=short).status_code == 200
