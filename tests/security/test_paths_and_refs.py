"""Finding 10 of the security review: paths and ref names git treats specially, disguised names and
deeply nested JSON are refused with a clear 400 (or a `remote:` reason for git), never a 500, and
change nothing.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
from pathlib import Path

import httpx
import pytest
from huggingface_hub import CommitOperationAdd
from huggingface_hub.errors import HfHubHTTPError

from tests.conftest import BastionServer, hf_api
from tests.gitserver.conftest import Git, RepoHandle, git, git_binaries  # noqa: F401 - fixtures

TIMEOUT = 60

# Each is a name git itself refuses as `.git` (verify_path, is_ntfs_dotgit, is_hfs_dotgit), or a
# name whose characters disguise what it is.
BAD_PATHS = {
    "dotgit-trailing-dot": ".git.",
    "dotgit-trailing-dot-space": ".git. ",
    "dotgit-trailing-dots-dir": ".git . ./config",
    "ntfs-short-name": "git~1",
    "ntfs-short-name-dir": "GIT~1/config",
    "upper-case": ".GIT",
    "nested": "x/.git/y",
    "ntfs-stream": ".git::$INDEX_ALLOCATION/config",
    "ntfs-any-stream": "a/.git:x",
    "hfs-zwnj-inside": ".g\u200cit/config",
    "hfs-bom-before": "\ufeff.git/hooks/post-checkout",
    "hfs-zwj-after": "sub/.git\u200d",
    "rtl-override": "invoice_\u202etxt.exe",
    "rtl-isolate": "a\u2067b.txt",
    "lrm": "a\u200eb.txt",
    "arabic-mark": "a\u061cb.txt",
    "del": "a\x7fb.txt",
    "c1-control": "a\x85b.txt",
    "c0-control": "a\x1bb.txt",
}


def _auth(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


def _commit(server: BastionServer, repo_id: str, token: str, body: bytes) -> httpx.Response:
    return httpx.post(f"{server.url}/api/models/{repo_id}/commit/main", content=body, timeout=TIMEOUT,
                      headers={**_auth(token), "content-type": "application/x-ndjson"})


def _lines(*items: object) -> bytes:
    return b"\n".join(json.dumps(x).encode() for x in items)


HEADER = {"key": "header", "value": {"summary": "s", "description": ""}}


def _file(path: str, content: bytes = b"x\n") -> dict[str, object]:
    return {"key": "file", "value": {"path": path, "content": base64.b64encode(content).decode(),
                                     "encoding": "base64"}}


def _assert_bad_request(resp: httpx.Response, *needles: str) -> None:
    assert resp.status_code == 400, (resp.status_code, resp.text)
    assert resp.headers["x-error-code"] == "BadRequest"
    message = resp.headers["x-error-message"]
    assert message and resp.json()["error"]
    for needle in needles:
        assert needle in message, message


@pytest.fixture(scope="module")
def owner(server: BastionServer) -> tuple[str, str]:
    return server.create_user()  # one user for the module: creating one per test costs seconds


@pytest.fixture
def repo(server: BastionServer, owner: tuple[str, str]) -> RepoHandle:
    name, token = owner
    repo_id = f"{name}/r{os.urandom(4).hex()}"
    hf_api(server, token).create_repo(repo_id)
    return RepoHandle(server, name, token, repo_id)


# ---- paths through the API ----------------------------------------------------------------------

@pytest.mark.parametrize("path", list(BAD_PATHS.values()), ids=list(BAD_PATHS))
def test_commit_api_refuses_dotgit_aliases_and_disguising_characters(server: BastionServer, repo: RepoHandle,
                                                                     path: str) -> None:
    api = hf_api(server, repo.token)
    before = api.model_info(repo.repo_id).sha
    _assert_bad_request(_commit(server, repo.repo_id, repo.token, _lines(HEADER, _file(path))), "Invalid path")
    # The preupload check (what the client asks before it uploads) answers the same.
    resp = httpx.post(f"{server.url}/api/models/{repo.repo_id}/preupload/main", timeout=TIMEOUT,
                      json={"files": [{"path": path, "sample": "", "size": 2}]}, headers=_auth(repo.token))
    _assert_bad_request(resp, "Invalid path")
    assert api.model_info(repo.repo_id).sha == before
    assert api.list_repo_files(repo.repo_id) == [".gitattributes"]


def test_hub_client_sees_the_reason(server: BastionServer, repo: RepoHandle) -> None:
    api = hf_api(server, repo.token)
    with pytest.raises(HfHubHTTPError) as exc:
        api.create_commit(repo.repo_id, [CommitOperationAdd("report_\u202excod.exe", b"MZ")], commit_message="x")
    assert exc.value.response.status_code == 400
    assert "bidirectional" in exc.value.response.headers["x-error-message"]
    # Names that only look like `.git` to a human are still ordinary files.
    lookalikes = [".gitx", "git~12", "a.git", "gitx~1", ".git-x", "x.git.", "café\u200d.txt"]
    api.create_commit(repo.repo_id, [CommitOperationAdd(p, b"ok\n") for p in lookalikes], commit_message="lookalikes")
    assert sorted(api.list_repo_files(repo.repo_id)) == sorted([".gitattributes", *lookalikes])


# ---- deeply nested JSON ---------------------------------------------------------------------------

@pytest.mark.parametrize("depth", [100, 100_000])
def test_deeply_nested_json_is_a_400(server: BastionServer, repo: RepoHandle, depth: int) -> None:
    api = hf_api(server, repo.token)
    before = api.model_info(repo.repo_id).sha
    nested = "[" * depth + "]" * depth

    header = '{"key": "header", "value": {"summary": "s", "x": ' + nested + "}}"
    resp = _commit(server, repo.repo_id, repo.token, header.encode() + b"\n" + json.dumps(_file("a.txt")).encode())
    _assert_bad_request(resp, "nested")
    line = '{"key": "file", "value": {"path": "a.txt", "content": "eA==", "x": ' + nested + "}}"
    resp = _commit(server, repo.repo_id, repo.token, json.dumps(HEADER).encode() + b"\n" + line.encode())
    _assert_bad_request(resp, "nested")

    for url in (f"/api/models/{repo.repo_id}/preupload/main", f"/api/models/{repo.repo_id}/branch/b1",
                "/api/repos/create"):
        resp = httpx.post(server.url + url, content='{"files": ' + nested + "}", timeout=TIMEOUT,
                          headers={**_auth(repo.token), "content-type": "application/json"})
        _assert_bad_request(resp, "nested")
    resp = httpx.post(f"{server.url}/{repo.repo_id}.git/info/lfs/objects/batch", timeout=TIMEOUT,
                      content='{"operation": "upload", "objects": ' + nested + "}",
                      headers={**_auth(repo.token), "content-type": "application/vnd.git-lfs+json"})
    assert resp.status_code == 400, resp.text
    # The anonymous leaked-token report always answers 202, whatever it is sent.
    resp = httpx.post(f"{server.url}/api/credentials/revoke", content=nested, timeout=TIMEOUT)
    assert resp.status_code == 202, resp.text

    assert api.model_info(repo.repo_id).sha == before
    assert [b.name for b in api.list_repo_refs(repo.repo_id).branches] == ["main"]


def test_json_nested_within_the_limit_is_accepted(server: BastionServer, repo: RepoHandle) -> None:
    nested = "[" * 30 + "]" * 30
    header = '{"key": "header", "value": {"summary": "s", "x": ' + nested + "}}"
    resp = _commit(server, repo.repo_id, repo.token, header.encode() + b"\n" + json.dumps(_file("a.txt")).encode())
    assert resp.status_code == 200, resp.text


# ---- paths through git ------------------------------------------------------------------------------

def _mktree(run: Git, cwd: Path, entries: list[tuple[str, str, str, str]]) -> str:
    """A tree object from (mode, type, oid, name) entries: names git's porcelain would never write."""
    text = "".join(f"{mode} {kind} {oid}\t{name}\n" for mode, kind, oid, name in entries)
    proc = subprocess.run(["git", "mktree"], input=text.encode(), cwd=cwd, env=run.env, capture_output=True,
                          timeout=TIMEOUT, check=True)
    return proc.stdout.decode().strip()


