"""The signing-keys settings page: a signed-in browser lists, adds and removes GPG and SSH signing
keys and toggles vigilant mode through CSRF-checked forms; the JSON API sees the same keys.
"""

from __future__ import annotations

import httpx

from tests.accounts.fixtures import create_password_user, csrf_of, http_login, mail_sink, web_server  # noqa: F401
from tests.conftest import BastionServer
from tests.signing.conftest import GpgHome, SshKey, api, keys_api


def _keys_page(client: httpx.Client) -> str:
    page = client.get("/settings/keys")
    assert page.status_code == 200, page.text[:500]
    return page.text


def _post(client: httpx.Client, path: str, **fields: str) -> httpx.Response:
    return client.post(path, data={"csrf_token": csrf_of(_keys_page(client)), **fields})


def test_keys_page_adds_lists_and_removes_keys(web_server: BastionServer, ssh_key: SshKey,  # noqa: F811
                                               gpg_home: GpgHome) -> None:
    name, token = create_password_user(web_server)
    client = http_login(web_server, name)
    html = _keys_page(client)
    assert '<a href="/settings/keys" aria-current="page">Signing keys</a>' in html
    assert "No GPG keys." in html and "No SSH signing keys." in html

    added = _post(client, "/settings/keys", kind="ssh", key=ssh_key.public, title="laptop")
    assert added.status_code == 200, added.text[:500]
    [ssh] = api(web_server, "GET", "/api/settings/ssh-signing-keys", token).json()
    assert ssh["title"] == "laptop"
    assert f"SSH signing key {ssh['fingerprint']} was added." in added.text
    assert f'<tr data-key="{ssh["id"]}">' in added.text and ssh["fingerprint"] in added.text

    fpr = gpg_home.generate(f"Page Tester <{name}@example.com>")
    added = _post(client, "/settings/keys", kind="gpg", key=gpg_home.export(fpr))
    assert added.status_code == 200, added.text[:500]
    [gpg] = api(web_server, "GET", "/api/settings/gpg-keys", token).json()
    assert gpg["fingerprint"] == fpr and f"GPG key {gpg['keyId']} was added." in added.text
    assert f"{name}@example.com" in added.text

    # The service's validation reaches the page as a readable error, and nothing is stored.
    stranger = gpg_home.generate("Somebody <somebody@example.org>")
    refused = _post(client, "/settings/keys", kind="gpg", key=gpg_home.export(stranger))
    assert refused.status_code == 400
    assert "is a verified e-mail address of your account" in refused.text
    duplicate = _post(client, "/settings/keys", kind="ssh", key=ssh_key.public)
    assert duplicate.status_code == 409 and "has already been added" in duplicate.text
    assert len(api(web_server, "GET", "/api/settings/gpg-keys", token).json()) == 1

    removed = _post(client, f"/settings/keys/ssh/{ssh['id']}/delete")
    assert removed.status_code == 200 and "The SSH signing key was removed." in removed.text
    assert api(web_server, "GET", "/api/settings/ssh-signing-keys", token).json() == []
    removed = _post(client, f"/settings/keys/gpg/{gpg['id']}/delete")
    assert removed.status_code == 200 and "No GPG keys." in removed.text
    assert api(web_server, "GET", "/api/settings/gpg-keys", token).json() == []


def test_keys_page_toggles_vigilant_mode(web_server: BastionServer) -> None:  # noqa: F811
    name, token = create_password_user(web_server)
    client = http_login(web_server, name)
    assert 'name="vigilant" value="on" checked' not in _keys_page(client)
    on = _post(client, "/settings/keys/vigilant", vigilant="on")
    assert on.status_code == 200 and "Vigilant mode is on." in on.text
    assert 'name="vigilant" value="on" checked' in on.text
    assert api(web_server, "GET", "/api/settings/signing", token).json() == {"vigilantMode": True}
    off = _post(client, "/settings/keys/vigilant")  # an unticked checkbox sends nothing
    assert off.status_code == 200 and "Vigilant mode is off." in off.text
    assert api(web_server, "GET", "/api/settings/signing", token).json() == {"vigilantMode": False}


def test_keys_page_requires_csrf_a_session_and_ownership(web_server: BastionServer,  # noqa: F811
                                                         ssh_key: SshKey) -> None:
    owner, owner_token = create_password_user(web_server)
    keys_api(web_server, owner_token, "POST", "/api/settings/ssh-signing-keys", json={"key": ssh_key.public})
    [key] = api(web_server, "GET", "/api/settings/ssh-signing-keys", owner_token).json()

    other, _ = create_password_user(web_server)
    client = http_login(web_server, other)
    no_csrf = client.post("/settings/keys/vigilant", data={"vigilant": "on"})
    assert no_csrf.status_code == 403 and "CSRF" in no_csrf.text
    forged = client.post("/settings/keys", data={"csrf_token": "0" * 64, "kind": "ssh", "key": ssh_key.public})
    assert forged.status_code == 403
    # Another user's key id is simply not found; the key stays.
    theirs = _post(client, f"/settings/keys/ssh/{key['id']}/delete")
    assert theirs.status_code == 404 and "SSH signing key not found" in theirs.text
    assert len(api(web_server, "GET", "/api/settings/ssh-signing-keys", owner_token).json()) == 1

    # Signed out: the browser is sent to sign in; a token (no browser session) gets no page either.
    anonymous = httpx.get(f"{web_server.url}/settings/keys", headers={"accept": "text/html"}, timeout=30)
    assert anonymous.status_code == 303 and anonymous.headers["location"] == "/login?next=/settings/keys"
    with_token = api(web_server, "GET", "/settings/keys", owner_token, headers={"accept": "text/html"})
    assert with_token.status_code != 200 and key["fingerprint"] not in with_token.text
