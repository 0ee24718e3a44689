"""The web UI in a real browser: Playwright driving Debian's Chromium against a real server and SMTP sink.

Sign-up with e-mail verification, TOTP enrollment and sign-in, recovery codes, WebAuthn with
Chromium's virtual authenticator, session revocation, and a form post without a CSRF token.
"""

from __future__ import annotations

import re
import secrets
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pyotp
import pytest
import sqlalchemy as sa
from playwright.sync_api import Browser, BrowserContext, Page, sync_playwright

from tests.accounts.fixtures import PASSWORD, MailSink, create_password_user, link_in
from tests.conftest import BastionServer

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        yield b
        b.close()


@pytest.fixture
def context(browser: Browser, web_server: BastionServer) -> Iterator[BrowserContext]:
    ctx = browser.new_context(base_url=web_server.url)
    ctx.set_default_timeout(20_000)
    yield ctx
    ctx.close()


def sign_in(page: Page, login: str, password: str = PASSWORD) -> None:
    page.goto("/login")
    page.get_by_label("Username or e-mail address").fill(login)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()


def sign_out(page: Page) -> None:
    page.get_by_role("button", name="Sign out").click()
    page.wait_for_url(re.compile(r"/login\?m=signed-out"))


def test_signup_verify_totp_and_recovery_code(context: BrowserContext, web_server: BastionServer,
                                              mail_sink: MailSink) -> None:
    page = context.new_page()
    name = f"w{secrets.token_hex(4)}"
    email = f"{name}@example.com"
    page.goto("/join")
    page.get_by_label("Username").fill(name)
    page.get_by_label("E-mail address").fill(email)
    page.get_by_label("Password", exact=True).fill(PASSWORD)
    page.get_by_label("Password again").fill(PASSWORD)
    page.get_by_role("button", name="Create account").click()
    page.wait_for_url(re.compile(r"/settings/emails"))
    assert page.locator(".email-status").inner_text() == "unverified"

    # The verification mail arrives at the SMTP sink; its link verifies the address.
    link = link_in(mail_sink.wait_for(email, "Verify your e-mail"))
    assert link.startswith(web_server.url + "/join/verify?token=")
    page.goto(link)
    page.wait_for_url(re.compile(r"/settings/emails\?m=email-verified"))
    assert page.locator(".email-status").inner_text() == "verified"

    # Enroll TOTP: secret shown as text (and QR), confirmed with a computed code.
    page.goto("/settings/two-factor")
    page.get_by_role("link", name="Set up an authenticator app").click()
    assert page.locator("img[alt^='QR code']").get_attribute("src").startswith("data:image/svg+xml;base64,")
    totp = pyotp.TOTP(page.locator("#totp-secret").inner_text())
    page.get_by_label("Code from the app").fill(totp.now())
    page.get_by_role("button", name="Confirm").click()
    codes = page.locator("#recovery-codes li").all_inner_texts()
    assert len(codes) == 10 and len(set(codes)) == 10
    assert page.get_by_role("link", name="Download the codes").get_attribute("download") == \
        "bastion-recovery-codes.txt"
    mail_sink.wait_for(email, "Two-factor authentication added")

    # Sign out; signing in now asks for the second factor.
    sign_out(page)
    sign_in(page, name)
    page.wait_for_url(re.compile(r"/login/two-factor"))
    page.get_by_label("Six-digit code from your app").fill("000000")
    page.get_by_role("button", name="Verify").click()
    assert "not valid" in page.locator("#form-error").inner_text()
    # The enrollment code's step is spent; the next step's code (inside the ±1 window) is not.
    page.get_by_label("Six-digit code from your app").fill(totp.at(time.time() + 30))
    page.get_by_role("button", name="Verify").click()
    page.wait_for_url(re.compile(rf"/{name}$"))
    assert page.get_by_role("link", name="Settings").is_visible()

    # Sign out and sign in with a recovery code instead.
    sign_out(page)
    sign_in(page, email)
    page.wait_for_url(re.compile(r"/login/two-factor"))
    page.get_by_role("link", name=re.compile("Use a recovery code")).click()
    page.get_by_label("Recovery code").fill(codes[3])
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(re.compile(rf"/{name}$"))
    mail_sink.wait_for(email, "A recovery code was used")
    page.goto("/settings/two-factor")
    assert page.locator("#recovery-left").inner_text().startswith("9 ")

    # The same recovery code does not work twice.
    sign_out(page)
    sign_in(page, name)
    page.goto("/login/recovery")
    page.get_by_label("Recovery code").fill(codes[3])
    page.get_by_role("button", name="Sign in").click()
    assert "not valid" in page.locator("#form-error").inner_text()


