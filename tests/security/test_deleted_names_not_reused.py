"""The name of a deleted account is never given again. Found: after `bastion admin delete-user alice`, anyone
could sign up (or create an organization) as `alice`, then publish `alice/model`: every script, notebook and
pinned config that still fetched `alice/model` would download the newcomer's files (repo-jacking, the
supply-chain attack that renamed and deleted GitHub accounts enabled). Now the name is retired at deletion
(only its SHA-256 is kept) and every way of taking a name refuses it: the CLI (`create-user`, `create-org`),
open sign-up, and an instance's SCIM client. Nor may a new name pass for a deleted account's pseudonym.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import httpx
import pytest

from tests.accounts.fixtures import PASSWORD, csrf_of
from tests.conftest import BastionServer, hf_api

TIMEOUT = 30


@pytest.fixture(scope="module")
def open_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BastionServer]:
    server = BastionServer(tmp_path_factory.mktemp("retired-names"), env={"BASTION_SIGNUP": "open"}).start()
    yield server
    server.stop()


def test_a_deleted_accounts_name_cannot_be_taken_again(open_server: BastionServer) -> None:
    server = open_server
    name, token = server.create_user(f"alice{secrets.token_hex(3)}")
    hf_api(server, token).create_repo(f"{name}/model")
    deleted = server.cli("admin", "delete-user", name, check=False)
    assert deleted.returncode == 0, deleted.stderr

    made = server.cli("admin", "create-user", name.upper(), "--email", "new@example.com", check=False)
    assert made.returncode != 0 and "deleted account" in made.stderr, made.stderr
    owner = server.create_user()[0]
    org = server.cli("admin", "create-org", name, "--owner", owner, check=False)
    assert org.returncode != 0 and "deleted account" in org.stderr, org.stderr
    with httpx.Client(base_url=server.url, headers={"accept": "text/html"}, timeout=TIMEOUT) as browser:
        page = browser.get("/join")
        joined = browser.post("/join", data={"csrf_token": csrf_of(page.text), "name": name,
                                             "email": "squatter@example.com", "password": PASSWORD,
                                             "password_confirm": PASSWORD})
        assert joined.status_code == 409 and "deleted account" in joined.text, joined.text[:300]
    scim_token = server.cli("admin", "scim-token", "--instance").stdout.strip()
    provisioned = httpx.post(f"{server.url}/scim/v2/Users", timeout=TIMEOUT,
                             headers={"authorization": f"Bearer {scim_token}", "content-type": "application/scim+json"},
                             json={"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "userName": name,
                                   "emails": [{"value": "idp@example.com", "primary": True}]})
    assert provisioned.status_code == 409 and "deleted account" in provisioned.text, provisioned.text
    # Nothing answers under the old name: its repo is not someone else's now.
    assert httpx.get(f"{server.url}/api/models/{name}/model", timeout=TIMEOUT).status_code in (401, 404)
    # Other names are unaffected.
    assert server.cli("admin", "create-user", f"{name}x", "--email", "fine@example.com", check=False).returncode == 0


def test_no_new_name_passes_for_a_deleted_account(open_server: BastionServer) -> None:
    """Found: anyone could sign up (or an org be created) as `deleted-<12 hex>`, the pseudonym a deleted account's
    events, commits and comments show, and act under it as if they were that deleted person. The prefix is now
    reserved for deleted accounts on every way of taking a name."""
    server = open_server
    fake = "deleted-0123456789ab"
    made = server.cli("admin", "create-user", fake, "--email", "fake@example.com", check=False)
    assert made.returncode != 0 and "deleted accounts" in made.stderr, made.stderr
    owner = server.create_user()[0]
    org = server.cli("admin", "create-org", "Deleted-team", "--owner", owner, check=False)
    assert org.returncode != 0 and "deleted accounts" in org.stderr, org.stderr
    with httpx.Client(base_url=server.url, headers={"accept": "text/html"}, timeout=TIMEOUT) as browser:
        page = browser.get("/join")
        joined = browser.post("/join", data={"csrf_token": csrf_of(page.text), "name": fake,
                                             "email": "fake2@example.com", "password": PASSWORD,
                                             "password_confirm": PASSWORD})
        assert joined.status_code == 400 and "deleted accounts" in joined.text, joined.text[:300]
    # A real deletion still takes such a pseudonym.
    name, _token = server.create_user(f"bob{secrets.token_hex(3)}")
    assert server.cli("admin", "delete-user", name, check=False).returncode == 0
    assert server.cli("admin", "create-user", "deletedx", "--email", "x@example.com", check=False).returncode == 0
