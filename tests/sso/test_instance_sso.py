"""Instance SSO (the whole instance behind one IdP) against the same real providers as org SSO (npm
`oidc-provider`, a pysaml2 IdP): sign-in with OIDC and SAML, just-in-time accounts (username claim, sanitised,
collisions, e-mail verified only when the IdP says so), linking an existing account only after its password and
second factor, "SSO only" with a break-glass admin, the settings API and page, and the org SSO's attacks
against the instance endpoints (each refused and audited as user.sso_login_failed).
"""

from __future__ import annotations

import json
import secrets
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pyotp
import pytest

from tests.accounts.fixtures import PASSWORD, away_from_totp_step_edge, csrf_of, enroll_totp
from tests.sso.conftest import SECRET_POST, SsoWorld
from tests.sso.saml_idp import SamlIdp, b64


def rows(world: SsoWorld, sql: str, *args: object) -> list[tuple[Any, ...]]:
    db = sqlite3.connect(world.server.data_dir / "bastion.sqlite3")
    try:
        return db.execute(sql, args).fetchall()
    finally:
        db.close()


def audit_events(world: SsoWorld, action: str, since: int = 0) -> list[dict[str, Any]]:
    return [{"target": t, "via": v, **json.loads(d)} for t, v, d in rows(
        world, "SELECT target_id, via, details FROM audit_events WHERE action = ? AND id > ? ORDER BY id", action, since)]


def last_event_id(world: SsoWorld) -> int:
    return int(rows(world, "SELECT coalesce(max(id), 0) FROM audit_events")[0][0])


def user_row(world: SsoWorld, name: str) -> tuple[Any, ...] | None:
    found = rows(world, "SELECT u.name, u.fullname, e.email, e.verified_at IS NOT NULL, u.password_hash IS NULL "
                        "FROM users u JOIN user_emails e ON e.user_id = u.id WHERE u.name_lower = ?", name.lower())
    return found[0] if found else None


def browser(world: SsoWorld) -> httpx.Client:
    return httpx.Client(base_url=world.server.url, headers={"accept": "text/html"}, timeout=30)


def oidc_instance(world: SsoWorld, *, sso_only: bool = False, break_glass: str = "") -> None:
    """The instance on OIDC (bastion-post), enabled; "SSO only" as asked."""
    from bastion.sso import instance, oidc
    from bastion.sso import service as sso

    discovery = oidc.discover(world.idp.issuer, "client_secret_post")
    with world.db() as session:
        instance.configure_oidc(session, sso.secret_box(world.server_settings().secret_key), client_id="bastion-post",
                                client_secret=SECRET_POST, token_auth_method="client_secret_post",
                                username_claim="preferred_username", discovery=discovery)
        instance.set_enabled(session, True)
        instance.set_sso_only(session, sso_only, break_glass)


@pytest.fixture
def world(sso_world: SsoWorld) -> Iterator[SsoWorld]:
    """The shared SSO server with instance SSO switched off again afterwards (other tests sign in by password)."""
    yield sso_world
    from bastion.sso import instance

    with sso_world.db() as session:
        if instance.get_config(session) is not None:
            instance.set_sso_only(session, False, "")
            instance.set_enabled(session, False)


def sign_in(world: SsoWorld, client: httpx.Client, sub: str, next_path: str = "/", **claims: object) -> httpx.Response:
    """Bastion's /login/sso → the IdP (signing in `sub` with `claims`) → Bastion's answer to the consume URL."""
    world.idp.next_login(sub, **claims)
    start = client.get("/login/sso", params={"next": next_path})
    assert start.status_code == 303, start.text[:500]
    return client.get(world.through_idp(start.headers["location"]))


def whoami(client: httpx.Client) -> str | None:
    page = client.get("/", follow_redirects=False)
    return page.headers["location"].strip("/") if page.status_code == 303 and page.headers["location"] != "/login" \
        else None


