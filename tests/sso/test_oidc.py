"""Organization SSO with OpenID Connect against a real OpenID provider (npm `oidc-provider`) on loopback:
both client authentication methods, enforcement on tokens and pages, the SSO session's lapse (clock moved),
role and resource-group mapping, join, invitations, external collaborators, key rotation, and the settings
flow "update and test" before "enable".
"""

from __future__ import annotations

import json
import sqlite3
from typing import Any

import httpx
import pytest

from tests.accounts.fixtures import csrf_of
from tests.conftest import hf_api
from tests.sso.conftest import SECRET_BASIC, SsoWorld

DAY = 86400


def events(world: SsoWorld, action: str, namespace: str) -> list[dict[str, Any]]:
    db = sqlite3.connect(world.server.data_dir / "bastion.sqlite3")
    try:
        rows = db.execute("SELECT target_id, details FROM audit_events WHERE action = ? AND namespace = ? ORDER BY id",
                          (action, namespace)).fetchall()
    finally:
        db.close()
    return [{"target": t, **json.loads(d)} for t, d in rows]


def org_with_private_repo(world: SsoWorld) -> tuple[str, str, str, str]:
    """(org, admin name, admin token, repo id): an org whose admin created a private model before SSO."""
    admin, admin_token = world.user()
    org = world.org(admin)
    repo_id = f"{org}/private-model"
    hf_api(world.server, admin_token).create_repo(repo_id, private=True)
    return org, admin, admin_token, repo_id


def model_info(world: SsoWorld, token: str, repo_id: str) -> httpx.Response:
    return httpx.get(f"{world.server.url}/api/models/{repo_id}", headers={"authorization": f"Bearer {token}"},
                     timeout=30)


def claims_of(name: str, **extra: object) -> dict[str, object]:
    return {"email": f"{name}@example.com", "email_verified": True, "preferred_username": name, **extra}


@pytest.mark.parametrize("client", ["bastion-post", "bastion-basic"])
def test_member_needs_a_live_sso_session_for_the_orgs_resources(sso_world: SsoWorld, client: str) -> None:
    world = sso_world
    org, admin, admin_token, repo_id = org_with_private_repo(world)
    member, token = world.user()
    world.add_member(org, member, "write")
    assert model_info(world, token, repo_id).status_code == 200  # no SSO yet
    done = world.configure_cli(org, client=client)  # the CLI contract
    assert done.returncode == 0, done.stderr
    assert "enabled" in done.stderr

    # Enforced: the member's token and the admin's token stop working for the org, with a message naming SSO.
    for who in (token, admin_token):
        refused = model_info(world, who, repo_id)
        assert refused.status_code == 403, refused.text
        assert "single sign-on (SSO)" in refused.headers["x-error-message"]
    # Git and the hub client get the same answer.
    git = httpx.get(f"{world.server.url}/{repo_id}.git/info/refs", params={"service": "git-upload-pack"},
                    auth=(member, token), timeout=30)
    assert git.status_code == 403 and "SSO" in git.headers.get("x-error-message", git.text)
    with pytest.raises(Exception, match="SSO"):
        hf_api(world.server, token).model_info(repo_id)
    # A browser is sent to the org's SSO login, and comes back to the page after it.
    browser = world.signed_in(member)
    page = browser.get(f"/{repo_id}")
    assert page.status_code == 303
    assert page.headers["location"] == f"/organizations/{org}/sso/login?next=/{repo_id}"
    back = world.sso_login(browser, org, f"sub-{member}", next_path=f"/{repo_id}", **claims_of(member))
    assert back.status_code == 303 and back.headers["location"] == f"/{repo_id}", back.text[:500]
    assert browser.get(f"/{repo_id}").status_code == 200
    assert model_info(world, token, repo_id).status_code == 200
    assert model_info(world, admin_token, repo_id).status_code == 403  # per user
    logins = events(world, "org.sso_login", org)
    assert [e["target"] for e in logins] == [member]
    assert logins[0]["subject"] == f"sub-{member}"
    # The listing follows the same rule.
    listed = httpx.get(f"{world.server.url}/api/models", params={"author": org},
                       headers={"authorization": f"Bearer {admin_token}"}, timeout=30).json()
    assert listed == []
    listed = httpx.get(f"{world.server.url}/api/models", params={"author": org},
                       headers={"authorization": f"Bearer {token}"}, timeout=30).json()
    assert [m["id"] for m in listed] == [repo_id]