def _commit_with(run: Git, work: Path, name: str, mode: str = "100644") -> str:
    """A commit on origin/main whose tree adds `name` (`dir/file` goes in a subtree)."""
    (work.parent / "payload").write_bytes(b"[core]\n\tfsmonitor = touch /tmp/pwned\n")
    blob = run("hash-object", "-w", str(work.parent / "payload"), cwd=work).stdout.strip()
    entries = []
    for line in run("ls-tree", "origin/main", cwd=work).stdout.splitlines():
        meta, entry_name = line.split("\t", 1)
        entry_mode, kind, oid = meta.split()
        entries.append((entry_mode, kind, oid, entry_name))
    top, _, rest = name.partition("/")
    if rest:
        entries.append(("040000", "tree", _mktree(run, work, [(mode, "blob", blob, rest)]), top))
    else:
        entries.append((mode, "blob", blob, name))
    tree = _mktree(run, work, entries)
    return run("commit-tree", tree, "-p", "origin/main", "-m", "sneaky", cwd=work).stdout.strip()


@pytest.mark.parametrize(("name", "needle"), [
    (".git./config", "'.git'"), (".git. /config", "'.git'"), ("GIT~1/config", "'.git'"),
    (".g\u200cit/config", "'.git'"), (".git::$INDEX_ALLOCATION/config", "'.git'"),
    ("x\u202etxt.exe", "bidirectional"), ("a\x7fb", "control characters"), ("a\u0085b", "control characters"),
], ids=["dot", "dot-space", "ntfs-short", "hfs-zwnj", "ntfs-stream", "rlo", "del", "c1"])
def test_push_of_a_tree_with_a_path_the_api_refuses_is_refused(server: BastionServer, repo: RepoHandle,
                                                                git: Git, tmp_path: Path,  # noqa: F811
                                                                name: str, needle: str) -> None:
    """A push carries the trees the client built, so the API's path rule is applied to every file.

    (git's own fsck, strict in receive-pack, already refuses the `.git` aliases before Bastion's
    hook sees them; Bastion refuses them too, so the rule does not depend on git's settings.)
    """
    api = hf_api(server, repo.token)
    before = api.model_info(repo.repo_id).sha
    work = tmp_path / "w"
    git("clone", "-q", repo.url(), str(work))
    sneaky = _commit_with(git, work, name)
    proc = git("push", "origin", f"{sneaky}:refs/heads/main", cwd=work, check=False)
    assert proc.returncode != 0, proc.stderr
    assert needle in proc.stderr, proc.stderr
    if needle != "'.git'":
        assert f"remote:   - Invalid path {name!r}" in proc.stderr, proc.stderr
    assert api.model_info(repo.repo_id).sha == before