def test_cli_contract_and_oidc_sign_in_creates_the_account_just_in_time(world: SsoWorld) -> None:
    done = subprocess.run([*world._cli(), "admin", "sso", "--instance", "--oidc-issuer", world.idp.issuer,
                           "--client-id", "bastion-post", "--client-secret-stdin", "--enable"], env=world.server.env,
                          input=SECRET_POST + "\n", capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "Instance SSO: OpenID Connect" in done.stderr and "enabled" in done.stderr
    assert "Sign in with SSO" in browser(world).get("/login").text
    since = last_event_id(world)
    name = f"ada{secrets.token_hex(3)}"
    b = browser(world)
    back = sign_in(world, b, f"sub-{name}", next_path="/settings", preferred_username=name,
                   email=f"{name}@corp.example", email_verified=True, name="Ada Lovelace")
    assert back.status_code == 303 and back.headers["location"] == "/settings", back.text[:300]
    assert whoami(b) == name
    assert user_row(world, name) == (name, "Ada Lovelace", f"{name}@corp.example", 1, 1)
    created = audit_events(world, "user.create", since)
    assert [(e["target"], e["via"], e["email_verified"]) for e in created] == [(name, "sso", True)]
    # The same subject again: the same account, no second one.
    b2 = browser(world)
    assert sign_in(world, b2, f"sub-{name}", preferred_username="someone-else", email="x@corp.example",
                   email_verified=True).status_code == 303
    assert whoami(b2) == name
    logins = audit_events(world, "user.sso_login", since)
    assert [e["target"] for e in logins] == [name, name] and logins[0]["created"] is True


def test_usernames_are_sanitised_collisions_get_a_suffix_and_unverified_email_stays_unverified(world: SsoWorld) -> None:
    oidc_instance(world)
    taken, _ = world.user()  # an existing account: never taken over
    b = browser(world)
    assert sign_in(world, b, f"sub-{secrets.token_hex(4)}", preferred_username=taken,
                   email=f"other-{taken}@corp.example", email_verified=True).status_code == 303
    assert whoami(b) == f"{taken}-2"
    assert user_row(world, taken)[2] == f"{taken}@example.com"
    tag = secrets.token_hex(3)
    b = browser(world)
    assert sign_in(world, b, f"sub-{tag}", preferred_username=f"Jane Doe!! {tag}", email=f"jd{tag}@corp.example",
                   email_verified=True).status_code == 303
    assert whoami(b) == f"Jane-Doe-{tag}"
    # No username claim: the e-mail's local part; e-mail not verified by the IdP: not verified here.
    b = browser(world)
    assert sign_in(world, b, f"sub-n{tag}", email=f"nobody.{tag}@corp.example", email_verified=False).status_code == 303
    assert whoami(b) == f"nobody.{tag}"
    assert user_row(world, f"nobody.{tag}")[3] == 0
    # An unverified address that an existing account owns: refused, nothing linked, nothing created.
    since = last_event_id(world)
    b = browser(world)
    refused = sign_in(world, b, f"sub-x{tag}", email=f"{taken}@example.com", email_verified=False)
    assert refused.status_code == 403 and "not verified" in refused.text
    assert [e["reason"] for e in audit_events(world, "user.sso_login_failed", since)] == ["email_unverified"]
    assert rows(world, "SELECT count(*) FROM instance_sso_identities WHERE subject = ?", f"sub-x{tag}")[0][0] == 0


def _password_sign_in(client: httpx.Client, name: str, next_path: str, totp: str | None) -> httpx.Response:
    page = client.get("/login", params={"next": next_path})
    answer = client.post("/login", data={"csrf_token": csrf_of(page.text), "login": name, "password": PASSWORD,
                                         "next": next_path})
    if totp and answer.status_code == 303 and answer.headers["location"].startswith("/login/two-factor"):
        page = client.get(answer.headers["location"])
        away_from_totp_step_edge()
        answer = client.post("/login/two-factor", data={"csrf_token": csrf_of(page.text),
                                                        "code": pyotp.TOTP(totp).now(), "next": next_path})
    return answer


def test_an_existing_account_is_linked_only_after_its_password_and_second_factor(world: SsoWorld) -> None:
    oidc_instance(world)
    owner, _ = world.user()
    totp = enroll_totp(world.signed_in(owner))[0]
    sub = f"sub-link-{owner}"
    claims = {"email": f"{owner}@example.com", "email_verified": True, "preferred_username": owner}
    since = last_event_id(world)
    b = browser(world)
    answer = sign_in(world, b, sub, next_path="/settings", **claims)
    # Not signed in, not linked: sent to prove the account.
    assert answer.status_code == 303 and answer.headers["location"].startswith("/login?m=sso-link&next="), answer.text
    assert whoami(b) is None
    link = parse_qs(urlsplit(answer.headers["location"]).query)["next"][0]
    assert "An account already uses the address" in b.get(answer.headers["location"]).text
    assert rows(world, "SELECT count(*) FROM instance_sso_identities WHERE subject = ?", sub)[0][0] == 0
    # Someone else's account, or the owner's session from before this flow, does not link it.
    intruder, _ = world.user()
    other = world.signed_in(intruder)
    assert "belongs to another account" in other.get(link).text
    token = parse_qs(urlsplit(link).query)["t"][0]
    assert other.post("/login/sso/link", data={"csrf_token": csrf_of(other.get("/settings", follow_redirects=True).text), "t": token}
                      ).status_code == 403
    # The owner proves the account: password, then the second factor.
    proven = _password_sign_in(b, owner, link, totp)
    assert proven.status_code == 303 and proven.headers["location"] == link, proven.text[:300]
    page = b.get(link)
    assert "Link my account" in page.text
    done = b.post("/login/sso/link", data={"csrf_token": csrf_of(page.text), "t": token})
    assert done.status_code == 303 and done.headers["location"] == "/settings"
    assert [e["target"] for e in audit_events(world, "user.sso_link", since)] == [owner]
    assert [(e["target"], e["reason"]) for e in audit_events(world, "user.sso_login_failed", since)] == \
        [(intruder, "not_proven")]
    # From now on SSO signs in as the owner directly.
    b2 = browser(world)
    assert sign_in(world, b2, sub, **claims).status_code == 303 and whoami(b2) == owner


def test_sso_only_refuses_password_sign_in_but_the_break_glass_admin_and_tokens_work(world: SsoWorld) -> None:
    from bastion.accounts import service as accounts

    admin = f"root{secrets.token_hex(3)}"
    with world.db() as session:
        accounts.create_user(session, admin, f"{admin}@example.com", is_admin=True, password=PASSWORD,
                             email_verified=True)
    oidc_instance(world)
    since = last_event_id(world)
    done = world.server.cli("admin", "sso", "--instance", "--sso-only", "--break-glass-admin", admin, check=False)
    assert done.returncode == 0 and "SSO only" in done.stderr, done.stderr
    member, token = world.user()
    refused = _password_sign_in(browser(world), member, "/", None)
    assert refused.status_code == 403 and "Password sign-in is disabled" in refused.text
    assert "Sign in with SSO" in refused.text
    allowed = _password_sign_in(browser(world), admin, "/", None)
    assert allowed.status_code == 303 and allowed.headers["location"] == "/", allowed.text[:300]
    assert httpx.get(f"{world.server.url}/api/whoami-v2", headers={"authorization": f"Bearer {token}"},
                     timeout=30).json()["name"] == member
    assert [e["reason"] for e in audit_events(world, "user.login_failed", since) if e["target"] == member] == \
        ["sso_only"]
    assert [e.get("ssoOnly") for e in audit_events(world, "instance.sso.settings", since)] == [True]
    # A break-glass admin is required, and must be an instance admin.
    bad = world.server.cli("admin", "sso", "--instance", "--sso-only", "--break-glass-admin", member, check=False)
    assert bad.returncode != 0 and "instance administrator" in bad.stderr


def test_attacks_on_the_instance_endpoints_are_refused_and_audited(world: SsoWorld) -> None:
    oidc_instance(world)
    since = last_event_id(world)
    name = f"att{secrets.token_hex(3)}"
    claims = {"email": f"{name}@corp.example", "email_verified": True, "preferred_username": name}
    try:
        for mode in ("tamper", "wrong-aud"):
            world.idp.set_mode(mode)
            refused = sign_in(world, browser(world), f"sub-{name}", **claims)
            assert refused.status_code == 403 and "Single sign-on failed" in refused.text, (mode, refused.text[:300])
    finally:
        world.idp.set_mode("")
    # A sign-in used once: the same return URL again is refused.
    b = browser(world)
    world.idp.next_login(f"sub-{name}", **claims)
    back = world.through_idp(b.get("/login/sso").headers["location"])
    assert b.get(back).status_code == 303
    assert browser(world).get(back).status_code == 403
    reasons = [e["reason"] for e in audit_events(world, "user.sso_login_failed", since)]
    assert reasons == ["bad_signature", "wrong_audience", "reused_state"], reasons
    assert rows(world, "SELECT count(*) FROM users WHERE name_lower = ?", name)[0][0] == 1  # only the honest one


@pytest.fixture(scope="module")
def saml_idp(tmp_path_factory: pytest.TempPathFactory) -> SamlIdp:
    return SamlIdp(tmp_path_factory.mktemp("instance-saml-idp"))


def test_saml_instance_sign_in_and_its_attacks(world: SsoWorld, saml_idp: SamlIdp, tmp_path: Path) -> None:
    entity, acs = f"{world.server.url}/login/saml/metadata", f"{world.server.url}/login/saml/consume"
    saml_idp.trust_sp(entity)
    meta = tmp_path / "idp.xml"
    meta.write_text(saml_idp.metadata())
    done = world.server.cli("admin", "sso", "--instance", "--saml-metadata", str(meta), "--username-claim", "uid",
                            "--enable", check=False)
    assert done.returncode == 0 and "SAML 2.0" in done.stderr, done.stderr
    since = last_event_id(world)
    name = f"sam{secrets.token_hex(3)}"
    b = browser(world)
    start = b.get("/login/sso", params={"next": "/settings"})
    assert start.status_code == 303 and start.headers["location"].startswith(saml_idp.entity_id)
    request_id, relay = saml_idp.request_id(start.headers["location"])
    xml = saml_idp.response(f"{name}@corp.example", acs, entity, request_id, uid=[name], name=["Sam Test"])
    posted = b.post(acs, data={"SAMLResponse": b64(xml), "RelayState": relay})
    assert posted.status_code == 303 and posted.headers["location"] == "/settings", posted.text[:500]
    assert whoami(b) == name
    # The same response again: its sign-in (RelayState) was used; without it, it answers no request of ours.
    assert browser(world).post(acs, data={"SAMLResponse": b64(xml), "RelayState": relay}).status_code == 403
    assert browser(world).post(acs, data={"SAMLResponse": b64(xml)}).status_code == 403
    # Unsigned assertion (the response signed), and nothing signed at all.
    for kw in ({"sign_assertion": False}, {"sign_assertion": False, "sign_response": False}):
        bad = saml_idp.response(f"{name}@corp.example", acs, entity, None, uid=[name], **kw)
        assert browser(world).post(acs, data={"SAMLResponse": b64(bad)}).status_code == 403
    # IdP-initiated, properly signed: after the person confirms who they become, signs in (the same account);
    # replayed: refused (assertion-id cache).
    fresh = saml_idp.response(f"{name}@corp.example", acs, entity, None, uid=[name])
    b2 = browser(world)
    posted = b2.post(acs, data={"SAMLResponse": b64(fresh)})
    assert posted.status_code == 303 and posted.headers["location"].startswith("/login/saml/finish?t=")
    confirm = b2.get(posted.headers["location"])
    assert confirm.status_code == 200 and f"{name}@corp.example" in confirm.text
    done = b2.post("/login/saml/finish", data={"csrf_token": csrf_of(confirm.text),
                                               "t": parse_qs(urlsplit(posted.headers["location"]).query)["t"][0]})
    assert done.status_code == 303 and whoami(b2) == name
    assert browser(world).post(acs, data={"SAMLResponse": b64(fresh)}).status_code == 403
    reasons = [e["reason"] for e in audit_events(world, "user.sso_login_failed", since)]
    assert reasons == ["reused_state", "unknown_request", "bad_signature", "bad_signature", "replayed"], reasons
    assert rows(world, "SELECT count(*) FROM users WHERE name_lower LIKE ?", f"{name}%")[0][0] == 1


def admin_name_with_password(world: SsoWorld) -> str:
    from bastion.accounts import service as accounts

    name = f"root{secrets.token_hex(3)}"
    with world.db() as session:
        accounts.create_user(session, name, f"{name}@example.com", is_admin=True, password=PASSWORD,
                             email_verified=True)
    return name


def test_settings_api_and_admin_page(world: SsoWorld) -> None:
    admin, admin_token = world.server.create_user(admin=True)
    _member, member_token = world.user()
    api = httpx.Client(base_url=world.server.url, headers={"authorization": f"Bearer {admin_token}"}, timeout=30)
    assert httpx.get(f"{world.server.url}/api/admin/sso", headers={"authorization": f"Bearer {member_token}"},
                     timeout=30).status_code == 403
    put = api.put("/api/admin/sso", json={"protocol": "oidc", "issuer": world.idp.issuer, "clientId": "bastion-post",
                                          "clientSecret": SECRET_POST, "usernameClaim": "email"})
    assert put.status_code == 200 and put.json()["protocol"] == "oidc" and "clientSecret" not in put.json(), put.text
    bad = api.put("/api/admin/sso", json={"protocol": "oidc", "issuer": world.idp.issuer, "clientId": "x",
                                          "clientSecret": "y", "scimToken": "z"})
    assert bad.status_code == 400 and "not built" in bad.headers["x-error-message"]
    assert api.put("/api/admin/sso", json={"ssoOnly": True, "breakGlassAdmin": admin}).status_code == 400  # disabled
    since = last_event_id(world)
    assert api.post("/api/admin/sso/enable").json()["enabled"] is True
    assert api.get("/api/admin/sso").json()["enabled"] is True
    assert api.post("/api/admin/sso/disable").json()["enabled"] is False
    assert [r[0] for r in rows(world, "SELECT action FROM audit_events WHERE id > ? AND action LIKE 'instance.sso%' "
                                      "ORDER BY id", since)] == ["instance.sso.enable", "instance.sso.disable"]
    # The admin page: its forms save (CSRF-checked), and refuse what they cannot enforce.
    web = world.signed_in(admin_name_with_password(world))
    page = web.get("/admin/sso")
    assert page.status_code == 200 and "Instance single sign-on" in page.text and "/login/oidc/consume" in page.text
    assert web.post("/admin/sso/enable", data={"csrf_token": csrf_of(page.text)}).headers["location"] == \
        "/admin/sso?done=enable"
    refused = web.post("/admin/sso/sso-only", data={"csrf_token": csrf_of(page.text), "sso_only": "on"})
    assert refused.status_code == 400 and "break-glass" in refused.text
    assert web.post("/admin/sso/enable", data={}).status_code == 403  # no CSRF token
    assert "sso-enabled\">yes" in web.get("/admin/sso").text
    assert world.signed_in(world.user()[0]).get("/admin/sso").status_code == 403
