"""Bad input gets a clear 4xx in the Hub's error format, writes nothing, and the server stays up."""

from __future__ import annotations

import base64
import hashlib
import json
import os

import httpx
import pytest

from tests.conftest import BastionServer, hf_api


@pytest.fixture
def repo(server: BastionServer, user: tuple[str, str]) -> tuple[str, str, str]:
    name, token = user
    repo_id = f"{name}/bad-{os.urandom(3).hex()}"
    hf_api(server, token).create_repo(repo_id)
    return repo_id, token, hf_api(server, token).model_info(repo_id).sha


def _commit(server: BastionServer, repo_id: str, token: str, lines: list[object] | bytes,
            params: str = "") -> httpx.Response:
    body = lines if isinstance(lines, bytes) else b"\n".join(json.dumps(x).encode() for x in lines)
    return httpx.post(f"{server.url}/api/models/{repo_id}/commit/main{params}", content=body,
                      headers={"authorization": f"Bearer {token}", "content-type": "application/x-ndjson"})


HEADER = {"key": "header", "value": {"summary": "s", "description": ""}}


def _file(path: str, content: bytes = b"x") -> dict[str, object]:
    return {"key": "file", "value": {"path": path, "content": base64.b64encode(content).decode(),
                                     "encoding": "base64"}}


@pytest.mark.parametrize("path", ["../escape.txt", "a/../../b", "/abs.txt", ".git/config", "a/.git/hooks/x",
                                  "a/.GIT/x", "nul\x00byte", "a//b", "./a", "x" * 300, "a/" * 600 + "b", "back\\slash"])
def test_bad_paths_are_rejected_and_write_nothing(server: BastionServer, repo: tuple[str, str, str],
                                                  path: str) -> None:
    repo_id, token, sha = repo
    resp = _commit(server, repo_id, token, [HEADER, _file(path)])
    # A relative path (a '.' or '..' component) is the Hub's 422; every other bad path a 400.
    relative = any(part in (".", "..") for part in path.split("/"))
    assert resp.status_code == (422 if relative else 400), resp.text
    assert resp.headers["x-error-code"] == ("UnprocessableEntity" if relative else "BadRequest")
    assert resp.json()["error"]
    assert hf_api(server, token).model_info(repo_id).sha == sha


@pytest.mark.parametrize("body", [
    b"not json at all",
    b'{"key": "header", "value": {"summary": "s"}}\n{"key": "file", "value": {"path": "a.txt", "content": "!!!"}}',
    b'{"key": "file", "value": {"path": "a.txt", "content": "eA=="}}',
    b'{"key": "header", "value": {"summary": "s"}}\n{"key": "rename", "value": {"path": "a"}}',
    b'{"key": "header", "value": {"summary": "s"}}\n{"key": "file", "value": {"path": "a", "content": "eA==',
    b'[1, 2, 3]',
    b'',
    b'{"key": "header", "value": {"summary": 5}}',
    b'{"key": "header", "value": {"summary": "s", "parentCommit": "xyz"}}',
    b'{"key": "header", "value": {"summary": "s"}}\n{"key": "lfsFile", "value": {"path": "w", "oid": "ABC", "size": 1}}',
])
def test_malformed_or_truncated_ndjson(server: BastionServer, repo: tuple[str, str, str], body: bytes) -> None:
    repo_id, token, sha = repo
    resp = _commit(server, repo_id, token, body)
    assert resp.status_code == 400, resp.text
    assert resp.headers.get("x-error-message")
    assert hf_api(server, token).model_info(repo_id).sha == sha


def test_oversized_commit_payload(server: BastionServer, repo: tuple[str, str, str]) -> None:
    repo_id, token, sha = repo
    big = _file("big.txt", os.urandom(11 * 1024 * 1024))  # over the 10 MiB inline limit
    resp = _commit(server, repo_id, token, [HEADER, big])
    assert resp.status_code == 400 and "LFS" in resp.json()["error"]
    huge = b'{"key": "header", "value": {"summary": "s"}}\n' + b" " * (65 * 1024 * 1024)
    resp = _commit(server, repo_id, token, huge)
    assert resp.status_code == 413
    assert hf_api(server, token).model_info(repo_id).sha == sha


