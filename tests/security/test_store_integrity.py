"""Finding: stored bytes that do not hash to their oid (high).

The store's invariant: bytes stored under oid X hash to X. A multipart part is immutable once received
(re-sending one cannot change the object after the fact), an upload that finds X already stored
replaces it with its own verified bytes (a damaged copy never outlives a genuine upload), and
`bastion admin fsck` re-verifies every stored object and xorb and reports what does not match.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
from pathlib import Path

import httpx
import pytest

from tests.conftest import BastionServer, MiB, hf_api

CHUNK = 10 * MiB  # BASTION_MULTIPART_CHUNK_SIZE of the test server (multipart starts above 24 MiB)


def _data(seed: int, size: int) -> bytes:
    return b"\x00" + random.Random(seed).randbytes(size - 1)


def _repo(server: BastionServer) -> tuple[str, str]:
    name, token = server.create_user()
    repo_id = f"{name}/weights"
    hf_api(server, token).create_repo(repo_id)
    return repo_id, token


def _start_multipart(server: BastionServer, repo_id: str, token: str, oid: str, size: int) -> tuple[list[str], str]:
    resp = httpx.post(f"{server.url}/{repo_id}.git/info/lfs/objects/batch", timeout=60,
                      json={"operation": "upload", "transfers": ["basic", "multipart"], "hash_algo": "sha256",
                            "objects": [{"oid": oid, "size": size}]},
                      headers={"authorization": f"Bearer {token}", "accept": "application/vnd.git-lfs+json"})
    assert resp.status_code == 200, resp.text
    upload = resp.json()["objects"][0]["actions"]["upload"]
    header = upload["header"]
    return [header[str(n)] for n in range(1, len(header))], upload["href"]


def _complete(url: str, oid: str, etags: list[str]) -> httpx.Response:
    return httpx.post(url, json={"oid": oid, "parts": [{"partNumber": i + 1, "etag": e} for i, e in enumerate(etags)]},
                      timeout=60)


def _stored_file(server: BastionServer, oid: str) -> Path:
    return server.data_dir / "lfs" / oid[:2] / oid[2:4] / oid


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def test_a_part_sent_again_after_all_parts_cannot_change_the_stored_object(server: BastionServer) -> None:
    repo_id, token = _repo(server)
    data = _data(142, 2 * CHUNK + 5 * MiB + 17)
    oid, size = hashlib.sha256(data).hexdigest(), len(data)
    parts, complete_url = _start_multipart(server, repo_id, token, oid, size)
    chunks = [data[i * CHUNK:(i + 1) * CHUNK] for i in range(len(parts))]
    etags = []
    for url, chunk in zip(parts, chunks, strict=True):
        resp = httpx.put(url, content=chunk, timeout=60)
        assert resp.status_code == 200, resp.text
        etags.append(resp.headers["etag"])
    poisoned = bytes(len(chunks[0]))  # part 1 again, other bytes of the same size
    again = httpx.put(parts[0], content=poisoned, timeout=60)
    assert again.status_code == 409, again.text
    assert "already been received" in again.json()["error"]
    assert _complete(complete_url, oid, etags).status_code == 200
    stored = _stored_file(server, oid)
    assert _sha256_file(stored) == oid  # the store holds exactly the bytes that hash to the oid

    # Another tenant's genuine upload of the same content downloads exactly that content.
    other_repo, other_token = _repo(server)
    api = hf_api(server, other_token)
    api.upload_file(path_or_fileobj=data, path_in_repo="model.bin", repo_id=other_repo)
    got = httpx.get(f"{server.url}/{other_repo}/resolve/main/model.bin",
                    headers={"authorization": f"Bearer {other_token}"}, timeout=120)
    assert got.status_code == 200 and hashlib.sha256(got.content).hexdigest() == oid


def test_a_part_whose_first_try_failed_can_be_sent_again(server: BastionServer) -> None:
    repo_id, token = _repo(server)
    data = _data(143, 2 * CHUNK + 5 * MiB + 5)
    oid, size = hashlib.sha256(data).hexdigest(), len(data)
    parts, complete_url = _start_multipart(server, repo_id, token, oid, size)
    chunks = [data[i * CHUNK:(i + 1) * CHUNK] for i in range(len(parts))]
    short = httpx.put(parts[1], content=chunks[1][:-1], timeout=60)
    assert short.status_code == 400
    etags = [httpx.put(url, content=chunk, timeout=60).headers["etag"] for url, chunk in zip(parts, chunks, strict=True)]
    assert _complete(complete_url, oid, etags).status_code == 200
    assert _sha256_file(_stored_file(server, oid)) == oid


def _corrupt(path: Path) -> None:
    os.chmod(path, 0o644)
    with path.open("r+b") as fh:
        fh.seek(100)
        byte = fh.read(1)
        fh.seek(100)
        fh.write(bytes([byte[0] ^ 0xFF]))


@pytest.fixture
def own_server(tmp_path_factory: pytest.TempPathFactory) -> BastionServer:
    """A server of its own: fsck walks every object, and other tests' objects must not be touched."""
    server = BastionServer(tmp_path_factory.mktemp("fsck")).start()
    yield server
    server.stop()