def test_the_sso_session_lapses_after_seven_days(sso_world: SsoWorld) -> None:
    world = sso_world
    org, _admin, _admin_token, repo_id = org_with_private_repo(world)
    member, token = world.user()
    world.add_member(org, member, "read")
    assert world.configure(org) == ""
    browser = world.signed_in(member)
    assert world.sso_login(browser, org, f"sub-{member}", **claims_of(member)).status_code == 303
    try:
        world.move_clock(7 * DAY - 60)
        assert model_info(world, token, repo_id).status_code == 200
        world.move_clock(7 * DAY + 60)
        lapsed = model_info(world, token, repo_id)
        assert lapsed.status_code == 403 and "SSO" in lapsed.headers["x-error-message"]
        assert browser.get(f"/{repo_id}").headers["location"].startswith(f"/organizations/{org}/sso/login")
        # Signing in again opens a new 7 days from the (moved) clock.
        assert world.sso_login(browser, org, f"sub-{member}", **claims_of(member)).status_code == 303
        assert model_info(world, token, repo_id).status_code == 200
    finally:
        world.move_clock(0)


def test_role_mapping_highest_wins_no_match_and_resync(sso_world: SsoWorld) -> None:
    world = sso_world
    org, _admin, _t, repo_id = org_with_private_repo(world)
    bad = world.configure_cli(org, role_claim="groups", role_map="eng=write,readers=read")
    assert bad.returncode != 0 and "at least one value mapped to admin" in bad.stderr
    assert world.configure(org, role_claim="groups", role_map="eng=write,readers=read,leads=admin,ops=contributor"
                           ) == ""

    # Joining through the SSO join link: highest matching role wins.
    joiner, joiner_token = world.user()
    browser = world.signed_in(joiner)
    back = world.sso_login(browser, org, f"sub-{joiner}", **claims_of(joiner, groups=["readers", "eng", "other"]))
    assert back.status_code == 303, back.text[:500]
    joins = events(world, "org.sso_join", org)
    assert [(e["target"], e["role"], e["roleFrom"]) for e in joins] == [(joiner, "write", "mapping")]

    # Re-synced at the next sign-in, the change audited: now only `readers`.
    world.sso_login(browser, org, f"sub-{joiner}", **claims_of(joiner, groups=["readers"]))
    changes = events(world, "org.change_role", org)
    assert [(c["target"], c["from"], c["to"]) for c in changes] == [(joiner, "write", "read")]
    assert model_info(world, joiner_token, repo_id).status_code == 200

    # A dotted path into a nested claim; no matching value: the org's default role (read).
    nobody, _ = world.user()
    browser2 = world.signed_in(nobody)
    world.sso_login(browser2, org, f"sub-{nobody}", **claims_of(nobody, groups=["unmapped"]))
    assert [(e["target"], e["role"], e["roleFrom"]) for e in events(world, "org.sso_join", org)][-1] == \
        (nobody, "read", "default")


def test_nested_claim_path_and_invitation_role_fallback(sso_world: SsoWorld) -> None:
    world = sso_world
    org, admin, _t, _repo = org_with_private_repo(world)
    # An invitation sent before SSO: its role applies when no mapping matches.
    invited, _ = world.user()
    with world.db() as session:
        from bastion.accounts import service as accounts
        from bastion.orgs import service as orgs

        orgs.invite(session, None, orgs.get_org(session, org), accounts.get_user_by_name(session, admin),
                    f"{invited}@example.com", "contributor")
    assert world.configure(org, role_claim="org.role", role_map="owner=admin,dev=write") == ""
    b = world.signed_in(invited)
    world.sso_login(b, org, f"sub-{invited}", **claims_of(invited, org={"role": "tester"}))
    joined = events(world, "org.sso_join", org)[-1]
    assert (joined["target"], joined["role"], joined["roleFrom"]) == (invited, "contributor", "invitation")
    dev, _ = world.user()
    b2 = world.signed_in(dev)
    world.sso_login(b2, org, f"sub-{dev}", **claims_of(dev, org={"role": "dev"}))
    assert events(world, "org.sso_join", org)[-1]["role"] == "write"
    # While SSO is on, classic invitations are refused.
    admin_browser = world.signed_in(admin)
    page = admin_browser.get(f"/organizations/{org}/settings/members")
    assert page.status_code == 303  # the admin has no SSO session: sent to the SSO login first
    world.sso_login(admin_browser, org, f"sub-{admin}", **claims_of(admin, org={"role": "owner"}))
    page = admin_browser.get(f"/organizations/{org}/settings/members")
    refused = admin_browser.post(f"/organizations/{org}/settings/invitations",
                                 data={"csrf_token": csrf_of(page.text), "email": "someone@example.com"})
    assert refused.status_code == 400 and "classic invitations are disabled" in refused.text


