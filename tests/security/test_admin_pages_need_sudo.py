"""Instance administration from a browser needs a recent password confirmation (sudo mode), as account
security does. Found: the instance SSO page (`/admin/sso`, which can switch the whole instance to "SSO only" or
point its sign-in at another identity provider) accepted any live administrator session, however old its
sign-in: a tab left open was enough. Tokens are not asked (they cannot re-authenticate; the API route stays).
"""

from __future__ import annotations

from urllib.parse import urlsplit

import httpx

from tests.accounts.fixtures import PASSWORD, age_sign_in, csrf_of, http_login, mail_sink, web_server  # noqa: F401
from tests.conftest import BastionServer


def test_the_instance_sso_page_needs_sudo_in_a_browser(web_server: BastionServer) -> None:  # noqa: F811
    name, token = web_server.create_user(admin=True, password=PASSWORD)
    browser = http_login(web_server, name)
    browser.headers["origin"] = web_server.url
    page = browser.get("/admin/sso")
    assert page.status_code == 200  # just signed in: inside the window
    csrf = csrf_of(page.text)
    age_sign_in(web_server, name)  # the tab was left open
    gone = browser.get("/admin/sso")
    assert gone.status_code == 303 and urlsplit(gone.headers["location"]).path == "/settings/sudo"
    posted = browser.post("/admin/sso/disable", data={"csrf_token": csrf})
    assert posted.status_code == 303 and gone.headers["location"] == "/settings/sudo?next=/admin/sso"
    assert posted.headers["location"] == "/settings/sudo?next=/admin/sso"
    # Confirming the password opens the window again.
    sudo_page = browser.get("/settings/sudo?next=/admin/sso")
    confirmed = browser.post("/settings/sudo", data={"csrf_token": csrf_of(sudo_page.text), "password": PASSWORD,
                                                     "next": "/admin/sso"})
    assert confirmed.status_code == 303 and confirmed.headers["location"].startswith("/admin/sso")
    assert browser.get("/admin/sso").status_code == 200
    # An administrator's token still reads the settings through the API (no browser, no sudo).
    api = httpx.get(f"{web_server.url}/api/admin/sso", headers={"authorization": f"Bearer {token}"}, timeout=30)
    assert api.status_code == 200, api.text
