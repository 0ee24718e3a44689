"""End to end with the real huggingface_hub client: repos, uploads, downloads, refs, history."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import httpx
import pytest
from huggingface_hub import (
    CommitOperationAdd,
    CommitOperationDelete,
    hf_hub_download,
    snapshot_download,
)
from huggingface_hub.errors import (
    EntryNotFoundError,
    HfHubHTTPError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

from tests.conftest import BastionServer, MiB, hf_api


def sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@pytest.mark.parametrize("repo_type", ["model", "dataset", "space"])
def test_repo_lifecycle_every_type(server: BastionServer, user: tuple[str, str], repo_type: str) -> None:
    name, token = user
    api = hf_api(server, token)
    url = api.create_repo(f"{name}/r-{repo_type}", repo_type=repo_type, space_sdk="gradio" if repo_type == "space"
                          else None)
    assert url.repo_id == f"{name}/r-{repo_type}"
    assert url.endpoint == server.url
    # exist_ok relies on a 409 carrying the existing url
    assert api.create_repo(f"{name}/r-{repo_type}", repo_type=repo_type, exist_ok=True,
                           space_sdk="gradio" if repo_type == "space" else None).repo_id == url.repo_id
    with pytest.raises(HfHubHTTPError) as exc:
        api.create_repo(f"{name}/r-{repo_type}", repo_type=repo_type,
                        space_sdk="gradio" if repo_type == "space" else None)
    assert exc.value.response.status_code == 409
    info = api.repo_info(f"{name}/r-{repo_type}", repo_type=repo_type)
    assert info.sha and len(info.sha) == 40 and info.private is False
    # A Space starts with its card (the Hub's default README: its configuration), as on the Hub.
    assert [s.rfilename for s in info.siblings] == [".gitattributes"] + (["README.md"] if repo_type == "space" else [])
    api.upload_file(path_or_fileobj=b"hello\n", path_in_repo="hello.txt", repo_id=url.repo_id, repo_type=repo_type)
    path = hf_hub_download(url.repo_id, "hello.txt", repo_type=repo_type, endpoint=server.url, token=token)
    assert Path(path).read_bytes() == b"hello\n"
    api.delete_repo(url.repo_id, repo_type=repo_type)
    assert not api.repo_exists(url.repo_id, repo_type=repo_type)
    api.delete_repo(url.repo_id, repo_type=repo_type, missing_ok=True)


def test_uploads_small_lfs_basic_and_multipart_round_trip(server: BastionServer, user: tuple[str, str],
                                                          tmp_path: Path) -> None:
    name, token = user
    api = hf_api(server, token)
    repo_id = f"{name}/weights"
    api.create_repo(repo_id)
    big = tmp_path / "model.bin"  # > 20 MB: LFS, basic transfer (multipart starts at 24 MiB in tests)
    big.write_bytes(os.urandom(21 * MiB))
    huge = tmp_path / "huge.safetensors"  # 3 parts of 10 MiB: multipart transfer
    huge.write_bytes(os.urandom(25 * MiB + 12345))
    small = tmp_path / "config.json"
    small.write_text('{"a": 1}\n')
    api.upload_file(path_or_fileobj=str(small), path_in_repo="config.json", repo_id=repo_id)
    api.upload_file(path_or_fileobj=str(big), path_in_repo="model.bin", repo_id=repo_id)
    api.upload_file(path_or_fileobj=str(huge), path_in_repo="sub/huge.safetensors", repo_id=repo_id)

    info = api.model_info(repo_id, files_metadata=True)
    by_name = {s.rfilename: s for s in info.siblings}
    assert by_name["model.bin"].lfs.sha256 == sha256(big)
    assert by_name["model.bin"].size == big.stat().st_size
    assert by_name["sub/huge.safetensors"].lfs.sha256 == sha256(huge)
    assert by_name["config.json"].lfs is None

    for remote, local in [("model.bin", big), ("sub/huge.safetensors", huge), ("config.json", small)]:
        got = hf_hub_download(repo_id, remote, endpoint=server.url, token=token, cache_dir=tmp_path / "c1")
        assert sha256(got) == sha256(local)
    snap = snapshot_download(repo_id, endpoint=server.url, token=token, cache_dir=tmp_path / "c2")
    assert sha256(Path(snap) / "sub/huge.safetensors") == sha256(huge)
    assert sorted(p.relative_to(snap).as_posix() for p in Path(snap).rglob("*") if p.is_file()) == \
        [".gitattributes", "config.json", "model.bin", "sub/huge.safetensors"]

    # Uploading the same bytes again is a no-op for the client: the batch API says "already stored".
    before = api.model_info(repo_id).sha
    api.upload_file(path_or_fileobj=str(big), path_in_repo="model.bin", repo_id=repo_id)
    assert api.model_info(repo_id).sha == before


def test_upload_folder_delete_patterns_and_deletions(server: BastionServer, user: tuple[str, str],
                                                     tmp_path: Path) -> None:
    name, token = user
    api = hf_api(server, token)
    repo_id = f"{name}/folder"
    api.create_repo(repo_id, repo_type="dataset")
    src = tmp_path / "src"
    (src / "data").mkdir(parents=True)
    for i in range(5):
        (src / "data" / f"part-{i}.csv").write_text(f"id,value\n{i},{i * i}\n")
    (src / "README.md").write_text("---\nlicense: mit\n---\n# Data\n")
    (src / "blob.parquet").write_bytes(os.urandom(4096))
    api.upload_folder(folder_path=str(src), repo_id=repo_id, repo_type="dataset")
    files = set(api.list_repo_files(repo_id, repo_type="dataset"))
    assert files == {".gitattributes", "README.md", "blob.parquet"} | {f"data/part-{i}.csv" for i in range(5)}
    tree = {e.path: e for e in api.list_repo_tree(repo_id, repo_type="dataset", recursive=True)}
    assert tree["blob.parquet"].lfs is not None  # .gitattributes says *.parquet is LFS

    api.delete_file("data/part-0.csv", repo_id=repo_id, repo_type="dataset")
    api.delete_folder("data", repo_id=repo_id, repo_type="dataset")
    assert set(api.list_repo_files(repo_id, repo_type="dataset")) == {".gitattributes", "README.md", "blob.parquet"}

    (src / "new.txt").write_text("new")
    api.upload_folder(folder_path=str(src), repo_id=repo_id, repo_type="dataset", allow_patterns=["new.txt"],
                      delete_patterns=["*.parquet"])
    assert set(api.list_repo_files(repo_id, repo_type="dataset")) == {".gitattributes", "README.md", "new.txt"}


def test_branches_tags_refs_commits_squash_and_pr(server: BastionServer, user: tuple[str, str]) -> None:
    name, token = user
    api = hf_api(server, token)
    repo_id = f"{name}/refs"
    api.create_repo(repo_id)
    for i in range(3):
        api.upload_file(path_or_fileobj=f"v{i}".encode(), path_in_repo="v.txt", repo_id=repo_id,
                        commit_message=f"version {i}")
    api.create_branch(repo_id, branch="dev/feature")
    api.create_branch(repo_id, branch="dev/feature", exist_ok=True)
    with pytest.raises(HfHubHTTPError) as exc:
        api.create_branch(repo_id, branch="dev/feature")
    assert exc.value.response.status_code == 409
    api.upload_file(path_or_fileobj=b"on dev", path_in_repo="dev.txt", repo_id=repo_id, revision="dev/feature")
    api.create_tag(repo_id, tag="v1.0", tag_message="first release")
    api.create_tag(repo_id, tag="light", revision="dev/feature")

    refs = api.list_repo_refs(repo_id)
    assert {b.name for b in refs.branches} == {"main", "dev/feature"}
    assert {t.name for t in refs.tags} == {"v1.0", "light"}
    assert refs.converts == []
    main_sha = next(b.target_commit for b in refs.branches if b.name == "main")
    assert next(t.target_commit for t in refs.tags if t.name == "v1.0") == main_sha

    commits = api.list_repo_commits(repo_id)
    assert [c.title for c in commits] == ["version 2", "version 1", "version 0", "initial commit"]
    assert commits[0].commit_id == main_sha
    assert hf_hub_download(repo_id, "dev.txt", revision="dev/feature", endpoint=server.url, token=token)
    with pytest.raises(EntryNotFoundError):
        hf_hub_download(repo_id, "dev.txt", revision="v1.0", endpoint=server.url, token=token)
    older = hf_hub_download(repo_id, "v.txt", revision=commits[2].commit_id, endpoint=server.url, token=token)
    assert Path(older).read_bytes() == b"v0"

    pr = api.create_commit(repo_id, operations=[CommitOperationAdd("pr.txt", b"proposal")],
                           commit_message="propose", create_pr=True)
    assert pr.pr_num == 1 and pr.pr_revision == "refs/pr/1"
    assert "pr.txt" in api.list_repo_files(repo_id, revision="refs/pr/1")
    assert "pr.txt" not in api.list_repo_files(repo_id)
    assert [p.ref for p in api.list_repo_refs(repo_id, include_pull_requests=True).pull_requests] == ["refs/pr/1"]

    api.super_squash_history(repo_id, commit_message="squashed")
    squashed = api.list_repo_commits(repo_id)
    assert [c.title for c in squashed] == ["squashed"]
    assert hf_hub_download(repo_id, "v.txt", endpoint=server.url, token=token, force_download=True)

    api.delete_tag(repo_id, tag="light")
    api.delete_branch(repo_id, branch="dev/feature")
    refs = api.list_repo_refs(repo_id)
    assert {b.name for b in refs.branches} == {"main"} and {t.name for t in refs.tags} == {"v1.0"}
    with pytest.raises(RevisionNotFoundError):
        api.list_repo_files(repo_id, revision="dev/feature")


def test_tree_paths_info_and_last_commit(server: BastionServer, user: tuple[str, str]) -> None:
    name, token = user
    api = hf_api(server, token)
    repo_id = f"{name}/tree"
    api.create_repo(repo_id)
    api.create_commit(repo_id, operations=[CommitOperationAdd("a/b/c.txt", b"c"), CommitOperationAdd("a/x.txt", b"x"),
                                           CommitOperationAdd("top.txt", b"t")], commit_message="first")
    second = api.create_commit(repo_id, operations=[CommitOperationAdd("a/x.txt", b"x2")], commit_message="second")
    top = [e.path for e in api.list_repo_tree(repo_id)]
    assert top == [".gitattributes", "a", "top.txt"]
    nested = [e.path for e in api.list_repo_tree(repo_id, path_in_repo="a")]
    assert nested == ["a/b", "a/x.txt"]
    expanded = {e.path: e for e in api.list_repo_tree(repo_id, recursive=True, expand=True)}
    assert expanded["a/x.txt"].last_commit.title == "second"
    assert expanded["a/x.txt"].last_commit.oid == second.oid
    assert expanded["a/b/c.txt"].last_commit.title == "first"
    security = expanded["top.txt"].security
    assert security.status in ("unscanned", "queued", "safe") and security.safe == (security.status == "safe")
    infos = api.get_paths_info(repo_id, ["a/x.txt", "a/b", "missing.txt"], expand=True)
    assert [i.path for i in infos] == ["a/x.txt", "a/b"]
    # tree at a commit sha (snapshot_download lists at the resolved sha)
    assert {e.path for e in api.list_repo_tree(repo_id, revision=second.oid, recursive=True)} >= {"a/b/c.txt"}
    with pytest.raises(EntryNotFoundError):
        list(api.list_repo_tree(repo_id, path_in_repo="nope"))


def test_private_repos_are_invisible(server: BastionServer, user: tuple[str, str]) -> None:
    name, token = user
    other_name, other_token = server.create_user()
    api = hf_api(server, token)
    repo_id = f"{name}/secret"
    api.create_repo(repo_id, private=True)
    api.upload_file(path_or_fileobj=b"classified", path_in_repo="s.txt", repo_id=repo_id)
    assert api.model_info(repo_id).private is True

    for who in (hf_api(server, None), hf_api(server, other_token)):
        with pytest.raises(RepositoryNotFoundError):
            who.model_info(repo_id)
        with pytest.raises(RepositoryNotFoundError):
            who.model_info(f"{name}/does-not-exist")
        assert not who.repo_exists(repo_id)
        assert repo_id not in [m.id for m in who.list_models(author=name)]
    with pytest.raises(RepositoryNotFoundError):
        hf_hub_download(repo_id, "s.txt", endpoint=server.url, token=other_token)
    # a missing and a private repo answer byte-for-byte alike
    a = httpx.get(f"{server.url}/api/models/{repo_id}/tree/main", headers={"authorization": f"Bearer {other_token}"})
    b = httpx.get(f"{server.url}/api/models/{name}/nope/tree/main", headers={"authorization": f"Bearer {other_token}"})
    assert (a.status_code, a.headers["x-error-code"], a.json()) == (b.status_code, b.headers["x-error-code"], b.json())
    # writing to someone else's repo: as invisible as reading
    with pytest.raises(RepositoryNotFoundError):
        hf_api(server, other_token).upload_file(path_or_fileobj=b"x", path_in_repo="x", repo_id=repo_id)
    assert repo_id in [m.id for m in api.list_models(author=name)]

    api.update_repo_settings(repo_id, private=False)
    assert hf_api(server, None).model_info(repo_id).private is False
    api.update_repo_settings(repo_id, private=True)
    assert not hf_api(server, None).repo_exists(repo_id)


def test_public_repo_write_needs_ownership_and_write_token(server: BastionServer, user: tuple[str, str]) -> None:
    name, token = user
    api = hf_api(server, token)
    repo_id = f"{name}/public"
    api.create_repo(repo_id)
    _, other_token = server.create_user()
    with pytest.raises(HfHubHTTPError) as exc:
        hf_api(server, other_token).upload_file(path_or_fileobj=b"x", path_in_repo="x.txt", repo_id=repo_id)
    assert exc.value.response.status_code == 403
    read_token = server.admin("create-token", name, "--name", "ro", "--role", "read").stdout.strip()
    with pytest.raises(HfHubHTTPError) as exc:
        hf_api(server, read_token).upload_file(path_or_fileobj=b"x", path_in_repo="x.txt", repo_id=repo_id)
    assert exc.value.response.status_code == 403
    assert "read-only" in exc.value.response.headers["x-error-message"]
    with pytest.raises(HfHubHTTPError) as exc:
        hf_api(server, None).upload_file(path_or_fileobj=b"x", path_in_repo="x.txt", repo_id=repo_id)
    assert exc.value.response.status_code == 401
    assert hf_api(server, read_token).model_info(repo_id).id == repo_id


def test_move_repo_and_listing_pagination(server: BastionServer, user: tuple[str, str]) -> None:
    name, token = user
    api = hf_api(server, token)
    for i in range(7):
        api.create_repo(f"{name}/list-{i}")
    api.move_repo(f"{name}/list-6", f"{name}/renamed")
    assert api.repo_exists(f"{name}/renamed")
    assert api.model_info(f"{name}/list-6").id == f"{name}/renamed"  # the old name redirects, as on the Hub
    resp = httpx.get(f"{server.url}/api/models", params={"author": name, "limit": 3, "sort": "createdAt"})
    assert len(resp.json()) == 3 and 'rel="next"' in resp.headers["link"]
    next_url = resp.headers["link"].split(";")[0].strip("<>")
    assert next_url.startswith(server.url) and "author=" in next_url
    ids = [m.id for m in api.list_models(author=name)]
    assert len(ids) == 7 and len(set(ids)) == 7
    assert [m.id for m in api.list_models(author=name, search="renam")] == [f"{name}/renamed"]
    assert len(list(api.list_models(author=name, limit=4))) == 4


def test_parent_commit_conflict_and_missing_delete(server: BastionServer, user: tuple[str, str]) -> None:
    name, token = user
    api = hf_api(server, token)
    repo_id = f"{name}/cas"
    api.create_repo(repo_id)
    base = api.model_info(repo_id).sha
    api.create_commit(repo_id, operations=[CommitOperationAdd("a.txt", b"a")], commit_message="a", parent_commit=base)
    with pytest.raises(HfHubHTTPError) as exc:
        api.create_commit(repo_id, operations=[CommitOperationAdd("b.txt", b"b")], commit_message="b",
                          parent_commit=base)
    assert exc.value.response.status_code == 412
    with pytest.raises(EntryNotFoundError):
        api.create_commit(repo_id, operations=[CommitOperationDelete("nope.txt")], commit_message="del")
    assert api.list_repo_files(repo_id) == [".gitattributes", "a.txt"]
    with pytest.raises(RevisionNotFoundError):
        api.upload_file(path_or_fileobj=b"x", path_in_repo="x.txt", repo_id=repo_id, revision="no-such-branch")


def test_whoami_and_resolve_headers(server: BastionServer, user: tuple[str, str]) -> None:
    name, token = user
    api = hf_api(server, token)
    me = api.whoami()
    assert me["name"] == name and me["fullname"] == f"{name.title()} Test"
    assert me["auth"]["accessToken"]["role"] == "write"
    repo_id = f"{name}/headers"
    api.create_repo(repo_id)
    data = os.urandom(11 * MiB)
    api.upload_file(path_or_fileobj=data, path_in_repo="w.bin", repo_id=repo_id)
    auth = {"authorization": f"Bearer {token}"}
    head = httpx.head(f"{server.url}/{repo_id}/resolve/main/w.bin", headers=auth)
    oid = hashlib.sha256(data).hexdigest()
    assert head.status_code == 200
    assert head.headers["x-linked-etag"] == f'"{oid}"' and head.headers["x-linked-size"] == str(len(data))
    assert head.headers["content-length"] == str(len(data))
    assert len(head.headers["x-repo-commit"]) == 40
    assert not any(h.lower().startswith("x-xet") for h in head.headers)
    part = httpx.get(f"{server.url}/{repo_id}/resolve/main/w.bin", headers={**auth, "range": "bytes=100-199"})
    assert part.status_code == 206 and part.content == data[100:200]
    assert part.headers["content-range"] == f"bytes 100-199/{len(data)}"
    tail = httpx.get(f"{server.url}/{repo_id}/resolve/main/w.bin", headers={**auth, "range": "bytes=-10"})
    assert tail.content == data[-10:]
    bad = httpx.get(f"{server.url}/{repo_id}/resolve/main/w.bin", headers={**auth, "range": f"bytes={len(data)}-"})
    assert bad.status_code == 416
    small = httpx.get(f"{server.url}/{repo_id}/resolve/main/.gitattributes", headers={"range": "bytes=0-3"})
    assert small.status_code == 206 and small.content == b"*.7z"
    missing = httpx.head(f"{server.url}/{repo_id}/resolve/main/none.txt")
    assert missing.status_code == 404 and missing.headers["x-error-code"] == "EntryNotFound"
    assert len(missing.headers["x-repo-commit"]) == 40


def test_readme_validation(server: BastionServer, user: tuple[str, str]) -> None:
    name, token = user
    api = hf_api(server, token)
    repo_id = f"{name}/card"
    api.create_repo(repo_id)
    api.upload_file(path_or_fileobj=b"---\nlicense: mit\n---\n# Card\n", path_in_repo="README.md", repo_id=repo_id)
    with pytest.raises(ValueError, match="Invalid metadata"):
        api.upload_file(path_or_fileobj=b"---\nlicense: [mit\n---\n", path_in_repo="README.md", repo_id=repo_id)