def test_push_of_a_symlinked_gitmodules_alias_is_refused(server: BastionServer, repo: RepoHandle, git: Git,  # noqa: F811
                                                         tmp_path: Path) -> None:
    api = hf_api(server, repo.token)
    before = api.model_info(repo.repo_id).sha
    work = tmp_path / "w"
    git("clone", "-q", repo.url(), str(work))
    # git's fsck only notes a symlinked .gitignore; git refuses to read one, and so does Bastion.
    sneaky = _commit_with(git, work, "sub/.gitignore ", mode="120000")
    proc = git("push", "origin", f"{sneaky}:refs/heads/main", cwd=work, check=False)
    assert proc.returncode != 0 and "symbolic link" in proc.stderr, proc.stderr
    assert api.model_info(repo.repo_id).sha == before


# ---- ref names ----------------------------------------------------------------------------------------

def _protect(server: BastionServer, repo: RepoHandle, branches: list[str], tags: list[str]) -> None:
    resp = httpx.put(f"{server.url}/api/models/{repo.repo_id}/settings", headers=_auth(repo.token), timeout=TIMEOUT,
                     json={"protectedBranches": branches, "protectedTags": tags})
    assert resp.status_code == 200, resp.text


def _refs(server: BastionServer, repo: RepoHandle) -> tuple[list[str], list[str]]:
    refs = hf_api(server, repo.token).list_repo_refs(repo.repo_id)
    return sorted(b.name for b in refs.branches), sorted(t.name for t in refs.tags)


