"""Discussions and pull requests end to end with the real huggingface_hub client (the Hub's Community API)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import httpx
import pytest
from huggingface_hub import CommitOperationAdd, hf_hub_download
from huggingface_hub.errors import HfHubHTTPError

from tests.conftest import BastionServer, hf_api, random_binary


@pytest.fixture(scope="module")
def people(server: BastionServer) -> dict[str, tuple[str, str]]:
    """An owner with a public repo, and a contributor who has no write access to it."""
    owner = server.create_user()
    contributor = server.create_user()
    hf_api(server, owner[1]).create_repo(f"{owner[0]}/community")
    hf_api(server, owner[1]).upload_file(path_or_fileobj=b"hello\n", path_in_repo="README.md",
                                         repo_id=f"{owner[0]}/community")
    return {"owner": owner, "contributor": contributor}


def test_non_writer_opens_pr_with_lfs_file_and_owner_merges(server: BastionServer, people, tmp_path: Path) -> None:
    (owner, owner_token), (contrib, contrib_token) = people["owner"], people["contributor"]
    repo_id = f"{owner}/community"
    api = hf_api(server, contrib_token)
    weights = random_binary(300_000)
    with pytest.raises(HfHubHTTPError) as refused:  # no write access to main
        api.upload_file(path_or_fileobj=b"x", path_in_repo="x.txt", repo_id=repo_id)
    assert refused.value.response.status_code == 403

    info = api.create_commit(repo_id, [CommitOperationAdd("weights.bin", weights),
                                       CommitOperationAdd("notes.txt", b"some notes\n")],
                             commit_message="Add weights", commit_description="Trained for 3 epochs",
                             create_pr=True)
    assert info.pr_url is not None and info.pr_revision and info.pr_revision.startswith("refs/pr/")
    num = info.pr_num
    # The author adds a commit to their own pull request.
    api.upload_file(path_or_fileobj=b"more notes\n", path_in_repo="notes.txt", repo_id=repo_id,
                    revision=info.pr_revision, commit_message="Better notes")

    details = hf_api(server, owner_token).get_discussion_details(repo_id, num)
    assert details.is_pull_request and details.status == "open" and details.author == contrib
    assert details.title == "Add weights" and details.target_branch == "refs/heads/main"
    assert details.conflicting_files == []
    assert "weights.bin" in (details.diff or "") and "notes.txt" in (details.diff or "")
    kinds = [e.type for e in details.events]
    assert kinds[0] == "comment" and kinds.count("commit") == 2
    assert details.events[0].content == "Trained for 3 epochs"
    listed = list(hf_api(server, None).get_repo_discussions(repo_id, discussion_type="pull_request"))
    assert [(d.num, d.is_pull_request, d.author) for d in listed if d.num == num] == [(num, True, contrib)]

    # The contributor cannot merge their own pull request; the owner can.
    with pytest.raises(HfHubHTTPError) as no_merge:
        api.merge_pull_request(repo_id, num)
    assert no_merge.value.response.status_code == 403
    hf_api(server, owner_token).merge_pull_request(repo_id, num, comment="Thanks!")
    merged = hf_api(server, owner_token).get_discussion_details(repo_id, num)
    assert merged.status == "merged" and merged.merge_commit_oid
    assert [e.new_status for e in merged.events if e.type == "status-change"] == ["merged"]
    path = hf_hub_download(repo_id, "weights.bin", endpoint=server.url, token=owner_token,
                           cache_dir=tmp_path / "cache")
    assert hashlib.sha256(Path(path).read_bytes()).digest() == hashlib.sha256(weights).digest()
    notes = hf_hub_download(repo_id, "notes.txt", endpoint=server.url, token=owner_token, cache_dir=tmp_path / "c2")
    assert Path(notes).read_bytes() == b"more notes\n"
    commits = hf_api(server, owner_token).list_repo_commits(repo_id)
    assert commits[0].commit_id == merged.merge_commit_oid and commits[0].title.startswith(f"Merge pull request #{num}")
    # A merged pull request takes no more commits from its author, and cannot be merged again.
    with pytest.raises(HfHubHTTPError) as closed:
        api.upload_file(path_or_fileobj=b"late\n", path_in_repo="late.txt", repo_id=repo_id,
                        revision=f"refs/pr/{num}")
    assert closed.value.response.status_code == 403
    with pytest.raises(HfHubHTTPError) as again:
        hf_api(server, owner_token).merge_pull_request(repo_id, num)
    assert again.value.response.status_code == 400


def test_discussion_lifecycle(server: BastionServer, people) -> None:
    (owner, owner_token), (contrib, contrib_token) = people["owner"], people["contributor"]
    repo_id = f"{owner}/community"
    api, owner_api = hf_api(server, contrib_token), hf_api(server, owner_token)
    d = api.create_discussion(repo_id, "  Is this model any good?  ", description="Asking for a friend")
    assert not d.is_pull_request and d.status == "open" and d.title == "Is this model any good?"
    assert d.author == contrib and d.events[0].content == "Asking for a friend"
    c = owner_api.comment_discussion(repo_id, d.num, "Yes it is.")
    assert c.content == "Yes it is." and c.author == owner and not c.edited and not c.hidden
    edited = owner_api.edit_discussion_comment(repo_id, d.num, c.id, "Yes, it is!")
    assert edited.content == "Yes, it is!" and edited.edited and edited.number_of_edits == 1
    assert edited.edit_history[0]["raw"] == "Yes it is."
    with pytest.raises(HfHubHTTPError) as not_yours:  # only its author edits a comment
        api.edit_discussion_comment(repo_id, d.num, c.id, "No")
    assert not_yours.value.response.status_code == 403
    renamed = api.rename_discussion(repo_id, d.num, "Is this model good?")
    assert (renamed.old_title, renamed.new_title) == ("Is this model any good?", "Is this model good?")
    closed = api.change_discussion_status(repo_id, d.num, "closed", comment="Answered")
    assert closed.new_status == "closed"
    reopened = owner_api.change_discussion_status(repo_id, d.num, "open")
    assert reopened.new_status == "open"
    mine = api.comment_discussion(repo_id, d.num, "my secret phone number is 555-0100")
    with pytest.raises(HfHubHTTPError) as stranger, pytest.warns(UserWarning):  # neither author nor writer
        hf_api(server, server.create_user()[1]).hide_discussion_comment(repo_id, d.num, mine.id)
    assert stranger.value.response.status_code == 403
    with pytest.warns(UserWarning):
        hidden = owner_api.hide_discussion_comment(repo_id, d.num, mine.id)
    assert hidden.hidden and "555-0100" not in hidden.content
    details = owner_api.get_discussion_details(repo_id, d.num)
    assert [e.type for e in details.events] == ["comment", "comment", "title-change", "comment", "status-change",
                                                "status-change", "comment"]
    assert details.conflicting_files is None and details.target_branch is None
    raw = httpx.get(f"{server.url}/api/models/{repo_id}/discussions/{d.num}").text
    assert "555-0100" not in raw
    assert [x.num for x in api.get_repo_discussions(repo_id, author=contrib, discussion_type="discussion",
                                                    discussion_status="open")] == [d.num]
    with pytest.raises(HfHubHTTPError) as bad:
        api.create_discussion(repo_id, "x")
    assert bad.value.response.status_code == 400


def test_draft_pr_then_commits_to_its_ref_and_a_conflict(server: BastionServer, people) -> None:
    (owner, owner_token), (_contrib, contrib_token) = people["owner"], people["contributor"]
    repo_id = f"{owner}/community"
    api, owner_api = hf_api(server, contrib_token), hf_api(server, owner_token)
    pr = api.create_pull_request(repo_id, "Rewrite the README")
    assert pr.is_pull_request and pr.status == "draft" and pr.git_reference == f"refs/pr/{pr.num}"
    assert api.change_discussion_status(repo_id, pr.num, "open").new_status == "open"  # ready for review
    api.upload_file(path_or_fileobj=b"their readme\n", path_in_repo="README.md", repo_id=repo_id,
                    revision=pr.git_reference)
    # Someone else cannot push to it.
    stranger = server.create_user()
    with pytest.raises(HfHubHTTPError) as other:
        hf_api(server, stranger[1]).upload_file(path_or_fileobj=b"x", path_in_repo="x.txt", repo_id=repo_id,
                                                revision=pr.git_reference)
    assert other.value.response.status_code == 403
    owner_api.upload_file(path_or_fileobj=b"our readme\n", path_in_repo="README.md", repo_id=repo_id)
    details = owner_api.get_discussion_details(repo_id, pr.num)
    assert details.conflicting_files == ["README.md"]
    with pytest.raises(HfHubHTTPError) as conflict:
        owner_api.merge_pull_request(repo_id, pr.num)
    assert conflict.value.response.status_code == 409 and "README.md" in str(conflict.value)


def test_create_pr_against_another_branch(server: BastionServer, people) -> None:
    (owner, owner_token), (_contrib, contrib_token) = people["owner"], people["contributor"]
    repo_id = f"{owner}/community"
    owner_api = hf_api(server, owner_token)
    owner_api.create_branch(repo_id, branch="dev")
    info = hf_api(server, contrib_token).create_commit(repo_id, [CommitOperationAdd("dev.txt", b"dev\n")],
                                                        commit_message="For dev", revision="dev", create_pr=True)
    details = owner_api.get_discussion_details(repo_id, info.pr_num)
    assert details.target_branch == "refs/heads/dev"
    owner_api.merge_pull_request(repo_id, info.pr_num)
    assert owner_api.file_exists(repo_id, "dev.txt", revision="dev")
    assert not owner_api.file_exists(repo_id, "dev.txt")


def test_pagination_and_creation_rate_limit(server: BastionServer) -> None:
    owner, token = server.create_user()
    other, other_token = server.create_user()
    api = hf_api(server, token)
    api.create_repo(f"{owner}/many")
    url = f"{server.url}/api/models/{owner}/many/discussions"
    with httpx.Client(timeout=30) as client:
        for i in range(30):  # a user's budget: 30 discussions or pull requests an hour
            r = client.post(url, json={"title": f"Question {i:02d}"}, headers={"authorization": f"Bearer {token}"})
            assert r.status_code == 200, r.text
        r = client.post(url, json={"title": "One too many"}, headers={"authorization": f"Bearer {token}"})
        assert r.status_code == 429 and int(r.headers["retry-after"]) > 0
        for i in range(23):  # another user's budget is their own
            r = client.post(url, json={"title": f"Other {i:02d}"}, headers={"authorization": f"Bearer {other_token}"})
            assert r.status_code == 200, r.text
        page = client.get(url).json()
    assert page["count"] == 53 and page["start"] == 0 and len(page["discussions"]) == 50
    assert page["discussions"][0]["num"] == 53 and page["discussions"][0]["author"]["name"] == other
    got = list(api.get_repo_discussions(f"{owner}/many"))
    assert [d.num for d in got] == list(range(53, 0, -1))
    assert len(list(api.get_repo_discussions(f"{owner}/many", author=owner))) == 30
