"""Checks that no test used to exercise (issue 15, "Test gaps to close"): each test here fails when the
check it names is broken in a copy of the code, which an earlier mutation run showed went unnoticed.

- TOTP enrollment (`twofactor.enable_totp`) must refuse a well-formed 6-digit code that is wrong.
- The sudo password check and the password change are rate limited per account (`ratelimit`): after
  the limit, even the right password is refused.
- The Origin check of form posts (`pages.check_csrf`): a form posted from another site is refused even
  with a valid CSRF token, where no session cookie brings the API's cross-site check into play (sign-in).

Driven from outside: a real server and a browser-like httpx client posting the forms.
"""

from __future__ import annotations

import random
import re
import time

import httpx
import pyotp

from tests.accounts.fixtures import (  # noqa: F401
    PASSWORD,
    age_sign_in,
    create_password_user,
    csrf_of,
    http_login,
    mail_sink,
    web_server,
)
from tests.conftest import BastionServer

LIMIT = 10  # ratelimit.LOGIN_PER_ACCOUNT.attempts


def _wrong_code(secret: str, rng: random.Random) -> str:
    """A well-formed code valid in none of the steps around now (±2 steps: the server's window is ±1)."""
    totp, now = pyotp.TOTP(secret), time.time()
    valid = {totp.at(now + 30 * k) for k in range(-2, 3)}
    while True:
        code = f"{rng.randrange(10**6):06d}"
        if code not in valid:
            return code


def test_totp_enrollment_refuses_a_wrong_well_formed_code(web_server: BastionServer) -> None:  # noqa: F811
    rng = random.Random(1501)
    name, _token = create_password_user(web_server)
    client = http_login(web_server, name)
    page = client.get("/settings/two-factor/totp")
    secret = re.search(r'id="totp-secret">([A-Z2-7]+)<', page.text).group(1)  # type: ignore[union-attr]
    for _ in range(3):
        resp = client.post("/settings/two-factor/totp",
                           data={"csrf_token": csrf_of(page.text), "code": _wrong_code(secret, rng)})
        assert resp.status_code == 400 and "not valid for this key" in resp.text, resp.text[:300]
    overview = client.get("/settings/two-factor").text
    assert 'href="/settings/two-factor/totp">Set up an authenticator app' in overview  # still not enrolled
    client.close()


def test_sudo_password_check_is_rate_limited(web_server: BastionServer) -> None:  # noqa: F811
    name, _token = create_password_user(web_server)
    client = http_login(web_server, name)
    age_sign_in(web_server, name)
    csrf = csrf_of(client.get("/settings/sudo").text)
    for i in range(LIMIT):
        resp = client.post("/settings/sudo", data={"csrf_token": csrf, "password": f"wrong-{i}",
                                                   "next": "/settings/keys"})
        assert resp.status_code == 400, (i, resp.status_code)
    locked = client.post("/settings/sudo", data={"csrf_token": csrf, "password": PASSWORD, "next": "/settings/keys"})
    assert locked.status_code == 429 and "Too many attempts" in locked.text
    # Still not in sudo mode: a sensitive change is sent to confirm the password.
    page = client.get("/settings/emails").text
    resp = client.post("/settings/emails", data={"csrf_token": csrf_of(page), "email": f"{name}.x@example.com"})
    assert resp.status_code == 303 and resp.headers["location"].startswith("/settings/sudo")
    client.close()


def test_password_change_is_rate_limited(web_server: BastionServer) -> None:  # noqa: F811
    name, _token = create_password_user(web_server)
    client = http_login(web_server, name)
    csrf = csrf_of(client.get("/settings/password").text)
    new = "a-completely-new-passphrase-9"
    for i in range(LIMIT):
        resp = client.post("/settings/password", data={"csrf_token": csrf, "current_password": f"wrong-{i}",
                                                       "password": new, "password_confirm": new})
        assert resp.status_code == 400 and "current password is not correct" in resp.text, (i, resp.status_code)
    locked = client.post("/settings/password", data={"csrf_token": csrf, "current_password": PASSWORD,
                                                     "password": new, "password_confirm": new})
    assert locked.status_code == 429 and "Too many attempts" in locked.text
    # The account's sign-in counter is the same one: sign-in is locked too until the window passes.
    page = client.get("/settings/password")
    assert page.status_code == 200  # this session is still signed in; nothing was changed
    client.close()


def test_form_post_from_another_site_is_refused_despite_a_valid_token(web_server: BastionServer) -> None:  # noqa: F811
    name, _token = create_password_user(web_server)
    with httpx.Client(base_url=web_server.url, headers={"accept": "text/html"}, timeout=30) as client:
        csrf = csrf_of(client.get("/login").text)  # a pre-session CSRF cookie and its token
        forged = client.post("/login", data={"csrf_token": csrf, "login": name, "password": PASSWORD},
                             headers={"origin": "https://evil.example"})
        assert forged.status_code == 403 and "Origin mismatch" in forged.text, forged.status_code
        assert "bastion_session" not in forged.cookies
        same_site = client.post("/login", data={"csrf_token": csrf, "login": name, "password": PASSWORD},
                                headers={"origin": web_server.url})
        assert same_site.status_code == 303  # the same post from our own page signs in
