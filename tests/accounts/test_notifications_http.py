"""Security notices by e-mail over HTTP: a sign-in from a new device, and removing the authenticator app
(which needs a recent password, is audited, and takes the recovery codes with it when it was the last factor).
"""

from __future__ import annotations

import time
from email.message import EmailMessage

import httpx
import sqlalchemy as sa

from tests.accounts.fixtures import (
    PASSWORD,
    MailSink,
    age_sign_in,
    body,
    create_password_user,
    csrf_of,
    enroll_totp,
    http_login,
    session_db,
)
from tests.conftest import BastionServer

FIREFOX_LINUX = "Mozilla/5.0 (X11; Linux x86_64; rv:140.0) Gecko/20100101 Firefox/140.0"
CHROME_WINDOWS = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/138.0 Safari/537.36"


def _sign_in(server: BastionServer, name: str, user_agent: str, device: str | None = None) -> httpx.Client:
    cookies = {"bastion_device": device} if device else None
    client = httpx.Client(base_url=server.url, headers={"accept": "text/html", "user-agent": user_agent},
                          cookies=cookies, timeout=30)
    resp = client.post("/login", data={"csrf_token": csrf_of(client.get("/login").text), "login": name,
                                       "password": PASSWORD})
    assert resp.status_code == 303 and resp.headers["location"] == "/", resp.text[:500]
    return client


def _mails(sink: MailSink, to: str, subject: str) -> list[EmailMessage]:
    return [m for m in list(sink.messages) if to in str(m["To"]) and subject in str(m["Subject"])]


def test_sign_in_from_a_new_device_is_mailed_once(web_server: BastionServer, mail_sink: MailSink) -> None:
    name, _ = create_password_user(web_server)
    email = f"{name}@example.com"
    http_login(web_server, name)  # the account's first device ever: nothing to warn about
    firefox = _sign_in(web_server, name, FIREFOX_LINUX)  # a new device
    notice = mail_sink.wait_for(email, "New sign-in to your account")
    text = body(notice)
    assert "Firefox on Linux" in text and "IP address: 127.0.0.1" in text
    # The same browser again (it kept its device cookie): no notice. Then another new device: a notice.
    # Mail leaves in order, so once the second notice is here, a notice for the known device would be too.
    _sign_in(web_server, name, FIREFOX_LINUX, device=firefox.cookies["bastion_device"])
    _sign_in(web_server, name, CHROME_WINDOWS)
    deadline = time.monotonic() + 20
    while len(_mails(mail_sink, email, "New sign-in")) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)
    notices = [body(m) for m in _mails(mail_sink, email, "New sign-in")]
    assert len(notices) == 2, notices
    assert "Firefox on Linux" in notices[0] and "Chrome on Windows" in notices[1]


def _audit(server: BastionServer, action: str, name: str) -> list[tuple[str | None, str | None]]:
    engine = session_db(server)
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT ip, user_agent FROM audit_events WHERE action = :a AND "
                                    "namespace = :n ORDER BY id"), {"a": action, "n": name}).all()
    engine.dispose()
    return [tuple(r) for r in rows]  # type: ignore[misc]


def _recovery_codes(server: BastionServer, name: str) -> int:
    engine = session_db(server)
    with engine.connect() as conn:
        count = conn.execute(sa.text("SELECT count(*) FROM recovery_codes WHERE user_id = "
                                     "(SELECT id FROM users WHERE name = :n)"), {"n": name}).scalar_one()
    engine.dispose()
    return int(count)


def test_removing_the_authenticator_app(web_server: BastionServer, mail_sink: MailSink) -> None:
    name, token = create_password_user(web_server)
    email = f"{name}@example.com"
    web = http_login(web_server, name)
    enroll_totp(web)
    mail_sink.wait_for(email, "Two-factor authentication added")
    assert _recovery_codes(web_server, name) == 10

    # An hour later, removing it asks for the password first.
    age_sign_in(web_server, name)
    page = web.get("/settings/two-factor").text
    assert "asks for your password first" in page
    denied = web.post("/settings/two-factor/totp/delete", data={"csrf_token": csrf_of(page)})
    assert denied.status_code == 303 and denied.headers["location"] == "/settings/sudo?next=/settings/two-factor"
    assert 'id="totp-status">Enabled.' in web.get("/settings/two-factor").text
    assert _audit(web_server, "user.2fa.totp_remove", name) == []
    sudo = web.get("/settings/sudo?next=/settings/two-factor").text
    resp = web.post("/settings/sudo", data={"csrf_token": csrf_of(sudo), "password": PASSWORD,
                                            "next": "/settings/two-factor"})
    assert resp.status_code == 303

    before = mail_sink.count()
    page = web.get("/settings/two-factor").text
    resp = web.post("/settings/two-factor/totp/delete", data={"csrf_token": csrf_of(page)})
    assert resp.status_code == 303 and resp.headers["location"] == "/settings/two-factor?m=totp-removed"
    notice = mail_sink.wait_for(email, "Two-factor authentication removed", after=before)
    assert "authenticator app (TOTP) was removed" in body(notice)
    [(ip, agent)] = _audit(web_server, "user.2fa.totp_remove", name)
    assert ip == "127.0.0.1" and agent is not None and agent.startswith("python-httpx/")
    # It was the only factor: the recovery codes went with it, and the password alone signs in again.
    assert _recovery_codes(web_server, name) == 0
    page = web.get("/settings/two-factor?m=totp-removed").text
    assert 'id="totp-status">Not set up.' in page and "recovery-left" not in page
    http_login(web_server, name)
    assert httpx.get(f"{web_server.url}/api/whoami-v2", headers={"authorization": f"Bearer {token}"}).status_code == 200