def test_webauthn_key_enrollment_and_sign_in(context: BrowserContext, web_server: BastionServer,
                                             mail_sink: MailSink) -> None:
    name, _ = create_password_user(web_server)
    page = context.new_page()
    cdp = context.new_cdp_session(page)
    cdp.send("WebAuthn.enable", {"enableUI": False})
    cdp.send("WebAuthn.addVirtualAuthenticator", {"options": {
        "protocol": "ctap2", "transport": "usb", "hasResidentKey": True, "hasUserVerification": True,
        "isUserVerified": True, "automaticPresenceSimulation": True}})
    sign_in(page, name)
    page.wait_for_url(re.compile(rf"/{name}$"))

    page.goto("/settings/two-factor/webauthn")
    page.get_by_label("Name for this key").fill("Virtual key")
    page.get_by_role("button", name="Register key").click()
    page.get_by_role("heading", name="Your recovery codes").wait_for()
    assert len(page.locator("#recovery-codes li").all_inner_texts()) == 10
    page.goto("/settings/two-factor")
    assert "Virtual key" in page.locator("#keys").inner_text()
    mail_sink.wait_for(f"{name}@example.com", "Security key added")

    sign_out(page)
    sign_in(page, name)
    page.wait_for_url(re.compile(r"/login/two-factor"))
    assert page.locator("#totp-heading").count() == 0  # only the factor the user has is offered
    page.get_by_role("button", name="Use your security key").click()
    page.wait_for_url(re.compile(rf"/{name}$"))
    page.goto("/settings/sessions")
    assert page.locator("#sessions").is_visible()
    # Both are audited (tests/audit/test_completeness.py relies on this): the key added, the sign-in with it.
    engine = sa.create_engine(f"sqlite:///{web_server.data_dir / 'bastion.sqlite3'}")
    with engine.connect() as conn:
        actions = [r.action for r in conn.execute(sa.text(
            "SELECT action FROM audit_events WHERE actor_name = :n OR target_id = :n OR namespace = :n ORDER BY id"),
            {"n": name})]
    engine.dispose()
    assert "user.2fa.webauthn_add" in actions and actions.count("user.login") >= 2


def test_second_factor_changes_need_recent_password(context: BrowserContext, web_server: BastionServer) -> None:
    name, _ = create_password_user(web_server)
    page = context.new_page()
    sign_in(page, name)
    page.wait_for_url(re.compile(rf"/{name}$"))
    # Age the sign-in past the sudo window, as if the browser had been left open for an hour.
    engine = sa.create_engine(f"sqlite:///{web_server.data_dir / 'bastion.sqlite3'}")
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE web_sessions SET authenticated_at = :t WHERE user_id = "
                             "(SELECT id FROM users WHERE name = :n)"),
                     {"t": datetime.now(UTC) - timedelta(hours=1), "n": name})
    engine.dispose()
    page.goto("/settings/two-factor/totp")
    page.wait_for_url(re.compile(r"/settings/sudo\?next=/settings/two-factor/totp"))
    page.get_by_label("Password").fill("not my password")
    page.get_by_role("button", name="Confirm").click()
    assert "not correct" in page.locator("#form-error").inner_text()
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Confirm").click()
    page.wait_for_url(re.compile(r"/settings/two-factor/totp\?m=sudo"))
    assert page.locator("#totp-secret").is_visible()


def test_revoking_another_session_signs_it_out(browser: Browser, web_server: BastionServer) -> None:
    name, _ = create_password_user(web_server)
    first = browser.new_context(base_url=web_server.url, user_agent="Mozilla/5.0 (X11; Linux x86_64) Firefox/140.0")
    second = browser.new_context(base_url=web_server.url)
    try:
        a, b = first.new_page(), second.new_page()
        for page in (a, b):
            sign_in(page, name)
            page.wait_for_url(re.compile(rf"/{name}$"))
        a.goto("/settings/sessions")
        rows = a.locator("#sessions tbody tr")
        assert rows.count() == 2
        other = a.locator("#sessions tbody tr", has_not_text="this browser")
        assert "Chrom" in other.inner_text()
        other.get_by_role("button", name="Revoke").click()
        a.wait_for_url(re.compile(r"m=session-revoked"))
        assert a.locator("#sessions tbody tr").count() == 1
        b.goto("/settings/profile")
        b.wait_for_url(re.compile(r"/login\?next=/settings/profile"))
        a.goto("/settings/profile")
        assert a.get_by_label("Full name").is_visible()
    finally:
        first.close()
        second.close()


def test_form_post_without_csrf_token_is_rejected(context: BrowserContext, web_server: BastionServer) -> None:
    name, _ = create_password_user(web_server)
    page = context.new_page()
    sign_in(page, name)
    page.wait_for_url(re.compile(rf"/{name}$"))
    page.goto("/settings/profile")
    # Same form, same cookies, no token: what a cross-site page could send.
    page.evaluate("""() => {
        const f = document.querySelector('form[action="/settings/profile"]');
        f.querySelector('input[name=csrf_token]').remove();
        f.querySelector('input[name=fullname]').value = 'Hijacked';
        f.submit();
    }""")
    page.wait_for_load_state()
    assert "CSRF" in page.locator("#error-message").inner_text()
    page.goto("/settings/profile")
    assert page.get_by_label("Full name").input_value() != "Hijacked"
    # With its token the same form works.
    page.get_by_label("Full name").fill("Renamed Person")
    page.get_by_role("button", name="Save").click()
    page.wait_for_url(re.compile(r"m=profile-saved"))
    assert page.get_by_label("Full name").input_value() == "Renamed Person"
