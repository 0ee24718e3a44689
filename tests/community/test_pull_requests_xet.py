"""A pull request by someone without write access, uploaded through Xet (hf_xet, in a child process): the CAS
write token is for their pull request's contents, the commit lands on refs/pr/N only, the owner merges it."""

from __future__ import annotations

import hashlib
import random
from pathlib import Path

import httpx

from tests.conftest import BastionServer, hf_api
from tests.xet.hfclient import log_mark, run_python, xorb_bytes_since


def test_non_writer_opens_pr_through_xet_and_owner_merges(server: BastionServer, tmp_path: Path) -> None:
    owner, owner_token = server.create_user()
    _contrib, contrib_token = server.create_user()
    repo_id = f"{owner}/xetpr"
    hf_api(server, owner_token).create_repo(repo_id)
    data = random.Random(17).randbytes(2_000_000)
    (tmp_path / "model.safetensors").write_bytes(b"\x00" + data)
    code = f"""
from huggingface_hub import HfApi
api = HfApi()
info = api.upload_file(path_or_fileobj={str(tmp_path / 'model.safetensors')!r}, path_in_repo="model.safetensors",
                       repo_id={repo_id!r}, create_pr=True, commit_message="Add model")
print(json.dumps({{"pr": info.pr_num, "url": info.pr_url}}))
"""
    mark = log_mark(server)
    out = run_python(server, contrib_token, tmp_path / "hf", code)
    assert xorb_bytes_since(server, mark) > 0  # the bytes went through the Xet CAS
    num = out["pr"]
    api = hf_api(server, owner_token)
    assert not api.file_exists(repo_id, "model.safetensors")  # not on main before the merge
    assert api.file_exists(repo_id, "model.safetensors", revision=f"refs/pr/{num}")
    # The contributor's Xet write token does not let them write main.
    r = httpx.post(f"{server.url}/api/models/{repo_id}/commit/main", content=b'{"key": "header", "value": '
                   b'{"summary": "x"}}\n', headers={"authorization": f"Bearer {contrib_token}",
                                                   "content-type": "application/x-ndjson"})
    assert r.status_code == 403
    api.merge_pull_request(repo_id, num)
    info = api.get_paths_info(repo_id, ["model.safetensors"])[0]
    assert info.lfs is not None and info.lfs.sha256 == hashlib.sha256(b"\x00" + data).hexdigest()
