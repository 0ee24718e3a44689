"""Pushing over smart HTTP: commits, branches, tags and LFS files land through the commit path;
every rule the API enforces rejects a push with a readable `remote:` message.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
from huggingface_hub import CommitOperationAdd, hf_hub_download
from huggingface_hub.errors import HfHubHTTPError
from sqlalchemy.orm import Session

from bastion.audit.models import AuditEvent
from tests.conftest import BastionServer, hf_api
from tests.gitserver.conftest import Git, RepoHandle, make_repo

MiB = 1024 * 1024


def _clone(git: Git, repo: RepoHandle, dest: Path) -> Path:
    git("clone", repo.url(), str(dest))
    return dest


def _engine(server: BastionServer) -> sa.Engine:
    return sa.create_engine(f"sqlite:///{server.data_dir / 'bastion.sqlite3'}")


def test_push_commits_branch_and_tag_visible_to_the_api(server: BastionServer, repo: RepoHandle, git: Git,
                                                        tmp_path: Path) -> None:
    work = _clone(git, repo, tmp_path / "w")
    (work / "config.json").write_text('{"a": 1}\n')
    (work / "sub").mkdir()
    (work / "sub" / "notes.md").write_text("notes\n")
    first = git.commit_all(work, "add config")
    (work / "config.json").write_text('{"a": 2}\n')
    second = git.commit_all(work, "bump config")
    git("push", "origin", "main", cwd=work)

    api = hf_api(server, repo.token)
    commits = api.list_repo_commits(repo.repo_id)
    assert [c.commit_id for c in commits[:2]] == [second, first]
    path = hf_hub_download(repo.repo_id, "config.json", endpoint=server.url, token=repo.token,
                           cache_dir=tmp_path / "cache")
    assert Path(path).read_text() == '{"a": 2}\n'
    assert {f for f in api.list_repo_files(repo.repo_id)} == {".gitattributes", "config.json", "sub/notes.md"}

    git("push", "origin", "main:refs/heads/feature", cwd=work)
    git("tag", "-a", "v1.0", "-m", "release", cwd=work)
    git("push", "origin", "v1.0", cwd=work)
    refs = api.list_repo_refs(repo.repo_id)
    assert {b.name for b in refs.branches} == {"main", "feature"}
    assert [(t.name, t.target_commit) for t in refs.tags] == [("v1.0", second)]

    deleted = git("push", "origin", ":feature", cwd=work)
    assert "[deleted]" in deleted.stderr
    assert {b.name for b in api.list_repo_refs(repo.repo_id).branches} == {"main"}


def test_api_commit_then_git_pull(server: BastionServer, repo: RepoHandle, git: Git, tmp_path: Path) -> None:
    work = _clone(git, repo, tmp_path / "w")
    info = hf_api(server, repo.token).upload_file(path_or_fileobj=b"from the api\n", path_in_repo="api.txt",
                                                  repo_id=repo.repo_id)
    git("pull", "-q", "origin", "main", cwd=work)
    assert (work / "api.txt").read_text() == "from the api\n"
    assert git("rev-parse", "HEAD", cwd=work).stdout.strip() == info.oid


def test_push_lfs_file_then_download_with_hf_hub(server: BastionServer, repo: RepoHandle, git: Git,
                                                 tmp_path: Path) -> None:
    work = _clone(git, repo, tmp_path / "w")
    payload = os.urandom(3 * MiB + 17)
    (work / "weights.safetensors").write_bytes(payload)
    git.commit_all(work, "add weights")
    pushed = git("push", "origin", "main", cwd=work)
    # The locks API answers, so git-lfs does not warn that the remote lacks it.
    assert "Locking support detected" in pushed.stdout
    assert "does not support the Git LFS locking API" not in pushed.stdout + pushed.stderr

    path = hf_hub_download(repo.repo_id, "weights.safetensors", endpoint=server.url, token=repo.token,
                           cache_dir=tmp_path / "cache")
    assert hashlib.sha256(Path(path).read_bytes()).hexdigest() == hashlib.sha256(payload).hexdigest()
    # What git stored is the pointer; a fresh clone smudges it back through the batch API.
    fresh = tmp_path / "fresh"
    git("clone", repo.url(), str(fresh))
    assert (fresh / "weights.safetensors").read_bytes() == payload


def _rejected(proc_stderr: str, *needles: str) -> None:
    assert "[remote rejected]" in proc_stderr or "rejected" in proc_stderr, proc_stderr
    for needle in needles:
        assert needle in proc_stderr, proc_stderr


def test_push_rejections_leave_the_repo_unchanged(server: BastionServer, repo: RepoHandle, git: Git,
                                                  tmp_path: Path) -> None:
    api = hf_api(server, repo.token)
    work = _clone(git, repo, tmp_path / "w")
    head = api.list_repo_refs(repo.repo_id).branches[0].target_commit

    # A large file that is not LFS (.txt is not tracked by the default .gitattributes).
    (work / "huge.txt").write_bytes(os.urandom(6 * MiB).hex().encode()[: 10 * MiB + 1])
    git.commit_all(work, "huge")
    proc = git("push", "origin", "main", cwd=work, check=False)
    assert proc.returncode != 0
    _rejected(proc.stderr, "remote: Bastion rejected this push:", "'huge.txt' is 10485761 bytes",
              "must be stored with Git LFS")
    git("reset", "-q", "--hard", "origin/main", cwd=work)

    # An LFS pointer to an object never uploaded to this repo.
    oid = hashlib.sha256(b"somebody else's file").hexdigest()
    (work / "stolen.txt").write_text(f"version https://git-lfs.github.com/spec/v1\noid sha256:{oid}\nsize 21\n")
    git.commit_all(work, "pointer only")
    proc = git("push", "origin", "main", cwd=work, check=False)
    _rejected(proc.stderr, f"remote:   - 'stolen.txt': LFS object {oid} has not been uploaded to this repository")
    git("reset", "-q", "--hard", "origin/main", cwd=work)

    # A path the Hub never accepts (backslashes are legal in git, not in a Hub repo).
    (work / "bad\\name.txt").write_text("x\n")
    git.commit_all(work, "bad path")
    proc = git("push", "origin", "main", cwd=work, check=False)
    _rejected(proc.stderr, "backslashes are not allowed")
    git("reset", "-q", "--hard", "origin/main", cwd=work)

    # Deleting the default branch.
    proc = git("push", "origin", ":main", cwd=work, check=False)
    _rejected(proc.stderr, "deleting the default branch 'main' is not allowed")

    # Refs outside branches and tags.
    proc = git("push", "origin", "main:refs/notes/x", cwd=work, check=False)
    _rejected(proc.stderr, "only branches (refs/heads/*) and tags (refs/tags/*) can be pushed")

    assert api.list_repo_refs(repo.repo_id).branches[0].target_commit == head
    assert [b.name for b in api.list_repo_refs(repo.repo_id).branches] == ["main"]
    with _engine(server).connect() as conn:
        rejected = conn.execute(sa.select(AuditEvent.details).where(
            AuditEvent.action == "repo.push_rejected", AuditEvent.target_id == f"model/{repo.repo_id}")).all()
    assert len(rejected) == 5


def test_read_token_and_other_users_cannot_push(server: BastionServer, repo: RepoHandle, git: Git,
                                                tmp_path: Path) -> None:
    read_token = server.admin("create-token", repo.owner, "--name", "ro", "--role", "read").stdout.strip()
    work = _clone(git, repo, tmp_path / "w")
    (work / "x.txt").write_text("x\n")
    git.commit_all(work, "x")
    proc = git("push", repo.url(token=read_token), "main", cwd=work, check=False)
    assert proc.returncode != 0
    assert "remote: Forbidden: this token is read-only" in proc.stderr

    other, other_token = server.create_user()
    proc = git("push", repo.url(other, other_token), "main", cwd=work, check=False)
    assert proc.returncode != 0
    # Judged by the refs it moves (a pull request's author may push to refs/pr/N): main needs write access.
    assert "remote:   - Forbidden: you do not have write access to this repository" in proc.stderr, proc.stderr

    # Anonymous: the 401 challenge makes git ask for credentials (and fail, prompts being off).
    proc = git("push", repo.anonymous_url, "main", cwd=work, check=False)
    assert proc.returncode != 0
    assert "could not read Username" in proc.stderr
    assert len(hf_api(server, repo.token).list_repo_commits(repo.repo_id)) == 1


def test_protected_refs_refuse_force_push_deletion_and_rewrites_by_git_and_api(
        server: BastionServer, repo: RepoHandle, git: Git, tmp_path: Path) -> None:
    settings = f"{server.url}/api/models/{repo.repo_id}/settings"
    auth = {"authorization": f"Bearer {repo.token}"}
    bad = httpx.put(settings, json={"protectedBranches": "main"}, headers=auth)
    assert bad.status_code == 400 and "protectedBranches" in bad.json()["error"]
    assert httpx.put(settings, json={"protectedBranches": ["main", "release/*"], "protectedTags": ["v*"]},
                     headers=auth).status_code == 200
    shown = httpx.get(settings, headers=auth).json()
    assert shown["protectedBranches"] == ["main", "release/*"] and shown["protectedTags"] == ["v*"]
    _, stranger = server.create_user()
    assert httpx.get(settings, headers={"authorization": f"Bearer {stranger}"}).status_code == 403

    work = _clone(git, repo, tmp_path / "w")
    (work / "a.txt").write_text("a\n")
    git.commit_all(work, "a")
    git("tag", "v1", cwd=work)
    git("push", "origin", "main", "main:refs/heads/release/1", "v1", cwd=work)
    git("reset", "-q", "--hard", "HEAD~1", cwd=work)
    (work / "b.txt").write_text("b\n")
    git.commit_all(work, "b")
    proc = git("push", "--force", "origin", "main", cwd=work, check=False)
    _rejected(proc.stderr, "branch 'main' is protected: force-pushes (non-fast-forward) are not allowed")
    proc = git("push", "origin", ":release/1", cwd=work, check=False)
    _rejected(proc.stderr, "branch 'release/1' is protected: it cannot be deleted")
    git("tag", "-f", "v1", cwd=work)
    proc = git("push", "--force", "origin", "v1", cwd=work, check=False)
    _rejected(proc.stderr, "tag 'v1' is protected: it cannot be moved")
    proc = git("push", "origin", ":refs/tags/v1", cwd=work, check=False)
    _rejected(proc.stderr, "tag 'v1' is protected: it cannot be deleted")
    # An unprotected branch may be force-pushed, and an unprotected tag deleted.
    git("push", "origin", "main:refs/heads/scratch", "HEAD:refs/tags/nightly", cwd=work)
    git("reset", "-q", "--hard", "HEAD~1", cwd=work)
    git("push", "--force", "origin", "main:refs/heads/scratch", cwd=work)
    git("push", "origin", ":refs/tags/nightly", cwd=work)

    # The API keeps the same rules.
    api = hf_api(server, repo.token)
    before = api.list_repo_refs(repo.repo_id)
    for call in (lambda: api.delete_branch(repo.repo_id, branch="release/1"),
                 lambda: api.delete_tag(repo.repo_id, tag="v1"),
                 lambda: api.super_squash_history(repo.repo_id, branch="main")):
        with pytest.raises(HfHubHTTPError) as exc:
            call()
        assert exc.value.response.status_code == 403 and "is protected" in exc.value.response.headers["x-error-message"]
    assert api.list_repo_refs(repo.repo_id) == before
    api.super_squash_history(repo.repo_id, branch="scratch")
    api.delete_branch(repo.repo_id, branch="scratch")


def test_push_audit_event_names_pusher_ip_and_token(server: BastionServer, repo: RepoHandle, git: Git,
                                                    tmp_path: Path) -> None:
    work = _clone(git, repo, tmp_path / "w")
    (work / "f.txt").write_text("f\n")
    new = git.commit_all(work, "f")
    git("push", "origin", "main", cwd=work)
    with Session(_engine(server)) as session:
        events = list(session.scalars(sa.select(AuditEvent).where(
            AuditEvent.action == "repo.commit", AuditEvent.target_id == f"model/{repo.repo_id}")))
        token_id = session.execute(sa.text("SELECT t.id FROM access_tokens t JOIN users u ON u.id = t.user_id "
                                           "WHERE u.name = :n"), {"n": repo.owner}).scalar_one()
    assert len(events) == 1
    ev = events[0]
    assert ev.via == "git"
    assert ev.actor_name == repo.owner
    assert ev.ip == "127.0.0.1"
    assert ev.token_id == token_id
    assert ev.user_agent.startswith("git/")
    assert ev.details["commit"] == new and ev.details["ref"] == "refs/heads/main" and ev.details["commits"] == 1


def test_api_commit_racing_push_never_loses_either(server: BastionServer, git: Git, tmp_path: Path) -> None:
    repo = make_repo(server)
    api = hf_api(server, repo.token)
    work = _clone(git, repo, tmp_path / "w")
    landed_api: list[str] = []
    for i in range(6):
        git("fetch", "-q", "origin", cwd=work)
        git("reset", "-q", "--hard", "origin/main", cwd=work)
        (work / f"git-{i}.txt").write_text(f"{i}\n")
        pushed = git.commit_all(work, f"git {i}")
        result: dict[str, object] = {}

        def api_commit(i: int = i, result: dict[str, object] = result) -> None:
            info = api.create_commit(repo.repo_id, [CommitOperationAdd(f"api-{i}.txt", f"{i}\n".encode())],
                                     commit_message=f"api {i}")
            result["api"] = info.oid

        thread = threading.Thread(target=api_commit)
        thread.start()
        push = git("push", "origin", "main", cwd=work, check=False)
        thread.join()
        landed_api.append(str(result["api"]))
        history = {c.commit_id for c in api.list_repo_commits(repo.repo_id)}
        assert result["api"] in history  # the API commit is never overwritten
        if push.returncode == 0:
            assert pushed in history
        else:
            assert pushed not in history
            assert "rejected" in push.stderr, push.stderr
    files = set(api.list_repo_files(repo.repo_id))
    assert {f"api-{i}.txt" for i in range(6)} <= files


def test_push_protection_rejects_a_pushed_secret_and_a_push_option_bypasses_it_audited(
        server: BastionServer, git: Git, tmp_path: Path) -> None:
    from tests.scanning.test_secret_pipeline import github_token

    owner, owner_token = server.create_user()
    writer, writer_token = server.create_user()
    org = f"o{os.urandom(3).hex()}"
    server.admin("create-org", org, "--owner", owner)
    # The org's write role manages its repos, but lowering a protection (a bypass) is the org admins'
    # unless the org delegates it to repo managers (issue 15).
    server.admin("add-member", org, writer, "--role", "write")
    repo_id = f"{org}/guarded"
    api = hf_api(server, owner_token)
    api.create_repo(repo_id)
    assert httpx.put(f"{server.url}/api/models/{repo_id}/settings", json={"secretPushProtection": True},
                     headers={"authorization": f"Bearer {owner_token}"}).status_code == 200
    head = api.model_info(repo_id).sha

    work = _clone(git, RepoHandle(server, writer, writer_token, repo_id), tmp_path / "w")
    secret = github_token("Pq9r")
    (work / "cfg").mkdir()
    (work / "cfg" / "new.py").write_text(f"a = 1\nGITHUB = '{secret}'\n")
    pushed = git.commit_all(work, "adds a credential")

    proc = git("push", "origin", "main", cwd=work, check=False)
    _rejected(proc.stderr, "Push protection", "cfg/new.py:2", "GitHub")
    assert secret not in proc.stderr
    # A bypass must be asked for by its name and with a reason.
    proc = git("push", "-o", "secret-bypass=oops", "origin", "main", cwd=work, check=False)
    _rejected(proc.stderr, "Unknown push option 'secret-bypass=oops'")
    proc = git("push", "-o", "secrets-bypass", "origin", "main", cwd=work, check=False)
    _rejected(proc.stderr, "-o secrets-bypass needs a reason")
    assert api.model_info(repo_id).sha == head
    proc = git("push", "-o", "secrets-bypass=this is a test credential", "origin", "main", cwd=work, check=False)
    _rejected(proc.stderr, "Bypassing secret push protection is not allowed")
    assert httpx.put(f"{server.url}/api/organizations/{org}/settings", json={"delegateProtectionChanges": True},
                     headers={"authorization": f"Bearer {owner_token}"}).status_code == 200

    git("push", "-o", "secrets-bypass=this is a test credential", "origin", "main", cwd=work)
    assert api.model_info(repo_id).sha == pushed
    with Session(_engine(server)) as session:
        events = list(session.scalars(sa.select(AuditEvent).where(
            AuditEvent.action.like("repo.secret_push_%"), AuditEvent.target_id == f"model/{repo_id}")
            .order_by(AuditEvent.id)))
    assert [e.action for e in events] == ["repo.secret_push_blocked", "repo.secret_push_bypass"]
    bypass = events[1]
    assert bypass.via == "git" and bypass.actor_name == writer and bypass.details["commit"] == pushed
    assert bypass.details["reason"] == "this is a test credential"
    assert bypass.details["findings"][0]["file"] == "cfg/new.py" and secret not in str(bypass.details)


def test_stale_quarantine_sweep_spares_a_live_push(tmp_path: Path) -> None:
    from bastion.gitserver.service import sweep_stale_quarantines

    objects = tmp_path / "r.git" / "objects"
    stale, live = objects / "tmp_objdir-incoming-old", objects / "tmp_objdir-incoming-new"
    for q in (stale, live):
        (q / "pack").mkdir(parents=True)
        (q / "pack" / "tmp_pack_x").write_bytes(b"PACK")
    day_ago = time.time() - 25 * 3600
    for path in (stale, stale / "pack", stale / "pack" / "tmp_pack_x", live, live / "pack"):
        os.utime(path, (day_ago, day_ago))
    # The live push's directories are old, but it is still writing its pack: it is kept.
    assert sweep_stale_quarantines(tmp_path / "r.git") == [stale]
    assert not stale.exists() and (live / "pack" / "tmp_pack_x").exists()
