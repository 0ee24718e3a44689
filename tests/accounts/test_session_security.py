"""Web sessions over HTTP: a new secret at re-authentication (sudo), "sign out everywhere else", and the
flags of the session cookie (HttpOnly, SameSite=Lax, Secure behind an https public URL).
"""

from __future__ import annotations

from http.cookies import SimpleCookie
from pathlib import Path

import httpx
from fastapi.testclient import TestClient

from bastion.accounts import service as accounts
from bastion.api.auth import SESSION_COOKIE
from bastion.app import create_app
from bastion.config import Settings
from bastion.db import transaction
from tests.accounts.fixtures import PASSWORD, age_sign_in, create_password_user, csrf_of, http_login
from tests.conftest import BastionServer

HTML = {"accept": "text/html"}


def _set_cookie(resp: httpx.Response, name: str) -> tuple[str, dict[str, str]]:
    """The value and the attributes (lower-case names) of the cookie `name` set by `resp`."""
    for header in resp.headers.get_list("set-cookie"):
        jar: SimpleCookie = SimpleCookie()
        jar.load(header)
        if name in jar:
            morsel = jar[name]
            attrs = {k.lower(): str(v) for k, v in morsel.items() if v}
            return morsel.value, attrs
    raise AssertionError(f"no Set-Cookie for {name}: {resp.headers.get_list('set-cookie')}")


def _with_cookie(server: BastionServer, secret: str) -> httpx.Client:
    return httpx.Client(base_url=server.url, headers=HTML, cookies={SESSION_COOKIE: secret}, timeout=30)


def test_sudo_rotates_the_session_secret(web_server: BastionServer) -> None:
    name, _ = create_password_user(web_server)
    web = http_login(web_server, name)
    age_sign_in(web_server, name)  # the sign-in is an hour old: changing a second factor asks again
    assert web.get("/settings/two-factor/totp").headers["location"] == "/settings/sudo?next=/settings/two-factor/totp"
    before = web.cookies[SESSION_COOKIE]

    page = web.get("/settings/sudo?next=/settings/two-factor/totp")
    wrong = web.post("/settings/sudo", data={"csrf_token": csrf_of(page.text), "password": "not-my-password-1",
                                             "next": "/settings/two-factor/totp"})
    assert wrong.status_code == 400 and "not correct" in wrong.text
    assert "set-cookie" not in wrong.headers and web.cookies[SESSION_COOKIE] == before  # nothing gained, no rotation

    resp = web.post("/settings/sudo", data={"csrf_token": csrf_of(page.text), "password": PASSWORD,
                                            "next": "/settings/two-factor/totp"})
    assert resp.status_code == 303 and resp.headers["location"] == "/settings/two-factor/totp?m=sudo"
    after, attrs = _set_cookie(resp, SESSION_COOKIE)
    assert after != before and web.cookies[SESSION_COOKIE] == after
    assert "httponly" in attrs and attrs["samesite"].lower() == "lax"

    # The secret from before the privilege change is dead: whoever copied it holds nothing.
    with _with_cookie(web_server, before) as stale:
        assert stale.get("/settings/profile").headers["location"] == "/login?next=/settings/profile"
        assert stale.get("/api/whoami-v2").status_code == 401
        assert stale.get("/settings/two-factor/totp").status_code in (303, 401)
    # The new one carries the fresh re-authentication (and pages rendered before still post: CSRF is
    # bound to the session, not to its secret).
    enroll = web.get("/settings/two-factor/totp")
    assert enroll.status_code == 200 and 'id="totp-secret"' in enroll.text
    assert web.get("/api/whoami-v2").json()["name"] == name
    saved = web.post("/settings/profile", data={"csrf_token": csrf_of(page.text), "fullname": "Still Me"})
    assert saved.status_code == 303


def test_sign_out_everywhere_else(web_server: BastionServer) -> None:
    name, token = create_password_user(web_server)
    here = http_login(web_server, name)
    elsewhere = [http_login(web_server, name) for _ in range(2)]
    page = here.get("/settings/sessions").text
    assert page.count("data-session=") == 3 and 'action="/settings/sessions/revoke-others"' in page

    resp = here.post("/settings/sessions/revoke-others", data={"csrf_token": csrf_of(page)})
    assert resp.status_code == 303 and resp.headers["location"] == "/settings/sessions?m=sessions-revoked"

    for other in elsewhere:
        assert other.get("/settings/profile").headers["location"] == "/login?next=/settings/profile"
        assert other.get("/api/whoami-v2").status_code == 401
    # This browser stays signed in, alone in the list; API tokens are not sessions and keep working.
    page = here.get("/settings/sessions?m=sessions-revoked").text
    assert page.count("data-session=") == 1 and "this browser" in page
    assert "All your other sessions were signed out." in page
    assert here.get("/api/whoami-v2").json()["name"] == name
    assert httpx.get(f"{web_server.url}/api/whoami-v2", headers={"authorization": f"Bearer {token}"}).status_code == 200


def test_session_cookie_flags_over_http(web_server: BastionServer) -> None:
    name, _ = create_password_user(web_server)
    with httpx.Client(base_url=web_server.url, headers=HTML, timeout=30) as client:
        resp = client.post("/login", data={"csrf_token": csrf_of(client.get("/login").text), "login": name,
                                           "password": PASSWORD})
    assert resp.status_code == 303
    _, attrs = _set_cookie(resp, SESSION_COOKIE)
    assert "httponly" in attrs and attrs["samesite"].lower() == "lax"
    assert "secure" not in attrs  # plain http (localhost): a Secure cookie would never come back
    assert "max-age" not in attrs and "expires" not in attrs  # the server enforces the timeouts


def test_session_cookie_is_secure_behind_an_https_public_url(tmp_path: Path) -> None:
    app = create_app(Settings(data_dir=tmp_path, scanners=[], strict_authz=True,
                              public_url="https://hub.example.test"))
    with transaction(app.state.hub.sessions) as s:
        accounts.create_user(s, "secure", "secure@example.com", password=PASSWORD, email_verified=True)
    with TestClient(app, base_url="https://hub.example.test", headers=HTML, follow_redirects=False) as client:
        page = client.get("/login")
        _, csrf_attrs = _set_cookie(page, "bastion_csrf")
        assert "secure" in csrf_attrs and "httponly" in csrf_attrs
        resp = client.post("/login", data={"csrf_token": csrf_of(page.text), "login": "secure",
                                           "password": PASSWORD})
        assert resp.status_code == 303 and resp.headers["location"] == "/"
        for cookie in (SESSION_COOKIE, "bastion_device"):
            _, attrs = _set_cookie(resp, cookie)
            assert "secure" in attrs and "httponly" in attrs and attrs["samesite"].lower() == "lax", (cookie, attrs)
        assert client.get("/api/whoami-v2").json()["name"] == "secure"
        # Signing out clears it with the same flags.
        out = client.post("/logout", data={"csrf_token": csrf_of(client.get("/settings/profile").text)})
        value, attrs = _set_cookie(out, SESSION_COOKIE)
        assert value == "" and "secure" in attrs and attrs["samesite"].lower() == "lax"
