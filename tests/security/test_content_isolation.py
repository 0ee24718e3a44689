"""Finding: cross-tenant read by a forged LFS pointer (critical).

A regular file whose text is an LFS pointer naming another repo's object must never make that
object readable: the commit path validates it exactly like an LFS add (the repo must hold a proven
link to the object), and every reader (resolve, git-lfs, scanners) checks the link itself, so a
pointer already in a repository from before this rule serves nothing either.
"""

from __future__ import annotations

import base64
import hashlib
import json
import random
from pathlib import Path

import httpx
import pygit2
import pytest
import sqlalchemy as sa

from tests.conftest import BastionServer, hf_api
from tests.xet.hfclient import run_python

HEADER = {"key": "header", "value": {"summary": "add a file", "description": ""}}


def _secret_bytes(seed: int, size: int) -> bytes:
    return b"\x00" + random.Random(seed).randbytes(size - 1)  # binary: stored through LFS


def _pointer(oid: str, size: int) -> bytes:
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{oid}\nsize {size}\n".encode()


def _commit_regular(server: BastionServer, token: str, repo_id: str, path: str, content: bytes,
                    encoding: str = "base64") -> httpx.Response:
    value = {"path": path, "encoding": encoding,
             "content": base64.b64encode(content).decode() if encoding == "base64" else content.decode()}
    lines = [HEADER, {"key": "file", "value": value}]
    return httpx.post(f"{server.url}/api/models/{repo_id}/commit/main",
                      content=b"\n".join(json.dumps(x).encode() for x in lines),
                      headers={"authorization": f"Bearer {token}", "content-type": "application/x-ndjson"},
                      timeout=60)


def _victim_file(server: BastionServer, tmp_path: Path, seed: int) -> tuple[str, str, bytes]:
    """A private repo of another user holding one LFS-stored file; returns (repo id, token, bytes)."""
    name, token = server.create_user()
    repo_id = f"{name}/private-weights"
    api = hf_api(server, token)
    api.create_repo(repo_id, private=True)
    data = _secret_bytes(seed, 4096)
    api.upload_file(path_or_fileobj=data, path_in_repo="weights.bin", repo_id=repo_id)
    return repo_id, token, data


def _attacker(server: BastionServer) -> tuple[str, str]:
    name, token = server.create_user()
    repo_id = f"{name}/public-loot"
    hf_api(server, token).create_repo(repo_id)  # public: anyone could read what it serves
    return repo_id, token


@pytest.mark.parametrize("encoding", ["base64", "utf-8"])
def test_regular_file_holding_a_pointer_to_another_repos_object_is_refused(
        server: BastionServer, tmp_path: Path, encoding: str) -> None:
    _victim_repo, _victim_token, secret = _victim_file(server, tmp_path, seed=14_1)
    oid = hashlib.sha256(secret).hexdigest()
    loot, token = _attacker(server)

    resp = _commit_regular(server, token, loot, "stolen.txt", _pointer(oid, len(secret)), encoding)
    assert resp.status_code == 400, resp.text
    assert "was not uploaded to this repository" in resp.json()["error"]
    # Nothing landed, and nobody (anonymous included) can read the victim's bytes through the repo.
    got = httpx.get(f"{server.url}/{loot}/resolve/main/stolen.txt", timeout=60)
    assert got.status_code == 404
    assert secret not in got.content


def test_pointer_committed_through_the_hub_client_cannot_reach_another_repos_object(
        server: BastionServer, tmp_path: Path) -> None:
    _victim_repo, _victim_token, secret = _victim_file(server, tmp_path, seed=14_2)
    oid = hashlib.sha256(secret).hexdigest()
    loot, token = _attacker(server)
    from huggingface_hub.errors import HfHubHTTPError

    with pytest.raises(HfHubHTTPError) as err:
        hf_api(server, token).upload_file(path_or_fileobj=_pointer(oid, len(secret)), path_in_repo="notes.txt",
                                          repo_id=loot)
    assert err.value.response.status_code == 400
    got = httpx.get(f"{server.url}/{loot}/resolve/main/notes.txt", timeout=60)
    assert got.status_code == 404 and secret not in got.content


