"""Finding 3 (issue 14): links in mail never come from the request's Host header.

With BASTION_PUBLIC_URL unset, `POST /login/forgot` with `Host: evil.example` used to mail the victim a reset
link to http://evil.example/…; sign-up verification and org invitations were built the same way. Now mail
that needs a link is refused (503, said in the page and the log) without a public URL, links come only
from it when it is set, and a request naming a host the instance does not serve gets 400 before any route.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import httpx
import pytest

from tests.accounts import fixtures
from tests.accounts.fixtures import PASSWORD, MailSink, create_password_user, csrf_of, http_login, link_in
from tests.conftest import BastionServer

mail_sink = fixtures.mail_sink  # the session's SMTP sink, a fixture here too

EVIL = "evil.example"
HTML = {"accept": "text/html"}


def _server(tmp_path_factory: pytest.TempPathFactory, mail_sink: MailSink, **env: str) -> BastionServer:
    return BastionServer(tmp_path_factory.mktemp("links"), env={
        "BASTION_SMTP_URL": f"smtp://127.0.0.1:{mail_sink.port}", "BASTION_SIGNUP": "open",
        "BASTION_SCANNERS": "[]", **env})


@pytest.fixture(scope="module")
def no_public_url(tmp_path_factory: pytest.TempPathFactory, mail_sink: MailSink) -> Iterator[BastionServer]:
    server = _server(tmp_path_factory, mail_sink, BASTION_PUBLIC_URL="").start()  # empty: unset
    yield server
    server.stop()


@pytest.fixture(scope="module")
def public_url(tmp_path_factory: pytest.TempPathFactory, mail_sink: MailSink) -> Iterator[BastionServer]:
    server = _server(tmp_path_factory, mail_sink, BASTION_ALLOWED_HOSTS='["localhost"]')  # one more name
    server.env["BASTION_PUBLIC_URL"] = server.url  # http://127.0.0.1:PORT
    server.start()
    yield server
    server.stop()


def _browser(server: BastionServer, host: str | None) -> httpx.Client:
    headers = {**HTML, **({"host": host} if host else {})}
    return httpx.Client(base_url=server.url, headers=headers, timeout=30)


def _forgot(client: httpx.Client, email: str) -> httpx.Response:
    token = csrf_of(client.get("/login/forgot").text)
    return client.post("/login/forgot", data={"csrf_token": token, "email": email})


def _mail_barrier(server: BastionServer, name: str) -> None:
    """Make the server send `name` a mail and wait for it: mail goes out in order from one thread, so
    anything queued before this has been sent by the time it arrives."""
    http_login(server, name).close()  # the first sign-in remembers the device
    http_login(server, name).close()  # a second, new device: "New sign-in to your account"


def test_reset_link_with_a_forged_host_and_no_public_url_is_refused(no_public_url: BastionServer,
                                                                     mail_sink: MailSink) -> None:
    victim, _ = create_password_user(no_public_url)
    email = f"{victim}@example.com"
    before = mail_sink.count()
    with _browser(no_public_url, EVIL) as attacker:
        resp = _forgot(attacker, email)
        # The operator is named, in the page; and the same answer for an address no account has.
        assert resp.status_code == 503, resp.text[:500]
        assert "BASTION_PUBLIC_URL" in resp.text and 'id="reset-sent"' not in resp.text
        other = _forgot(attacker, f"nobody-{victim}@example.com")
        assert (other.status_code, "BASTION_PUBLIC_URL" in other.text) == (503, True)
    _mail_barrier(no_public_url, victim)
    mail_sink.wait_for(email, "New sign-in", after=before)
    assert "[Bastion] Reset your password" not in mail_sink.subjects_to(email)
    assert all(EVIL not in str(m) for m in mail_sink.messages[before:])
    assert "refused to build a link for an e-mail (/login/reset): BASTION_PUBLIC_URL is not set" in \
        no_public_url.server_log()


def test_signup_verification_and_invitations_need_the_public_url(no_public_url: BastionServer,
                                                                  mail_sink: MailSink) -> None:
    name = f"u{secrets.token_hex(4)}"
    before = mail_sink.count()
    with _browser(no_public_url, EVIL) as attacker:
        form = {"csrf_token": csrf_of(attacker.get("/join").text), "name": name, "email": f"{name}@example.com",
                "password": PASSWORD, "password_confirm": PASSWORD}
        resp = attacker.post("/join", data=form)
        assert resp.status_code == 503 and "BASTION_PUBLIC_URL" in resp.text, resp.text[:500]
    # Refused whole: no account was made with an address nobody can verify.
    owner, token = create_password_user(no_public_url)
    assert no_public_url.admin("create-org", name, "--owner", owner).returncode == 0  # the name is free
    api = httpx.Client(base_url=no_public_url.url, headers={"authorization": f"Bearer {token}", "host": EVIL},
                       timeout=30)
    with api:
        resp = api.post(f"/api/organizations/{name}/invitations", json={"email": f"guest-{name}@example.com"})
        assert resp.status_code == 503 and resp.headers["x-error-code"] == "MailLinksUnavailable", resp.text
        assert "BASTION_PUBLIC_URL" in resp.headers["x-error-message"]
        assert api.get(f"/api/organizations/{name}/invitations").json() == []  # nothing half-made
    _mail_barrier(no_public_url, owner)
    mail_sink.wait_for(f"{owner}@example.com", "New sign-in", after=before)
    assert mail_sink.subjects_to(f"{name}@example.com") == []
    assert mail_sink.subjects_to(f"guest-{name}@example.com") == []


def test_links_come_from_the_public_url_and_other_hosts_get_400(public_url: BastionServer,
                                                                 mail_sink: MailSink) -> None:
    victim, token = create_password_user(public_url)
    email = f"{victim}@example.com"
    with _browser(public_url, EVIL) as attacker:
        refused = attacker.get("/login/forgot")
        assert refused.status_code == 400 and refused.headers["x-error-code"] == "BadRequest"
        assert "evil.example" in refused.headers["x-error-message"]
    # Every kind of route (API, listing, git, LFS) answers with the right Host and is refused with another:
    # with a port, in upper case, with a trailing dot.
    requests = [("GET", "/api/whoami-v2", None), ("GET", f"/api/models?author={victim}", None),
                ("GET", f"/{victim}/x.git/info/refs?service=git-upload-pack", None),
                ("POST", f"/{victim}/x.git/info/lfs/objects/batch", {"operation": "download", "objects": []})]
    for host in (None, EVIL, f"{EVIL}:443", "EVIL.example.", f"{EVIL}:{public_url.port}"):
        headers = {"authorization": f"Bearer {token}", **({"host": host} if host else {})}
        with httpx.Client(base_url=public_url.url, headers=headers, timeout=30) as c:
            for method, path, body in requests:
                resp = c.request(method, path, json=body)
                refused = resp.status_code == 400 and "Invalid Host header" in resp.headers.get("x-error-message", "")
                assert refused == (host is not None), (host, path, resp.status_code, resp.text[:200])
    assert "refused a request for host 'evil.example'" in public_url.server_log()
    # An allowed alias is served; the mailed link still names the public URL, never the alias.
    before = mail_sink.count()
    with _browser(public_url, f"localhost:{public_url.port}") as alias:
        resp = _forgot(alias, email)
        assert resp.status_code == 200 and 'id="reset-sent"' in resp.text
    link = link_in(mail_sink.wait_for(email, "Reset your password", after=before))
    assert link.startswith(f"{public_url.url}/login/reset?token="), link
    # The server's own loopback address is always served (the git hooks call back on it).
    assert httpx.get(f"http://127.0.0.1:{public_url.port}/api/health", headers={"host": f"127.0.0.2:{public_url.port}"},
                     timeout=30).status_code == 200
