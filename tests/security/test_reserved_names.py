"""Names that speak for the instance cannot be registered, as a user or as an organization.

Finding (issue 15, item 8a): usernames `Bastion` and `bastion-instance` could be registered, so a
commit badge or profile could read "Signed by Bastion". Reserved now: bastion, bastion-instance, admin,
root, administrator, system, support, security (and mailbox names), compared case-insensitively with
'-', '_' and '.' ignored; route names (api, settings, ...) stay reserved. Driven from outside: the
sign-up form, `bastion admin create-user`, and the organizations API.
"""

from __future__ import annotations

import httpx
import pytest

from tests.accounts.fixtures import PASSWORD, create_password_user, csrf_of, mail_sink, web_server  # noqa: F401
from tests.conftest import BastionServer

RESERVED = ["Bastion", "bastion-instance", "Bastion_Instance", "BASTION.INSTANCE", "bastion-team", "admin", "Ad-min",
            "root", "administrator", "system", "support", "security", "api", "settings"]


def _join(server: BastionServer, name: str) -> httpx.Response:
    with httpx.Client(base_url=server.url, headers={"accept": "text/html", "origin": server.url},
                      timeout=30) as client:
        token = csrf_of(client.get("/join").text)
        return client.post("/join", data={"csrf_token": token, "name": name, "email": f"{name.lower()}@example.net",
                                          "password": PASSWORD, "password_confirm": PASSWORD})


@pytest.mark.parametrize("name", RESERVED)
def test_reserved_names_cannot_sign_up(web_server: BastionServer, name: str) -> None:  # noqa: F811
    resp = _join(web_server, name)
    assert resp.status_code == 400, (resp.status_code, resp.text[:300])
    assert "is reserved" in resp.text


def test_reserved_names_for_admins_and_orgs(web_server: BastionServer) -> None:  # noqa: F811
    made = web_server.cli("admin", "create-user", "Bastion", "--email", "bastion@example.com", check=False)
    assert made.returncode != 0 and "is reserved" in made.stderr, made.stderr
    owner, token = create_password_user(web_server)
    for name in ("bastion", "Bastion-Instance", "security", "root"):
        resp = httpx.post(f"{web_server.url}/api/organizations", json={"name": name},
                          headers={"authorization": f"Bearer {token}"}, timeout=30)
        assert resp.status_code == 400 and "is reserved" in resp.json()["error"], resp.text
    # Ordinary names that merely contain the word are fine.
    assert _join(web_server, f"bastionfan{owner[1:5]}").status_code == 303
    ok = httpx.post(f"{web_server.url}/api/organizations", json={"name": f"sec-team-{owner[1:5]}"},
                    headers={"authorization": f"Bearer {token}"}, timeout=30)
    assert ok.status_code == 201, ok.text
