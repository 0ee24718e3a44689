"""Finding 9: a Xet CAS token is bound to the credential and user that obtained it.

Removed from the org, token revoked, browser signed out, repo made private, write role taken away:
each takes effect on the very next CAS request (reconstructions, xorb HEAD, dedupe, uploads and the
signed xorb fetch URLs handed out before), not when the CAS token expires.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

import httpx
import pytest

from bastion.xet.hashing import hash_to_hex
from bastion.xet.packing import PackedFile, pack_file
from bastion.xet.shard import serialize_shard
from tests.accounts.fixtures import create_password_user, csrf_of, http_login, mail_sink, web_server  # noqa: F401
from tests.conftest import BastionServer, hf_api
from tests.xet.hfclient import model_like

TIMEOUT = 30


def _cas_token(server: BastionServer, repo_id: str, kind: str = "read", hub_token: str | None = None,
               client: httpx.Client | None = None) -> dict:
    path = f"/api/models/{repo_id}/xet-{kind}-token/main"
    if client is not None:
        r = client.get(path, headers={"accept": "application/json"})
    else:
        headers = {"Authorization": f"Bearer {hub_token}"} if hub_token else {}
        r = httpx.get(server.url + path, headers=headers, timeout=TIMEOUT)
    assert r.status_code == 200, r.text
    return r.json()


def _auth(tok: dict) -> dict[str, str]:
    return {"Authorization": f"Bearer {tok['accessToken']}"}


def _upload(tok: dict, packed: PackedFile) -> None:
    for body, xorb in packed.xorbs:
        r = httpx.post(f"{tok['casUrl']}/v1/xorbs/default/{xorb.hex}", content=body, headers=_auth(tok),
                       timeout=TIMEOUT)
        assert r.status_code == 200, r.text
    r = httpx.post(f"{tok['casUrl']}/v1/shards", headers=_auth(tok), timeout=TIMEOUT,
                   content=serialize_shard([packed.file], packed.xorb_entries, with_footer=False))
    assert r.status_code == 200, r.text


@dataclass
class Stored:
    packed: PackedFile

    @property
    def file_id(self) -> str:
        return hash_to_hex(self.packed.file.file_hash)

    @property
    def xorb(self) -> str:
        return self.packed.xorbs[0][1].hex

    @property
    def first_chunk(self) -> str:
        return hash_to_hex(self.packed.xorbs[0][1].chunks[0].hash)


def _store(server: BastionServer, repo_id: str, owner_token: str, seed: int) -> Stored:
    packed = pack_file([model_like(seed, 200_000)])
    _upload(_cas_token(server, repo_id, "write", owner_token), packed)
    return Stored(packed)


def _fetch_url(tok: dict, stored: Stored) -> tuple[str, dict[str, str]]:
    """A signed xorb fetch URL (and the Range it was signed for) from a reconstruction."""
    r = httpx.get(f"{tok['casUrl']}/v2/reconstructions/{stored.file_id}", headers=_auth(tok), timeout=TIMEOUT)
    assert r.status_code == 200, r.text
    plan = r.json()
    fetch = plan["xorbs"][plan["terms"][0]["hash"]][0]
    rng = fetch["ranges"][0]["bytes"]
    return fetch["url"], {"Range": f"bytes={rng['start']}-{rng['end']}"}


def _reads(tok: dict, stored: Stored, fetch: tuple[str, dict[str, str]]) -> dict[str, int]:
    """Status of every CAS read route for this token, and of a fetch URL it was given."""
    base, auth = tok["casUrl"], _auth(tok)
    return {
        "v1": httpx.get(f"{base}/v1/reconstructions/{stored.file_id}", headers=auth, timeout=TIMEOUT).status_code,
        "v2": httpx.get(f"{base}/v2/reconstructions/{stored.file_id}", headers=auth, timeout=TIMEOUT).status_code,
        "head": httpx.head(f"{base}/v1/xorbs/default/{stored.xorb}", headers=auth, timeout=TIMEOUT).status_code,
        "dedupe": httpx.get(f"{base}/v1/chunks/default/{stored.first_chunk}", headers=auth,
                            timeout=TIMEOUT).status_code,
        "fetch": httpx.get(fetch[0], headers=fetch[1], timeout=TIMEOUT).status_code,
    }


OK = {"v1": 200, "v2": 200, "head": 200, "dedupe": 200, "fetch": 206}


def _refused(statuses: dict[str, int]) -> bool:
    return all(code in (401, 403) for code in statuses.values())


def _org(server: BastionServer, owner: str) -> str:
    name = f"org{secrets.token_hex(3)}"
    server.admin("create-org", name, "--owner", owner)
    return name


def test_member_removed_from_the_org_loses_the_cas_at_once(server: BastionServer) -> None:
    owner, owner_token = server.create_user()
    member, member_token = server.create_user(role="read")
    org = _org(server, owner)
    server.admin("add-member", org, member, "--role", "read")
    repo_id = f"{org}/weights"
    hf_api(server, owner_token).create_repo(repo_id, private=True)
    stored = _store(server, repo_id, owner_token, 901)

    tok = _cas_token(server, repo_id, "read", member_token)
    fetch = _fetch_url(tok, stored)
    assert _reads(tok, stored, fetch) == OK
    r = httpx.delete(f"{server.url}/api/organizations/{org}/members/{member}",
                     headers={"Authorization": f"Bearer {owner_token}"}, timeout=TIMEOUT)
    assert r.status_code == 200, r.text
    after = _reads(tok, stored, fetch)
    assert _refused(after), after
    # The hub agrees: no new CAS token for a repo the member can no longer see.
    r = httpx.get(f"{server.url}/api/models/{repo_id}/xet-read-token/main",
                  headers={"Authorization": f"Bearer {member_token}"}, timeout=TIMEOUT)
    assert r.status_code == 404


def test_write_role_taken_away_stops_uploads_but_not_reads(server: BastionServer) -> None:
    owner, owner_token = server.create_user()
    member, member_token = server.create_user(role="write")
    org = _org(server, owner)
    server.admin("add-member", org, member, "--role", "write")
    repo_id = f"{org}/shared"
    hf_api(server, owner_token).create_repo(repo_id, private=True)
    tok = _cas_token(server, repo_id, "write", member_token)
    first, second = pack_file([model_like(902, 150_000)]), pack_file([model_like(903, 150_000)])
    _upload(tok, first)
    server.admin("add-member", org, member, "--role", "read")  # a role change
    body, xorb = second.xorbs[0]
    r = httpx.post(f"{tok['casUrl']}/v1/xorbs/default/{xorb.hex}", content=body, headers=_auth(tok),
                   timeout=TIMEOUT)
    assert r.status_code == 403, r.text
    r = httpx.post(f"{tok['casUrl']}/v1/shards", headers=_auth(tok), timeout=TIMEOUT,
                   content=serialize_shard([first.file], first.xorb_entries, with_footer=False))
    assert r.status_code == 403, r.text
    stored = Stored(first)
    assert _reads(tok, stored, _fetch_url(tok, stored)) == OK  # read access remains


def test_revoked_token_and_ended_session_invalidate_their_cas_tokens(web_server: BastionServer) -> None:  # noqa: F811
    server = web_server
    name, token = create_password_user(server)
    repo_id = f"{name}/private"
    hf_api(server, token).create_repo(repo_id, private=True)
    stored = _store(server, repo_id, token, 904)

    # A CAS token obtained with an access token dies with that token.
    tok = _cas_token(server, repo_id, "read", token)
    fetch = _fetch_url(tok, stored)
    assert _reads(tok, stored, fetch) == OK
    web = http_login(server, name)
    token_id = next(t["id"] for t in web.get("/api/settings/tokens").json() if t["last4"] == token[-4:])
    assert web.delete(f"/api/settings/tokens/{token_id}").status_code == 200
    after = _reads(tok, stored, fetch)
    assert _refused(after), after
    r = httpx.get(f"{tok['casUrl']}/v1/reconstructions/{stored.file_id}", headers=_auth(tok), timeout=TIMEOUT)
    assert r.status_code == 401  # hf_xet asks the hub for a fresh token, which the hub refuses

    # One obtained in a browser session dies when the user signs out.
    by_session = _cas_token(server, repo_id, "read", client=web)
    fetch = _fetch_url(by_session, stored)
    assert _reads(by_session, stored, fetch) == OK
    page = web.get("/settings/sessions")
    assert web.post("/logout", data={"csrf_token": csrf_of(page.text)}).status_code == 303
    after = _reads(by_session, stored, fetch)
    assert _refused(after), after


def test_repo_made_private_closes_the_cas_to_outsiders(server: BastionServer) -> None:
    owner, owner_token = server.create_user()
    _, outsider_token = server.create_user(role="read")
    repo_id = f"{owner}/was-public"
    hf_api(server, owner_token).create_repo(repo_id, private=False)
    stored = _store(server, repo_id, owner_token, 905)
    anonymous = _cas_token(server, repo_id, "read")
    outsider = _cas_token(server, repo_id, "read", outsider_token)
    owner_tok = _cas_token(server, repo_id, "read", owner_token)
    fetches = {id(t): _fetch_url(t, stored) for t in (anonymous, outsider, owner_tok)}
    for t in (anonymous, outsider, owner_tok):
        assert _reads(t, stored, fetches[id(t)]) == OK
    r = httpx.put(f"{server.url}/api/models/{repo_id}/settings", json={"private": True},
                  headers={"Authorization": f"Bearer {owner_token}"}, timeout=TIMEOUT)
    assert r.status_code == 200, r.text
    for t in (anonymous, outsider):
        after = _reads(t, stored, fetches[id(t)])
        assert _refused(after), after
    assert _reads(owner_tok, stored, fetches[id(owner_tok)]) == OK


@pytest.mark.parametrize("claims", [{}, {"via": "token", "user_id": 1, "token_id": 10**9}])
def test_cas_tokens_without_a_live_credential_are_refused(server: BastionServer, claims: dict) -> None:
    """Signed with the server's key but naming no credential (as every token minted before this
    change did), or a credential that does not exist: 401, so hf_xet asks the hub for a new one."""
    from bastion.authz import capability

    owner, owner_token = server.create_user()
    repo_id = f"{owner}/public"
    hf_api(server, owner_token).create_repo(repo_id, private=False)
    stored = _store(server, repo_id, owner_token, 906)
    cas_url = _cas_token(server, repo_id, "read")["casUrl"]
    key = (server.data_dir / "secret_key").read_bytes().strip()
    repo_num, _, repo_key = cas_url.rsplit("/r", 1)[1].partition("-")  # /xet-cas/r{id}-{incarnation}
    forged = capability.sign(key, "xet-cas", {"repo_id": int(repo_num), "repo_key": repo_key, "scope": "read",
                                              "ref": "main", **claims}, 600)
    r = httpx.get(f"{cas_url}/v1/reconstructions/{stored.file_id}", headers={"Authorization": f"Bearer {forged}"},
                  timeout=TIMEOUT)
    assert r.status_code == 401, r.text
