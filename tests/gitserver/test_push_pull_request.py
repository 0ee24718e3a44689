"""A pull request's author pushes to it with git, as on the Hub (`git push origin HEAD:refs/pr/N`), without write
access to the repo's branches; the push is judged by the refs it moves, through the same rule as the commit API."""

from __future__ import annotations

import random
from pathlib import Path

import sqlalchemy as sa
from huggingface_hub import hf_hub_download

from bastion.audit.models import AuditEvent
from tests.conftest import BastionServer, hf_api
from tests.gitserver.conftest import Git, RepoHandle, make_repo


def _work(git: Git, repo: RepoHandle, user: str, token: str, dest: Path, ref: str) -> Path:
    """A clone (with `user`'s credentials) checked out at `ref`."""
    git("clone", repo.url(user, token), str(dest))
    git("fetch", "origin", f"{ref}:work", cwd=dest)
    git("checkout", "work", cwd=dest)
    return dest


def _commit(git: Git, work: Path, name: str, text: str) -> str:
    (work / name).write_text(text)
    return git.commit_all(work, f"add {name}")


def test_the_authors_pushes_reach_their_pull_request_and_nothing_else(server: BastionServer, git: Git,
                                                                      tmp_path: Path) -> None:
    repo = make_repo(server)
    owner_api = hf_api(server, repo.token)
    owner_api.upload_file(path_or_fileobj=b"hello\n", path_in_repo="README.md", repo_id=repo.repo_id)
    main_head = owner_api.list_repo_commits(repo.repo_id)[0].commit_id
    author, author_token = server.create_user()
    pr = hf_api(server, author_token).create_pull_request(repo.repo_id, "Add a config")
    ref = pr.git_reference
    work = _work(git, repo, author, author_token, tmp_path / "w", ref)

    # A regular file and an LFS file (git-lfs asks /locks/verify first: a 403 there left it waiting for credentials).
    weights = random.Random(77).randbytes(256 * 1024)
    (work / "weights.bin").write_bytes(weights)
    head = _commit(git, work, "config.json", '{"layers": 2}\n')
    pushed = git("push", "origin", f"HEAD:{ref}", cwd=work, check=False)
    assert pushed.returncode == 0, pushed.stderr
    assert hf_api(server, author_token).list_repo_commits(repo.repo_id, revision=ref)[0].commit_id == head
    got = hf_hub_download(repo.repo_id, "config.json", revision=ref, cache_dir=tmp_path / "c",
                          endpoint=server.url, token=author_token)
    assert Path(got).read_text() == '{"layers": 2}\n'
    got = hf_hub_download(repo.repo_id, "weights.bin", revision=ref, cache_dir=tmp_path / "c",
                          endpoint=server.url, token=author_token)
    assert Path(got).read_bytes() == weights
    assert hf_api(server, author_token).get_paths_info(repo.repo_id, ["weights.bin"], revision=ref)[0].lfs
    engine = server.engine()
    try:
        with engine.connect() as conn:
            event = conn.execute(sa.select(AuditEvent.actor_name, AuditEvent.details).where(
                AuditEvent.action == "repo.commit", AuditEvent.target_id == f"model/{repo.repo_id}",
                AuditEvent.via == "git")).all()[-1]
    finally:
        engine.dispose()
    assert event.actor_name == author and event.details["ref"] == ref and event.details["commit"] == head

    # Not the branches, not a tag, not another pull request's ref, not a ref no pull request owns.
    for target, why in (("HEAD:main", "you do not have write access"),
                        ("HEAD:refs/tags/v1", "you do not have write access"),
                        ("HEAD:refs/pr/999", "only the pull request's author")):
        refused = git("push", "origin", target, cwd=work, check=False)
        assert refused.returncode != 0 and why in refused.stderr, (target, refused.stderr)
    other_pr = owner_api.create_pull_request(repo.repo_id, "The owner's own")
    refused = git("push", "origin", f"HEAD:{other_pr.git_reference}", cwd=work, check=False)
    assert refused.returncode != 0 and "only the pull request's author" in refused.stderr
    # A push moving its own pull request and a branch at once is refused whole.
    refused = git("push", "--atomic", "origin", f"HEAD:{ref}", "HEAD:refs/heads/side", cwd=work, check=False)
    assert refused.returncode != 0 and "you do not have write access" in refused.stderr
    assert owner_api.list_repo_commits(repo.repo_id)[0].commit_id == main_head
    assert [b.name for b in owner_api.list_repo_refs(repo.repo_id).branches] == ["main"]
    assert owner_api.list_repo_refs(repo.repo_id).tags == []

    # Someone else who reads the repo cannot push to it.
    _commit(git, work, "stranger.txt", "not theirs\n")
    stranger, stranger_token = server.create_user()
    refused = git("push", repo.url(stranger, stranger_token), f"HEAD:{ref}", cwd=work, check=False)
    assert refused.returncode != 0 and "only the pull request's author" in refused.stderr

    # Closed, it takes no more pushes from its author; the repo's writers still may.
    owner_api.change_discussion_status(repo.repo_id, pr.num, "closed")
    later = _commit(git, work, "more.txt", "more\n")
    refused = git("push", "origin", f"HEAD:{ref}", cwd=work, check=False)
    assert refused.returncode != 0 and "only the pull request's author (while it is open)" in refused.stderr
    assert git("push", repo.url(), f"HEAD:{ref}", cwd=work, check=False).returncode == 0
    assert owner_api.list_repo_commits(repo.repo_id, revision=ref)[0].commit_id == later


def test_a_read_token_pushes_nowhere_and_a_private_repo_stays_hidden(server: BastionServer, git: Git,
                                                                     tmp_path: Path) -> None:
    repo = make_repo(server)
    hf_api(server, repo.token).upload_file(path_or_fileobj=b"hello\n", path_in_repo="README.md",
                                           repo_id=repo.repo_id)
    author, author_token = server.create_user()
    pr = hf_api(server, author_token).create_pull_request(repo.repo_id, "Docs")
    read_token = server.admin("create-token", author, "--name", "ro", "--role", "read").stdout.strip()
    work = _work(git, repo, author, author_token, tmp_path / "w", pr.git_reference)
    _commit(git, work, "docs.md", "docs\n")
    refused = git("push", repo.url(author, read_token), f"HEAD:{pr.git_reference}", cwd=work, check=False)
    assert refused.returncode != 0 and "this token is read-only" in refused.stderr

    private = make_repo(server, private=True)
    refused = git("push", private.url(author, author_token), "HEAD:refs/pr/1", cwd=work, check=False)
    assert refused.returncode != 0 and "Repository not found" in refused.stderr