@pytest.mark.parametrize(("ref", "reason"), [
    ("refs/heads/HEAD", "git's own"),
    ("refs/heads/head", "git's own"),
    ("refs/heads/FETCH_HEAD", "git's own"),
    ("refs/heads/-x", "'-'"),
    ("refs/tags/-x", "'-'"),
    ("refs/tags/HEAD", "git's own"),
    ("refs/heads/a\u202eb", "bidirectional"),
    ("refs/heads/Feature", "protected branch 'feature'"),
    ("refs/heads/RELEASE/1", "protected branch 'release/*'"),
    ("refs/tags/V1", "protected tag 'v*'"),
    ("refs/heads/DEV", "'dev'"),
    ("refs/heads/Dev/x", "'dev'"),
])
def test_push_refuses_bad_ref_names(server: BastionServer, repo: RepoHandle, git: Git, tmp_path: Path,  # noqa: F811
                                    ref: str, reason: str) -> None:
    _protect(server, repo, ["feature", "release/*"], ["v*"])
    work = tmp_path / "w"
    git("clone", "-q", repo.url(), str(work))
    git("push", "-q", "origin", "main:refs/heads/dev", cwd=work)
    before = _refs(server, repo)
    proc = git("push", "origin", f"main:{ref}", cwd=work, check=False)
    assert proc.returncode != 0, proc.stderr
    assert "remote: Bastion rejected this push:" in proc.stderr and f"{ref}: " in proc.stderr, proc.stderr
    assert reason in proc.stderr, proc.stderr
    assert _refs(server, repo) == before


def test_push_creating_two_names_that_differ_in_case_is_refused(server: BastionServer, repo: RepoHandle,
                                                                git: Git, tmp_path: Path) -> None:  # noqa: F811
    work = tmp_path / "w"
    git("clone", "-q", repo.url(), str(work))
    proc = git("push", "origin", "main:refs/heads/topic", "main:refs/heads/Topic", cwd=work, check=False)
    assert proc.returncode != 0 and "differs only in case" in proc.stderr, proc.stderr
    assert _refs(server, repo) == (["main"], [])
    # Ordinary names next to protected ones still work, by git and by the API.
    _protect(server, repo, ["feature"], [])
    git("push", "-q", "origin", "main:refs/heads/feature", "main:refs/heads/feature-2", "main:refs/tags/v-1",
        cwd=work)
    assert _refs(server, repo) == (["feature", "feature-2", "main"], ["v-1"])


@pytest.mark.parametrize(("kind", "name", "reason"), [
    ("branch", "HEAD", "git's own"),
    ("branch", "-x", "'-'"),
    ("branch", "Feature", "protected branch 'feature'"),
    ("branch", "MAIN", "'main'"),
    ("branch", "x\u202ey", "bidirectional"),
    ("branch", "x\x7fy", "Invalid reference name"),
    ("tag", "-x", "'-'"),
    ("tag", "HEAD", "git's own"),
    ("tag", "V2", "protected tag 'v*'"),
])
def test_api_refuses_bad_ref_names(server: BastionServer, repo: RepoHandle, kind: str, name: str,
                                   reason: str) -> None:
    _protect(server, repo, ["feature"], ["v*"])
    api = hf_api(server, repo.token)
    before = _refs(server, repo)
    with pytest.raises(HfHubHTTPError) as exc:
        if kind == "branch":
            api.create_branch(repo.repo_id, branch=name)
        else:
            api.create_tag(repo.repo_id, tag=name)
    assert exc.value.response.status_code == 400, exc.value.response.text
    assert reason in exc.value.response.headers["x-error-message"]
    assert _refs(server, repo) == before
    api.create_branch(repo.repo_id, branch="feature")
    api.create_tag(repo.repo_id, tag="v2")
