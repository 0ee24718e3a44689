"""The Hub's answers the huggingface_hub client matches on, driven through the real client.

Repo ids without a namespace, error texts and codes, README metadata, many large regular files,
auth_check, list/permanently delete LFS files, renamed repos, the security status's shape.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import random
import warnings
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
from huggingface_hub import CommitOperationAdd
from huggingface_hub.errors import (
    EntryNotFoundError,
    GatedRepoError,
    HfHubHTTPError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

from tests.conftest import BastionServer, hf_api

TIMEOUT = 30
MiB = 1024 * 1024
INVALID_CARD = "\n---\nmodel-index: foo\n---\n\nThis is a modelcard with an invalid metadata section.\n"


def _auth(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


def _db(server: BastionServer) -> sa.Engine:
    return sa.create_engine(server.env.get("BASTION_DATABASE_URL") or f"sqlite:///{server.data_dir / 'bastion.sqlite3'}")


def _new_repo(server: BastionServer, user: tuple[str, str], **kwargs: object) -> str:
    name, token = user
    return hf_api(server, token).create_repo(f"{name}/r{os.urandom(4).hex()}", **kwargs).repo_id


# ---- repo ids without a namespace ------------------------------------------------------------------

def test_namespaceless_repo_ids_are_missing_repos(server: BastionServer, user: tuple[str, str]) -> None:
    api = hf_api(server, user[1])
    assert api.repo_exists("gpt2") is False
    assert api.repo_exists("gpt2", repo_type="dataset") is False
    assert api.file_exists("gpt2", "config.json") is False
    assert api.revision_exists("gpt2", "main") is False
    with pytest.raises(RepositoryNotFoundError):
        api.list_repo_commits("gpt2")
    with pytest.raises(RepositoryNotFoundError):
        api.list_repo_refs("gpt2")
    for method, path in (("HEAD", "/gpt2/resolve/main/config.json"), ("GET", "/api/models/gpt2"),
                         ("GET", "/api/datasets/squad/tree/main"), ("GET", "/datasets/squad/resolve/main/x")):
        resp = httpx.request(method, server.url + path, timeout=TIMEOUT)
        assert resp.status_code == 404 and resp.headers["x-error-code"] == "RepoNotFound", (path, resp.headers)
    # An unknown URL under a full repo id stays a plain 404 (it names no missing repo).
    resp = httpx.get(f"{server.url}/api/models/{user[0]}/r/no-such-endpoint/x", timeout=TIMEOUT)
    assert resp.status_code == 404 and "x-error-code" not in resp.headers


# ---- error texts and codes -------------------------------------------------------------------------

def test_error_texts_the_client_matches(server: BastionServer, user: tuple[str, str]) -> None:
    name, token = user
    api = hf_api(server, token)
    first, second = _new_repo(server, user), _new_repo(server, user)
    with pytest.raises(HfHubHTTPError, match=r"A model repository called .* already exists"):
        api.move_repo(first, second)

    api.create_branch(first, branch="cool-branch")
    with pytest.raises(HfHubHTTPError, match=r"Reference refs/heads/cool-branch already exists") as exc:
        api.create_branch(first, branch="cool-branch")
    assert exc.value.response.status_code == 409
    with pytest.raises(HfHubHTTPError, match=r"Reference refs/heads/main already exists"):
        api.create_branch(first, branch="main")
    api.create_branch(first, branch="cool-branch", exist_ok=True)
    with pytest.raises(HfHubHTTPError, match="Cannot delete refs/heads/main"):
        api.delete_branch(first, branch="main")

    with pytest.raises(RevisionNotFoundError):
        api.create_tag(first, tag="invalid tag", revision="foobar")
    with pytest.raises(HfHubHTTPError) as exc:
        api.create_tag(first, tag="invalid tag")
    assert exc.value.response.status_code == 400

    parent = api.model_info(first).sha
    api.upload_file(path_or_fileobj=b"new", path_in_repo="new.txt", repo_id=first)
    with pytest.raises(HfHubHTTPError) as exc:
        api.create_commit(first, [CommitOperationAdd("buffer", b"data")], commit_message="late",
                          parent_commit=parent)
    assert exc.value.response.status_code == 412
    assert "The branch was updated since you opened this page. Please refresh and try again." in str(exc.value)

    with pytest.raises(HfHubHTTPError) as exc:
        api.upload_file(path_or_fileobj=b"content", path_in_repo="..\\ddd", repo_id=first)
    assert exc.value.response.status_code == 422
    assert api.list_repo_files(first) == [".gitattributes", "new.txt"]


def test_readme_metadata_is_validated(server: BastionServer, user: tuple[str, str]) -> None:
    name, token = user
    api = hf_api(server, token)
    repo_id = _new_repo(server, user)
    before = api.model_info(repo_id).sha
    # The client asks validate-yaml first ...
    with pytest.raises(ValueError, match="Invalid metadata in README.md"):
        api.create_commit(repo_id, [CommitOperationAdd("README.md", INVALID_CARD.encode())], commit_message="c")
    # ... and a client that does not is refused by the commit itself, and by preupload where the sample is
    # the whole card.
    body = (b'{"key": "header", "value": {"summary": "card"}}\n'
            b'{"key": "file", "value": {"path": "README.md", "encoding": "utf-8", "content": '
            + httpx.Request("GET", "/", json=INVALID_CARD).content + b"}}\n")
    resp = httpx.post(f"{server.url}/api/models/{repo_id}/commit/main", content=body, timeout=TIMEOUT,
                      headers={**_auth(token), "content-type": "application/x-ndjson"})
    assert resp.status_code == 400 and "Invalid metadata in README.md" in resp.json()["error"], resp.text
    assert '"model-index" must be an array' in resp.json()["error"]
    resp = httpx.post(f"{server.url}/api/models/{repo_id}/preupload/main", headers=_auth(token), timeout=TIMEOUT,
                      json={"files": [{"path": "README.md", "size": len(INVALID_CARD),
                                       "sample": base64.b64encode(INVALID_CARD.encode()).decode()}]})
    assert resp.status_code == 400 and "Invalid metadata in README.md" in resp.json()["error"]
    assert api.model_info(repo_id).sha == before
    # An empty card is accepted, with the Hub's warning.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        api.create_commit(repo_id, [CommitOperationAdd("README.md", b"no metadata here")], commit_message="c")
    assert any("Warnings while validating metadata in README.md" in str(w.message) for w in caught)
    good = b"---\nlicense: mit\ntags: [a, b]\nmodel-index:\n- name: m\n  results: []\n---\n# Card\n"
    api.create_commit(repo_id, [CommitOperationAdd("README.md", good)], commit_message="good card")
    assert Path(api.hf_hub_download(repo_id, "README.md")).read_bytes() == good


def test_many_large_regular_files_are_told_to_use_lfs(server: BastionServer, user: tuple[str, str]) -> None:
    """Regular files travel inside the commit's body (64 MiB on the test server): past half of it the
    preupload answer sends the rest to LFS, so the client's commit fits (the Hub's client follows it)."""
    name, token = user
    api = hf_api(server, token)
    repo_id = _new_repo(server, user)
    files = [{"path": f"file-{i}.text", "size": 9 * MiB, "sample": "SGVsbG8="} for i in range(12)]
    resp = httpx.post(f"{server.url}/api/models/{repo_id}/preupload/main", headers=_auth(token), timeout=TIMEOUT,
                      json={"files": files})
    modes = [f["uploadMode"] for f in resp.json()["files"]]
    assert modes[:2] == ["regular", "regular"] and set(modes[2:]) == {"lfs"}, modes
    ops = [CommitOperationAdd(f"f{i}.text", b"Hello regular " + bytes([97 + i]) * 7 * MiB) for i in range(4)]
    api.create_commit(repo_id, ops, commit_message="many large text files")
    entries = {e.path: e for e in api.list_repo_tree(repo_id)}
    assert sum(entries[f"f{i}.text"].lfs is not None for i in range(4)) == 1
    assert api.hf_hub_download(repo_id, "f3.text").endswith("f3.text")


# ---- auth_check ------------------------------------------------------------------------------------

def test_auth_check(server: BastionServer) -> None:
    owner, stranger = server.create_user(), server.create_user()
    api = hf_api(server, owner[1])
    public, private, gated = (_new_repo(server, owner, repo_type="dataset"), _new_repo(server, owner, private=True),
                              _new_repo(server, owner))
    api.update_repo_settings(gated, gated="manual")
    api.auth_check(public, repo_type="dataset")
    api.auth_check(private)
    api.auth_check(private, write=True)
    other = hf_api(server, stranger[1])
    other.auth_check(public, repo_type="dataset")
    with pytest.raises(RepositoryNotFoundError):
        other.auth_check(f"{owner[0]}/missing_repo_id")
    with pytest.raises(RepositoryNotFoundError):
        other.auth_check(private)
    with pytest.raises(GatedRepoError):
        other.auth_check(gated)
    with pytest.raises(HfHubHTTPError) as exc:
        other.auth_check(public, repo_type="dataset", write=True)
    assert exc.value.response.status_code == 403


# ---- LFS files: list and permanently delete ----------------------------------------------------------

def _blob_path(server: BastionServer, oid: str):  # type: ignore[no-untyped-def]
    return server.data_dir / "lfs" / oid[:2] / oid[2:4] / oid


def test_list_and_permanently_delete_lfs_files(server: BastionServer, user: tuple[str, str]) -> None:
    name, token = user
    api = hf_api(server, token)
    repo_id = _new_repo(server, user)
    rng = random.Random(17)
    leaked, kept, shared = (bytes(rng.getrandbits(8) for _ in range(2048)) for _ in range(3))
    api.upload_file(path_or_fileobj=leaked, path_in_repo="weights/leaked.bin", repo_id=repo_id)
    old = api.model_info(repo_id).sha
    api.upload_file(path_or_fileobj=shared, path_in_repo="shared.bin", repo_id=repo_id)
    api.upload_file(path_or_fileobj=b"TXT content", path_in_repo="notes.txt", repo_id=repo_id)
    api.create_branch(repo_id, branch="my-branch")
    api.upload_file(path_or_fileobj=kept, path_in_repo="branch.bin", repo_id=repo_id, revision="my-branch")
    api.create_tag(repo_id, tag="v1", revision="my-branch", tag_message="release")
    # Another repo of the same user uploads the same bytes as shared.bin itself.
    elsewhere = _new_repo(server, user)
    api.upload_file(path_or_fileobj=shared, path_in_repo="copy.bin", repo_id=elsewhere)

    files = {f.filename: f for f in api.list_lfs_files(repo_id)}
    assert set(files) == {"weights/leaked.bin", "shared.bin", "branch.bin"}
    assert files["weights/leaked.bin"].file_oid == hashlib.sha256(leaked).hexdigest()
    assert files["weights/leaked.bin"].size == len(leaked)
    assert files["branch.bin"].ref == "refs/heads/my-branch" and files["shared.bin"].ref == "refs/heads/main"
    on_main = [files["weights/leaked.bin"], files["shared.bin"]]

    api.permanently_delete_lfs_files(repo_id, on_main)
    assert {f.filename for f in api.list_lfs_files(repo_id)} == {"branch.bin"}
    # History rewritten: the files are gone from every ref; the branch's own file stays.
    assert set(api.list_repo_files(repo_id)) == {".gitattributes", "notes.txt"}
    assert set(api.list_repo_files(repo_id, revision="v1")) == {".gitattributes", "notes.txt", "branch.bin"}
    with pytest.raises(EntryNotFoundError):
        api.hf_hub_download(repo_id, "weights/leaked.bin")
    # The old commit is still addressable by its id: its tree says "deleted", its download a 404.
    tree = httpx.get(f"{server.url}/api/models/{repo_id}/tree/{old}/weights", headers=_auth(token), timeout=TIMEOUT)
    assert [(e["path"], e.get("deleted")) for e in tree.json()] == [("weights/leaked.bin", True)]
    resp = httpx.get(f"{server.url}/{repo_id}/resolve/{old}/weights/leaked.bin", headers=_auth(token),
                     timeout=TIMEOUT)
    assert resp.status_code == 404 and resp.headers["x-error-code"] == "EntryNotFound"
    assert "permanently deleted" in resp.headers["x-error-message"]
    # Bytes: the leaked object's are gone; the shared object's stay for the repo that uploaded it too.
    assert not _blob_path(server, hashlib.sha256(leaked).hexdigest()).exists()
    assert _blob_path(server, hashlib.sha256(shared).hexdigest()).read_bytes() == shared
    assert Path(api.hf_hub_download(elsewhere, "copy.bin")).read_bytes() == shared
    # A repeat is a no-op; an oid the repo never held is a 404.
    api.permanently_delete_lfs_files(repo_id, on_main)
    resp = httpx.post(f"{server.url}/api/models/{repo_id}/lfs-files/batch", headers=_auth(token), timeout=TIMEOUT,
                      json={"deletions": {"sha": ["0" * 64], "rewriteHistory": True}})
    assert resp.status_code == 404 and resp.headers["x-error-code"] == "EntryNotFound"
    with _db(server).connect() as conn:
        rows = conn.execute(sa.text("SELECT details FROM audit_events WHERE action = 'repo.delete_lfs_file' "
                                    "AND target_id = :t"), {"t": f"model/{repo_id}"}).scalars().all()
    assert len(rows) == 1, rows  # the repeat changed nothing and recorded nothing
    details = rows[0] if isinstance(rows[0], dict) else json.loads(rows[0])
    assert sorted(details["oids"]) == sorted(f.file_oid for f in on_main) and details["rewriteHistory"] is True
    assert set(details["rewrittenRefs"]) == {"refs/heads/main", "refs/heads/my-branch", "refs/tags/v1"}


def test_delete_without_rewriting_history_keeps_pointers_marked_deleted(server: BastionServer,
                                                                         user: tuple[str, str]) -> None:
    name, token = user
    api = hf_api(server, token)
    repo_id = _new_repo(server, user)
    api.upload_file(path_or_fileobj=b"\x00secret weights" * 100, path_in_repo="w.bin", repo_id=repo_id)
    head = api.model_info(repo_id).sha
    api.permanently_delete_lfs_files(repo_id, list(api.list_lfs_files(repo_id)), rewrite_history=False)
    assert api.model_info(repo_id).sha == head  # no rewrite: the pointer stays, marked deleted
    info = api.get_paths_info(repo_id, ["w.bin"])
    resp = httpx.post(f"{server.url}/api/models/{repo_id}/paths-info/main", data={"paths": ["w.bin"]},
                      headers=_auth(token), timeout=TIMEOUT)
    assert info and resp.json()[0]["deleted"] is True
    with pytest.raises(EntryNotFoundError):
        api.hf_hub_download(repo_id, "w.bin")


# ---- renamed repos -----------------------------------------------------------------------------------

def test_renamed_repo_redirects_for_readers(server: BastionServer, user: tuple[str, str]) -> None:
    name, token = user
    api = hf_api(server, token)
    before = _new_repo(server, user, private=True)
    after = before + "_renamed"
    api.upload_file(repo_id=before, path_in_repo="file.txt", path_or_fileobj=b"content")
    api.move_repo(before, after)
    assert Path(api.hf_hub_download(before, filename="file.txt")).read_text() == "content"
    assert api.model_info(before).id == after
    assert api.list_repo_files(before) == [".gitattributes", "file.txt"]
    resp = httpx.head(f"{server.url}/{before}/resolve/main/file.txt?x=1", headers=_auth(token), timeout=TIMEOUT)
    assert resp.status_code == 307 and resp.headers["location"] == f"/{after}/resolve/main/file.txt?x=1"
    # A write through the old name lands in the moved repo (307 keeps the method and the body).
    api.upload_file(repo_id=before, path_in_repo="more.txt", path_or_fileobj=b"more")
    assert "more.txt" in api.list_repo_files(after)
    # A new repo at the old name takes precedence.
    api.create_repo(before)
    assert api.list_repo_files(before) == [".gitattributes"]
    assert api.model_info(before).id == before
    # The name belongs to the new repo now: deleting it does not bring the redirect back.
    api.delete_repo(before)
    with pytest.raises(RepositoryNotFoundError):
        api.model_info(before)
    assert api.model_info(after).id == after


def test_deleting_a_folder_named_without_its_slash(server: BastionServer, user: tuple[str, str]) -> None:
    from huggingface_hub import CommitOperationDelete

    api = hf_api(server, user[1])
    repo_id = _new_repo(server, user)
    api.create_commit(repo_id, [CommitOperationAdd("1/a.md", b"a"), CommitOperationAdd("2/b.md", b"b")],
                      commit_message="files")
    api.create_commit(repo_id, [CommitOperationDelete("1")], commit_message="implicit folder delete")
    assert api.list_repo_files(repo_id) == [".gitattributes", "2/b.md"]
    with pytest.raises(EntryNotFoundError):
        api.create_commit(repo_id, [CommitOperationDelete("missing")], commit_message="nothing there")
