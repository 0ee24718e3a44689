"""Finding: secrets in commit messages, annotated-tag messages, base64 text and JSON `\\u`-escaped strings
were not found (item 10 of the second security review).

With secret push protection on, a live Bastion token in any of these is now refused -- through the
API and through git push. A refused push publishes nothing, so the token stays live (a bypass that lands
revokes it: tests/gitserver/test_push.py).
"""

from __future__ import annotations

import base64
import json
import os
import random
from pathlib import Path

import httpx
import pytest
from huggingface_hub.errors import HfHubHTTPError

from tests.conftest import BastionServer, hf_api, wait_for
from tests.gitserver.conftest import Git, RepoHandle, git, git_binaries  # noqa: F401 - fixtures


def _auth(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


def _live(server: BastionServer, token: str) -> bool:
    return httpx.get(f"{server.url}/api/whoami-v2", headers=_auth(token), timeout=30).status_code == 200


@pytest.fixture
def protected(server: BastionServer) -> RepoHandle:
    owner, token = server.create_user()
    repo_id = f"{owner}/r{os.urandom(4).hex()}"
    hf_api(server, token).create_repo(repo_id)
    resp = httpx.put(f"{server.url}/api/models/{repo_id}/settings", json={"secretPushProtection": True},
                     headers=_auth(token), timeout=60)
    assert resp.status_code == 200
    return RepoHandle(server, owner, token, repo_id)


def _victim(server: BastionServer) -> str:
    _name, token = server.create_user()
    assert _live(server, token)
    return token


def _assert_refused(server: BastionServer, exc: pytest.ExceptionInfo[HfHubHTTPError], victim: str,
                                where: str) -> None:
    message = exc.value.response.headers["x-error-message"]
    assert exc.value.response.status_code == 403 and "Push protection" in message and where in message, message
    assert victim not in message
    assert _live(server, victim)  # refused: nothing was published, the token is not revoked


def test_api_commit_message_is_read(server: BastionServer, protected: RepoHandle) -> None:
    api = hf_api(server, protected.token)
    head = api.model_info(protected.repo_id).sha
    victim = _victim(server)
    with pytest.raises(HfHubHTTPError) as exc:
        api.upload_file(path_or_fileobj=b"fine\n", path_in_repo="notes.txt", repo_id=protected.repo_id,
                        commit_message="add notes", commit_description=f"deployed with HF_TOKEN={victim}")
    _assert_refused(server, exc, victim, "message")
    assert api.model_info(protected.repo_id).sha == head


def test_api_annotated_tag_message_is_read(server: BastionServer, protected: RepoHandle) -> None:
    api = hf_api(server, protected.token)
    victim = _victim(server)
    with pytest.raises(HfHubHTTPError) as exc:
        api.create_tag(protected.repo_id, tag="v1", tag_message=f"release v1, token {victim}")
    _assert_refused(server, exc, victim, "tag v1 message")
    assert [t.name for t in api.list_repo_refs(protected.repo_id).tags] == []


@pytest.mark.parametrize("encoding", ["base64", "base64url", "json-escaped"])
def test_encoded_secrets_in_files_are_found(server: BastionServer, protected: RepoHandle, encoding: str) -> None:
    api = hf_api(server, protected.token)
    victim = _victim(server)
    rng = random.Random(15)
    filler = "".join(f"line {i}: {rng.random():.6f}\n" for i in range(50))
    if encoding == "base64":
        body = f'config = "{base64.b64encode(f"HF_TOKEN={victim}".encode()).decode()}"\n'
    elif encoding == "base64url":
        body = f"auth: {base64.urlsafe_b64encode(victim.encode()).decode().rstrip('=')}\n"
    else:
        body = json.dumps({"token": "".join(f"\\u{ord(c):04x}" if c in "bst_" else c for c in victim)}) + "\n"
        body = body.replace("\\\\", "\\")  # json.dumps escaped our escapes: keep them as \uXXXX
    assert victim not in body
    with pytest.raises(HfHubHTTPError) as exc:
        api.upload_file(path_or_fileobj=(filler + body).encode(), path_in_repo="conf.txt", repo_id=protected.repo_id)
    _assert_refused(server, exc, victim, "conf.txt:51")


def test_pushed_commit_and_tag_messages_are_read(server: BastionServer, protected: RepoHandle, git: Git,  # noqa: F811
                                                 tmp_path: Path) -> None:
    work = tmp_path / "w"
    git("clone", "-q", protected.url(), str(work))
    (work / "a.txt").write_text("a\n")
    victim = _victim(server)
    git("add", "-A", cwd=work)
    git("commit", "-q", "-m", "tune", "-m", f"ran with token {victim}", cwd=work)
    proc = git("push", "origin", "main", cwd=work, check=False)
    assert proc.returncode != 0 and "Push protection" in proc.stderr and "message" in proc.stderr, proc.stderr
    assert victim not in proc.stderr
    assert _live(server, victim)  # refused: nothing was published

    # A clean commit lands; an annotated tag on it whose message holds a token does not.
    git("commit", "-q", "--amend", "-m", "tune", cwd=work)
    git("push", "-q", "origin", "main", cwd=work)
    victim = _victim(server)
    git("tag", "-a", "v2", "-m", f"release\n\ntoken: {victim}", cwd=work)
    proc = git("push", "origin", "v2", cwd=work, check=False)
    assert proc.returncode != 0 and "tag v2 message" in proc.stderr, proc.stderr
    assert _live(server, victim)
    assert "refs/tags/v2" not in git("ls-remote", "origin", cwd=work).stdout


def test_a_bypassed_token_lands_and_is_revoked(server: BastionServer, protected: RepoHandle, git: Git,  # noqa: F811
                                               tmp_path: Path) -> None:
    """The owner may push a secret past protection with a reason; a live Bastion token that so lands is
    published, and revoked."""
    work = tmp_path / "w"
    git("clone", "-q", protected.url(), str(work))
    victim = _victim(server)
    (work / "fixtures.txt").write_text(f"HF_TOKEN={victim}\n")
    git.commit_all(work, "fixtures")
    git("push", "-q", "-o", "secrets-bypass=test fixture", "origin", "main", cwd=work)
    assert "fixtures.txt" in hf_api(server, protected.token).list_repo_files(protected.repo_id)
    wait_for(lambda: not _live(server, victim), timeout=30)
