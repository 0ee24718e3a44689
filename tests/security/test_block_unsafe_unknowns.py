"""Finding: block-unsafe let through what the scanner could not open (medium).

An .npz whose member uses LZMA (zip method 14) was `suspicious: unsupported compression method 14` and
accepted with "block unsafe files" on, though np.load(allow_pickle=True) runs its payload; a pickle
compressed with something the scanner cannot read likewise. Now the zip reader reads every method
zipfile reads (the payload is found: unsafe), unknown is not safe (suspicious, could not open and
error block at commit and on download), and a repository manager may release a file that is held
but not unsafe, audited.
"""

from __future__ import annotations

import hashlib
import io
import random
import zipfile
from collections.abc import Iterator

import httpx
import pytest
import sqlalchemy as sa
from huggingface_hub.errors import HfHubHTTPError

from tests.conftest import BastionServer, ClamdServer, hf_api, wait_for

# Inert (never unpickled here): would call os.system("true") if loaded.
REDUCE_OS_SYSTEM = b"cos\nsystem\nq\x00X\x04\x00\x00\x00trueq\x01\x85q\x02Rq\x03."
NPY_OBJECT_HEADER = b"\x93NUMPY\x01\x00v\x00{'descr': '|O', 'fortran_order': False, 'shape': (1,), }"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


def _lzma_npz(seed: int) -> bytes:
    header = NPY_OBJECT_HEADER.ljust(10 + 0x76 - 1) + b"\n"
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_LZMA) as zf:
        zf.writestr("arr_0.npy", header + REDUCE_OS_SYSTEM)
        zf.writestr("noise.npy", random.Random(seed).randbytes(4096))
    return buf.getvalue()


def _zstd_pickle(seed: int) -> bytes:
    """Starts like a zstd frame (joblib's .pkl.zst): nothing in Bastion can read what it holds."""
    return ZSTD_MAGIC + random.Random(seed).randbytes(256)


@pytest.fixture(scope="module")
def scan_server(tmp_path_factory: pytest.TempPathFactory, clamd: ClamdServer) -> Iterator[BastionServer]:
    server = BastionServer(tmp_path_factory.mktemp("unknowns"), env={"BASTION_CLAMD_ADDRESS": clamd.address}).start()
    yield server
    server.stop()


def _settings(server: BastionServer, repo_id: str, token: str, **values: object) -> None:
    resp = httpx.put(f"{server.url}/api/models/{repo_id}/settings", json=values,
                     headers={"authorization": f"Bearer {token}"}, timeout=60)
    assert resp.status_code == 200, resp.text


def _get(server: BastionServer, repo_id: str, path: str, token: str | None) -> httpx.Response:
    headers = {"authorization": f"Bearer {token}"} if token else {}
    return httpx.get(f"{server.url}/{repo_id}/resolve/main/{path}", headers=headers, timeout=60)


def _release(server: BastionServer, repo_id: str, token: str, **body: object) -> httpx.Response:
    return httpx.post(f"{server.url}/api/models/{repo_id}/scan/release", json=body,
                      headers={"authorization": f"Bearer {token}"}, timeout=60)


def _actions(server: BastionServer, namespace: str, like: str) -> list[str]:
    engine = sa.create_engine(f"sqlite:///{server.data_dir / 'bastion.sqlite3'}")
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT action FROM audit_events WHERE namespace = :ns AND action LIKE :like "
                                    "ORDER BY id"), {"ns": namespace, "like": like}).scalars().all()
    engine.dispose()
    return list(rows)


