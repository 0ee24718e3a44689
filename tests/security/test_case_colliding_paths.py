"""Issue 15, finding 8c: paths that differ only in case (`A.txt`, `a.txt`; `Dir/x`, `dir/y`) are one
file on a case-insensitive checkout (macOS, Windows), so a commit creating such a pair is refused, through
the API and through git, unless the repo allows it (`allowCaseCollidingPaths`).
"""

from __future__ import annotations

import os
from pathlib import Path

import httpx
import pytest
from huggingface_hub import CommitOperationAdd
from huggingface_hub.errors import HfHubHTTPError

from tests.conftest import BastionServer, hf_api
from tests.gitserver.conftest import Git, RepoHandle, git, git_binaries  # noqa: F401 - fixtures

TIMEOUT = 60


@pytest.fixture(scope="module")
def owner(server: BastionServer) -> tuple[str, str]:
    return server.create_user()


@pytest.fixture
def repo(server: BastionServer, owner: tuple[str, str]) -> RepoHandle:
    name, token = owner
    repo_id = f"{name}/c{os.urandom(4).hex()}"
    hf_api(server, token).create_repo(repo_id)
    return RepoHandle(server, name, token, repo_id)


def _allow(server: BastionServer, repo: RepoHandle, allowed: bool) -> None:
    resp = httpx.put(f"{server.url}/api/models/{repo.repo_id}/settings", json={"allowCaseCollidingPaths": allowed},
                     headers={"authorization": f"Bearer {repo.token}"}, timeout=TIMEOUT)
    assert resp.status_code == 200, resp.text
    resp = httpx.get(f"{server.url}/api/models/{repo.repo_id}/settings",
                     headers={"authorization": f"Bearer {repo.token}"}, timeout=TIMEOUT)
    assert resp.json()["allowCaseCollidingPaths"] is allowed


@pytest.mark.parametrize(("first", "second"), [
    (["A.txt"], ["a.txt"]),  # two commits
    (["A.txt", "a.txt"], []),  # one commit
    (["Dir/x.txt"], ["dir/y.txt"]),  # folders at the top
    (["m/Weights/x.bin"], ["m/weights/y.bin"]),  # folders deeper down
    (["x/README.md"], ["x/readme.MD"]),
], ids=["two-commits", "one-commit", "dirs", "nested-dirs", "mixed"])
def test_api_refuses_case_colliding_paths(server: BastionServer, repo: RepoHandle, first: list[str],
                                          second: list[str]) -> None:
    api = hf_api(server, repo.token)
    if second:
        api.create_commit(repo.repo_id, [CommitOperationAdd(p, b"one\n") for p in first], commit_message="first")
        ops, before = second, [*first]
    else:
        ops, before = first, []
    sha = api.model_info(repo.repo_id).sha
    with pytest.raises(HfHubHTTPError) as exc:
        api.create_commit(repo.repo_id, [CommitOperationAdd(p, b"two\n") for p in ops], commit_message="clash")
    assert exc.value.response.status_code == 400
    message = exc.value.response.headers["x-error-message"]
    assert "differ only in case" in message and "allowCaseCollidingPaths" in message, message
    assert api.model_info(repo.repo_id).sha == sha
    assert sorted(api.list_repo_files(repo.repo_id)) == sorted([".gitattributes", *before])


def test_api_accepts_case_colliding_paths_when_the_repo_allows_them(server: BastionServer,
                                                                    repo: RepoHandle) -> None:
    api = hf_api(server, repo.token)
    _allow(server, repo, True)
    api.create_commit(repo.repo_id, [CommitOperationAdd(p, b"x\n") for p in ("A.txt", "a.txt", "D/x", "d/y")],
                      commit_message="allowed")
    assert {"A.txt", "a.txt", "D/x", "d/y"} <= set(api.list_repo_files(repo.repo_id))
    # Switched off again: an existing pair does not block unrelated work, a new pair is refused.
    _allow(server, repo, False)
    api.create_commit(repo.repo_id, [CommitOperationAdd("A.txt", b"edited\n"), CommitOperationAdd("b.txt", b"b\n")],
                      commit_message="unrelated")
    with pytest.raises(HfHubHTTPError) as exc:
        api.create_commit(repo.repo_id, [CommitOperationAdd("B.txt", b"B\n")], commit_message="new pair")
    assert exc.value.response.status_code == 400


def test_unrelated_names_are_not_collisions(server: BastionServer, repo: RepoHandle) -> None:
    api = hf_api(server, repo.token)
    names = ["a.txt", "a.txt.bak", "A", "b/a.txt", "B.md", "a_txt"]
    api.create_commit(repo.repo_id, [CommitOperationAdd(p, b"x\n") for p in names], commit_message="fine")
    assert set(names) <= set(api.list_repo_files(repo.repo_id))


def _clone(git: Git, repo: RepoHandle, tmp_path: Path) -> Path:  # noqa: F811
    work = tmp_path / "work"
    git("clone", "-q", repo.url(), str(work))
    # git itself would fold the names on a case-insensitive file system; this one is not.
    git("config", "core.ignorecase", "false", cwd=work)
    return work


@pytest.mark.parametrize(("first", "second"), [
    (["A.txt"], ["a.txt"]), (["A.txt", "a.txt"], []), (["Dir/x.txt"], ["dir/y.txt"]),
], ids=["two-commits", "one-commit", "dirs"])
def test_push_refuses_case_colliding_paths(server: BastionServer, repo: RepoHandle, git: Git,  # noqa: F811
                                           tmp_path: Path, first: list[str], second: list[str]) -> None:
    work = _clone(git, repo, tmp_path)
    before = git("rev-parse", "HEAD", cwd=work).stdout.strip()
    for batch in (first, second):
        if not batch:
            continue
        for path in batch:
            (work / path).parent.mkdir(parents=True, exist_ok=True)
            (work / path).write_text(f"{path}\n")
        git.commit_all(work, f"add {batch}")
    push = git("push", "origin", "main", cwd=work, check=False)
    assert push.returncode != 0, push.stderr
    assert "differ only in case" in push.stderr and "allowCaseCollidingPaths" in push.stderr, push.stderr
    assert hf_api(server, repo.token).model_info(repo.repo_id).sha == before


def test_push_accepts_case_colliding_paths_when_the_repo_allows_them(server: BastionServer, repo: RepoHandle,
                                                                     git: Git, tmp_path: Path) -> None:  # noqa: F811
    _allow(server, repo, True)
    work = _clone(git, repo, tmp_path)
    for path in ("A.txt", "a.txt"):
        (work / path).write_text(f"{path}\n")
    sha = git.commit_all(work, "pair")
    git("push", "origin", "main", cwd=work)
    assert hf_api(server, repo.token).model_info(repo.repo_id).sha == sha
