"""Identifiers are matched whole. Found: the patterns that validate ids (LFS and blob-store oids, commit shas,
pull request refs, SCIM ids, region names, token scopes, audit query terms, SSO claim paths and domains) ended
in `$`, which in Python also matches before a final newline: `<64 hex>\\n` was a valid LFS oid (an upload
action was handed out for an object no sha256 can name) and `<24 hex>\\n` found a SCIM user. Every such
pattern now ends in `\\Z`; the names of accounts, orgs and repos were mended the same way before
(test_lifecycle_attacks.py).
"""

from __future__ import annotations

import httpx

from tests.conftest import BastionServer, hf_api

TIMEOUT = 30


def test_an_lfs_oid_with_a_trailing_newline_is_refused(server: BastionServer) -> None:
    owner, token = server.create_user()
    repo_id = f"{owner}/newline-oid"
    hf_api(server, token).create_repo(repo_id)
    batch = httpx.post(f"{server.url}/{repo_id}.git/info/lfs/objects/batch", timeout=TIMEOUT,
                       headers={"authorization": f"Bearer {token}", "accept": "application/vnd.git-lfs+json"},
                       json={"operation": "upload", "transfers": ["basic"],
                             "objects": [{"oid": "a" * 64 + "\n", "size": 3}]})
    assert batch.status_code in (400, 422), batch.text
    assert "Invalid oid" in batch.text


def test_a_scim_id_with_a_trailing_newline_finds_nothing(server: BastionServer) -> None:
    scim_token = server.cli("admin", "scim-token", "--instance").stdout.strip()
    with httpx.Client(base_url=f"{server.url}/scim/v2", timeout=TIMEOUT,
                      headers={"authorization": f"Bearer {scim_token}", "content-type": "application/scim+json"},
                      ) as idp:
        created = idp.post("/Users", json={"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
                                           "userName": "newline-probe", "active": True})
        assert created.status_code == 201, created.text
        user_id = created.json()["id"]
        assert idp.get(f"/Users/{user_id}").status_code == 200
        assert idp.get(f"/Users/{user_id}%0A").status_code == 404
