"""Sensitive account changes need a recent password confirmation (sudo mode), and each one is mailed.

Finding (issue 15, item 2): a browser session outside the re-confirmation window could add an SSH or
GPG signing key and an e-mail address (commits by the attacker then show "Verified" as the victim, and
a password reset could go to the new address), and neither change told the account's primary address.
Driven from outside: a real server, a browser-like httpx client posting the settings forms (Origin
header, CSRF token, session cookie), the SMTP sink, and the JSON API with a token and with the cookie.
"""

from __future__ import annotations

from urllib.parse import urlsplit

import httpx

from tests.accounts.fixtures import (  # noqa: F401
    PASSWORD,
    MailSink,
    age_sign_in,
    create_password_user,
    csrf_of,
    http_login,
    mail_sink,
    web_server,
)
from tests.conftest import BastionServer
from tests.signing.conftest import GpgHome, SshKey, api, gpg_home, ssh_key  # noqa: F401


def _browser(server: BastionServer, name: str) -> httpx.Client:
    client = http_login(server, name)
    client.headers["origin"] = server.url  # what a browser sends with a same-site form post
    return client


def _post(client: httpx.Client, page: str, path: str, **fields: str) -> httpx.Response:
    return client.post(path, data={"csrf_token": csrf_of(client.get(page).text), **fields})


def _goes_to_sudo(resp: httpx.Response, back_to: str) -> None:
    assert resp.status_code == 303, (resp.status_code, resp.text[:300])
    target = urlsplit(resp.headers["location"])
    assert target.path == "/settings/sudo" and target.query == f"next={back_to}", resp.headers["location"]


def test_keys_and_emails_need_a_recent_password_and_are_mailed(web_server: BastionServer,  # noqa: F811
                                                               mail_sink: MailSink,  # noqa: F811
                                                               ssh_key: SshKey,  # noqa: F811
                                                               gpg_home: GpgHome) -> None:  # noqa: F811
    name, token = create_password_user(web_server)
    primary, extra = f"{name}@example.com", f"{name}.attacker@example.org"
    fpr = gpg_home.generate(f"Victim <{primary}>")
    client = _browser(web_server, name)
    age_sign_in(web_server, name)  # the tab was left open: the sign-in is older than the sudo window

    _goes_to_sudo(_post(client, "/settings/emails", "/settings/emails", email=extra), "/settings/emails")
    _goes_to_sudo(_post(client, "/settings/keys", "/settings/keys", kind="ssh", key=ssh_key.public),
                  "/settings/keys")
    _goes_to_sudo(_post(client, "/settings/keys", "/settings/keys", kind="gpg", key=gpg_home.export(fpr)),
                  "/settings/keys")
    _goes_to_sudo(_post(client, "/settings/keys", "/settings/keys/vigilant", vigilant="on"), "/settings/keys")
    # The JSON API with the same session cookie: a 403 in the Hub's error format.
    denied = client.post("/api/settings/ssh-signing-keys", json={"key": ssh_key.public},
                         headers={"accept": "application/json"})
    assert denied.status_code == 403 and "sudo" in denied.json()["error"], denied.text
    # A token cannot re-authenticate: key management is for the browser only (as on the Hub).
    for path, body in (("/api/settings/ssh-signing-keys", {"key": ssh_key.public}),
                       ("/api/settings/gpg-keys", {"key": gpg_home.export(fpr)})):
        refused = api(web_server, "POST", path, token, json=body)
        assert refused.status_code == 403, refused.text

    # Nothing was added.
    assert extra not in client.get("/settings/emails").text
    assert api(web_server, "GET", "/api/settings/ssh-signing-keys", token).json() == []
    assert api(web_server, "GET", "/api/settings/gpg-keys", token).json() == []
    assert not any("added" in s for s in mail_sink.subjects_to(primary))

    # Confirming the password opens the window; the changes go through and each is mailed to the primary.
    before = mail_sink.count()
    sudo = _post(client, "/settings/sudo?next=/settings/keys", "/settings/sudo", password=PASSWORD,
                 next="/settings/keys")
    assert sudo.status_code == 303 and sudo.headers["location"].startswith("/settings/keys"), sudo.text[:300]
    added = _post(client, "/settings/emails", "/settings/emails", email=extra)
    assert added.status_code == 303 and added.headers["location"] == "/settings/emails?m=email-added"
    assert _post(client, "/settings/keys", "/settings/keys", kind="ssh", key=ssh_key.public).status_code == 200
    assert _post(client, "/settings/keys", "/settings/keys", kind="gpg", key=gpg_home.export(fpr)).status_code == 200
    [ssh] = api(web_server, "GET", "/api/settings/ssh-signing-keys", token).json()
    [gpg] = api(web_server, "GET", "/api/settings/gpg-keys", token).json()
    mail = mail_sink.wait_for(primary, "e-mail address was added", after=before)
    assert extra in str(mail.get_body(("plain",)).get_content())  # type: ignore[union-attr]
    assert f"{web_server.url}/settings/emails" in str(mail.get_body(("plain",)).get_content())  # type: ignore[union-attr]
    assert ssh["fingerprint"] in str(mail_sink.wait_for(primary, "SSH signing key was added", after=before)
                                     .get_body(("plain",)).get_content())  # type: ignore[union-attr]
    mail_sink.wait_for(primary, "GPG key was added", after=before)
    assert mail_sink.wait_for(extra, "Verify", after=before)  # the new address is asked to verify, as before

    # Removing them needs the window too, and is mailed as well.
    age_sign_in(web_server, name)
    _goes_to_sudo(_post(client, "/settings/keys", f"/settings/keys/gpg/{gpg['id']}/delete"), "/settings/keys")
    assert len(api(web_server, "GET", "/api/settings/gpg-keys", token).json()) == 1
    _post(client, "/settings/sudo", "/settings/sudo", password=PASSWORD, next="/settings/keys")
    before = mail_sink.count()
    assert _post(client, "/settings/keys", f"/settings/keys/gpg/{gpg['id']}/delete").status_code == 200
    assert _post(client, "/settings/keys", f"/settings/keys/ssh/{ssh['id']}/delete").status_code == 200
    mail_sink.wait_for(primary, "GPG key was removed", after=before)
    mail_sink.wait_for(primary, "SSH signing key was removed", after=before)
    client.close()


