"""BASTION_PRESIGNED_DOWNLOADS: a large LFS object of an S3 region is served by a redirect to a short-lived
pre-signed URL of that region's store -- after Bastion's own authorization, never to someone who may not
read the file, never cacheable by a shared cache; small objects, and everything with the setting off (the
default, every other test here), flow through Bastion."""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import BastionServer, ClamdServer, MiB, hf_api
from tests.storage.conftest import MotoServer, regions_env


@pytest.fixture(scope="module")
def presign_server(tmp_path_factory: pytest.TempPathFactory, clamd: ClamdServer, moto: MotoServer,
                   ) -> Iterator[BastionServer]:
    regions = {"eu": {"store": moto.store_settings(moto.new_bucket("presign"), sse="AES256")}}
    server = BastionServer(tmp_path_factory.mktemp("bastion-presign"), env={
        "BASTION_CLAMD_ADDRESS": clamd.address, "BASTION_PRESIGNED_DOWNLOADS": "1",
        "BASTION_PRESIGNED_DOWNLOAD_MIN_BYTES": str(MiB), "BASTION_PRESIGNED_URL_TTL_SECONDS": "120",
        **regions_env(regions)}).start()
    yield server
    server.stop()


def test_large_downloads_redirect_to_a_presigned_url_after_authorization(presign_server: BastionServer,
                                                                        moto: MotoServer, tmp_path: Path) -> None:
    server = presign_server
    name, token = server.create_user()
    _, stranger = server.create_user()
    auth = {"authorization": f"Bearer {token}"}
    assert httpx.post(f"{server.url}/api/repos/create", json={"name": "big", "region": "eu", "private": True},
                      headers=auth).status_code == 200
    repo_id = f"{name}/big"
    api = hf_api(server, token)
    rng = random.Random(5)
    large, small = b"\x00" + rng.randbytes(2 * MiB), b"\x00" + rng.randbytes(300_000)
    api.upload_file(path_or_fileobj=large, path_in_repo="large.bin", repo_id=repo_id)
    api.upload_file(path_or_fileobj=small, path_in_repo="small.bin", repo_id=repo_id)

    url = f"{server.url}/{repo_id}/resolve/main/large.bin"
    for method in ("GET", "HEAD"):
        resp = httpx.request(method, url, headers=auth)
        assert resp.status_code == 302, resp.text
        assert resp.headers["cache-control"] == "private, no-store"
        assert resp.headers["x-linked-size"] == str(len(large))
        assert resp.headers["x-linked-etag"].strip('"') == hashlib.sha256(large).hexdigest()
        location = resp.headers["location"]
        assert location.startswith(moto.url) and "X-Amz-Signature=" in location and "X-Amz-Expires=120" in location
    fetched = httpx.get(location)
    assert fetched.status_code == 200 and fetched.content == large
    assert fetched.headers.get("cache-control") == "private, no-store"
    ranged = httpx.get(url, headers={**auth, "range": "bytes=10-19"}, follow_redirects=True)
    assert ranged.status_code == 206 and ranged.content == large[10:20]
    # The git-lfs download route redirects the same way; the client follows.
    lfs = httpx.get(f"{server.url}/{repo_id}.git/info/lfs/objects/{hashlib.sha256(large).hexdigest()}",
                    headers=auth, follow_redirects=True)
    assert lfs.status_code == 200 and lfs.content == large
    # Authorization first: no redirect (no URL) for a caller who may not read the repository.
    for who in ({"authorization": f"Bearer {stranger}"}, {}):
        denied = httpx.get(url, headers=who)
        assert denied.status_code in (401, 404) and "location" not in denied.headers
    # Below the size, through Bastion.
    direct = httpx.get(f"{server.url}/{repo_id}/resolve/main/small.bin", headers=auth)
    assert direct.status_code == 200 and direct.content == small
    # The real client follows the redirect.
    got = api.hf_hub_download(repo_id, "large.bin", local_dir=tmp_path / "dl")
    assert Path(got).read_bytes() == large