def test_unknown_content_is_refused_at_commit(scan_server: BastionServer) -> None:
    server = scan_server
    owner, token = server.create_user()
    repo_id = f"{owner}/guarded"
    api = hf_api(server, token)
    api.create_repo(repo_id)
    _settings(server, repo_id, token, blockUnsafeFiles=True)
    head = api.model_info(repo_id).sha

    with pytest.raises(HfHubHTTPError) as exc:
        api.upload_file(path_or_fileobj=_lzma_npz(1), path_in_repo="weights.npz", repo_id=repo_id)
    message = exc.value.response.headers["x-error-message"]
    assert exc.value.response.status_code == 403 and "weights.npz is unsafe" in message and "os.system" in message

    with pytest.raises(HfHubHTTPError) as exc:
        api.upload_file(path_or_fileobj=_zstd_pickle(2), path_in_repo="model.pkl.zst", repo_id=repo_id)
    message = exc.value.response.headers["x-error-message"]
    assert exc.value.response.status_code == 403 and "could not be proven safe" in message and "zstd" in message
    assert api.model_info(repo_id).sha == head
    assert _actions(server, owner, "repo.scan_policy_reject") == ["repo.scan_policy_reject"] * 2

    # A manager releases the bytes ahead (by blob id): the same commit now passes; the unsafe one never.
    data = _zstd_pickle(2)
    blob = hashlib.sha256(data).hexdigest()  # *.zst goes through LFS: its key is the object's sha256
    assert _release(server, repo_id, token, blob=blob, reason="our own zstd checkpoint").status_code == 200
    api.upload_file(path_or_fileobj=data, path_in_repo="model.pkl.zst", repo_id=repo_id)
    with pytest.raises(HfHubHTTPError):
        api.upload_file(path_or_fileobj=_lzma_npz(1), path_in_repo="weights.npz", repo_id=repo_id)


def test_files_held_when_the_policy_comes_on_and_a_manager_release(scan_server: BastionServer) -> None:
    server = scan_server
    owner, token = server.create_user()
    _reader, reader_token = server.create_user()
    repo_id = f"{owner}/later"
    api = hf_api(server, token)
    api.create_repo(repo_id)  # public
    api.upload_file(path_or_fileobj=_lzma_npz(3), path_in_repo="weights.npz", repo_id=repo_id)
    api.upload_file(path_or_fileobj=_zstd_pickle(4), path_in_repo="model.pkl.zst", repo_id=repo_id)

    def scanned() -> bool:
        return bool(httpx.get(f"{server.url}/api/models/{repo_id}/scan", timeout=60).json()["scansDone"])

    wait_for(scanned, timeout=120, interval=0.5)
    files = {f["path"]: f for f in httpx.get(f"{server.url}/api/models/{repo_id}/scan", timeout=60).json()["files"]}
    assert files["weights.npz"]["status"] == "unsafe"  # LZMA is read: the payload is found
    assert files["model.pkl.zst"]["status"] == "suspicious"
    assert _get(server, repo_id, "model.pkl.zst", reader_token).status_code == 200  # no policy yet

    _settings(server, repo_id, token, blockUnsafeFiles=True)
    for path, reason in (("weights.npz", "unsafe"), ("model.pkl.zst", "compressed with zstd: cannot inspect")):
        for who in (None, reader_token):
            got = _get(server, repo_id, path, who)
            assert got.status_code == 403 and reason in got.headers["x-error-message"], (path, got.headers)

    # Only a manager may release, only what is not unsafe.
    assert _release(server, repo_id, reader_token, path="model.pkl.zst").status_code in (403, 404)
    refused = _release(server, repo_id, token, path="weights.npz")
    assert refused.status_code == 403 and "unsafe files cannot be released" in refused.headers["x-error-message"]
    assert _release(server, repo_id, token, path="nope.bin").status_code == 404
    assert _release(server, repo_id, token, path="model.pkl.zst", blob="0" * 40).status_code == 400
    released = _release(server, repo_id, token, path="model.pkl.zst", reason="reviewed by hand")
    assert released.status_code == 200 and released.json()["verdicts"]["pickle"] == "suspicious"

    got = _get(server, repo_id, "model.pkl.zst", reader_token)
    assert got.status_code == 200 and got.content == _zstd_pickle(4)
    assert _get(server, repo_id, "weights.npz", reader_token).status_code == 403
    assert _actions(server, owner, "repo.scan_release%") == ["repo.scan_release"]

    listed = httpx.get(f"{server.url}/api/models/{repo_id}/scan-releases", timeout=60,
                       headers={"authorization": f"Bearer {token}"}).json()
    assert [(r["path"], r["reason"]) for r in listed] == [("model.pkl.zst", "reviewed by hand")]
    resp = httpx.delete(f"{server.url}/api/models/{repo_id}/scan/release/{listed[0]['blob']}", timeout=60,
                        headers={"authorization": f"Bearer {token}"})
    assert resp.status_code == 200
    assert _get(server, repo_id, "model.pkl.zst", reader_token).status_code == 403
    assert _actions(server, owner, "repo.scan_release%") == ["repo.scan_release", "repo.scan_release_revoke"]
