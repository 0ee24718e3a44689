"""Finding 6: one NUL byte hid a live token. A file with binary content got no secret scan at all,
was reported `{"skipped": "binary", "status": "safe"}`, passed push protection, and the token in it
stayed live. Binary content is now scanned through its printable strings (as `strings` reads it)."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from huggingface_hub.errors import HfHubHTTPError

from tests.conftest import BastionServer, hf_api, wait_for

MiB = 1024 * 1024


def _whoami(server: BastionServer, token: str) -> int:
    return httpx.get(f"{server.url}/api/whoami-v2", headers={"authorization": f"Bearer {token}"},
                     timeout=30).status_code


def _binary_with(secret: str, size: int, seed: int) -> bytes:
    """Seeded random bytes (a model-weights look-alike) with `secret` in the middle, between NULs."""
    noise = random.Random(seed).randbytes(size)
    middle = size // 2
    return b"\x00" + noise[1:middle] + b"\x00" + secret.encode() + b"\x00" + noise[middle:]


def _secrets_scan(server: BastionServer, token: str, repo_id: str, path: str) -> dict:  # type: ignore[type-arg]
    tree = httpx.get(f"{server.url}/api/models/{repo_id}/tree/main", params={"expand": "true"},
                     headers={"authorization": f"Bearer {token}"}, timeout=30).json()
    return next(e["securityFileStatus"] for e in tree if e["path"] == path)["secretsScan"]


def test_a_nul_byte_does_not_hide_a_live_token(server: BastionServer) -> None:
    name, token = server.create_user()
    _, first_victim = server.create_user()
    _, second_victim = server.create_user()
    api = hf_api(server, token)
    repo_id = f"{name}/binary-leak"
    api.create_repo(repo_id, private=True)
    # The report's file: text after "\x00\n". And a token inside real binary content.
    api.upload_file(path_or_fileobj=f"\x00\nHF_TOKEN = '{first_victim}'\n".encode(), path_in_repo="notes.txt",
                    repo_id=repo_id)
    api.upload_file(path_or_fileobj=_binary_with(second_victim, 2 * MiB, seed=6), path_in_repo="weights.bin",
                    repo_id=repo_id)
    wait_for(lambda: _whoami(server, first_victim) == 401 and _whoami(server, second_victim) == 401, timeout=90)
    assert _whoami(server, token) == 200
    for path in ("notes.txt", "weights.bin"):
        scan = wait_for(lambda p=path: (s := _secrets_scan(server, token, repo_id, p))["status"]
                        not in ("queued", "unscanned") and s)
        assert scan["status"] == "unsafe" and "skipped" not in scan, scan
        assert [f["provider"] for f in scan["findings"]] == ["bastion"]
        assert first_victim not in json.dumps(scan) and second_victim not in json.dumps(scan)


def test_push_protection_reads_binary_content(server: BastionServer) -> None:
    name, token = server.create_user()
    _, victim = server.create_user()
    api = hf_api(server, token)
    repo_id = f"{name}/protected-binary"
    api.create_repo(repo_id)
    assert httpx.put(f"{server.url}/api/models/{repo_id}/settings", json={"secretPushProtection": True},
                     headers={"authorization": f"Bearer {token}"}, timeout=30).status_code == 200
    head = api.model_info(repo_id).sha
    # A regular file, and one over the LFS threshold (stored with LFS, read from the LFS store).
    for path, content in (("notes.txt", f"\x00\nHF_TOKEN = '{victim}'\n".encode()),
                          ("model.bin", _binary_with(victim, 12 * MiB, seed=60))):
        with pytest.raises(HfHubHTTPError) as exc:
            api.upload_file(path_or_fileobj=content, path_in_repo=path, repo_id=repo_id)
        message = exc.value.response.headers["x-error-message"]
        assert exc.value.response.status_code == 403 and path in message and "Bastion" in message, message
        assert victim not in exc.value.response.text
    assert api.model_info(repo_id).sha == head
    # Binary content without a secret still lands.
    api.upload_file(path_or_fileobj=_binary_with("no secret here", 12 * MiB, seed=61), path_in_repo="model.bin",
                    repo_id=repo_id)


def test_a_large_binary_file_is_read_not_skipped(tmp_path: Path) -> None:
    """Over the in-memory size the scanner streams the file's printable strings; a checksum-valid Bastion
    token anywhere in it is found (`bastion scan` runs the same scanner as the pipeline)."""
    from bastion.tokens.format import checksum

    head = "bst_" + "".join(random.Random(66).choices("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz",
                                                      k=30))
    token = head + checksum(head)
    path = tmp_path / "shard.bin"
    with path.open("wb") as fh:  # sparse: 300 MiB of NULs on disk for free, a token at 200 MiB
        fh.truncate(300 * MiB)
        fh.seek(200 * MiB)
        fh.write(b"key=" + token.encode() + b"\x00")
    out = subprocess.run([sys.executable, "-m", "bastion.cli", "scan", "--json", "--only", "secrets", str(path)],
                         capture_output=True, text=True, timeout=300, cwd=tmp_path)
    document = json.loads(out.stdout)
    scan = document["files"][0]["scans"]["secrets"]
    assert scan["status"] == "unsafe" and "skipped" not in scan, scan
    assert [(f["provider"], f["verification"]) for f in document["findings"]] == [("bastion", "checksum")]
    assert token not in out.stdout
