"""Attacks on the identity lifecycle from outside, each found by attacking a running server:

- The instance's SCIM client could take over any existing account: POST /Users with the account's userName links it,
  and the e-mail address it names became a *verified* address of the account, and its primary one. A password reset
  asked for that address then mailed the reset link to the IdP's (the attacker's) mailbox: an instance administrator
  without a second factor was one SCIM request and one reset away. Now the instance's IdP vouches for addresses
  only of accounts it created; on an account it linked, an address it names is kept unverified and never replaces
  a verified primary address.
- An identity provider could undo an administrator's deactivation: an org's SCIM client (and the instance's)
  reactivated, with `active: true` (a routine full sync sends it), an account that an instance administrator had
  deactivated (say, because it was compromised), and an org's SCIM client reactivated an account that the
  instance's IdP had deprovisioned. Now an account remembers who deactivated it: an administrator reactivates
  anything, the instance's IdP what a SCIM client deactivated, an org's IdP only what it deactivated itself.
- The last-administrator rule counted deactivated administrators: an org whose other admin was deactivated let its
  last active admin leave or be demoted, leaving an org nobody can administer. Now only active admins count.
- Names with a trailing newline, a password sent over SCIM, and e-mail verification links of a deactivated
  account: see each test's docstring.
"""

from __future__ import annotations

import secrets

import httpx
import pytest

from tests.accounts.fixtures import PASSWORD, MailSink, create_password_user, csrf_of, mail_sink, web_server  # noqa: F401
from tests.conftest import BastionServer
from tests.scim.conftest import (  # noqa: F401 (world: the fixture)
    SCIM_JSON,
    USER_SCHEMA,
    ScimWorld,
    new_user,
    rows,
    scim_token,
    world,
)
from tests.scim.test_scim import patch

TIMEOUT = 30


def _is_active(server: BastionServer, name: str) -> bool:
    return bool(rows(server, "SELECT is_active FROM users WHERE name = ?", name)[0][0])


def _admin_post(server: BastionServer, admin_token: str, path: str) -> httpx.Response:
    return httpx.post(f"{server.url}{path}", json={"reason": "compromised"}, timeout=TIMEOUT,
                      headers={"authorization": f"Bearer {admin_token}"})


def _set_active(client: httpx.Client, user: dict, active: bool) -> httpx.Response:  # type: ignore[type-arg]
    return patch(client, f"/Users/{user['id']}", {"op": "replace", "path": "active", "value": active})


# The SCIM functional tests and scim2-tester run on SQLite and PostgreSQL (tests/scim); these judge the policy,
# the same on both databases: SQLite only, to keep the suite within its time.
SQLITE_ONLY = pytest.mark.parametrize("world", ["sqlite"], indirect=True)


def test_instance_scim_cannot_take_over_an_existing_account_by_its_address(web_server: BastionServer,  # noqa: F811
                                                                          mail_sink: MailSink) -> None:  # noqa: F811
    server = web_server
    victim, victim_token = server.create_user(admin=True, password=PASSWORD)
    attacker = f"idp-{secrets.token_hex(4)}@evil.example"
    idp = httpx.Client(base_url=f"{server.url}/scim/v2", timeout=TIMEOUT, headers={
        "authorization": f"Bearer {scim_token(server, '--instance')}", "content-type": SCIM_JSON})
    with idp:
        r = idp.post("/Users", json={"schemas": [USER_SCHEMA], "userName": victim,
                                     "emails": [{"value": attacker, "primary": True}]})
        assert r.status_code in (200, 201), r.text  # the instance's IdP may link the account
        linked = r.json()
        r = patch(idp, f"/Users/{linked['id']}", {"op": "replace", "path": "emails",
                                                  "value": [{"value": attacker, "primary": True}]})
        assert r.status_code == 200, r.text
    # The address is the IdP's word, not a proof: unverified, and the account's verified primary stays.
    assert rows(server, "SELECT e.email_lower, e.verified_at IS NOT NULL, e.\"primary\" FROM user_emails e "
                        "JOIN users u ON u.id = e.user_id WHERE u.name = ? ORDER BY e.id", victim) \
        == [(f"{victim}@example.com", 1, 1), (attacker, 0, 0)]
    assert rows(server, "SELECT email FROM users WHERE name = ?", victim) == [(f"{victim}@example.com",)]
    # So a reset asked for the IdP's address mails nothing; one for the person's own address still works (the
    # mailer sends in order: once that one arrived, the other would have).
    before = mail_sink.count()
    with httpx.Client(base_url=server.url, headers={"accept": "text/html"}, timeout=TIMEOUT) as browser:
        for address in (attacker, f"{victim}@example.com"):
            r = browser.post("/login/forgot", data={"csrf_token": csrf_of(browser.get("/login/forgot").text),
                                                    "email": address})
            assert r.status_code == 200, r.text[:300]
    mail_sink.wait_for(f"{victim}@example.com", "Reset your password", after=before)
    assert mail_sink.subjects_to(attacker) == []
    assert httpx.get(f"{server.url}/api/whoami-v2", headers={"authorization": f"Bearer {victim_token}"},
                     timeout=TIMEOUT).status_code == 200
    # An account the instance's IdP creates still gets its address verified (the IdP is its source).
    with httpx.Client(base_url=f"{server.url}/scim/v2", timeout=TIMEOUT, headers={
            "authorization": f"Bearer {scim_token(server, '--instance')}", "content-type": SCIM_JSON}) as idp:
        made = new_user(idp)
    assert rows(server, "SELECT e.verified_at IS NOT NULL FROM user_emails e JOIN users u ON u.id = e.user_id "
                        "WHERE u.name = ?", made["userName"]) == [(1,)]


