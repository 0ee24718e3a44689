"""Fixtures for accounts and web tests: a real SMTP server on loopback (aiosmtpd) and a Bastion
server that sends its mail there, with open sign-up and a localhost public URL (WebAuthn needs a host name).
"""

from __future__ import annotations

import email
import email.policy
import re
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from email.message import EmailMessage
from pathlib import Path

import httpx
import pyotp
import pytest
import sqlalchemy as sa
from aiosmtpd.controller import Controller
from sqlalchemy.orm import Session

from bastion.accounts.models import User, WebSession
from bastion.db import make_engine, utcnow
from tests.conftest import BastionServer, free_port

PASSWORD = "violet-harbor-lantern-42"


class MailSink:
    """Every message the server sends, in arrival order."""

    def __init__(self) -> None:
        self.messages: list[EmailMessage] = []
        self._lock = threading.Lock()
        self.port = free_port()
        self.controller = Controller(self, hostname="127.0.0.1", port=self.port)

    async def handle_DATA(self, server: object, session: object, envelope: object) -> str:  # noqa: N802
        msg = email.message_from_bytes(envelope.content, policy=email.policy.default)  # type: ignore[attr-defined]
        with self._lock:
            self.messages.append(msg)  # type: ignore[arg-type]
        return "250 OK"

    def wait_for(self, to: str, subject_part: str, timeout: float = 20, after: int = 0) -> EmailMessage:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                for msg in self.messages[after:]:
                    if to.lower() in str(msg["To"]).lower() and subject_part.lower() in str(msg["Subject"]).lower():
                        return msg
            time.sleep(0.05)
        subjects = [(str(m["To"]), str(m["Subject"])) for m in self.messages]
        raise AssertionError(f"no mail to {to} about {subject_part!r}; got {subjects}")

    def count(self) -> int:
        with self._lock:
            return len(self.messages)

    def subjects_to(self, to: str) -> list[str]:
        with self._lock:
            return [str(m["Subject"]) for m in self.messages if to.lower() in str(m["To"]).lower()]


def body(msg: EmailMessage) -> str:
    part = msg.get_body(("plain",))
    assert part is not None
    return str(part.get_content())


def link_in(msg: EmailMessage) -> str:
    found = re.search(r"https?://\S+", body(msg))
    assert found, body(msg)
    return found.group(0)


@pytest.fixture(scope="session")
def mail_sink() -> Iterator[MailSink]:
    sink = MailSink()
    sink.controller.start()
    yield sink
    sink.controller.stop()


@pytest.fixture(scope="session")
def web_server(tmp_path_factory: pytest.TempPathFactory, mail_sink: MailSink) -> Iterator[BastionServer]:
    data: Path = tmp_path_factory.mktemp("bastion-web")
    server = BastionServer(data, env={"BASTION_SIGNUP": "open", "BASTION_SMTP_URL": f"smtp://127.0.0.1:{mail_sink.port}"})
    # Browsers refuse WebAuthn on an IP address; localhost is a secure context over plain http.
    server.url = f"http://localhost:{server.port}"
    server.env["BASTION_PUBLIC_URL"] = server.url
    server.start()
    yield server
    server.stop()


def create_password_user(server: BastionServer, password: str = PASSWORD) -> tuple[str, str]:
    """A user made by an administrator with a password (e-mail verified) and a write token: (name, token);
    the service calls of `bastion admin create-user --password-stdin` (tested through the CLI in
    tests/test_cli.py), made in this process."""
    return server.create_user(password=password, token_name="t")


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert found, html[:500]
    return found.group(1)


def http_login(server: BastionServer, name: str, password: str = PASSWORD) -> httpx.Client:
    """An httpx client signed in through the login form (no second factor)."""
    client = httpx.Client(base_url=server.url, headers={"accept": "text/html"}, timeout=30)
    token = csrf_of(client.get("/login").text)
    resp = client.post("/login", data={"csrf_token": token, "login": name, "password": password})
    assert resp.status_code == 303 and resp.headers["location"] == "/", resp.text[:500]
    return client


def session_db(server: BastionServer) -> sa.Engine:
    """The server's SQLite database, for a test to look at (or to age a session) directly."""
    return make_engine(f"sqlite:///{server.data_dir / 'bastion.sqlite3'}")


def age_sign_in(server: BastionServer, name: str, by: timedelta = timedelta(hours=1)) -> None:
    """Move every sign-in of `name` back in time, past the sudo window (as if the tab was left open)."""
    engine = session_db(server)
    with Session(engine) as db, db.begin():
        user_id = db.scalar(sa.select(User.id).where(User.name == name))
        db.execute(sa.update(WebSession).where(WebSession.user_id == user_id)
                   .values(authenticated_at=utcnow() - by))
    engine.dispose()


def away_from_totp_step_edge(margin: float = 2.0) -> None:
    """Sleep past the next 30 s TOTP step boundary when it is less than `margin` seconds away, so a
    test that computes codes relative to "now" is not flipped by the step changing under it."""
    left = 30 - time.time() % 30
    if left < margin:
        time.sleep(left + 0.05)


def enroll_totp(client: httpx.Client) -> tuple[str, list[str]]:
    """Set up an authenticator app for a signed-in client (recently authenticated): (TOTP key, recovery codes).

    Confirmed with the previous time step's code, so the current step's code still signs in afterwards.
    """
    page = client.get("/settings/two-factor/totp")
    assert page.status_code == 200, page.text[:500]
    found = re.search(r'id="totp-secret">([A-Z2-7]+)<', page.text)
    assert found, page.text[:500]
    secret = found.group(1)
    away_from_totp_step_edge()  # the previous step's code must still be inside the window when checked
    resp = client.post("/settings/two-factor/totp", data={"csrf_token": csrf_of(page.text),
                                                          "code": pyotp.TOTP(secret).at(time.time() - 30)})
    assert resp.status_code == 200 and 'id="recovery-codes"' in resp.text, resp.text[:500]
    codes = re.findall(r"<li><code>([a-z2-7-]+)</code></li>", resp.text)
    assert len(codes) == 10
    return secret, codes