def test_lfs_pointer_to_missing_or_mismatched_object(server: BastionServer, repo: tuple[str, str, str]) -> None:
    repo_id, token, sha = repo
    data = os.urandom(1000)
    oid = hashlib.sha256(data).hexdigest()
    missing = {"key": "lfsFile", "value": {"path": "w.bin", "algo": "sha256", "oid": oid, "size": 1000}}
    resp = _commit(server, repo_id, token, [HEADER, missing])
    assert resp.status_code == 400 and "not uploaded" in resp.json()["error"]
    # upload it for real, then lie about the size
    hf_api(server, token).upload_file(path_or_fileobj=data, path_in_repo="real.bin", repo_id=repo_id)
    sha = hf_api(server, token).model_info(repo_id).sha
    lie = {"key": "lfsFile", "value": {"path": "w.bin", "algo": "sha256", "oid": oid, "size": 999}}
    resp = _commit(server, repo_id, token, [HEADER, lie])
    assert resp.status_code == 400 and "999" in resp.json()["error"]
    assert hf_api(server, token).model_info(repo_id).sha == sha


def test_knowing_a_sha256_does_not_grant_the_object(server: BastionServer, repo: tuple[str, str, str]) -> None:
    """An object uploaded to one repo cannot be referenced from another without uploading it."""
    repo_id, token, _ = repo
    data = os.urandom(2048)
    oid = hashlib.sha256(data).hexdigest()
    hf_api(server, token).upload_file(path_or_fileobj=data, path_in_repo="private.bin", repo_id=repo_id)
    thief, thief_token = server.create_user()
    hf_api(server, thief_token).create_repo(f"{thief}/loot")
    steal = {"key": "lfsFile", "value": {"path": "stolen.bin", "algo": "sha256", "oid": oid, "size": 2048}}
    resp = _commit(server, f"{thief}/loot", thief_token, [HEADER, steal])
    assert resp.status_code == 400
    # and the batch API asks the thief to upload (prove possession) rather than skipping
    batch = httpx.post(f"{server.url}/{thief}/loot.git/info/lfs/objects/batch",
                       json={"operation": "upload", "transfers": ["basic"], "objects": [{"oid": oid, "size": 2048}]},
                       headers={"authorization": f"Bearer {thief_token}"})
    assert "actions" in batch.json()["objects"][0]


def test_lfs_upload_with_wrong_bytes_is_rejected(server: BastionServer, repo: tuple[str, str, str]) -> None:
    repo_id, token, _ = repo
    data = os.urandom(5000)
    oid = hashlib.sha256(data).hexdigest()
    batch = httpx.post(f"{server.url}/{repo_id}.git/info/lfs/objects/batch",
                       json={"operation": "upload", "transfers": ["basic"], "objects": [{"oid": oid, "size": 5000}]},
                       headers={"authorization": f"Bearer {token}"}).json()
    href = batch["objects"][0]["actions"]["upload"]["href"]
    wrong = httpx.put(href, content=os.urandom(5000))
    assert wrong.status_code == 400 and "sha256 mismatch" in wrong.json()["error"]
    short = httpx.put(href, content=data[:100])
    assert short.status_code == 400
    tampered = httpx.put(href[:-3] + "AAA", content=data)
    assert tampered.status_code == 403
    assert httpx.put(href, content=data).status_code == 200
    resp = _commit(server, repo_id, token, [HEADER, {"key": "lfsFile", "value": {
        "path": "ok.bin", "algo": "sha256", "oid": oid, "size": 5000}}])
    assert resp.status_code == 200


