"""Pull-request content from users who cannot write to a repo is bounded. Any reader may open a pull request,
with LFS objects and Xet xorbs of their own; found: nothing bounded those uploads, so a signed-in reader of a
public repo could fill the instance's storage. Now each user has a daily allowance
(BASTION_CONTRIBUTION_UPLOAD_BYTES_PER_DAY) for such uploads, charged once per object, refused with a 429 and
Retry-After past it, on every upload path (the LFS batch API, the Xet CAS, a git push to a pull request's ref);
writers are never charged.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from bastion.xet.packing import pack_file
from tests.conftest import BastionServer, MiB, hf_api
from tests.gitserver.conftest import Git, RepoHandle, git, git_binaries  # noqa: F401 - fixtures

LIMIT = 3 * MiB
TIMEOUT = 30


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BastionServer]:
    srv = BastionServer(tmp_path_factory.mktemp("allowance"),
                        env={"BASTION_CONTRIBUTION_UPLOAD_BYTES_PER_DAY": str(LIMIT)}).start()
    yield srv
    srv.stop()


def _batch(server: BastionServer, token: str, repo_id: str, objects: list[tuple[str, int]]) -> httpx.Response:
    return httpx.post(f"{server.url}/{repo_id}.git/info/lfs/objects/batch", timeout=TIMEOUT,
                      headers={"authorization": f"Bearer {token}", "accept": "application/vnd.git-lfs+json"},
                      json={"operation": "upload", "transfers": ["basic"],
                            "objects": [{"oid": oid, "size": size} for oid, size in objects]})


def _object(rng: random.Random, size: int) -> tuple[str, int]:
    return hashlib.sha256(rng.randbytes(size)).hexdigest(), size


def _xorb(server: BastionServer, token: str, repo_id: str, data: bytes) -> httpx.Response:
    cas = httpx.get(f"{server.url}/api/models/{repo_id}/xet-write-token/main", params={"create_pr": "1"},
                    headers={"authorization": f"Bearer {token}"}, timeout=TIMEOUT)
    assert cas.status_code == 200, cas.text
    ((body, xorb),) = pack_file([data], scheme=None).xorbs
    return httpx.post(f"{cas.json()['casUrl']}/v1/xorbs/default/{xorb.hex}", content=body, timeout=TIMEOUT,
                      headers={"authorization": f"Bearer {cas.json()['accessToken']}"})


def test_readers_pull_request_uploads_are_bounded_per_day(server: BastionServer, tmp_path: Path) -> None:
    rng = random.Random(4711)
    owner, owner_token = server.create_user()
    _reader, reader_token = server.create_user()  # a write-role token, but no right to write to the repo
    repo_id = f"{owner}/public-model"
    hf_api(server, owner_token).create_repo(repo_id)

    # Under the allowance: an upload action; asking again for the same object is not charged twice.
    first = _object(rng, 2 * MiB)
    for _ in range(2):
        ok = _batch(server, reader_token, repo_id, [first])
        assert ok.status_code == 200 and "actions" in ok.json()["objects"][0], ok.text
    # Past it: refused, with when to try again, and nothing handed out.
    second = _object(rng, 2 * MiB)
    refused = _batch(server, reader_token, repo_id, [second])
    assert refused.status_code == 429, refused.text
    assert int(refused.headers["retry-after"]) > 0 and "allowance" in refused.json()["message"]
    # The repo's owner (a writer) is never charged.
    assert "actions" in _batch(server, owner_token, repo_id, [second]).json()["objects"][0]

    # Xet: a pull request's xorb counts against the same allowance; a small one still fits, a large one not.
    small = _xorb(server, reader_token, repo_id, rng.randbytes(256 * 1024))
    assert small.status_code == 200, small.text
    big = _xorb(server, reader_token, repo_id, rng.randbytes(MiB))
    assert big.status_code == 429 and "allowance" in big.headers["x-error-message"], big.text
    assert _xorb(server, owner_token, repo_id, rng.randbytes(MiB)).status_code == 200


def test_a_pull_request_authors_git_push_is_bounded_by_the_same_allowance(server: BastionServer, git: Git,  # noqa: F811
                                                                          tmp_path: Path) -> None:
    """A pull request's author may push to refs/pr/N over git without write access: the pack they send is charged
    to the allowance, and git refuses a pack larger than what remains (receive.maxInputSize)."""
    rng = random.Random(5150)
    owner, owner_token = server.create_user()
    author, author_token = server.create_user()
    repo_id = f"{owner}/git-bounded"
    owner_api = hf_api(server, owner_token)
    owner_api.create_repo(repo_id)
    owner_api.upload_file(path_or_fileobj=b"hello\n", path_in_repo="README.md", repo_id=repo_id)
    ref = hf_api(server, author_token).create_pull_request(repo_id, "Weights").git_reference
    handle = RepoHandle(server, owner, owner_token, repo_id)
    work = tmp_path / "w"
    git("clone", handle.url(author, author_token), str(work))
    git("fetch", "origin", f"{ref}:work", cwd=work)
    git("checkout", "work", cwd=work)

    # 2 MiB of random bytes in a regular file (not LFS, no compression): a 2 MiB pack, within the 3 MiB allowance.
    (work / "a.dat").write_bytes(rng.randbytes(2 * MiB))
    git.commit_all(work, "a")
    pushed = git("push", "origin", f"HEAD:{ref}", cwd=work, check=False)
    assert pushed.returncode == 0, pushed.stderr
    # 2 MiB more: past what remains, refused, and the pull request is where it was.
    before = owner_api.list_repo_commits(repo_id, revision=ref)[0].commit_id
    (work / "b.dat").write_bytes(rng.randbytes(2 * MiB))
    git.commit_all(work, "b")
    refused = git("push", "origin", f"HEAD:{ref}", cwd=work, check=False)
    assert refused.returncode != 0 and "pack exceeds maximum allowed size" in refused.stderr, refused.stderr
    assert owner_api.list_repo_commits(repo_id, revision=ref)[0].commit_id == before
    # The same allowance as uploads: the LFS batch refuses past it too.
    assert _batch(server, author_token, repo_id, [_object(rng, 2 * MiB)]).status_code == 429
    # The repo's writers are not bounded.
    assert git("push", handle.url(), f"HEAD:{ref}", cwd=work, check=False).returncode == 0
