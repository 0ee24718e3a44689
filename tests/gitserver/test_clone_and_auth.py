"""Fetching over smart HTTP: anonymous and token clones, protocol v0/v2, gzip bodies, and
private repos that answer exactly like missing ones.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import httpx

from tests.conftest import BastionServer, hf_api
from tests.gitserver.conftest import Git, RepoHandle, make_repo


def test_clone_public_anonymously_v2_and_v0(server: BastionServer, repo: RepoHandle, git: Git,
                                           tmp_path: Path) -> None:
    hf_api(server, repo.token).upload_file(path_or_fileobj=b"readme\n", path_in_repo="README.md",
                                           repo_id=repo.repo_id)
    for version, suffix in (("2", ""), ("0", ".git")):
        dest = tmp_path / f"v{version}"
        git("-c", f"protocol.version={version}", "clone", repo.anonymous_url + suffix, str(dest))
        assert (dest / "README.md").read_text() == "readme\n"
        assert git("log", "--format=%s", cwd=dest).stdout.splitlines()[0] == "Upload README.md with huggingface_hub"


def test_dataset_and_space_urls(server: BastionServer, git: Git, tmp_path: Path) -> None:
    for repo_type in ("dataset", "space"):
        handle = make_repo(server, repo_type=repo_type)
        dest = tmp_path / repo_type
        git("clone", handle.anonymous_url, str(dest))
        assert (dest / ".gitattributes").exists()
        # The same name under the model URL space is another (missing) repository.
        wrong = f"{server.url}/{handle.repo_id}/info/refs?service=git-upload-pack"
        assert httpx.get(wrong).status_code == 401


def _probe(server: BastionServer, repo_id: str, service: str, headers: dict[str, str] | None = None,
           ) -> httpx.Response:
    return httpx.get(f"{server.url}/{repo_id}.git/info/refs", params={"service": service}, headers=headers or {})


def test_private_repo_answers_like_a_missing_one(server: BastionServer, private_repo: RepoHandle, git: Git,
                                                 tmp_path: Path) -> None:
    missing = f"{private_repo.owner}/does-not-exist"
    _other, other_token = server.create_user()
    for service in ("git-upload-pack", "git-receive-pack"):
        # Anonymous: the same 401 challenge for both, so git asks for credentials.
        a, b = _probe(server, private_repo.repo_id, service), _probe(server, missing, service)
        assert a.status_code == b.status_code == 401
        assert a.headers["www-authenticate"] == b.headers["www-authenticate"] == 'Basic realm="Bastion", charset="UTF-8"'
        assert a.content == b.content
        # Another signed-in user: the same 404 for both.
        auth = {"Authorization": f"Bearer {other_token}"}
        a, b = _probe(server, private_repo.repo_id, service, auth), _probe(server, missing, service, auth)
        assert a.status_code == b.status_code == 404
        assert a.content == b.content == b"Repository not found\n"
    # The owner sees it.
    assert _probe(server, private_repo.repo_id, "git-upload-pack",
                  {"Authorization": f"Bearer {private_repo.token}"}).status_code == 200

    host = server.url.removeprefix("http://")
    outputs = []
    for repo_id in (private_repo.repo_id, missing):
        anon = git("clone", f"http://{host}/{repo_id}", str(tmp_path / "x"), check=False)
        other = git("clone", f"http://someone:{other_token}@{host}/{repo_id}", str(tmp_path / "y"), check=False)
        assert anon.returncode != 0 and other.returncode != 0
        outputs.append((anon.stderr.replace(repo_id, "R"), other.stderr.replace(repo_id, "R")))
    assert outputs[0] == outputs[1]
    assert "not found" in outputs[0][1]


def test_clone_private_with_token_basic_and_bearer(private_repo: RepoHandle, git: Git, tmp_path: Path) -> None:
    git("clone", private_repo.url(), str(tmp_path / "basic"))
    assert (tmp_path / "basic" / ".gitattributes").exists()
    git("-c", f"http.extraHeader=Authorization: Bearer {private_repo.token}", "clone",
        private_repo.anonymous_url, str(tmp_path / "bearer"))
    assert (tmp_path / "bearer" / ".gitattributes").exists()


def test_wrong_password_and_account_password_rejected(private_repo: RepoHandle, git: Git, tmp_path: Path) -> None:
    for password in ("not-a-token", "bst_" + "x" * 36):
        proc = git("clone", private_repo.url(token=password), str(tmp_path / "c"), check=False)
        assert proc.returncode != 0
        assert "Invalid credentials" in proc.stderr
        assert "Authentication failed" in proc.stderr


def test_gzip_encoded_upload_pack_request(server: BastionServer, repo: RepoHandle) -> None:
    def pkt(line: str) -> bytes:
        return b"%04x" % (len(line) + 4) + line.encode()

    body = pkt("command=ls-refs\n") + pkt("object-format=sha1\n") + b"0001" + pkt("ref-prefix refs/heads/\n") + b"0000"
    resp = httpx.post(f"{server.url}/{repo.repo_id}/git-upload-pack", content=gzip.compress(body),
                      headers={"Content-Type": "application/x-git-upload-pack-request", "Content-Encoding": "gzip",
                               "Git-Protocol": "version=2"})
    assert resp.status_code == 200
    assert resp.headers["content-type"] == "application/x-git-upload-pack-result"
    head = hf_api(server, repo.token).list_repo_refs(repo.repo_id).branches[0].target_commit
    assert f"{head} refs/heads/main".encode() in resp.content
    assert resp.content.endswith(b"0000")


def test_dumb_http_is_refused(server: BastionServer, repo: RepoHandle) -> None:
    resp = httpx.get(f"{server.url}/{repo.repo_id}.git/info/refs")
    assert resp.status_code == 403
    assert "smart HTTP" in resp.text