@SQLITE_ONLY
def test_an_identity_provider_cannot_undo_a_deactivation_it_did_not_make(world: ScimWorld) -> None:  # noqa: F811
    server = world.server
    _, admin_token = server.create_user(admin=True)
    with world.org_scim as org_idp, world.instance as instance_idp:
        by_org, by_instance = new_user(org_idp), new_user(instance_idp)
        for u in (by_org, by_instance):
            assert _admin_post(server, admin_token, f"/api/admin/users/{u['userName']}/deactivate").status_code == 200
        # Neither IdP puts back what an administrator deactivated, by PATCH or by a full PUT of the resource.
        for idp, u in ((org_idp, by_org), (instance_idp, by_instance)):
            r = _set_active(idp, u, True)
            assert r.status_code == 403 and r.json()["schemas"] == ["urn:ietf:params:scim:api:messages:2.0:Error"], \
                r.text
            assert "administrator" in r.json()["detail"]
            r = idp.put(f"/Users/{u['id']}", json={"schemas": [USER_SCHEMA], "userName": u["userName"],
                                                   "active": True, "emails": u["emails"], "name": u["name"]})
            assert r.status_code == 403, r.text
            assert not _is_active(server, u["userName"])
        # An org's IdP does not put back what the instance's IdP deprovisioned.
        third = new_user(org_idp)
        assert _set_active(instance_idp, third, False).status_code == 200
        assert _set_active(org_idp, third, True).status_code == 403
        assert not _is_active(server, third["userName"])
        # What an IdP deactivated itself it may put back (the instance's: what any SCIM client deactivated).
        assert _set_active(instance_idp, third, True).status_code == 200 and _is_active(server, third["userName"])
        fourth = new_user(org_idp)
        assert _set_active(org_idp, fourth, False).status_code == 200 and not _is_active(server, fourth["userName"])
        r = _set_active(org_idp, fourth, True)
        assert r.status_code == 200 and r.json()["active"] is True and _is_active(server, fourth["userName"])
    # An administrator reactivates anything; the IdP sees the account active again.
    assert _admin_post(server, admin_token, f"/api/admin/users/{by_org['userName']}/reactivate").status_code == 200
    assert _is_active(server, by_org["userName"])
    with world.org_scim as org_idp:
        assert org_idp.get(f"/Users/{by_org['id']}").json()["active"] is True


@SQLITE_ONLY
def test_a_deactivated_admin_does_not_count_as_the_orgs_administrator(world: ScimWorld) -> None:  # noqa: F811
    server = world.server
    gone, _ = server.create_user()
    last, last_token = server.create_user()
    org = f"org{secrets.token_hex(3)}"
    server.cli("admin", "create-org", org, "--owner", gone)
    server.cli("admin", "add-member", org, last, "--role", "admin")
    server.cli("admin", "deactivate-user", gone, "--reason", "left")
    auth = {"authorization": f"Bearer {last_token}"}
    # The last active admin can neither step down nor leave: a deactivated admin administers nothing.
    r = httpx.put(f"{server.url}/api/organizations/{org}/members/{last}/role", json={"role": "write"}, headers=auth,
                  timeout=TIMEOUT)
    assert r.status_code == 409, r.text
    r = httpx.post(f"{server.url}/api/organizations/{org}/leave", headers=auth, timeout=TIMEOUT)
    assert r.status_code == 409 and "administrator" in r.text, r.text
    # The deactivated admin can be removed (that leaves the active one), and then the rule is as before.
    r = httpx.delete(f"{server.url}/api/organizations/{org}/members/{gone}", headers=auth, timeout=TIMEOUT)
    assert r.status_code == 200, r.text
    assert rows(server, "SELECT u.name, m.role FROM org_members m JOIN users u ON u.id = m.user_id "
                        "JOIN organizations o ON o.id = m.org_id WHERE o.name = ?", org) == [(last, "admin")]


