"""Brute-force limits over HTTP (bastion/accounts/ratelimit.py): recovery codes per account, TOTP codes per
address, password-reset requests per address and per e-mail. Each answers "Too many attempts. Try again in
N minutes." once exhausted, and never touches the account's API tokens.

Their own server behind a trusted "proxy" (loopback), so each test can speak from its own client addresses
(X-Forwarded-For) and per-address limits spent here cannot trip the shared web server's other tests.
"""

from __future__ import annotations

import itertools
import re
import time
from collections.abc import Iterator

import httpx
import pyotp
import pytest

from tests.accounts.fixtures import (
    PASSWORD,
    MailSink,
    create_password_user,
    csrf_of,
    enroll_totp,
    http_login,
)
from tests.conftest import BastionServer

HTML = {"accept": "text/html"}


@pytest.fixture(scope="module")
def limits_server(tmp_path_factory: pytest.TempPathFactory, mail_sink: MailSink) -> Iterator[BastionServer]:
    server = BastionServer(tmp_path_factory.mktemp("limits"), env={
        "BASTION_SMTP_URL": f"smtp://127.0.0.1:{mail_sink.port}", "BASTION_SCANNERS": "[]",
        "BASTION_TRUSTED_PROXIES": '["127.0.0.1/32"]'})
    server.start()
    yield server
    server.stop()


_addresses = itertools.count(1)


def _address() -> str:
    """A client address not used before on this server, so its per-address counts start at zero."""
    n = next(_addresses)
    return f"198.18.{n // 250}.{n % 250 + 1}"


def _from(ip: str) -> dict[str, str]:
    return {"x-forwarded-for": ip}


def _password_step(server: BastionServer, name: str, ip: str) -> tuple[httpx.Client, str]:
    """A browser that passed the password and now owes the second factor: (client, its CSRF token)."""
    client = httpx.Client(base_url=server.url, headers=HTML, timeout=30)
    token = csrf_of(client.get("/login", headers=_from(ip)).text)
    resp = client.post("/login", data={"csrf_token": token, "login": name, "password": PASSWORD}, headers=_from(ip))
    assert resp.status_code == 303 and resp.headers["location"].startswith("/login/two-factor"), resp.text[:300]
    return client, token


def _wrong_code(secret: str) -> str:
    valid = {pyotp.TOTP(secret).at(time.time() + k * 30) for k in range(-2, 3)}
    return next(c for c in ("000000", "111111", "222222", "333333", "444444", "555555") if c not in valid)


def _token_works(server: BastionServer, name: str, token: str) -> bool:
    who = httpx.get(f"{server.url}/api/whoami-v2", headers={"authorization": f"Bearer {token}"})
    return who.status_code == 200 and who.json()["name"] == name


def _too_many(resp: httpx.Response, minutes: str) -> bool:
    return resp.status_code == 429 and re.search(rf"Too many attempts\. Try again in ({minutes}) minutes\.",
                                                 resp.text) is not None


def test_recovery_codes_are_limited_per_account(limits_server: BastionServer) -> None:
    server = limits_server
    name, token = create_password_user(server)
    web = http_login(server, name)
    _, codes = enroll_totp(web)
    client, csrf = _password_step(server, name, _address())
    # Five wrong codes, each from another address: the count is the account's (5 an hour).
    for _ in range(5):
        resp = client.post("/login/recovery", data={"csrf_token": csrf, "code": "aaaa-bbbb-cccc-dddd"},
                           headers=_from(_address()))
        assert resp.status_code == 400 and "That recovery code is not valid" in resp.text
    # Now even a right code is turned away (and not spent), from any address.
    resp = client.post("/login/recovery", data={"csrf_token": csrf, "code": codes[0]}, headers=_from(_address()))
    assert _too_many(resp, "59|60"), resp.text[:500]
    assert 'id="form-error"' in resp.text  # shown on the recovery form itself
    assert client.get("/api/whoami-v2").status_code == 401  # not signed in
    # The lockout shuts the browser door only: the account's API token keeps working, and the
    # signed-in browser still sees all ten codes unused.
    assert _token_works(server, name, token)
    assert "10 unused recovery codes left." in web.get("/settings/two-factor").text