def test_email_must_match_a_verified_address_and_the_domains(sso_world: SsoWorld) -> None:
    world = sso_world
    org, _admin, _t, _repo = org_with_private_repo(world)
    assert world.configure(org, domains=("example.com",)) == ""
    user, _ = world.user()
    browser = world.signed_in(user)
    other = world.sso_login(browser, org, f"sub-{user}", **claims_of(user, email="ceo@example.com"))
    assert other.status_code == 403 and "add and verify that address" in other.text
    domain = world.sso_login(browser, org, f"sub-{user}", **claims_of(user, email=f"{user}@elsewhere.test"))
    assert domain.status_code == 403 and "e-mail domains" in domain.text
    unverified = world.sso_login(browser, org, f"sub-{user}", **claims_of(user, email_verified=False))
    assert unverified.status_code == 403
    reasons = [e["reason"] for e in events(world, "org.sso_login_failed", org)]
    assert reasons == ["email_mismatch", "email_domain", "email_unverified"]
    assert events(world, "org.sso_join", org) == []


def test_external_collaborators_are_exempt(sso_world: SsoWorld) -> None:
    world = sso_world
    org, admin, admin_token, repo_id = org_with_private_repo(world)
    outside, outside_token = world.user()
    world.add_member(org, outside, "read")
    assert world.configure(org) == ""
    assert model_info(world, outside_token, repo_id).status_code == 403
    admin_browser = world.signed_in(admin)
    world.sso_login(admin_browser, org, f"sub-{admin}", **claims_of(admin))
    page = admin_browser.get(f"/organizations/{org}/settings/sso")
    assert page.status_code == 200 and "Enabled (enforced)" in page.text
    done = admin_browser.post(f"/organizations/{org}/settings/sso/exempt",
                              data={"csrf_token": csrf_of(page.text), "user": outside})
    assert done.status_code == 303, done.text[:300]
    assert model_info(world, outside_token, repo_id).status_code == 200


def test_update_and_test_before_enable_in_the_settings_page(sso_world: SsoWorld) -> None:
    world = sso_world
    org, admin, admin_token, repo_id = org_with_private_repo(world)
    browser = world.signed_in(admin)
    page = browser.get(f"/organizations/{org}/settings/sso")
    assert page.status_code == 200 and "Not configured" in page.text
    csrf = csrf_of(page.text)
    # A bad issuer is refused at once (discovery fetched and checked), nothing stored.
    bad = browser.post(f"/organizations/{org}/settings/sso/update",
                       data={"csrf_token": csrf, "issuer": "http://127.0.0.1:9/nothing", "client_id": "x",
                             "client_secret": "y"})
    assert bad.status_code == 400 and "discovery document" in bad.text
    saml = browser.post(f"/organizations/{org}/settings/sso/update", data={"csrf_token": csrf, "protocol": "saml"})
    assert saml.status_code == 400 and "Give the IdP&#39;s metadata" in saml.text
    other = browser.post(f"/organizations/{org}/settings/sso/update", data={"csrf_token": csrf, "protocol": "cas"})
    assert other.status_code == 400 and "Unknown protocol" in other.text
    saved = browser.post(f"/organizations/{org}/settings/sso/update",
                         data={"csrf_token": csrf, "issuer": world.idp.issuer, "client_id": "bastion-basic",
                               "client_secret": SECRET_BASIC, "token_auth_method": "client_secret_basic",
                               "session_days": "3"})
    assert saved.status_code == 303 and saved.headers["location"] == f"/organizations/{org}/sso/login?test=1"
    # Enable before the test passed: refused.
    enable = browser.post(f"/organizations/{org}/settings/sso/enable", data={"csrf_token": csrf})
    assert enable.status_code == 400 and "test sign-in must pass" in enable.text
    tested = world.sso_login(browser, org, f"sub-{admin}", test=True, **claims_of(admin))
    assert tested.headers["location"] == f"/organizations/{org}/settings/sso?tested=1"
    enable = browser.post(f"/organizations/{org}/settings/sso/enable", data={"csrf_token": csrf})
    assert enable.status_code == 303, enable.text[:300]
    assert [e["target"] for e in events(world, "org.settings.sso.enable", org)] == [org]
    settings = [e for e in events(world, "org.settings.sso", org)]
    assert settings[0]["issuer"] == world.idp.issuer and SECRET_BASIC not in json.dumps(settings)
    assert settings[1]["test"] == "passed"
    # The admin's test sign-in counts as an SSO session (3 days).
    assert model_info(world, admin_token, repo_id).status_code == 200
    world.move_clock(3 * DAY + 60)
    try:
        assert model_info(world, admin_token, repo_id).status_code == 403
    finally:
        world.move_clock(0)
    # The secret is stored sealed.
    db = sqlite3.connect(world.server.data_dir / "bastion.sqlite3")
    stored = db.execute("SELECT client_secret FROM sso_configs").fetchall()
    db.close()
    assert stored and all(s.startswith("sb1:") and SECRET_BASIC not in s for (s,) in stored)
    disable = browser.post(f"/organizations/{org}/settings/sso/disable", data={"csrf_token": csrf})
    assert disable.status_code == 303
    assert [e["target"] for e in events(world, "org.settings.sso.disable", org)] == [org]