@SQLITE_ONLY
def test_a_name_with_a_trailing_newline_is_no_new_name(world: ScimWorld) -> None:  # noqa: F811
    """Names were checked with `^…$`, and Python's `$` also matches before a final newline: `alice\\n` passed as
    a new name, shown exactly like `alice`, so anyone could create an org that impersonates an existing account
    (`alice\\n`), take a retired name again (only the exact name's hash is retired) or a reserved one (`admin\\n`),
    and name a repository `model\\n` beside `model`. A name is now matched whole."""
    server = world.server
    victim, _ = server.create_user()
    retired, _ = server.create_user()
    assert server.cli("admin", "delete-user", retired, check=False).returncode == 0
    auth = {"authorization": f"Bearer {world.admin_token}"}
    for name in (victim, retired, "admin", f"org{secrets.token_hex(3)}"):
        r = httpx.post(f"{server.url}/api/organizations", json={"name": name + "\n"}, headers=auth, timeout=TIMEOUT)
        assert r.status_code == 400 and r.headers["x-error-message"].startswith("Invalid name"), (name, r.text)
    with world.instance as idp:
        r = idp.post("/Users", json={"schemas": [USER_SCHEMA], "userName": retired + "\n",
                                     "emails": [{"value": f"n{secrets.token_hex(3)}@corp.example", "primary": True}]})
        assert r.status_code == 400 and r.json()["scimType"] == "invalidValue", r.text
    r = httpx.post(f"{server.url}/api/repos/create", json={"name": "model\n", "organization": world.admin},
                   headers=auth, timeout=TIMEOUT)
    assert r.status_code == 400, r.text
    assert rows(server, "SELECT count(*) FROM organizations WHERE name LIKE ?", "%\n")[0][0] == 0
    assert rows(server, "SELECT count(*) FROM users WHERE name LIKE ?", "%\n")[0][0] == 0


@SQLITE_ONLY
def test_a_password_sent_over_scim_is_refused_not_dropped(world: ScimWorld) -> None:  # noqa: F811
    """Bastion takes no password over SCIM (changePassword is not supported, the schema it publishes has none), yet
    a `password` in a POST, PUT or PATCH was answered 200/201 and silently dropped: the IdP believed the account
    had that password. A setting accepted must be enforced: now it is a 400 invalidValue and nothing changes."""
    server = world.server
    for client in (world.instance, world.org_scim):
        with client as idp:
            name = f"p{secrets.token_hex(4)}"
            r = idp.post("/Users", json={"schemas": [USER_SCHEMA], "userName": name, "password": "hunter2-hunter2-x",
                                         "emails": [{"value": f"{name}@corp.example", "primary": True}]})
            assert r.status_code == 400 and r.json()["scimType"] == "invalidValue" and "password" in r.text, r.text
            assert rows(server, "SELECT count(*) FROM users WHERE name = ?", name) == [(0,)]
            u = new_user(idp)
            r = patch(idp, f"/Users/{u['id']}", {"op": "add", "path": "password", "value": "hunter2-hunter2-x"})
            assert r.status_code == 400 and r.json()["scimType"] == "invalidValue", r.text
            r = idp.put(f"/Users/{u['id']}", json={"schemas": [USER_SCHEMA], "userName": u["userName"],
                                                   "password": "hunter2-hunter2-x", "emails": u["emails"]})
            assert r.status_code == 400 and r.json()["scimType"] == "invalidValue", r.text
            assert rows(server, "SELECT password_hash IS NULL FROM users WHERE name = ?", u["userName"]) == [(1,)]


def test_a_verification_link_dies_with_the_account(web_server: BastionServer, mail_sink: MailSink) -> None:  # noqa: F811
    """E-mail verification links (48 hours) still verified an address of a deactivated account. Someone who took
    over a session adds their own address (the link goes to them), the administrator deactivates the account and
    revokes everything, the intruder then opens the link: once the account is reactivated, the address they hold
    is verified and resets its password. Now a deactivated account verifies nothing, and deprovisioning drops the
    addresses the account never proved (but its primary one), so the link stays dead after a reactivation too."""
    from tests.accounts.fixtures import http_login, link_in

    server = web_server
    name, _ = create_password_user(server)
    intruder = f"in-{secrets.token_hex(4)}@evil.example"
    client = http_login(server, name)
    sent = mail_sink.count()
    added = client.post("/settings/emails", data={"csrf_token": csrf_of(client.get("/settings/emails").text),
                                                  "email": intruder})
    assert added.status_code == 303, added.text[:500]
    link = link_in(mail_sink.wait_for(intruder, "Verify your e-mail", after=sent)).removeprefix(server.url)
    server.cli("admin", "deactivate-user", name, "--reason", "session stolen")
    with httpx.Client(base_url=server.url, timeout=TIMEOUT) as stranger:
        r = stranger.get(link)
        assert r.status_code == 403, (r.status_code, r.headers.get("location"))
        assert rows(server, "SELECT count(*) FROM user_emails e JOIN users u ON u.id = e.user_id "
                            "WHERE u.name = ? AND e.email_lower = ?", name, intruder) == [(0,)]
        server.cli("admin", "reactivate-user", name, "--reason", "cleaned up")
        assert stranger.get(link).status_code == 403
    assert rows(server, "SELECT e.email_lower, e.verified_at IS NOT NULL FROM user_emails e JOIN users u "
                        "ON u.id = e.user_id WHERE u.name = ?", name) == [(f"{name}@example.com", 1)]
