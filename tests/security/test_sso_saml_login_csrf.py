"""Login CSRF through IdP-initiated SAML on instance SSO: an IdP-initiated response needs no state of ours, so
anyone holding a valid response for their own IdP account could post it from their own page and sign a victim's
browser in to the attacker's Bastion account (what the victim then uploads lands there). Found: the instance's
consume URL signed the browser in at once. Now it answers with a confirmation page naming the identity; only
the person's own click (a same-site form with its CSRF token) signs in, and the finish link works once.
"""

from __future__ import annotations

import secrets
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx

from tests.accounts.fixtures import csrf_of
from tests.sso.conftest import SsoWorld, sso_world  # noqa: F401 (the fixture)
from tests.sso.saml_idp import SamlIdp, b64
from tests.sso.test_instance_sso import browser, rows, saml_idp, whoami, world  # noqa: F401 (fixtures)


def test_an_idp_initiated_response_posted_by_another_site_signs_no_one_in(world: SsoWorld, saml_idp: SamlIdp,  # noqa: F811
                                                                        tmp_path: Path) -> None:
    entity, acs = f"{world.server.url}/login/saml/metadata", f"{world.server.url}/login/saml/consume"
    saml_idp.trust_sp(entity)
    meta = tmp_path / "idp.xml"
    meta.write_text(saml_idp.metadata())
    world.server.cli("admin", "sso", "--instance", "--saml-metadata", str(meta), "--username-claim", "uid", "--enable")
    mallory = f"mal{secrets.token_hex(3)}"
    # Mallory's own valid response, auto-submitted to Bastion by a page of hers that the victim opened.
    victim = browser(world)
    posted = victim.post(acs, data={"SAMLResponse": b64(saml_idp.response(f"{mallory}@corp.example", acs, entity,
                                                                          None, uid=[mallory]))},
                         headers={"origin": "https://mallory.example"})
    assert posted.status_code == 303 and whoami(victim) is None  # not signed in by the POST
    finish = posted.headers["location"]
    assert finish.startswith("/login/saml/finish?t=")
    page = victim.get(finish)  # what the victim's browser lands on: who they would become, and a button
    assert page.status_code == 200 and f"{mallory}@corp.example" in page.text and whoami(victim) is None
    token = parse_qs(urlsplit(finish).query)["t"][0]
    # The finish itself cannot be forged: no CSRF token, another site's Origin, a bad link.
    assert victim.post("/login/saml/finish", data={"t": token}).status_code == 403
    assert victim.post("/login/saml/finish", data={"t": token, "csrf_token": csrf_of(page.text)},
                       headers={"origin": "https://mallory.example"}).status_code == 403
    assert victim.post("/login/saml/finish", data={"t": token[:-4] + "AAAA", "csrf_token": csrf_of(page.text)}
                       ).status_code == 403
    assert whoami(victim) is None
    assert rows(world, "SELECT count(*) FROM users WHERE name_lower = ?", mallory)[0][0] == 0  # no account made yet
    # The person's own click signs in, once: the same link again is refused.
    me = browser(world)
    confirm = me.get(finish)
    assert me.post("/login/saml/finish", data={"t": token, "csrf_token": csrf_of(confirm.text)}).status_code == 303
    assert whoami(me) == mallory
    again = browser(world)
    second = again.get(finish)
    refused = again.post("/login/saml/finish", data={"t": token, "csrf_token": csrf_of(second.text)})
    assert refused.status_code == 403 and "already used" in refused.text and whoami(again) is None
    assert httpx.get(f"{world.server.url}{finish}", timeout=30).status_code == 200  # a page, not a sign-in
