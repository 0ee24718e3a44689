"""Finding (high): refused content reached a branch unscanned.

Secret push protection and "block unsafe files" ran in the proc-receive hook, after git had moved the
pushed objects out of quarantine: a refused push left its commits in the repository, and
`POST /api/models/{repo}/branch/{name}` (or `…/tag/{sha}`) with the refused commit's id was accepted
with an empty list of changed files -- a later push fast-forwarded main onto it, never scanned.

Now the refusing checks run in pre-receive, while the push is still quarantined (git deletes the
quarantine of a refused push), and every ref move -- branch and tag creation from any commit id
included -- judges every commit it brings in that no ref reached before, as a push of it would be.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import pygit2
import pytest
import sqlalchemy as sa

from tests.conftest import BastionServer, hf_api, wait_for
from tests.gitserver.conftest import Git, RepoHandle, git, git_binaries  # noqa: F401 - fixtures

# Inert here (never unpickled): would call os.system("true") if loaded.
REDUCE_OS_SYSTEM = b"\x80\x02cos\nsystem\nq\x00X\x04\x00\x00\x00trueq\x01\x85q\x02Rq\x03."


@pytest.fixture(scope="module")
def refs_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BastionServer]:
    # No clamd: the pickle scanner alone judges the os.system pickle unsafe.
    server = BastionServer(tmp_path_factory.mktemp("refused-refs")).start()
    yield server
    server.stop()


def _auth(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


def _guarded_repo(server: BastionServer, settings: dict[str, bool]) -> RepoHandle:
    owner, token = server.create_user()
    repo_id = f"{owner}/r{os.urandom(3).hex()}"
    hf_api(server, token).create_repo(repo_id)
    resp = httpx.put(f"{server.url}/api/models/{repo_id}/settings", json=settings, headers=_auth(token), timeout=60)
    assert resp.status_code == 200, resp.text
    return RepoHandle(server, owner, token, repo_id)


def _refs(server: BastionServer, repo: RepoHandle) -> tuple[set[str], set[str], str]:
    refs = hf_api(server, repo.token).list_repo_refs(repo.repo_id)
    main = next(b.target_commit for b in refs.branches if b.name == "main")
    return {b.name for b in refs.branches}, {t.name for t in refs.tags}, main


def _try_refs_at(server: BastionServer, repo: RepoHandle, sha: str, needle: str) -> None:
    """Branch and tag creation at `sha` are refused (judged: 4xx naming the check; or 404: never stored)."""
    _, _, main = _refs(server, repo)
    branch = httpx.post(f"{server.url}/api/models/{repo.repo_id}/branch/smuggled", json={"startingPoint": sha},
                        headers=_auth(repo.token), timeout=120)
    tag = httpx.post(f"{server.url}/api/models/{repo.repo_id}/tag/{sha}", json={"tag": "smuggled"},
                     headers=_auth(repo.token), timeout=120)
    annotated = httpx.post(f"{server.url}/api/models/{repo.repo_id}/tag/{sha}",
                           json={"tag": "smuggled-a", "message": "release"}, headers=_auth(repo.token), timeout=120)
    for resp in (branch, tag, annotated):
        assert 400 <= resp.status_code < 500, (resp.status_code, resp.text)
        assert resp.status_code == 404 or needle in resp.text, resp.text
    branches, tags, after = _refs(server, repo)
    assert branches == {"main"} and tags == set() and after == main


def _push_refused(run: Git, repo: RepoHandle, work: Path, needle: str) -> str:
    sha = run("rev-parse", "HEAD", cwd=work).stdout.strip()
    proc = run("push", "origin", "main", cwd=work, check=False)
    assert proc.returncode != 0 and needle in proc.stderr, proc.stderr
    # pre-receive refused it: git drops the quarantine, the repository never holds the commit.
    bare = pygit2.Repository(str(_git_dir(repo.server, repo.repo_id)))
    assert pygit2.Oid(hex=sha) not in bare.odb
    return sha


def _git_dir(server: BastionServer, repo_id: str) -> Path:
    engine = sa.create_engine(f"sqlite:///{server.data_dir / 'bastion.sqlite3'}")
    try:
        with engine.connect() as conn:
            ns, name = repo_id.split("/")
            key = conn.execute(sa.text("SELECT storage_key FROM repos WHERE namespace = :ns AND name = :n"),
                               {"ns": ns, "n": name}).scalar_one()
    finally:
        engine.dispose()
    found = list(server.data_dir.rglob(f"{key}.git"))
    assert len(found) == 1, found
    return found[0]


def test_a_refused_secret_push_never_becomes_reachable(refs_server: BastionServer, git: Git,  # noqa: F811
                                                       tmp_path: Path) -> None:
    server = refs_server
    repo = _guarded_repo(server, {"secretPushProtection": True})
    _victim, live_token = server.create_user()  # a live Bastion token: verified, so push protection blocks it
    work = tmp_path / "w"
    git("clone", repo.url(), str(work))
    (work / "run.py").write_text(f"import os\nHF_TOKEN = '{live_token}'\n")
    git.commit_all(work, "adds a credential")
    sha = _push_refused(git, repo, work, "Push protection")
    _try_refs_at(server, repo, sha, "Push protection")
    # A later push of the same commit is judged again, not fast-forwarded onto unscanned objects.
    proc = git("push", "origin", "main", cwd=work, check=False)
    assert proc.returncode != 0 and "Push protection" in proc.stderr
    assert _refs(server, repo)[2] != sha


def test_a_refused_unsafe_pickle_never_becomes_reachable(refs_server: BastionServer, git: Git,  # noqa: F811
                                                         tmp_path: Path) -> None:
    server = refs_server
    repo = _guarded_repo(server, {"blockUnsafeFiles": True})
    work = tmp_path / "w"
    git("clone", repo.url(), str(work))
    (work / "model.pkl").write_bytes(REDUCE_OS_SYSTEM)
    git.commit_all(work, "adds a model")
    sha = _push_refused(git, repo, work, "unsafe")
    _try_refs_at(server, repo, sha, "unsafe")


def test_a_dangling_commit_is_judged_like_a_push(refs_server: BastionServer) -> None:
    """An object no ref reaches (left by an older Bastion, or planted in the store) is judged when a
    branch or tag is created at it: all its unreached history, as a push of it would be."""
    server = refs_server
    repo = _guarded_repo(server, {"secretPushProtection": True})
    _victim, live_token = server.create_user()
    bare = pygit2.Repository(str(_git_dir(server, repo.repo_id)))
    main = bare.references["refs/heads/main"].peel(pygit2.Commit)
    sig = pygit2.Signature("Planter", "planter@example.com", 1_700_000_000, 0)
    # Two unreached commits: the secret is in the older one, the tip only adds a harmless file.
    builder = bare.TreeBuilder(main.tree)
    builder.insert("creds.env", bare.create_blob(f"HF_TOKEN={live_token}\n".encode()), pygit2.GIT_FILEMODE_BLOB)
    first = bare.create_commit(None, sig, sig, "secret", builder.write(), [main.id])
    builder = bare.TreeBuilder(bare[first].peel(pygit2.Commit).tree)
    builder.insert("README.md", bare.create_blob(b"# hello\n"), pygit2.GIT_FILEMODE_BLOB)
    tip = bare.create_commit(None, sig, sig, "readme", builder.write(), [first])
    _try_refs_at(server, repo, str(tip), "Push protection")
    _try_refs_at(server, repo, str(first), "Push protection")


def test_a_branch_at_an_unreached_commit_is_scanned_and_audited(refs_server: BastionServer) -> None:
    """Admitted, the commits a new branch brings in are scanned like pushed ones, and the audit event
    says how many were judged."""
    server = refs_server
    repo = _guarded_repo(server, {"secretPushProtection": True})
    bare = pygit2.Repository(str(_git_dir(server, repo.repo_id)))
    main = bare.references["refs/heads/main"].peel(pygit2.Commit)
    sig = pygit2.Signature("Planter", "planter@example.com", 1_700_000_000, 0)
    parent = main.id
    for i in range(3):
        builder = bare.TreeBuilder(bare[parent].peel(pygit2.Commit).tree)
        builder.insert(f"notes-{i}.txt", bare.create_blob(f"note {i}\n".encode()), pygit2.GIT_FILEMODE_BLOB)
        parent = bare.create_commit(None, sig, sig, f"note {i}", builder.write(), [parent])
    resp = httpx.post(f"{server.url}/api/models/{repo.repo_id}/branch/notes", json={"startingPoint": str(parent)},
                      headers=_auth(repo.token), timeout=120)
    assert resp.status_code == 200, resp.text
    tree = httpx.get(f"{server.url}/api/models/{repo.repo_id}/tree/notes", params={"expand": "true"},
                     headers=_auth(repo.token), timeout=60).json()
    statuses = {e["path"]: e["securityFileStatus"]["secretsScan"]["status"] for e in tree if e["type"] == "file"}
    assert {f"notes-{i}.txt" for i in range(3)} <= set(statuses)
    assert all(statuses[f"notes-{i}.txt"] != "unscanned" for i in range(3)), statuses
    assert _branch_audit(server, repo.repo_id)["judged"] == 3


def _branch_audit(server: BastionServer, repo_id: str) -> dict[str, object]:
    engine = sa.create_engine(f"sqlite:///{server.data_dir / 'bastion.sqlite3'}")

    def read() -> dict[str, object] | None:
        with engine.connect() as conn:
            found = conn.execute(sa.text("SELECT details FROM audit_events WHERE action = 'repo.branch_create' "
                                         "AND target_id = :t"), {"t": f"model/{repo_id}"}).scalar()
        return None if found is None else (json.loads(found) if isinstance(found, str) else found)

    try:
        return wait_for(read, timeout=30)  # type: ignore[no-any-return]
    finally:
        engine.dispose()