def test_jwks_rotation_and_caching(sso_world: SsoWorld) -> None:
    world = sso_world
    org, admin, _t, _repo = org_with_private_repo(world)
    assert world.configure(org) == ""
    browser = world.signed_in(admin)
    before = world.idp.jwks_fetches()
    assert world.sso_login(browser, org, f"sub-{admin}", **claims_of(admin)).status_code == 303
    assert world.sso_login(browser, org, f"sub-{admin}", **claims_of(admin)).status_code == 303
    assert world.idp.jwks_fetches() - before <= 1  # cached between sign-ins
    world.idp.rotate_keys()  # a new key, the old one gone
    assert world.sso_login(browser, org, f"sub-{admin}", **claims_of(admin)).status_code == 303
    assert world.idp.jwks_fetches() == 1  # the restarted IdP counts anew: fetched once for the new key id


def test_cli_refuses_what_is_not_built_and_bad_input(sso_world: SsoWorld, tmp_path: Any) -> None:
    world = sso_world
    org, _a, _t, _r = org_with_private_repo(world)
    # Org-only settings are refused with --instance, instance-only ones with --org (instance SSO:
    # tests/sso/test_instance_sso.py); an empty client secret is refused.
    inst = world.server.cli("admin", "sso", "--instance", "--oidc-issuer", world.idp.issuer, "--client-id", "x",
                            "--client-secret-stdin", "--role-claim", "groups", check=False)
    assert inst.returncode != 0 and "organization SSO settings" in inst.stderr
    inst = world.server.cli("admin", "sso", "--org", org, "--sso-only", check=False)
    assert inst.returncode != 0 and "instance settings" in inst.stderr
    inst = world.server.cli("admin", "sso", "--instance", "--oidc-issuer", world.idp.issuer, "--client-id", "x",
                            "--client-secret-stdin", check=False)
    assert inst.returncode != 0 and "client secret is required" in inst.stderr
    meta = tmp_path / "idp.xml"
    meta.write_text("<EntityDescriptor/>")
    saml = world.server.cli("admin", "sso", "--org", org, "--saml-metadata", str(meta), check=False)
    assert saml.returncode != 0 and "IdP metadata" in saml.stderr  # checked at once: nothing stored
    neither = world.server.cli("admin", "sso", "--oidc-issuer", world.idp.issuer, check=False)
    assert neither.returncode != 0


