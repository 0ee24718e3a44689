"""Test gap: the git-push path's LFS link check had no test for another repository's object.

An LFS pointer is a promise that the repository holds the object it names. A pusher who knows (or
guesses) the sha256 of another tenant's file must not gain it by pushing a pointer to it: the push
is judged against the links of *this* repository, not against every object the instance stores.
Only the commit API had such a test; this one drives the push path with real git and git-lfs.
"""

from __future__ import annotations

import hashlib
import random
from pathlib import Path

import httpx

from tests.conftest import BastionServer, hf_api
from tests.gitserver.conftest import Git, git, git_binaries, make_repo  # noqa: F401 - fixtures

MiB = 1024 * 1024


def test_a_pushed_pointer_to_another_tenants_object_is_refused(server: BastionServer, git: Git,  # noqa: F811
                                                                tmp_path: Path) -> None:
    victim = make_repo(server, private=True)
    attacker = make_repo(server)
    secret = b"\x00" + random.Random(1501).randbytes(MiB)
    oid = hashlib.sha256(secret).hexdigest()

    # The victim's private model, pushed with git-lfs: the object is stored and linked to their repo.
    work = tmp_path / "victim"
    git("clone", victim.url(), str(work))
    (work / "weights.safetensors").write_bytes(secret)
    git.commit_all(work, "weights")
    git("push", "origin", "main", cwd=work)

    # The attacker pushes a pointer naming it (right oid, right size), without uploading anything.
    work = tmp_path / "attacker"
    git("clone", attacker.url(), str(work))
    pointer = f"version https://git-lfs.github.com/spec/v1\noid sha256:{oid}\nsize {len(secret)}\n"
    (work / "weights.safetensors").write_text(pointer)
    git("-c", "filter.lfs.clean=cat", "add", "-A", cwd=work)  # store the pointer text as it is
    git("commit", "-q", "-m", "borrowed weights", cwd=work)
    proc = git("push", "--no-verify", "origin", "main", cwd=work, check=False)  # no git-lfs pre-push upload
    assert proc.returncode != 0, proc.stderr
    assert f"LFS object {oid} has not been uploaded to this repository" in proc.stderr, proc.stderr

    api = hf_api(server, attacker.token)
    assert "weights.safetensors" not in api.list_repo_files(attacker.repo_id)
    got = httpx.get(f"{server.url}/{attacker.repo_id}/resolve/main/weights.safetensors",
                    headers={"authorization": f"Bearer {attacker.token}"}, timeout=60)
    assert got.status_code == 404 and secret not in got.content
