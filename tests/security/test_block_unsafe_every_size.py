"""Finding: "block unsafe files" stopped at 64 MiB (medium).

Files up to BASTION_SCAN_INLINE_MAX_BYTES are scanned before the ref moves; larger ones (most model
files) were accepted and downloadable at once, and stayed downloadable once judged unsafe. With the
policy on, a file is now downloadable only once every enabled scanner has judged it safe -- on every
read path -- except by those who manage the repo; an unsafe one stays blocked.

The test server scans inline only up to 1 MiB and runs no embedded scan workers, so the window
between the commit and the scan is held open deterministically; a `bastion worker` closes it.
"""

from __future__ import annotations

import hashlib
import random
import struct
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import BastionServer, ClamdServer, MiB, hf_api, wait_for

# Inert (never unpickled here): would call os.system("true") if loaded. Padded past the inline limit.
REDUCE_OS_SYSTEM = b"cos\nsystem\nq\x00X\x04\x00\x00\x00trueq\x01\x85q\x02Rq\x03."


def _padded_pickle(seed: int, padding: int) -> bytes:
    return b"\x80\x03B" + struct.pack("<I", padding) + random.Random(seed).randbytes(padding) + b"0" + REDUCE_OS_SYSTEM


def _benign(seed: int, size: int) -> bytes:
    return b"\x00" + random.Random(seed).randbytes(size - 1)


@pytest.fixture
def gated_server(tmp_path_factory: pytest.TempPathFactory, clamd: ClamdServer) -> Iterator[BastionServer]:
    server = BastionServer(tmp_path_factory.mktemp("block-unsafe"), env={
        "BASTION_CLAMD_ADDRESS": clamd.address, "BASTION_EMBEDDED_WORKERS": "0",
        "BASTION_SCAN_INLINE_MAX_BYTES": str(MiB)}).start()
    yield server
    server.stop()


def _get(server: BastionServer, repo_id: str, path: str, token: str | None, method: str = "GET") -> httpx.Response:
    headers = {"authorization": f"Bearer {token}"} if token else {}
    return httpx.request(method, f"{server.url}/{repo_id}/resolve/main/{path}", headers=headers, timeout=120)


def _lfs_download(server: BastionServer, repo_id: str, oid: str, size: int, token: str | None) -> dict[str, object]:
    headers = {"accept": "application/vnd.git-lfs+json"}
    if token:
        headers["authorization"] = f"Bearer {token}"
    resp = httpx.post(f"{server.url}/{repo_id}.git/info/lfs/objects/batch", headers=headers, timeout=60,
                      json={"operation": "download", "objects": [{"oid": oid, "size": size}]})
    assert resp.status_code == 200, resp.text
    return resp.json()["objects"][0]


