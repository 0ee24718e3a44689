"""The SCIM settings pages: an org's (org admins, sudo mode) and the instance's (instance admins). A token is shown
once on the answer to the form and works at once; rotation revokes the old one; revocation ends it; SCIM groups
are linked to an org role from the page."""

from __future__ import annotations

import re
import secrets
import subprocess
import sys
from contextlib import closing

import httpx

from tests.accounts.fixtures import PASSWORD, age_sign_in, create_password_user, csrf_of, http_login
from tests.conftest import BastionServer
from tests.scim.conftest import GROUP_SCHEMA, audit_events, last_event_id, make_org, new_user, rows

TOKEN = re.compile(r"<code>(bsc_[0-9A-Za-z]{36})</code>")


def scim_status(server: BastionServer, token: str, base: str) -> int:
    return httpx.get(server.url + base + "/Users", headers={"authorization": f"Bearer {token}"}, timeout=30).status_code


def token_ids(html: str) -> list[str]:
    return re.findall(r'name="token" value="(\d+)"', html)


def test_org_scim_page_creates_rotates_revokes_and_links(server: BastionServer) -> None:
    admin, _ = create_password_user(server)
    org = make_org(server, admin)
    base = f"/api/organizations/{org}/scim/v2"
    page_url = f"/organizations/{org}/settings/scim"
    with closing(http_login(server, admin)) as web:
        page = web.get(page_url)
        assert page.status_code == 200 and f"{server.url}{base}" in page.text and "No SCIM token yet" in page.text
        since = last_event_id(server)
        r = web.post(f"{page_url}/create", data={"csrf_token": csrf_of(page.text), "label": "Okta"})
        assert r.status_code == 200, r.text[:500]
        first = TOKEN.findall(r.text)[0]
        assert scim_status(server, first, base) == 200
        assert web.get(page_url).text.count(first) == 0  # shown once
        created = audit_events(server, "scim.token.create", since)
        assert created[0]["label"] == "Okta" and created[0]["actor"] == admin
        # Rotate: a new token, the old one revoked in the same step.
        r = web.post(f"{page_url}/rotate", data={"csrf_token": csrf_of(r.text), "token": token_ids(r.text)[0]})
        second = TOKEN.findall(r.text)[0]
        assert scim_status(server, first, base) == 401 and scim_status(server, second, base) == 200
        # Link a SCIM group (pushed by the IdP) to an org role from the page.
        with httpx.Client(base_url=server.url + base, headers={"authorization": f"Bearer {second}"}, timeout=30) as c:
            u = new_user(c)
            g = c.post("/Groups", json={"schemas": [GROUP_SCHEMA], "displayName": "ml", "members": [{"value": u["id"]}]})
            assert g.status_code == 201, g.text
        page = web.get(page_url)
        r = web.post(f"{page_url}/link", data={"csrf_token": csrf_of(page.text), "group": g.json()["id"],
                                               "role": "contributor", "resource_groups": ""})
        assert r.status_code == 303, r.text[:500]
        assert rows(server, "SELECT m.role FROM org_members m JOIN users u ON u.id = m.user_id WHERE u.name = ?",
                    u["userName"]) == [("contributor",)]
        page = web.get(page_url)
        assert u["userName"] in page.text and "ml" in page.text
        r = web.post(f"{page_url}/link", data={"csrf_token": csrf_of(page.text), "group": g.json()["id"],
                                               "role": "owner", "resource_groups": ""})
        assert r.status_code == 400 and "Invalid role" in r.text
        # Revoke.
        page = web.get(page_url)
        live = token_ids(page.text)
        r = web.post(f"{page_url}/revoke", data={"csrf_token": csrf_of(page.text), "token": live[0]})
        assert r.status_code == 303
        assert scim_status(server, second, base) == 401
        assert [e["reason"] for e in audit_events(server, "scim.token.revoke", since)][-1] == f"revoked by {admin}"
        # Without the CSRF token: refused.
        assert web.post(f"{page_url}/create", data={"label": "x"}).status_code == 403
    # Sudo mode: a sign-in an hour old must confirm the password first.
    with closing(http_login(server, admin)) as web:
        age_sign_in(server, admin)
        r = web.get(page_url)
        assert r.status_code == 303 and r.headers["location"].startswith("/settings/sudo")
    # A member who is not an org admin: refused.
    member, member_token = create_password_user(server)
    r = httpx.post(server.url + f"/api/organizations/{org}/members", json={"username": member, "role": "write"},
                   headers={"authorization": f"Bearer {api_admin_token(server, admin)}"}, timeout=30)
    assert r.status_code == 200, r.text
    with closing(http_login(server, member)) as web:
        assert web.get(page_url).status_code == 403


def api_admin_token(server: BastionServer, name: str) -> str:
    return server.cli("admin", "create-token", name, "--name", "t2", "--role", "write").stdout.strip()


def test_instance_scim_page_is_for_instance_admins(server: BastionServer) -> None:
    name = f"a{secrets.token_hex(4)}"
    subprocess.run([sys.executable, "-m", "bastion.cli", "admin", "create-user", name, "--email", f"{name}@example.com",
                    "--admin", "--password-stdin"], env=server.env, input=PASSWORD + "\n", capture_output=True,
                   text=True, check=True, timeout=120)
    with closing(http_login(server, name)) as web:
        page = web.get("/admin/scim")
        assert page.status_code == 200 and f"{server.url}/scim/v2" in page.text
        r = web.post("/admin/scim/create", data={"csrf_token": csrf_of(page.text), "label": "Entra"})
        token = TOKEN.findall(r.text)[0]
        assert scim_status(server, token, "/scim/v2") == 200
        r = web.post("/admin/scim/revoke", data={"csrf_token": csrf_of(r.text), "token": token_ids(r.text)[0]})
        assert r.status_code == 303 and scim_status(server, token, "/scim/v2") == 401
        assert web.post("/admin/scim/link", data={"csrf_token": csrf_of(web.get("/admin/scim").text)}).status_code == 404
    user, _ = create_password_user(server)
    with closing(http_login(server, user)) as web:
        assert web.get("/admin/scim").status_code == 403