def test_fsck_reports_a_damaged_object_and_a_genuine_upload_replaces_it(own_server: BastionServer) -> None:
    server = own_server
    repo_id, token = _repo(server)
    data = _data(144, 3 * MiB)
    oid = hashlib.sha256(data).hexdigest()
    hf_api(server, token).upload_file(path_or_fileobj=data, path_in_repo="w.bin", repo_id=repo_id)
    clean = server.cli("admin", "fsck", "--json", check=False)
    assert clean.returncode == 0, clean.stderr
    report = json.loads(clean.stdout)
    assert report["lfs"]["checked"] >= 1 and report["lfs"]["bad"] == []

    stored = _stored_file(server, oid)
    _corrupt(stored)
    damaged = server.cli("admin", "fsck", "--json", check=False)
    assert damaged.returncode == 1
    bad = json.loads(damaged.stdout)["lfs"]["bad"]
    assert [b["oid"] for b in bad] == [oid] and "sha256" in bad[0]["problem"]
    assert _sha256_file(stored) != oid  # reported, never silently fixed
    plain = server.cli("admin", "fsck", check=False)
    assert plain.returncode == 1 and oid in plain.stdout

    # A later genuine upload by another tenant stores its verified bytes in place of the damaged copy.
    other_repo, other_token = _repo(server)
    hf_api(server, other_token).upload_file(path_or_fileobj=data, path_in_repo="w.bin", repo_id=other_repo)
    got = httpx.get(f"{server.url}/{other_repo}/resolve/main/w.bin",
                    headers={"authorization": f"Bearer {other_token}"}, timeout=60)
    assert got.status_code == 200 and got.content == data
    assert server.cli("admin", "fsck", check=False).returncode == 0


def test_fsck_reports_a_damaged_xorb_and_the_file_it_breaks(own_server: BastionServer, tmp_path: Path) -> None:
    from tests.xet.hfclient import run_python

    server = own_server
    repo_id, token = _repo(server)
    data = _data(145, 300_000)
    src = tmp_path / "w.bin"
    src.write_bytes(data)
    run_python(server, token, tmp_path / "home", f"""
from huggingface_hub import HfApi
HfApi().upload_file(path_or_fileobj={str(src)!r}, path_in_repo="w.bin", repo_id={repo_id!r})
print(json.dumps(True))
""")
    report = json.loads(server.cli("admin", "fsck", "--json").stdout)
    assert report["xorbs"]["checked"] >= 1 and report["shards"]["checked"] >= 1
    assert report["lfs"]["checked"] >= 1 and not any(part["bad"] for part in report.values())

    xorbs = sorted(p for p in (server.data_dir / "xet" / "xorbs").rglob("*") if p.is_file() and len(p.name) == 64)
    _corrupt(xorbs[0])
    damaged = server.cli("admin", "fsck", "--json", check=False)
    assert damaged.returncode == 1
    report = json.loads(damaged.stdout)
    assert [b["oid"] for b in report["xorbs"]["bad"]] == [xorbs[0].name]
    assert [b["oid"] for b in report["lfs"]["bad"]] == [hashlib.sha256(data).hexdigest()]