def test_email_removal_needs_a_recent_password(web_server: BastionServer, mail_sink: MailSink) -> None:  # noqa: F811
    name, _token = create_password_user(web_server)
    primary, extra = f"{name}@example.com", f"{name}.second@example.com"
    client = _browser(web_server, name)
    assert _post(client, "/settings/emails", "/settings/emails", email=extra).status_code == 303  # fresh sign-in
    page = client.get("/settings/emails").text
    row = page.split(extra)[1].split("</tr>")[0]
    email_id = row.split("/settings/emails/")[1].split("/")[0]
    age_sign_in(web_server, name)
    _goes_to_sudo(_post(client, "/settings/emails", f"/settings/emails/{email_id}/delete"), "/settings/emails")
    assert extra in client.get("/settings/emails").text
    _post(client, "/settings/sudo", "/settings/sudo", password=PASSWORD, next="/settings/emails")
    before = mail_sink.count()
    assert _post(client, "/settings/emails", f"/settings/emails/{email_id}/delete").status_code == 303
    assert extra not in client.get("/settings/emails").text
    mail_sink.wait_for(primary, "e-mail address was removed", after=before)
    client.close()


def test_token_changes_are_mailed_to_the_primary_address(web_server: BastionServer,  # noqa: F811
                                                         mail_sink: MailSink) -> None:  # noqa: F811
    """A new, rotated or revoked access token is a sensitive change too: the owner's primary address hears."""
    name, _token = create_password_user(web_server)
    primary = f"{name}@example.com"
    client = _browser(web_server, name)  # just signed in: inside the sudo window
    before = mail_sink.count()
    created = _post(client, "/settings/tokens", "/settings/tokens", name="ci-runner", role="read")
    assert created.status_code == 200, created.text[:300]
    mail = mail_sink.wait_for(primary, "access token was created", after=before)
    assert "ci-runner" in str(mail.get_body(("plain",)).get_content())  # type: ignore[union-attr]
    [tok] = [t for t in client.get("/api/settings/tokens", headers={"accept": "application/json"}).json()
             if t["displayName"] == "ci-runner"]
    assert _post(client, "/settings/tokens", f"/settings/tokens/{tok['id']}/rotate").status_code == 200
    mail_sink.wait_for(primary, "access token was rotated", after=before)
    assert _post(client, "/settings/tokens", f"/settings/tokens/{tok['id']}/revoke").status_code == 303
    mail_sink.wait_for(primary, "access token was revoked", after=before)
    client.close()
