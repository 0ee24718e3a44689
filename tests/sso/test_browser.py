"""The SSO flow in Debian's Chromium (headless): a member opens a private org repo page, is sent to the org's
SSO login, through the real OpenID provider, and back to the page; the admin's settings page."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, expect, sync_playwright

from tests.accounts.fixtures import PASSWORD
from tests.sso.conftest import SsoWorld
from tests.sso.test_oidc import claims_of, org_with_private_repo

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        yield b
        b.close()


def test_member_is_sent_through_the_idp_and_back(browser: Browser, sso_world: SsoWorld) -> None:
    world = sso_world
    org, admin, _t, repo_id = org_with_private_repo(world)
    member, _ = world.user()
    world.add_member(org, member, "read")
    assert world.configure(org, role_claim="groups", role_map="staff=read,leads=admin") == ""
    ctx = browser.new_context(base_url=world.server.url)
    ctx.set_default_timeout(20_000)
    page = ctx.new_page()
    page.goto("/login")
    page.get_by_label("Username or e-mail address").fill(member)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("button", name="Sign out")).to_be_visible()
    world.idp.next_login(f"sub-{member}", **claims_of(member, groups=["staff"]))
    page.goto(f"/{repo_id}")  # → SSO login → IdP → consume → the repo page
    page.wait_for_url(f"{world.server.url}/{repo_id}")
    expect(page.get_by_text("private-model").first).to_be_visible()
    ctx.close()

    # The admin's SSO settings page (after the admin's own SSO sign-in).
    ctx = browser.new_context(base_url=world.server.url, viewport={"width": 1100, "height": 1400})
    ctx.set_default_timeout(20_000)
    page = ctx.new_page()
    page.goto("/login")
    page.get_by_label("Username or e-mail address").fill(admin)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("button", name="Sign out")).to_be_visible()
    world.idp.next_login(f"sub-{admin}", **claims_of(admin, groups=["leads"]))
    page.goto(f"/organizations/{org}/settings/sso")
    page.wait_for_url(f"{world.server.url}/organizations/{org}/settings/sso")
    expect(page.locator("#sso-status")).to_have_text("Enabled (enforced)")
    expect(page.get_by_label("Issuer URL")).to_have_value(world.idp.issuer)
    expect(page.locator("#redirect-uri")).to_have_text(f"{world.server.url}/organizations/{org}/oidc/consume")
    shot = os.environ.get("BASTION_SSO_SCREENSHOT")
    if shot:
        page.screenshot(path=shot, full_page=True)
    ctx.close()