@pytest.mark.parametrize("body", [
    {"operation": "upload", "objects": [{"oid": "zz", "size": 1}]},
    {"operation": "upload", "objects": [{"oid": "a" * 64, "size": -1}]},
    {"operation": "upload", "objects": []},
    {"operation": "steal", "objects": [{"oid": "a" * 64, "size": 1}]},
    {"operation": "upload", "objects": [{"oid": "a" * 64, "size": 1}], "hash_algo": "md5"},
])
def test_bad_lfs_batch_requests(server: BastionServer, repo: tuple[str, str, str], body: dict[str, object]) -> None:
    repo_id, token, _ = repo
    resp = httpx.post(f"{server.url}/{repo_id}.git/info/lfs/objects/batch", json=body,
                      headers={"authorization": f"Bearer {token}"})
    assert resp.status_code == 400, resp.text


@pytest.mark.parametrize("name", ["bad name", "a/b", "-lead", "trail-", "x" * 97, "..", "ok.git", "api", ""])
def test_invalid_repo_names(server: BastionServer, user: tuple[str, str], name: str) -> None:
    _, token = user
    resp = httpx.post(f"{server.url}/api/repos/create", json={"name": name, "type": "model"},
                      headers={"authorization": f"Bearer {token}"})
    assert resp.status_code == 400, resp.text


def test_invalid_namespace_and_type(server: BastionServer, user: tuple[str, str]) -> None:
    _, token = user
    auth = {"authorization": f"Bearer {token}"}
    resp = httpx.post(f"{server.url}/api/repos/create", json={"name": "x", "organization": "somebody-else"},
                      headers=auth)
    assert resp.status_code in (400, 403)
    resp = httpx.post(f"{server.url}/api/repos/create", json={"name": "x", "type": "bucket"}, headers=auth)
    assert resp.status_code == 400
    resp = httpx.post(f"{server.url}/api/repos/create", content=b"{nope", headers=auth)
    assert resp.status_code == 400 and resp.headers["x-error-code"] == "BadRequest"


def test_unknown_revision(server: BastionServer, repo: tuple[str, str, str]) -> None:
    repo_id, token, _ = repo
    auth = {"authorization": f"Bearer {token}"}
    for url in (f"/api/models/{repo_id}/revision/nope", f"/api/models/{repo_id}/tree/nope",
                f"/{repo_id}/resolve/nope/.gitattributes", f"/api/models/{repo_id}/commits/deadbeef"):
        resp = httpx.get(server.url + url, headers=auth)
        assert resp.status_code == 404 and resp.headers["x-error-code"] == "RevisionNotFound", url


@pytest.mark.parametrize("header", [
    "Bearer bst_notarealtoken", "Bearer " + "bst_" + "A" * 36, "Basic !!!notbase64", "Digest abc", "Bearer",
    "Bearer hf_" + "a" * 34,
])
def test_garbage_or_unknown_tokens_get_401(server: BastionServer, header: str) -> None:
    resp = httpx.get(f"{server.url}/api/whoami-v2", headers={"authorization": header})
    assert resp.status_code == 401
    assert resp.headers["x-error-message"] == "Invalid credentials in Authorization header"
    # also on repo routes: a bad token is not silently treated as anonymous
    resp = httpx.get(f"{server.url}/api/models", headers={"authorization": header})
    assert resp.status_code == 401


def test_revoked_and_expired_tokens_get_401(server: BastionServer) -> None:
    import sqlalchemy as sa

    from bastion.tokens.format import hash_token

    name, token = server.create_user()
    assert httpx.get(f"{server.url}/api/whoami-v2", headers={"authorization": f"Bearer {token}"}).status_code == 200
    engine = sa.create_engine(f"sqlite:///{server.data_dir / 'bastion.sqlite3'}")
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE access_tokens SET expires_at = '2000-01-01 00:00:00.000000' "
                             "WHERE secret_hash = :h"), {"h": hash_token(token)})
    engine.dispose()
    assert httpx.get(f"{server.url}/api/whoami-v2", headers={"authorization": f"Bearer {token}"}).status_code == 401


def test_server_survives_bad_input(server: BastionServer) -> None:
    assert httpx.get(f"{server.url}/api/health").json()["status"] == "ok"
    assert "Traceback" not in server.server_log()
