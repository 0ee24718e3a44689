"""Files uploaded through Xet by the real client reach every other path: `git lfs pull` over smart
HTTP gets their bytes, and the scanners judge their reconstructed bytes (a dangerous pickle is flagged).
"""

from __future__ import annotations

import hashlib
import os
import pickletools
import struct
from pathlib import Path

import httpx

from tests.conftest import BastionServer, MiB, hf_api, random_binary, wait_for
from tests.gitserver.conftest import Git, RepoHandle, git, git_binaries  # noqa: F401
from tests.xet.hfclient import log_mark, model_like, run_python, xorb_bytes_since

# Inert (nothing here ever unpickles it): would call os.system("true") if loaded.
REDUCE_OS_SYSTEM = b"cos\nsystem\nq\x00X\x04\x00\x00\x00trueq\x01\x85q\x02Rq\x03."


def padded_malicious_pickle(padding: int) -> bytes:
    """A valid pickle of LFS size: a large bytes value pushed and popped, then the os.system call.

    The padding lives inside the pickle (BINBYTES + POP), so a scanner must walk past megabytes of
    data, spread over many Xet chunks, to reach the dangerous import.
    """
    return (b"\x80\x03B" + struct.pack("<I", padding) + os.urandom(padding) + b"0" + REDUCE_OS_SYSTEM)


def _xet_upload(server: BastionServer, token: str, home: Path, repo_id: str, files: dict[str, Path]) -> None:
    mark = log_mark(server)
    ops = ", ".join(f"CommitOperationAdd({name!r}, {str(path)!r})" for name, path in files.items())
    run_python(server, token, home, f"""
from huggingface_hub import HfApi, CommitOperationAdd
HfApi().create_commit({repo_id!r}, [{ops}], commit_message="via xet")
print(json.dumps(True))
""")
    log = server.server_log()[mark:]
    # Really through Xet: shards and xorbs arrived, the LFS batch API was never called.
    assert "xet shard upload" in log and "/info/lfs/objects/batch" not in log
    assert xorb_bytes_since(server, mark) > 0.5 * sum(p.stat().st_size for p in files.values())


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_xet_upload_is_fetched_by_git_lfs_pull(server: BastionServer, user: tuple[str, str], git: Git,  # noqa: F811
                                               tmp_path: Path) -> None:
    name, token = user
    repo_id = f"{name}/xet-git"
    hf_api(server, token).create_repo(repo_id)
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(model_like(11, 6 * MiB + 123))
    shard = tmp_path / "shard.bin"
    shard.write_bytes(os.urandom(3 * MiB + 7))
    _xet_upload(server, token, tmp_path / "home-up", repo_id,
                {"model.safetensors": weights, "weights/shard.bin": shard})

    repo = RepoHandle(server, name, token, repo_id)
    work = tmp_path / "clone"
    # Clone without smudging: the checkout holds pointers until `git lfs pull` fetches the objects.
    Git({**git.env, "GIT_LFS_SKIP_SMUDGE": "1"})("clone", "-q", repo.url(), str(work))
    pointer = (work / "model.safetensors").read_bytes()
    assert pointer.startswith(b"version https://git-lfs.github.com/spec/v1\n")
    assert f"oid sha256:{_sha256(weights.read_bytes())}".encode() in pointer
    git("lfs", "pull", cwd=work)
    assert _sha256((work / "model.safetensors").read_bytes()) == _sha256(weights.read_bytes())
    assert _sha256((work / "weights" / "shard.bin").read_bytes()) == _sha256(shard.read_bytes())
    assert git("lfs", "ls-files", cwd=work).stdout.count(" * ") == 2  # both present, not pointers


def test_scanners_judge_the_reconstructed_bytes_of_xet_uploads(server: BastionServer, user: tuple[str, str],
                                                               tmp_path: Path) -> None:
    name, token = user
    repo_id = f"{name}/xet-scan"
    api = hf_api(server, token)
    api.create_repo(repo_id)
    payload = padded_malicious_pickle(2 * MiB)
    globals_seen = [arg for op, arg, _pos in pickletools.genops(payload) if op.name == "GLOBAL"]
    assert globals_seen == ["os system"]  # a well-formed pickle, so "unsafe" can only come from the import
    evil = tmp_path / "model.pkl"
    evil.write_bytes(payload)
    calm = tmp_path / "calm.bin"
    calm.write_bytes(random_binary(2 * MiB + 5))
    _xet_upload(server, token, tmp_path / "home-up", repo_id, {"model.pkl": evil, "calm.bin": calm})

    entries = {e.path: e for e in api.list_repo_tree(repo_id, expand=True)}
    assert entries["model.pkl"].lfs.sha256 == _sha256(payload) and entries["model.pkl"].xet_hash

    def scanned() -> dict[str, object] | None:
        tree = api.list_repo_tree(repo_id, expand=True)
        sec = {e.path: e.security for e in tree if getattr(e, "security", None) is not None}
        done = all(s.status not in ("unscanned", "queued", "pending") for s in sec.values()) and len(sec) == 3
        return sec if done else None

    sec = wait_for(scanned, timeout=120, interval=0.5)
    assert sec["model.pkl"].status == "unsafe", sec["model.pkl"]
    imports = sec["model.pkl"].pickle_import_scan["imports"]
    assert {"module": "os", "name": "system", "safety": "dangerous"} in [
        {k: i[k] for k in ("module", "name", "safety")} for i in imports]
    assert sec["calm.bin"].status == "safe", sec["calm.bin"]
    info = api.model_info(repo_id, securityStatus=True)
    assert info.security_repo_status["filesWithIssues"] == [{"path": "model.pkl", "level": "unsafe"}]


def test_lfs_upload_is_not_advertised_as_xet_and_a_xet_client_downloads_it(server: BastionServer,
                                                                          user: tuple[str, str],
                                                                          tmp_path: Path) -> None:
    """A file that came through the LFS batch API has no Xet reconstruction: nothing may claim one
    (a default client would then fail to fetch it), and the default (hf_xet) client gets it over HTTP."""
    name, token = user
    repo_id = f"{name}/lfs-only"
    api = hf_api(server, token)  # this process: HF_HUB_DISABLE_XET=1, so the upload uses the LFS batch API
    api.create_repo(repo_id)
    data = model_like(5, 3 * MiB + 11)
    mark = log_mark(server)
    api.upload_file(path_or_fileobj=data, path_in_repo="weights.bin", repo_id=repo_id)
    assert "xet shard upload" not in server.server_log()[mark:]

    head = httpx.head(f"{server.url}/{repo_id}/resolve/main/weights.bin", headers={"Authorization": f"Bearer {token}"})
    assert head.status_code == 200 and head.headers["x-linked-etag"].strip('"') == _sha256(data)
    assert "x-xet-hash" not in head.headers and "xet-auth" not in head.headers.get("link", "")
    tree = httpx.get(f"{server.url}/api/models/{repo_id}/tree/main", headers={"Authorization": f"Bearer {token}"})
    entry = next(e for e in tree.json() if e["path"] == "weights.bin")
    assert "lfs" in entry and "xetHash" not in entry

    got = run_python(server, token, tmp_path / "home-dl", f"""
from huggingface_hub import hf_hub_download
path = hf_hub_download({repo_id!r}, "weights.bin", local_dir={str(tmp_path / "dl")!r})
print(json.dumps(hashlib.sha256(open(path, "rb").read()).hexdigest()))
""")
    assert got == _sha256(data)