def test_xet_stored_object_of_another_repo_cannot_be_reached_by_a_pointer(
        server: BastionServer, tmp_path: Path) -> None:
    name, victim_token = server.create_user()
    victim = f"{name}/private-xet"
    hf_api(server, victim_token).create_repo(victim, private=True)
    secret = _secret_bytes(14_3, 200_000)
    src = tmp_path / "w.bin"
    src.write_bytes(secret)
    run_python(server, victim_token, tmp_path / "home", f"""
from huggingface_hub import HfApi
HfApi().upload_file(path_or_fileobj={str(src)!r}, path_in_repo="w.bin", repo_id={victim!r})
print(json.dumps(True))
""")
    assert "xet shard upload" in server.server_log()
    oid = hashlib.sha256(secret).hexdigest()
    loot, token = _attacker(server)
    resp = _commit_regular(server, token, loot, "stolen.txt", _pointer(oid, len(secret)))
    assert resp.status_code == 400, resp.text
    got = httpx.get(f"{server.url}/{loot}/resolve/main/stolen.txt", timeout=60)
    assert got.status_code == 404 and secret not in got.content


def test_pointer_to_an_object_the_repo_holds_is_accepted_as_an_lfs_file(server: BastionServer) -> None:
    name, token = server.create_user()
    repo_id = f"{name}/own"
    api = hf_api(server, token)
    api.create_repo(repo_id)
    data = _secret_bytes(14_4, 5000)
    api.upload_file(path_or_fileobj=data, path_in_repo="a.bin", repo_id=repo_id)
    oid = hashlib.sha256(data).hexdigest()
    resp = _commit_regular(server, token, repo_id, "copy.txt", _pointer(oid, len(data)))
    assert resp.status_code == 200, resp.text
    got = httpx.get(f"{server.url}/{repo_id}/resolve/main/copy.txt", timeout=60)
    assert got.status_code == 200 and got.content == data
    # A pointer naming the right object with the wrong size is refused like an LFS add with it.
    resp = _commit_regular(server, token, repo_id, "bad.txt", _pointer(oid, len(data) + 1))
    assert resp.status_code == 400 and "bytes" in resp.json()["error"]


def _plant_pointer(server: BastionServer, repo_id: str, path: str, pointer: bytes) -> None:
    """A forged pointer written into the bare repository itself, as one committed before the commit path
    checked regular files (history cannot be rewritten by an upgrade): the readers must hold on their own."""
    ns, name = repo_id.split("/")
    engine = sa.create_engine(f"sqlite:///{server.data_dir / 'bastion.sqlite3'}")
    with engine.connect() as conn:
        key = conn.execute(sa.text("SELECT storage_key FROM repos WHERE namespace = :n AND name = :m"),
                           {"n": ns, "m": name}).scalar_one()
    engine.dispose()
    repo = pygit2.Repository(str(server.data_dir / "repos" / key[:2] / f"{key}.git"))
    head = repo.references["refs/heads/main"].peel(pygit2.Commit)
    builder = repo.TreeBuilder(head.tree)
    builder.insert(path, repo.create_blob(pointer), pygit2.GIT_FILEMODE_BLOB)
    sig = pygit2.Signature("legacy", "legacy@example.com")
    new = repo.create_commit(None, sig, sig, "legacy forged pointer", builder.write(), [head.id])
    repo.references["refs/heads/main"].set_target(new)


def test_readers_refuse_an_object_the_repo_holds_no_link_to(server: BastionServer, tmp_path: Path) -> None:
    _victim_repo, _victim_token, secret = _victim_file(server, tmp_path, seed=14_5)
    oid = hashlib.sha256(secret).hexdigest()
    loot, token = _attacker(server)
    _plant_pointer(server, loot, "stolen.bin", _pointer(oid, len(secret)))

    for method in ("GET", "HEAD"):
        got = httpx.request(method, f"{server.url}/{loot}/resolve/main/stolen.bin", timeout=60)
        assert got.status_code == 404, (method, got.status_code)
        assert secret not in got.content
    batch = httpx.post(f"{server.url}/{loot}.git/info/lfs/objects/batch", timeout=60,
                       json={"operation": "download", "objects": [{"oid": oid, "size": len(secret)}]},
                       headers={"accept": "application/vnd.git-lfs+json"})
    assert batch.status_code == 200
    assert batch.json()["objects"][0]["error"]["code"] == 404
    direct = httpx.get(f"{server.url}/{loot}.git/info/lfs/objects/{oid}", timeout=60)
    assert direct.status_code == 404 and secret not in direct.content
