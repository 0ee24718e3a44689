"""The Git LFS locking API: `git lfs lock/locks/unlock` work, and a file locked by someone else
cannot be changed by a push.
"""

from __future__ import annotations

from pathlib import Path

import httpx

from tests.conftest import BastionServer
from tests.gitserver.conftest import Git, RepoHandle


def test_lock_list_unlock_with_git_lfs(repo: RepoHandle, git: Git, tmp_path: Path) -> None:
    work = tmp_path / "w"
    git("clone", repo.url(), str(work))
    (work / "model.bin").write_bytes(b"\x00weights")
    git.commit_all(work, "weights")
    git("push", "origin", "main", cwd=work)

    locked = git("lfs", "lock", "model.bin", cwd=work)
    assert "Locked model.bin" in locked.stdout
    listing = git("lfs", "locks", cwd=work).stdout
    assert "model.bin" in listing and repo.owner in listing
    again = git("lfs", "lock", "model.bin", cwd=work, check=False)
    assert again.returncode != 0 and "already locked" in again.stderr + again.stdout
    git("lfs", "unlock", "model.bin", cwd=work)
    assert "model.bin" not in git("lfs", "locks", cwd=work).stdout


def test_push_touching_a_file_locked_by_someone_else_is_rejected(server: BastionServer, repo: RepoHandle, git: Git,
                                                                  tmp_path: Path) -> None:
    work = tmp_path / "w"
    git("clone", repo.url(), str(work))
    (work / "data.txt").write_text("v1\n")
    git.commit_all(work, "v1")
    git("push", "origin", "main", cwd=work)
    resp = httpx.post(f"{server.url}/{repo.repo_id}.git/info/lfs/locks", json={"path": "data.txt"},
                      headers={"Authorization": f"Bearer {repo.token}"})
    assert resp.status_code == 201, resp.text
    lock_id = resp.json()["lock"]["id"]

    # An administrator may write to any repo, but not over another user's lock.
    admin, admin_token = server.create_user(admin=True)
    other = tmp_path / "other"
    git("clone", repo.url(admin, admin_token), str(other))
    (other / "data.txt").write_text("v2\n")
    git.commit_all(other, "v2")
    verify = httpx.post(f"{server.url}/{repo.repo_id}.git/info/lfs/locks/verify", json={},
                        headers={"Authorization": f"Bearer {admin_token}"})
    assert [lock["path"] for lock in verify.json()["theirs"]] == ["data.txt"] and verify.json()["ours"] == []
    proc = git("-c", "lfs.locksverify=false", "push", "origin", "main", cwd=other, check=False)
    assert proc.returncode != 0
    assert f"'data.txt' is locked by {repo.owner}" in proc.stderr

    # Breaking someone else's lock needs --force; then the push goes through.
    denied = httpx.post(f"{server.url}/{repo.repo_id}.git/info/lfs/locks/{lock_id}/unlock", json={},
                        headers={"Authorization": f"Bearer {admin_token}"})
    assert denied.status_code == 403
    forced = httpx.post(f"{server.url}/{repo.repo_id}.git/info/lfs/locks/{lock_id}/unlock", json={"force": True},
                        headers={"Authorization": f"Bearer {admin_token}"})
    assert forced.status_code == 200 and forced.json()["lock"]["path"] == "data.txt"
    git("push", "origin", "main", cwd=other)


def test_locks_are_private_like_the_repo(server: BastionServer, private_repo: RepoHandle) -> None:
    url = f"{server.url}/{private_repo.repo_id}.git/info/lfs/locks"
    assert httpx.get(url).status_code == 404
    assert httpx.get(url, headers={"Authorization": f"Bearer {private_repo.token}"}).json() == {"locks": []}
