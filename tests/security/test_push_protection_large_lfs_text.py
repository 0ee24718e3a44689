"""Finding: push protection skipped LFS text over 32 MiB (low-medium), though the README said such pushes
were refused; the background scan only reported the secret afterwards.

Push protection now reads every file whole, any size, streamed in bounded memory: a live token in
the middle of a 33 MiB text file pushed with git-lfs is refused.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

import httpx

from tests.conftest import BastionServer, MiB, hf_api
from tests.gitserver.conftest import Git, RepoHandle, git, git_binaries  # noqa: F401 - fixtures


def _text(seed: int, size: int) -> list[str]:
    rng = random.Random(seed)
    lines: list[str] = []
    total = 0
    while total < size:
        line = f'{{"step": {len(lines)}, "loss": {rng.random():.8f}, "note": "{rng.randbytes(12).hex()}"}}'
        lines.append(line)
        total += len(line) + 1
    return lines


def test_a_token_inside_a_large_lfs_text_file_is_refused(server: BastionServer, git: Git,  # noqa: F811
                                                         tmp_path: Path) -> None:
    owner, token = server.create_user()
    repo_id = f"{owner}/r{os.urandom(4).hex()}"
    hf_api(server, token).create_repo(repo_id)
    resp = httpx.put(f"{server.url}/api/models/{repo_id}/settings", json={"secretPushProtection": True},
                     headers={"authorization": f"Bearer {token}"}, timeout=60)
    assert resp.status_code == 200
    handle = RepoHandle(server, owner, token, repo_id)
    _victim_name, victim = server.create_user()

    work = tmp_path / "w"
    git("clone", "-q", handle.url(), str(work))
    git("lfs", "track", "*.jsonl", cwd=work)
    lines = _text(15, 33 * MiB)
    middle = len(lines) // 2
    lines[middle] = f'{{"step": {middle}, "hf_token": "{victim}"}}'
    (work / "log.jsonl").write_text("\n".join(lines) + "\n")
    git.commit_all(work, "training log")
    proc = git("push", "origin", "main", cwd=work, check=False, timeout=600)
    assert proc.returncode != 0, proc.stderr
    assert "Push protection" in proc.stderr and f"log.jsonl:{middle + 1}" in proc.stderr, proc.stderr[-2000:]
    assert victim not in proc.stderr
    # Refused: nothing was published, so the token is not revoked.
    assert httpx.get(f"{server.url}/api/whoami-v2", timeout=30,
                     headers={"authorization": f"Bearer {victim}"}).status_code == 200
    assert "log.jsonl" not in hf_api(server, token).list_repo_files(repo_id)
