"""LFS upload URLs are bound to the credential that obtained them and to their repository, as Xet CAS tokens are.

Found: an upload URL handed out by the LFS batch API was a bearer capability valid for an hour whatever happened
to its holder (a revoked token, a member removed from the org or deprovisioned kept uploading), and it named the
repository only by id, which SQLite gives again to the next repository after the newest one is deleted (bytes
uploaded with an old URL would be linked to someone else's new repository). Now each use re-establishes the
holder and its right to upload there, and the repository's incarnation.
"""

from __future__ import annotations

import hashlib
import random
import secrets

import httpx
import sqlalchemy as sa

from tests.conftest import BastionServer, hf_api

TIMEOUT = 30


def _upload_url(server: BastionServer, token: str, repo_id: str, data: bytes) -> str:
    oid = hashlib.sha256(data).hexdigest()
    r = httpx.post(f"{server.url}/{repo_id}.git/info/lfs/objects/batch", timeout=TIMEOUT,
                   headers={"authorization": f"Bearer {token}", "accept": "application/vnd.git-lfs+json"},
                   json={"operation": "upload", "transfers": ["basic"], "objects": [{"oid": oid, "size": len(data)}]})
    assert r.status_code == 200, r.text
    return str(r.json()["objects"][0]["actions"]["upload"]["href"])


def _put(url: str, data: bytes) -> httpx.Response:
    return httpx.put(url, content=data, timeout=TIMEOUT)


def _linked(server: BastionServer, repo_id: str, data: bytes) -> bool:
    ns, name = repo_id.split("/")
    engine = sa.create_engine(server.database_url)
    with engine.connect() as conn:
        found = conn.execute(sa.text(
            "SELECT count(*) FROM repo_lfs_objects l JOIN repos r ON r.id = l.repo_id "
            "WHERE r.namespace = :n AND r.name = :m AND l.oid = :o"),
            {"n": ns, "m": name, "o": hashlib.sha256(data).hexdigest()}).scalar()
    engine.dispose()
    return bool(found)


def test_an_upload_url_dies_with_its_holders_right_to_upload(server: BastionServer) -> None:
    rng = random.Random(515)
    owner, owner_token = server.create_user()
    member, member_token = server.create_user()
    org = f"org{secrets.token_hex(3)}"
    server.admin("create-org", org, "--owner", owner)
    server.admin("add-member", org, member, "--role", "write")
    repo_id = f"{org}/weights"
    hf_api(server, owner_token).create_repo(repo_id, private=True)
    kept, late = rng.randbytes(4096), rng.randbytes(4096)
    assert _put(_upload_url(server, member_token, repo_id, kept), kept).status_code == 200
    url = _upload_url(server, member_token, repo_id, late)
    r = httpx.delete(f"{server.url}/api/organizations/{org}/members/{member}",
                     headers={"authorization": f"Bearer {owner_token}"}, timeout=TIMEOUT)
    assert r.status_code == 200, r.text
    refused = _put(url, late)
    assert refused.status_code == 403, refused.text
    assert _linked(server, repo_id, kept) and not _linked(server, repo_id, late)


def test_an_upload_url_of_a_deleted_repo_never_reaches_the_repo_that_got_its_id(server: BastionServer) -> None:
    rng = random.Random(516)
    name, token = server.create_user()
    api = hf_api(server, token)
    old = f"{name}/old-{secrets.token_hex(2)}"
    api.create_repo(old)
    data = rng.randbytes(4096)
    url = _upload_url(server, token, old, data)
    api.delete_repo(old)
    new = f"{name}/new-{secrets.token_hex(2)}"
    api.create_repo(new)  # SQLite: the newest row's id, deleted, is given again
    refused = _put(url, data)
    assert refused.status_code in (403, 404), refused.text
    assert not _linked(server, new, data)
