"""The LFS blob store through the client's protocols: multipart uploads are verified whole before
anything is stored, each object is stored once, and copies never reach another repo's objects."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
from huggingface_hub import CommitOperationAdd, CommitOperationCopy, hf_hub_download

from tests.conftest import BastionServer, MiB, hf_api

HEADER = {"key": "header", "value": {"summary": "s", "description": ""}}
CHUNK = 10 * MiB  # BASTION_MULTIPART_CHUNK_SIZE of the test server (multipart starts above 24 MiB)


def _db(server: BastionServer) -> sa.Engine:
    return sa.create_engine(f"sqlite:///{server.data_dir / 'bastion.sqlite3'}")


def _commit(server: BastionServer, repo_id: str, token: str, lines: list[dict[str, object]]) -> httpx.Response:
    return httpx.post(f"{server.url}/api/models/{repo_id}/commit/main",
                      content=b"\n".join(json.dumps(x).encode() for x in lines),
                      headers={"authorization": f"Bearer {token}", "content-type": "application/x-ndjson"})


def _lfs_file(path: str, oid: str, size: int | None) -> dict[str, object]:
    value: dict[str, object] = {"path": path, "algo": "sha256", "oid": oid}
    if size is not None:
        value["size"] = size
    return {"key": "lfsFile", "value": value}


def _blob_files(server: BastionServer) -> set[Path]:
    return {p for p in (server.data_dir / "lfs").rglob("*") if p.is_file()}


def _staging_files(server: BastionServer) -> set[Path]:
    root = server.data_dir / "tmp" / "multipart"
    return set(root.iterdir()) if root.exists() else set()


def _stored(server: BastionServer, oid: str) -> bool:
    with _db(server).connect() as conn:
        row = conn.execute(sa.text("SELECT count(*) FROM lfs_objects WHERE oid = :o"), {"o": oid}).scalar_one()
    return bool(row) or any(p.name == oid for p in _blob_files(server))


def _start_multipart(server: BastionServer, repo_id: str, token: str, oid: str, size: int,
                     ) -> tuple[list[str], str]:
    """What huggingface_hub does for a large file: a batch request offering `multipart`."""
    resp = httpx.post(f"{server.url}/{repo_id}.git/info/lfs/objects/batch",
                      json={"operation": "upload", "transfers": ["basic", "multipart"], "hash_algo": "sha256",
                            "objects": [{"oid": oid, "size": size}]},
                      headers={"authorization": f"Bearer {token}", "accept": "application/vnd.git-lfs+json"})
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["transfer"] == "multipart"
    upload = body["objects"][0]["actions"]["upload"]
    header = upload["header"]
    assert int(header["chunk_size"]) == CHUNK
    parts = [header[str(n)] for n in range(1, len(header))]
    assert len(parts) == -(-size // CHUNK)
    return parts, upload["href"]


def _put(url: str, data: bytes) -> str:
    resp = httpx.put(url, content=data, timeout=60)
    assert resp.status_code == 200, resp.text
    return resp.headers["etag"]


def _complete(url: str, oid: str, etags: list[str]) -> httpx.Response:
    return httpx.post(url, json={"oid": oid, "parts": [{"partNumber": i + 1, "etag": e} for i, e in enumerate(etags)]},
                      timeout=60)


@pytest.fixture
def repo(server: BastionServer, user: tuple[str, str]) -> tuple[str, str]:
    name, token = user
    repo_id = f"{name}/mp-{os.urandom(3).hex()}"
    hf_api(server, token).create_repo(repo_id)
    return repo_id, token


def test_multipart_upload_with_wrong_bytes_is_rejected_and_stores_nothing(
        server: BastionServer, repo: tuple[str, str]) -> None:
    repo_id, token = repo
    data = os.urandom(2 * CHUNK + 5 * MiB + 4321)  # over the 24 MiB multipart threshold
    oid, size = hashlib.sha256(data).hexdigest(), len(data)
    staging_before = _staging_files(server)
    parts, complete_url = _start_multipart(server, repo_id, token, oid, size)
    wrong = bytearray(data)
    wrong[CHUNK + 7] ^= 0xFF  # one flipped byte in part 2: right sizes, wrong content
    etags = [_put(url, bytes(wrong[i * CHUNK:(i + 1) * CHUNK])) for i, url in enumerate(parts)]
    resp = _complete(complete_url, oid, etags)
    assert resp.status_code == 400, resp.text
    assert "sha256 mismatch" in resp.json()["error"]
    assert not _stored(server, oid)
    assert _staging_files(server) == staging_before  # the staging file is gone too
    # the object cannot be committed, and the failed upload cannot be completed again
    commit = _commit(server, repo_id, token, [HEADER, _lfs_file("w.safetensors", oid, size)])
    assert commit.status_code == 400 and "not uploaded" in commit.json()["error"]
    assert _complete(complete_url, oid, etags).status_code == 404
    assert not _stored(server, oid)


def test_multipart_upload_with_a_missing_or_misplaced_part_is_rejected(
        server: BastionServer, repo: tuple[str, str]) -> None:
    repo_id, token = repo
    data = os.urandom(2 * CHUNK + 5 * MiB + 999)
    oid, size = hashlib.sha256(data).hexdigest(), len(data)
    chunks = [data[i * CHUNK:(i + 1) * CHUNK] for i in range(3)]

    # Part 2 never sent: listing only the parts sent is refused, and so is claiming it was sent.
    parts, complete_url = _start_multipart(server, repo_id, token, oid, size)
    etags = [_put(parts[0], chunks[0]), _put(parts[2], chunks[2])]
    resp = _complete(complete_url, oid, etags)
    assert resp.status_code == 400 and "Expected 3 parts, got 2" in resp.json()["error"]
    resp = _complete(complete_url, oid, [etags[0], etags[0], etags[1]])
    assert resp.status_code == 400 and "part(s) 2 of 3 have not been received" in resp.json()["error"]
    assert not _stored(server, oid)

    # Parts 1 and 2 sent to each other's URL (same size, wrong place).
    parts, complete_url = _start_multipart(server, repo_id, token, oid, size)
    etags = [_put(parts[0], chunks[1]), _put(parts[1], chunks[0]), _put(parts[2], chunks[2])]
    resp = _complete(complete_url, oid, etags)
    assert resp.status_code == 400 and "sha256 mismatch" in resp.json()["error"]
    assert not _stored(server, oid)

    # A part of the wrong size is refused as it arrives.
    parts, complete_url = _start_multipart(server, repo_id, token, oid, size)
    too_big = httpx.put(parts[2], content=chunks[2] + b"x", timeout=60)
    assert too_big.status_code == 400 and "larger than" in too_big.json()["error"]
    short = httpx.put(parts[0], content=chunks[0][:-1], timeout=60)
    assert short.status_code == 400 and "must be exactly" in short.json()["error"]
    assert not _stored(server, oid)

    # The right bytes, sent out of order to their own URLs, are one valid object.
    etags = [""] * 3
    for i in (2, 0, 1):
        etags[i] = _put(parts[i], chunks[i])
    resp = _complete(complete_url, oid, etags)
    assert resp.status_code == 200, resp.text
    assert _stored(server, oid)
    assert _commit(server, repo_id, token, [HEADER, _lfs_file("w.safetensors", oid, size)]).status_code == 200
    got = httpx.get(f"{server.url}/{repo_id}/resolve/main/w.safetensors",
                    headers={"authorization": f"Bearer {token}"}, timeout=60)
    assert hashlib.sha256(got.content).hexdigest() == oid


def test_each_object_is_stored_once_however_many_repos_reference_it(server: BastionServer, tmp_path: Path) -> None:
    data = os.urandom(11 * MiB)  # over the 10 MiB LFS threshold
    oid = hashlib.sha256(data).hexdigest()
    before = _blob_files(server)
    repos = []
    for _ in range(2):  # two repos of two different users
        name, token = server.create_user()
        api = hf_api(server, token)
        repo_id = f"{name}/same-{os.urandom(2).hex()}"
        api.create_repo(repo_id)
        api.upload_file(path_or_fileobj=data, path_in_repo="weights.dat", repo_id=repo_id)
        repos.append((repo_id, token))
        file = next(iter(api.get_paths_info(repo_id, ["weights.dat"])))
        assert file.lfs is not None and file.lfs.sha256 == oid  # it went through LFS

    added = _blob_files(server) - before
    assert [p.name for p in added] == [oid]
    assert [p for p in (server.data_dir / "lfs").rglob(oid)] == list(added)
    with _db(server).connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM lfs_objects WHERE oid = :o"), {"o": oid}).scalar_one() == 1
        assert conn.execute(sa.text("SELECT count(*) FROM repo_lfs_objects WHERE oid = :o"),
                            {"o": oid}).scalar_one() == 2
    for i, (repo_id, token) in enumerate(repos):
        path = hf_hub_download(repo_id, "weights.dat", endpoint=server.url, token=token, cache_dir=tmp_path / str(i))
        assert Path(path).read_bytes() == data


def test_copy_operation_of_regular_and_lfs_files(server: BastionServer, user: tuple[str, str],
                                                 tmp_path: Path) -> None:
    name, token = user
    api = hf_api(server, token)
    repo_id = f"{name}/copies"
    api.create_repo(repo_id)
    text, weights = b"regular file\n", os.urandom(3000)
    api.create_commit(repo_id, commit_message="originals", operations=[
        CommitOperationAdd("src/notes.txt", text), CommitOperationAdd("src/weights.bin", weights)])
    before = _blob_files(server)
    api.create_commit(repo_id, commit_message="copies", operations=[
        CommitOperationCopy("src/notes.txt", "dst/notes.txt"),
        CommitOperationCopy("src/weights.bin", "dst/weights.bin")])
    assert _blob_files(server) == before  # an LFS copy is a new pointer, not new bytes
    info = {f.path: f for f in api.get_paths_info(repo_id, ["src/weights.bin", "dst/weights.bin", "dst/notes.txt"])}
    assert info["dst/weights.bin"].lfs.sha256 == hashlib.sha256(weights).hexdigest()
    assert info["dst/weights.bin"].blob_id == info["src/weights.bin"].blob_id
    assert info["dst/notes.txt"].lfs is None
    for path, content in (("dst/notes.txt", text), ("dst/weights.bin", weights), ("src/weights.bin", weights)):
        got = hf_hub_download(repo_id, path, endpoint=server.url, token=token, cache_dir=tmp_path / "c")
        assert Path(got).read_bytes() == content


@pytest.mark.parametrize("with_size", [True, False], ids=["with-size", "without-size"])
def test_lfs_file_of_another_repo_cannot_be_committed(server: BastionServer, with_size: bool) -> None:
    owner, owner_token = server.create_user()
    hf_api(server, owner_token).create_repo(f"{owner}/private-weights", private=True)
    secret = os.urandom(4096)
    oid = hashlib.sha256(secret).hexdigest()
    hf_api(server, owner_token).upload_file(path_or_fileobj=secret, path_in_repo="w.bin",
                                            repo_id=f"{owner}/private-weights")
    assert _stored(server, oid)

    thief, thief_token = server.create_user()
    api = hf_api(server, thief_token)
    api.create_repo(f"{thief}/loot")
    head = api.model_info(f"{thief}/loot").sha
    line = _lfs_file("stolen.bin", oid, len(secret) if with_size else None)
    resp = _commit(server, f"{thief}/loot", thief_token, [HEADER, line])
    assert resp.status_code == 400, resp.text
    assert resp.headers["x-error-code"] == "BadRequest"
    assert f"LFS object {oid} for 'stolen.bin' was not uploaded to this repository" in resp.json()["error"]
    assert api.model_info(f"{thief}/loot").sha == head
    assert api.list_repo_files(f"{thief}/loot") == [".gitattributes"]
    # The owner's own commit of the same object, with or without size (a copy), is fine.
    resp = _commit(server, f"{owner}/private-weights", owner_token, [HEADER, _lfs_file("again.bin", oid, None)])
    assert resp.status_code == 200, resp.text


def test_rejected_multipart_upload_leaves_no_upload_record(server: BastionServer, repo: tuple[str, str]) -> None:
    repo_id, token = repo
    data = os.urandom(2 * CHUNK + 5 * MiB + 1)
    oid = hashlib.sha256(data).hexdigest()
    parts, complete_url = _start_multipart(server, repo_id, token, oid, len(data))
    etags = [_put(url, os.urandom(len(data[i * CHUNK:(i + 1) * CHUNK]))) for i, url in enumerate(parts)]
    assert _complete(complete_url, oid, etags).status_code == 400
    with _db(server).connect() as conn:
        left = conn.execute(sa.text("SELECT count(*) FROM lfs_multipart_uploads WHERE oid = :o"), {"o": oid}).scalar_one()
    assert left == 0
