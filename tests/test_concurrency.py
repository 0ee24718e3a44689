"""Commits racing on one branch: compare-and-swap on parentCommit, on SQLite and PostgreSQL."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from huggingface_hub import CommitOperationAdd
from huggingface_hub.errors import HfHubHTTPError

from tests.conftest import BastionServer, hf_api


def test_twenty_commits_with_the_same_parent_exactly_one_wins(any_server: BastionServer) -> None:
    name, token = any_server.create_user()
    api = hf_api(any_server, token)
    repo_id = f"{name}/race"
    api.create_repo(repo_id)
    parent = api.model_info(repo_id).sha

    def attempt(i: int) -> str:
        try:
            api.create_commit(repo_id, operations=[CommitOperationAdd(f"f{i}.txt", f"{i}".encode())],
                              commit_message=f"c{i}", parent_commit=parent)
            return f"won:{i}"
        except HfHubHTTPError as exc:
            return f"lost:{exc.response.status_code}"

    with ThreadPoolExecutor(20) as pool:
        results = list(pool.map(attempt, range(20)))
    winners = [r for r in results if r.startswith("won")]
    assert len(winners) == 1, results
    assert all(r == "lost:412" for r in results if not r.startswith("won"))
    winner = int(winners[0].split(":")[1])
    assert api.list_repo_files(repo_id) == [".gitattributes", f"f{winner}.txt"]
    assert len(api.list_repo_commits(repo_id)) == 2


def test_concurrent_commits_without_parent_lose_nothing(any_server: BastionServer) -> None:
    name, token = any_server.create_user()
    api = hf_api(any_server, token)
    repo_id = f"{name}/append"
    api.create_repo(repo_id)

    def attempt(i: int) -> None:
        api.create_commit(repo_id, operations=[CommitOperationAdd(f"f{i:02d}.txt", f"{i}".encode())],
                          commit_message=f"c{i}")

    with ThreadPoolExecutor(10) as pool:
        list(pool.map(attempt, range(20)))
    files = api.list_repo_files(repo_id)
    assert files == [".gitattributes"] + [f"f{i:02d}.txt" for i in range(20)]
    assert len(api.list_repo_commits(repo_id)) == 21