def test_resource_group_mapping_is_additive(sso_world: SsoWorld) -> None:
    world = sso_world
    org, admin, _t, _repo = org_with_private_repo(world)
    from bastion.orgs import service as orgs
    from bastion.sso import service as sso

    with world.db() as session:
        found = orgs.get_org(session, org)
        for name in ("vision", "speech", "legal"):
            orgs.create_group(session, found, name)
    assert world.configure(org) == ""
    with world.db() as session:
        found = orgs.get_org(session, org)
        config = sso.get_config(session, found)
        assert config is not None
        with pytest.raises(Exception, match="Resource group 'nope' not found"):
            sso._validated(session, found, sso.Settings(issuer="", client_id="x", client_secret=None,
                                                         group_claim="groups", group_map={"a": ["nope:read"]}))
        role_map, group_map, _ = sso._validated(session, found, sso.Settings(
            issuer="", client_id="x", client_secret=None, group_claim="groups",
            group_map=sso.parse_group_map("cv=vision:read,cv-lead=vision:admin,asr=speech:write")))
        config.group_claim, config.group_map = "groups", group_map
    member, _ = world.user()
    browser = world.signed_in(member)
    assert world.sso_login(browser, org, f"sub-{member}", **claims_of(member, groups=["cv", "cv-lead"])
                           ).status_code == 303
    world.sso_login(browser, org, f"sub-{member}", **claims_of(member, groups=["asr"]))
    with world.db() as session:
        found = orgs.get_org(session, org)
        roles = {g.name: orgs.group_facts(session, g).roles.get(
            orgs.user_by_name(session, member).id) for g in orgs.list_groups(session, found)}
    # Highest role per group; additive: vision kept although the second sign-in named only asr; no match, no group.
    assert roles == {"vision": "admin", "speech": "write", "legal": None}


def test_settings_over_the_api(sso_world: SsoWorld) -> None:
    world = sso_world
    org, admin, admin_token, repo_id = org_with_private_repo(world)
    member, member_token = world.user()
    world.add_member(org, member, "read")
    api = httpx.Client(base_url=world.server.url, headers={"authorization": f"Bearer {admin_token}"}, timeout=30)
    url = f"/api/organizations/{org}/settings/sso"
    assert api.get(url).json() == {"protocol": None, "enabled": False}
    assert httpx.get(f"{world.server.url}{url}", headers={"authorization": f"Bearer {member_token}"},
                     timeout=30).status_code == 403
    saml = api.put(url, json={"protocol": "saml", "issuer": "x"})
    assert saml.status_code == 400 and "not built" in saml.headers["x-error-message"]
    unknown = api.put(url, json={"issuer": world.idp.issuer, "clientId": "bastion-post", "clientSecret": "s",
                                 "scimToken": "x"})
    assert unknown.status_code == 400 and "scimToken" in unknown.headers["x-error-message"]
    no_admin = api.put(url, json={"issuer": world.idp.issuer, "clientId": "bastion-post", "clientSecret": "s",
                                  "roleClaim": "groups", "roleMap": {"eng": "write"}})
    assert no_admin.status_code == 400 and "admin" in no_admin.headers["x-error-message"]
    bad_issuer = api.put(url, json={"issuer": "ftp://example.test", "clientId": "c", "clientSecret": "s"})
    assert bad_issuer.status_code == 400
    saved = api.put(url, json={"issuer": world.idp.issuer, "clientId": "bastion-post",
                               "clientSecret": "post-secret-" + "p" * 32, "roleClaim": "groups",
                               "roleMap": {"eng": "write", "leads": "admin"}, "sessionDays": 2,
                               "emailDomains": ["Example.com"]})
    assert saved.status_code == 200, saved.text
    body = saved.json()
    assert body["issuer"] == world.idp.issuer and body["roleMap"] == {"eng": "write", "leads": "admin"}
    assert body["emailDomains"] == ["example.com"] and body["tested"] is False and "clientSecret" not in body
    enable = api.post(f"{url}/enable")
    assert enable.status_code == 400 and "test sign-in must pass" in enable.headers["x-error-message"]
    assert api.put(f"{url}/external-collaborators/{member}").json()["externalCollaborators"] == [member]
    assert api.delete(f"{url}/external-collaborators/{member}").json()["externalCollaborators"] == []
    assert model_info(world, member_token, repo_id).status_code == 200  # not enabled: nothing enforced
    saved_events = events(world, "org.settings.sso", org)
    assert [e["target"] for e in saved_events] == [org, member, member]
    assert [e.get("externalCollaborator") for e in saved_events[1:]] == [True, False]
    # enable and disable over the API, once a test sign-in passed
    tested = world.sso_login(world.signed_in(admin), org, f"sub-{admin}", test=True,
                             **claims_of(admin, groups=["leads"]))
    assert tested.headers["location"] == f"/organizations/{org}/settings/sso?tested=1"
    assert api.post(f"{url}/enable").json()["enabled"] is True
    assert api.post(f"{url}/disable").json()["enabled"] is False
    assert [e["target"] for e in events(world, "org.settings.sso.enable", org)] == [org]
    assert [e["target"] for e in events(world, "org.settings.sso.disable", org)] == [org]
