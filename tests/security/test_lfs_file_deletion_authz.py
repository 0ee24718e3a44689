"""Permanently deleting LFS files needs the right to manage the repo (authz REPO_MANAGE; in an org, the
`write` and `admin` roles have it), listing them the right to write.

A contributor (who may write only to repos they created), a reader and an outsider are refused and nothing is deleted (no link,
no byte, no history); an oid the repo never held is a 404 even when another repo holds it, so the
endpoint can neither delete nor reveal another tenant's object.
"""

from __future__ import annotations

import hashlib
import os
import secrets
from pathlib import Path

import httpx

from tests.conftest import BastionServer, hf_api

TIMEOUT = 30


def _delete(server: BastionServer, token: str | None, repo_id: str, oids: list[str]) -> httpx.Response:
    headers = {"authorization": f"Bearer {token}"} if token else {}
    return httpx.post(f"{server.url}/api/models/{repo_id}/lfs-files/batch", headers=headers, timeout=TIMEOUT,
                      json={"deletions": {"sha": oids, "rewriteHistory": True}})


def test_only_managers_may_permanently_delete_lfs_files(server: BastionServer) -> None:
    admin, admin_token = server.create_user()
    writer, writer_token = server.create_user()
    contributor, contributor_token = server.create_user()
    reader, reader_token = server.create_user()
    _outsider, outsider_token = server.create_user()
    org = f"org{secrets.token_hex(3)}"
    server.admin("create-org", org, "--owner", admin)
    server.admin("add-member", org, writer, "--role", "write")
    server.admin("add-member", org, reader, "--role", "read")
    server.admin("add-member", org, contributor, "--role", "contributor")
    public, private = f"{org}/public-{secrets.token_hex(3)}", f"{org}/private-{secrets.token_hex(3)}"
    api = hf_api(server, admin_token)
    data = b"\x00" + os.urandom(4096)
    oid = hashlib.sha256(data).hexdigest()
    for repo_id, is_private in ((public, False), (private, True)):
        api.create_repo(repo_id, private=is_private)
        api.upload_file(path_or_fileobj=data, path_in_repo="w.bin", repo_id=repo_id)
    blob = server.data_dir / "lfs" / oid[:2] / oid[2:4] / oid

    refused = {
        ("contributor", public): _delete(server, contributor_token, public, [oid]),
        ("reader", public): _delete(server, reader_token, public, [oid]),
        ("outsider", public): _delete(server, outsider_token, public, [oid]),
        ("anonymous", public): _delete(server, None, public, [oid]),
        ("outsider", private): _delete(server, outsider_token, private, [oid]),
        ("anonymous", private): _delete(server, None, private, [oid]),
    }
    statuses = {who: (r.status_code, r.headers.get("x-error-code")) for who, r in refused.items()}
    assert statuses[("contributor", public)][0] == 403 and statuses[("reader", public)][0] == 403
    assert statuses[("outsider", public)][0] == 403 and statuses[("anonymous", public)][0] == 401
    # A private repo the caller cannot read answers like a missing one.
    assert statuses[("outsider", private)] == (404, "RepoNotFound")
    assert statuses[("anonymous", private)][1] == "RepoNotFound"
    # Listing needs write access.
    assert httpx.get(f"{server.url}/api/models/{public}/lfs-files", timeout=TIMEOUT,
                     headers={"authorization": f"Bearer {reader_token}"}).status_code == 403
    assert [f.file_oid for f in hf_api(server, writer_token).list_lfs_files(public)] == [oid]
    # Nothing happened.
    assert blob.read_bytes() == data
    for repo_id in (public, private):
        assert Path(api.hf_hub_download(repo_id, "w.bin")).read_bytes() == data

    # An org writer purges it from one repo: the other repo holds its own link, so the bytes stay for it.
    assert _delete(server, writer_token, public, [oid]).status_code == 200
    assert "w.bin" not in api.list_repo_files(public)
    assert blob.read_bytes() == data and Path(api.hf_hub_download(private, "w.bin")).read_bytes() == data
    assert _delete(server, admin_token, private, [oid]).status_code == 200
    assert not blob.exists()


def test_an_oid_held_only_by_another_tenant_is_neither_deleted_nor_revealed(server: BastionServer) -> None:
    victim, victim_token = server.create_user()
    attacker, attacker_token = server.create_user()
    secret = b"\x00" + os.urandom(2048)
    oid = hashlib.sha256(secret).hexdigest()
    hf_api(server, victim_token).create_repo(f"{victim}/vault", private=True)
    hf_api(server, victim_token).upload_file(path_or_fileobj=secret, path_in_repo="k.bin", repo_id=f"{victim}/vault")
    hf_api(server, attacker_token).create_repo(f"{attacker}/mine")
    held = _delete(server, attacker_token, f"{attacker}/mine", [oid])
    never = _delete(server, attacker_token, f"{attacker}/mine", [hashlib.sha256(b"nothing").hexdigest()])
    assert (held.status_code, held.headers["x-error-code"]) == (404, "EntryNotFound")
    assert held.headers["x-error-message"].replace(oid, "X") == never.headers["x-error-message"].replace(
        hashlib.sha256(b"nothing").hexdigest(), "X")
    blob = server.data_dir / "lfs" / oid[:2] / oid[2:4] / oid
    assert blob.read_bytes() == secret
    assert Path(hf_api(server, victim_token).hf_hub_download(f"{victim}/vault", "k.bin")).read_bytes() == secret