def test_totp_codes_are_limited_per_address(limits_server: BastionServer) -> None:
    server = limits_server
    users = [create_password_user(server) for _ in range(4)]
    keys = [enroll_totp(http_login(server, name))[0] for name, _ in users]
    attacker = _address()
    # 3 accounts x 10 wrong codes from one address: each account reaches its own limit (10 per 15 minutes)
    # and the address reaches its limit (30 per 15 minutes).
    for (name, _), key in zip(users[:3], keys[:3], strict=True):
        client, csrf = _password_step(server, name, attacker)
        for _ in range(10):
            resp = client.post("/login/two-factor", data={"csrf_token": csrf, "code": _wrong_code(key)},
                               headers=_from(attacker))
            assert resp.status_code == 400 and "That code is not valid" in resp.text
    # A fourth account, untouched so far, with its right code: refused, because of the address.
    name, token = users[3]
    client, csrf = _password_step(server, name, attacker)
    code = pyotp.TOTP(keys[3]).now()
    resp = client.post("/login/two-factor", data={"csrf_token": csrf, "code": code}, headers=_from(attacker))
    assert _too_many(resp, "14|15"), resp.text[:500]
    # The same code from the owner's own address signs in: the limit was the address's, not this account's.
    resp = client.post("/login/two-factor", data={"csrf_token": csrf, "code": code}, headers=_from(_address()))
    assert resp.status_code == 303 and resp.headers["location"] == "/"
    assert client.get("/api/whoami-v2").json()["name"] == name
    # An account that reached its own limit is refused from anywhere; its API token still works.
    name, token = users[0]
    client, csrf = _password_step(server, name, _address())
    resp = client.post("/login/two-factor", data={"csrf_token": csrf, "code": pyotp.TOTP(keys[0]).now()},
                       headers=_from(_address()))
    assert _too_many(resp, "14|15"), resp.text[:500]
    assert _token_works(server, name, token)


def _forgot(server: BastionServer, email: str, ip: str) -> httpx.Response:
    with httpx.Client(base_url=server.url, headers=HTML, timeout=30) as client:
        page = client.get("/login/forgot", headers=_from(ip))
        return client.post("/login/forgot", data={"csrf_token": csrf_of(page.text), "email": email},
                           headers=_from(ip))


def _reset_mails(sink: MailSink, to: str) -> int:
    return sum(1 for subject in sink.subjects_to(to) if "Reset your password" in subject)


def test_password_reset_requests_are_limited(limits_server: BastionServer, mail_sink: MailSink) -> None:
    server = limits_server
    name, token = create_password_user(server)
    email = f"{name}@example.com"
    # Per address requested: three an hour, whoever asks.
    for _ in range(3):
        resp = _forgot(server, email, _address())
        assert resp.status_code == 200 and 'id="reset-sent"' in resp.text
    refused = _forgot(server, email, _address())
    assert _too_many(refused, "59|60"), refused.text[:500]
    assert 'id="reset-sent"' not in refused.text
    # Per client address: ten an hour, whatever they ask for (unknown addresses count the same).
    ip = _address()
    for i in range(10):
        assert _forgot(server, f"nobody{i}-{name}@example.com", ip).status_code == 200
    assert _too_many(_forgot(server, f"{name}.other@example.com", ip), "59|60")
    assert _forgot(server, f"{name}.other@example.com", _address()).status_code == 200
    # Exactly three links went out, and the account's token is untouched by any of it.
    deadline = time.monotonic() + 20
    while _reset_mails(mail_sink, email) < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)
    assert _reset_mails(mail_sink, email) == 3
    assert _token_works(server, name, token)
