"""Organizations in a real browser (Playwright + Debian's Chromium): invite by e-mail and accept, change
a role and see access change, create a resource group and move a repo into it, turn on token approval
and approve a pending token."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from urllib.parse import urlsplit

import httpx
import pytest
from playwright.sync_api import Browser, BrowserContext, Page, expect, sync_playwright

from tests.accounts.fixtures import PASSWORD, MailSink, create_password_user, link_in
from tests.conftest import BastionServer, hf_api

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        yield b
        b.close()


def _context(browser: Browser, server: BastionServer) -> BrowserContext:
    ctx = browser.new_context(base_url=server.url)
    ctx.set_default_timeout(20_000)
    return ctx


def sign_in(page: Page, login: str) -> None:
    page.goto("/login")
    page.get_by_label("Username or e-mail address").fill(login)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("button", name="Sign out")).to_be_visible()


def test_org_lifecycle_in_the_browser(browser: Browser, web_server: BastionServer, mail_sink: MailSink) -> None:
    owner, owner_token = create_password_user(web_server)
    guest, _guest_token = create_password_user(web_server)
    org = f"org{secrets.token_hex(3)}"
    admin_ctx, guest_ctx = _context(browser, web_server), _context(browser, web_server)
    try:
        admin, visitor = admin_ctx.new_page(), guest_ctx.new_page()
        sign_in(admin, owner)
        sign_in(visitor, guest)

        # the owner creates the org and a private model in it
        admin.get_by_role("link", name="New organization").click()
        admin.get_by_label("Name (used in repository ids)").fill(org)
        admin.get_by_label("Full name").fill("Browser Org")
        admin.get_by_role("button", name="Create organization").click()
        expect(admin.get_by_role("heading", level=1)).to_contain_text("Browser Org")
        hf_api(web_server, owner_token).create_repo(f"{org}/weights", private=True)

        # invite the guest by e-mail; the guest accepts from the link
        admin.goto(f"/organizations/{org}/settings/members")
        admin.get_by_label("E-mail address").fill(f"{guest}@example.com")
        admin.get_by_label("Role", exact=True).select_option("read")
        admin.get_by_role("button", name="Send invitation").click()
        expect(admin.locator("#invitations")).to_contain_text(f"{guest}@example.com")
        link = link_in(mail_sink.wait_for(f"{guest}@example.com", f"join {org}"))
        visitor.goto(urlsplit(link).path)  # the mail's link, on this test's host name
        expect(visitor.get_by_role("heading", level=1)).to_contain_text("Join")
        visitor.get_by_role("button", name="Accept").click()
        visitor.wait_for_url(f"**/organizations/{org}")
        expect(visitor.locator("#repos-model")).to_contain_text(f"{org}/weights")  # read role: sees it

        # the owner changes the guest's role to no_access: the private repo disappears for the guest
        admin.goto(f"/organizations/{org}/settings/members")
        admin.get_by_label(f"Role of {guest}").select_option("no_access")
        admin.locator(f'tr[data-user="{guest}"]').get_by_role("button", name="Change role").click()
        expect(admin.get_by_label(f"Role of {guest}")).to_have_value("no_access")
        visitor.goto(f"/organizations/{org}")
        expect(visitor.locator("#h-model")).to_contain_text("(0)")

        # a resource group with the guest as a reader; moving the repo into it gives access back
        admin.goto(f"/organizations/{org}/settings/resource-groups")
        admin.get_by_label("Name", exact=True).fill("vision")
        admin.get_by_role("button", name="Create group").click()
        group = admin.locator('section[data-group="vision"]')
        group.get_by_label("Member").select_option(guest)
        group.get_by_label("Group role").select_option("read")
        group.get_by_role("button", name="Set group role").click()
        expect(admin.locator('section[data-group="vision"]')).to_contain_text(f"{guest} — read")
        def move_into_group() -> None:
            section = admin.locator('section[data-group="vision"]')
            section.get_by_label("Move a repository into this group").select_option("model:weights")
            section.get_by_role("button", name="Move into group").click()
            expect(admin.locator('section[data-group="vision"] ul.group-repos')).to_contain_text(f"{org}/weights")

        move_into_group()
        visitor.goto(f"/organizations/{org}")
        expect(visitor.locator("#repos-model")).to_contain_text(f"{org}/weights")
        # and back to the org root: the guest (no_access there) loses it again; then into the group again
        admin.locator('section[data-group="vision"]').get_by_role("button", name="Move to the organization root").click()
        expect(admin.locator('section[data-group="vision"] ul.group-repos')).not_to_contain_text(f"{org}/weights")
        visitor.goto(f"/organizations/{org}")
        expect(visitor.locator("#h-model")).to_contain_text("(0)")
        move_into_group()

        # token approval: the guest's fine-grained token is pending until the owner approves it
        admin.goto(f"/organizations/{org}/settings/tokens")
        admin.get_by_label("Token policy").select_option("approval")
        admin.get_by_role("button", name="Save policy").click()
        expect(admin.get_by_label("Token policy")).to_have_value("approval")
        fg = web_server.admin("create-token", guest, "--name", "ci", "--role", "fineGrained",
                            "--scope", f"org:{org}=repo.content.read").stdout.strip()
        url = f"{web_server.url}/api/models/{org}/weights"
        denied = httpx.get(url, headers={"authorization": f"Bearer {fg}"})
        assert denied.status_code == 403 and "needs to be approved" in denied.headers["x-error-message"]
        admin.reload()
        row = admin.locator(f'tr[data-user="{guest}"]', has_text="fineGrained")
        expect(row.locator(".state")).to_have_text("PENDING")
        row.get_by_role("button", name="Approve").click()
        expect(admin.locator(f'tr[data-user="{guest}"]', has_text="fineGrained").locator(".state")).to_have_text(
            "APPROVED")
        assert httpx.get(url, headers={"authorization": f"Bearer {fg}"}).status_code == 200
    finally:
        admin_ctx.close()
        guest_ctx.close()
