"""Forged and replayed OpenID Connect sign-ins, each refused AND audited (org.sso_login_failed): the real
`oidc-provider` plays the attacker by rewriting the ID token its token endpoint returns (tampered payload,
`alg: none`, another audience, another issuer, expired, no nonce); a sign-in replayed (state reused), or
finished in another user's browser; an IdP subject already linked to someone else.
"""

from __future__ import annotations

import json
import sqlite3

import httpx
import pytest

from tests.sso.conftest import SsoWorld, sso_world  # noqa: F401 (the fixture)
from tests.sso.test_oidc import claims_of, model_info, org_with_private_repo


def refusals(world: SsoWorld, org: str) -> list[tuple[str, str]]:
    db = sqlite3.connect(world.server.data_dir / "bastion.sqlite3")
    try:
        rows = db.execute("SELECT target_id, details FROM audit_events WHERE action = 'org.sso_login_failed' "
                          "AND namespace = ? ORDER BY id", (org,)).fetchall()
    finally:
        db.close()
    return [(target, json.loads(details)["reason"]) for target, details in rows]


def sso_sessions(world: SsoWorld, org: str) -> int:
    db = sqlite3.connect(world.server.data_dir / "bastion.sqlite3")
    try:
        return int(db.execute("SELECT count(*) FROM sso_sessions JOIN organizations o ON o.id = sso_sessions.org_id "
                              "WHERE o.name = ?", (org,)).fetchone()[0])
    finally:
        db.close()


ATTACKS = [("tamper", "bad_signature"), ("alg-none", "bad_algorithm"), ("wrong-aud", "wrong_audience"),
           ("wrong-iss", "wrong_issuer"), ("expired", "expired"), ("no-nonce", "missing_nonce")]


@pytest.mark.parametrize("client", ["bastion-post", "bastion-basic"])
def test_forged_id_tokens_are_refused_and_audited(sso_world: SsoWorld, client: str) -> None:  # noqa: F811
    world = sso_world
    org, _admin, _t, repo_id = org_with_private_repo(world)
    member, token = world.user()
    world.add_member(org, member, "write")
    assert world.configure(org, client=client) == ""
    browser = world.signed_in(member)
    try:
        for mode, _reason in ATTACKS:
            world.idp.set_mode(mode)
            answer = world.sso_login(browser, org, f"sub-{member}", **claims_of(member))
            assert answer.status_code == 403, (mode, answer.status_code, answer.text[:300])
            assert "Single sign-on failed" in answer.text
    finally:
        world.idp.set_mode("")
    assert refusals(world, org) == [(member, reason) for _mode, reason in ATTACKS]
    assert sso_sessions(world, org) == 0
    assert model_info(world, token, repo_id).status_code == 403
    # The same provider, honest again: the sign-in works.
    assert world.sso_login(browser, org, f"sub-{member}", **claims_of(member)).status_code == 303
    assert model_info(world, token, repo_id).status_code == 200


def test_a_sign_in_is_used_once_and_only_by_who_started_it(sso_world: SsoWorld) -> None:  # noqa: F811
    world = sso_world
    org, _admin, _t, repo_id = org_with_private_repo(world)
    alice, _ = world.user()
    mallory, mallory_token = world.user()
    for name in (alice, mallory):
        world.add_member(org, name, "read")
    assert world.configure(org) == ""
    alice_browser = world.signed_in(alice)
    world.idp.next_login(f"sub-{alice}", **claims_of(alice))
    start = alice_browser.get(f"/organizations/{org}/sso/login")
    back = world.through_idp(start.headers["location"])
    # Login CSRF / session swap: Mallory's browser finishing Alice's sign-in is refused (and burns it).
    mallory_browser = world.signed_in(mallory)
    assert mallory_browser.get(back).status_code == 403
    assert alice_browser.get(back).status_code == 403  # already used
    # A fresh sign-in works; replaying its return URL does not.
    ok = world.sso_login(alice_browser, org, f"sub-{alice}", **claims_of(alice))
    assert ok.status_code == 303
    world.idp.next_login(f"sub-{alice}", **claims_of(alice))
    start = alice_browser.get(f"/organizations/{org}/sso/login")
    back = world.through_idp(start.headers["location"])
    assert alice_browser.get(back).status_code == 303
    assert alice_browser.get(back).status_code == 403
    # A made-up state, and the IdP's own error answer.
    assert alice_browser.get(f"/organizations/{org}/oidc/consume", params={"state": "x" * 43, "code": "y"}
                             ).status_code == 403
    assert refusals(world, org) == [(mallory, "other_user"), (alice, "reused_state"), (alice, "reused_state"),
                                    (alice, "unknown_state")]
    # An IdP subject linked to Alice cannot be taken over by Mallory (whose e-mail it is not, either).
    taken = world.sso_login(mallory_browser, org, f"sub-{alice}", **claims_of(mallory))
    assert taken.status_code == 403 and refusals(world, org)[-1] == (mallory, "subject_taken")
    assert model_info(world, mallory_token, repo_id).status_code == 403
    # Anonymous callers are sent to sign in to Bastion first.
    anon = httpx.get(f"{world.server.url}/organizations/{org}/sso/login", timeout=30)
    assert anon.status_code == 303 and anon.headers["location"].startswith("/login")
