"""What huggingface_hub's own live test suite needed beyond the repo API (bench.hf_upstream_suite), driven
through the real client: likes (none: empty, truthfully), one's repositories (`hf repos ls`), a Space's
default card, duplication refused clearly, a pull request against a commit id, configurable community limits.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from huggingface_hub import CommitOperationAdd
from huggingface_hub.errors import BadRequestError, HfHubHTTPError, RepositoryNotFoundError, RevisionNotFoundError

from tests.conftest import BastionServer, ClamdServer, hf_api

TIMEOUT = 30


def _auth(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


def test_likes_are_empty_and_unlike_checks_the_repo(server: BastionServer) -> None:
    name, token = server.create_user()
    other, other_token = server.create_user()
    api = hf_api(server, token)
    repo_id = api.create_repo(f"{name}/liked-{os.urandom(3).hex()}").repo_id

    likes = api.list_liked_repos()  # the signed-in user's
    assert likes.user == name and likes.total == 0 and likes.models == []
    assert api.list_liked_repos(user=other).user == other
    assert list(api.list_repo_likers(repo_id)) == []
    api.unlike(repo_id)  # nothing to unlike: the no-op it is
    with pytest.raises(RepositoryNotFoundError):
        api.unlike("missing_repo_id")  # no namespace: a missing repo, as on the Hub
    with pytest.raises(RepositoryNotFoundError):
        api.unlike(f"{name}/does-not-exist")
    with pytest.raises(HfHubHTTPError) as exc:
        api.list_liked_repos(user=f"nobody{os.urandom(3).hex()}")
    assert exc.value.response.status_code == 404

    # Liking is not offered (the client cannot like either): a clear 400, never a fake success.
    r = httpx.post(f"{server.url}/api/models/{repo_id}/like", headers=_auth(other_token), timeout=TIMEOUT)
    assert r.status_code == 400 and "not offered" in r.json()["error"]
    r = httpx.delete(f"{server.url}/api/models/{repo_id}/like", timeout=TIMEOUT)
    assert r.status_code == 401


def test_list_user_repos_lists_ones_own(server: BastionServer) -> None:
    name, token = server.create_user()
    other, other_token = server.create_user()
    api = hf_api(server, token)
    model = api.create_repo(f"{name}/m").repo_id
    dataset = api.create_repo(f"{name}/d", repo_type="dataset", private=True).repo_id
    space = api.create_repo(f"{name}/s", repo_type="space", space_sdk="static").repo_id
    api.upload_file(repo_id=model, path_in_repo="data.bin", path_or_fileobj=b"x" * 1024)
    hf_api(server, other_token).create_repo(f"{other}/theirs")

    repos = {r.id: r for r in api.list_user_repos()}
    assert set(repos) == {model, dataset, space}
    assert (repos[model].type, repos[dataset].type, repos[space].type) == ("model", "dataset", "space")
    assert repos[dataset].visibility == "private" and repos[model].visibility == "public"
    assert repos[model].storage >= 1024 and repos[model].updated_at is not None
    assert 0 < sum(r.storage_percent for r in repos.values()) <= 100.01
    r = httpx.get(f"{server.url}/api/settings/repositories", timeout=TIMEOUT)
    assert r.status_code == 401

    org = f"org{os.urandom(3).hex()}"
    server.cli("admin", "create-org", org, "--owner", name)
    org_repo = api.create_repo(f"{org}/shared", private=True).repo_id
    assert [r.id for r in api.list_user_repos(namespace=org)] == [org_repo]


def test_space_starts_with_its_card(server: BastionServer, tmp_path: Path) -> None:
    name, token = server.create_user()
    api = hf_api(server, token)
    space = api.create_repo(f"{name}/card", repo_type="space", space_sdk="static").repo_id
    card = Path(api.hf_hub_download(space, "README.md", repo_type="space", cache_dir=tmp_path)).read_text()
    assert card.startswith("---\n") and "sdk: static" in card and "title: card" in card
    api.delete_file("README.md", space, repo_type="space")  # a card like any other file
    assert api.list_repo_files(space, repo_type="space") == [".gitattributes"]
    model = api.create_repo(f"{name}/no-card").repo_id
    assert api.list_repo_files(model) == [".gitattributes"]


def test_duplicate_is_refused_clearly(server: BastionServer) -> None:
    name, token = server.create_user()
    api = hf_api(server, token)
    repo_id = api.create_repo(f"{name}/original").repo_id
    with pytest.raises(RepositoryNotFoundError):
        api.duplicate_repo(f"{name}/missing-original", repo_type="space")
    with pytest.raises(BadRequestError, match="not offered"):
        api.duplicate_repo(repo_id)
    assert not api.repo_exists(f"{name}/original-1") and api.repo_exists(repo_id)
    # A cross-repo copy of LFS files (the client's CommitOperationCopy from another repo) is refused the same way.
    body = {"target": {"type": "model", "name": f"{name}/target"}, "files": []}
    r = httpx.post(f"{server.url}/api/models/{repo_id}/lfs-files/duplicate", json=body, headers=_auth(token),
                   timeout=TIMEOUT)
    assert r.status_code == 400 and "not offered" in r.json()["error"]
    r = httpx.post(f"{server.url}/api/models/{name}/missing-original/lfs-files/duplicate", json=body,
                   headers=_auth(token), timeout=TIMEOUT)
    assert r.status_code == 404 and r.headers["x-error-code"] == "RepoNotFound"


def test_pull_request_against_a_commit_id_is_a_missing_revision(server: BastionServer) -> None:
    name, token = server.create_user()
    api = hf_api(server, token)
    repo_id = api.create_repo(f"{name}/pr-base").repo_id
    api.create_branch(repo_id, branch="dev")
    head = api.list_repo_refs(repo_id).branches[0].target_commit

    def ops() -> list[CommitOperationAdd]:
        return [CommitOperationAdd(path_in_repo="f.txt", path_or_fileobj=b"content")]

    assert api.create_commit(repo_id, ops(), commit_message="to dev", revision="dev", create_pr=True).pr_num
    for revision in (head, "missing_branch"):
        with pytest.raises(RevisionNotFoundError):
            api.create_commit(repo_id, ops(), commit_message="no", revision=revision, create_pr=True)


@pytest.fixture(scope="module")
def limited_server(tmp_path_factory: pytest.TempPathFactory, clamd: ClamdServer) -> Iterator[BastionServer]:
    server = BastionServer(tmp_path_factory.mktemp("bastion-limits"),
                           env={"BASTION_CLAMD_ADDRESS": clamd.address, "BASTION_DISCUSSIONS_PER_HOUR": "2",
                                "BASTION_DISCUSSION_COMMENTS_PER_HOUR": "3"}).start()
    yield server
    server.stop()


def test_community_limits_are_settings(limited_server: BastionServer) -> None:
    name, token = limited_server.create_user()
    api = hf_api(limited_server, token)
    repo_id = api.create_repo(f"{name}/limited").repo_id
    first = api.create_discussion(repo_id, "First question")
    api.create_commit(repo_id, [CommitOperationAdd(path_in_repo="a.txt", path_or_fileobj=b"a")],
                      commit_message="A pull request counts too", create_pr=True)
    with pytest.raises(HfHubHTTPError) as exc:
        api.create_discussion(repo_id, "Third one")
    assert exc.value.response.status_code == 429 and int(exc.value.response.headers["retry-after"]) > 0
    for i in range(3):
        api.comment_discussion(repo_id, first.num, f"comment {i}")
    with pytest.raises(HfHubHTTPError) as exc:
        api.comment_discussion(repo_id, first.num, "one too many")
    assert exc.value.response.status_code == 429


def test_hub_products_bastion_does_not_offer_answer_a_clear_400(server: BastionServer) -> None:
    name, token = server.create_user()
    api = hf_api(server, token)
    space = api.create_repo(f"{name}/app", repo_type="space", space_sdk="static").repo_id
    for call, what in ((lambda: api.create_collection("Mine"), "Collections"),
                       (lambda: api.list_webhooks(), "Webhooks"),
                       (lambda: api.get_space_runtime(space), "Running Spaces"),
                       (lambda: api.add_space_secret(space, "KEY", "value"), "Running Spaces")):
        with pytest.raises(BadRequestError, match=f"{what} .*not offered"):
            call()
    for method, path in (("POST", f"/api/buckets/{name}/data"), ("GET", "/api/buckets/me/x/tree"),
                         ("GET", "/api/jobs/" + name), ("DELETE", "/api/collections/x-1")):
        r = httpx.request(method, server.url + path, headers=_auth(token), timeout=TIMEOUT)
        assert r.status_code == 400 and "not offered" in r.json()["error"], (path, r.text)
    assert api.repo_exists(space, repo_type="space")  # the Space's repository itself is served as usual
