"""Turning on two-factor authentication signs out every other session of the account.

Finding (issue 15, item 7): enabling 2FA left other sessions (perhaps the attacker's, opened with a
stolen password) signed in for up to 14 days. Now adding a second factor ends every web session but
the one that added it; access tokens stay valid (they are not sessions), and the page says both.
Driven from outside: two browser-like httpx clients signed in through the login form, TOTP enrollment
with a real code (pyotp), the session cookie of the other browser, and a token.
"""

from __future__ import annotations

import re

import httpx
import pyotp

from tests.accounts.fixtures import (  # noqa: F401
    MailSink,
    away_from_totp_step_edge,
    create_password_user,
    csrf_of,
    enroll_totp,
    http_login,
    mail_sink,
    web_server,
)
from tests.conftest import BastionServer


def test_enabling_totp_signs_out_other_sessions_but_not_tokens(web_server: BastionServer,  # noqa: F811
                                                                mail_sink: MailSink) -> None:  # noqa: F811
    name, token = create_password_user(web_server)
    here, elsewhere = http_login(web_server, name), http_login(web_server, name)
    assert elsewhere.get("/api/whoami-v2").json()["name"] == name
    before = mail_sink.count()

    _secret, _codes = enroll_totp(here)  # asserts the recovery codes page

    page = here.get("/settings/sessions").text
    assert page.count("data-session=") == 1  # only this browser is left
    assert here.get("/api/whoami-v2").json()["name"] == name
    assert elsewhere.get("/api/whoami-v2").status_code == 401
    assert elsewhere.get("/settings/profile").headers["location"] == "/login?next=/settings/profile"
    resp = httpx.get(f"{web_server.url}/api/whoami-v2", headers={"authorization": f"Bearer {token}"}, timeout=30)
    assert resp.status_code == 200
    mail = mail_sink.wait_for(f"{name}@example.com", "Two-factor authentication added", after=before)
    assert "other sessions were signed out" in str(mail.get_body(("plain",)).get_content())  # type: ignore[union-attr]
    here.close()
    elsewhere.close()


def test_the_page_says_other_sessions_ended_and_tokens_work(web_server: BastionServer) -> None:  # noqa: F811
    name, _token = create_password_user(web_server)
    client = http_login(web_server, name)
    page = client.get("/settings/two-factor/totp")
    secret = re.search(r'id="totp-secret">([A-Z2-7]+)<', page.text).group(1)  # type: ignore[union-attr]
    away_from_totp_step_edge()
    done = client.post("/settings/two-factor/totp", data={"csrf_token": csrf_of(page.text),
                                                          "code": pyotp.TOTP(secret).now()})
    assert done.status_code == 200
    assert "Your other sessions were signed out; access tokens still work" in done.text
    client.close()