def test_large_files_are_not_downloadable_until_scanned_safe(gated_server: BastionServer, tmp_path: Path) -> None:
    server = gated_server
    owner, owner_token = server.create_user()
    _reader, reader_token = server.create_user()
    repo_id = f"{owner}/guarded"
    api = hf_api(server, owner_token)
    api.create_repo(repo_id)  # public: everyone may read it
    resp = httpx.put(f"{server.url}/api/models/{repo_id}/settings", json={"blockUnsafeFiles": True},
                     headers={"authorization": f"Bearer {owner_token}"}, timeout=60)
    assert resp.status_code == 200

    evil = _padded_pickle(51, 2 * MiB)
    good = _benign(52, 2 * MiB)
    api.upload_file(path_or_fileobj=evil, path_in_repo="evil.pkl", repo_id=repo_id)  # over the inline limit
    api.upload_file(path_or_fileobj=good, path_in_repo="good.bin", repo_id=repo_id)

    # Not yet scanned: nobody but those who manage the repo downloads either file, by any path.
    for path, data in (("evil.pkl", evil), ("good.bin", good)):
        oid = hashlib.sha256(data).hexdigest()
        for token in (None, reader_token):
            for method in ("GET", "HEAD"):
                got = _get(server, repo_id, path, token, method)
                assert got.status_code == 403, (path, method, got.status_code)
                assert "block unsafe files" in got.headers["x-error-message"]
                assert data not in got.content
            lfs = _lfs_download(server, repo_id, oid, len(data), token)
            assert lfs["error"]["code"] == 403 and "actions" not in lfs  # type: ignore[index]
            direct = httpx.get(f"{server.url}/{repo_id}.git/info/lfs/objects/{oid}", timeout=60,
                               headers={"authorization": f"Bearer {token}"} if token else {})
            assert direct.status_code == 403 and data not in direct.content
        owned = _get(server, repo_id, path, owner_token)
        assert owned.status_code == 200 and owned.content == data  # the owner may look at what is held

    # A worker scans them: the safe file opens up, the unsafe one stays blocked (with its reason).
    worker = subprocess.Popen([sys.executable, "-m", "bastion.cli", "worker", "--workers", "1"], env=server.env,
                              stdout=(tmp_path / "worker.log").open("wb"), stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: _get(server, repo_id, "good.bin", None).status_code == 200, timeout=300, interval=1)
        wait_for(lambda: "unsafe" in _get(server, repo_id, "evil.pkl", None).headers.get("x-error-message", ""),
                 timeout=300, interval=1)
    finally:
        worker.terminate()
        worker.wait(30)
    assert _get(server, repo_id, "good.bin", reader_token).content == good
    blocked = _get(server, repo_id, "evil.pkl", reader_token)
    assert blocked.status_code == 403 and evil not in blocked.content
    lfs = _lfs_download(server, repo_id, hashlib.sha256(evil).hexdigest(), len(evil), None)
    assert lfs["error"]["code"] == 403  # type: ignore[index]
    assert _get(server, repo_id, "evil.pkl", owner_token).status_code == 200


def test_without_the_policy_large_files_download_at_once(gated_server: BastionServer) -> None:
    server = gated_server
    owner, owner_token = server.create_user()
    repo_id = f"{owner}/open"
    api = hf_api(server, owner_token)
    api.create_repo(repo_id)
    data = _benign(53, 2 * MiB)
    api.upload_file(path_or_fileobj=data, path_in_repo="w.bin", repo_id=repo_id)
    got = _get(server, repo_id, "w.bin", None)
    assert got.status_code == 200 and got.content == data


def test_xet_reconstructions_follow_the_same_rule(gated_server: BastionServer, tmp_path: Path) -> None:
    from tests.xet.hfclient import run_python

    server = gated_server
    owner, owner_token = server.create_user()
    _reader, reader_token = server.create_user()
    repo_id = f"{owner}/guarded-xet"
    hf_api(server, owner_token).create_repo(repo_id)
    resp = httpx.put(f"{server.url}/api/models/{repo_id}/settings", json={"blockUnsafeFiles": True},
                     headers={"authorization": f"Bearer {owner_token}"}, timeout=60)
    assert resp.status_code == 200
    src = tmp_path / "evil.pkl"
    src.write_bytes(_padded_pickle(54, 2 * MiB))
    run_python(server, owner_token, tmp_path / "home", f"""
from huggingface_hub import HfApi
HfApi().upload_file(path_or_fileobj={str(src)!r}, path_in_repo="evil.pkl", repo_id={repo_id!r})
print(json.dumps(True))
""")
    tree = httpx.get(f"{server.url}/api/models/{repo_id}/tree/main", timeout=60).json()
    xet_hash = next(e["xetHash"] for e in tree if e["path"] == "evil.pkl")

    def plan(token: str) -> httpx.Response:
        cas = httpx.get(f"{server.url}/api/models/{repo_id}/xet-read-token/main",
                        headers={"authorization": f"Bearer {token}"}, timeout=60).json()
        return httpx.get(f"{cas['casUrl']}/v2/reconstructions/{xet_hash}", timeout=60,
                         headers={"authorization": f"Bearer {cas['accessToken']}"})

    refused = plan(reader_token)
    assert refused.status_code == 403 and "block unsafe files" in refused.headers["x-error-message"]
    assert plan(owner_token).status_code == 200
